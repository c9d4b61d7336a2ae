"""The study script: its summary and verdicts on fabricated rows (training is the script's job, not the suite's), and its frozen scores (the kit's evaluation, on a tiny network)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fashion_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("fashion_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def row(method, seed, nmi, knn, linear):
    return {"method": method, "seed": seed, "train_minutes": 1.0, "nmi": nmi, "ari": nmi / 2,
            "knn_feature": knn, "knn_conv": knn + 1, "linear_feature": linear, "linear_conv": linear + 1}


def test_summary_is_mean_and_sample_spread(study):
    rows = [row("sela", s, nmi, 88.0, 89.0) for s, nmi in enumerate((0.5, 0.6, 0.7))]
    mean, spread = study.summarise(rows)["sela"]["nmi"]
    assert mean == pytest.approx(0.6)
    assert spread == pytest.approx(0.1)


def test_verdicts_follow_the_numbers(study):
    rows = [row("sela", s, 0.58 + 0.01 * s, 87.0 + 0.1 * s, 90.0 + 0.3 * s) for s in range(3)]
    rows += [row("kmeans", s, 0.62 + 0.01 * s, 85.0, 90.1) for s in range(3)]
    lines = study.verdicts(rows)
    assert "SeLa nmi 0.590 (head): target 0.650 MISSED" in lines
    assert "SeLa knn 88.1 % (conv): target 88.0 % met" in lines
    nmi = next(line for line in lines if "k-means" in line and "NMI" in line)
    assert nmi.startswith("SeLa does not beat k-means pseudo-labels on NMI") and "behind by 0.040" in nmi
    knn = next(line for line in lines if "k-means" in line and "kNN accuracy (feature)" in line)
    assert knn.startswith("SeLa beats k-means pseudo-labels") and "by 2.1 points" in knn
    linear = next(line for line in lines if "linear-probe accuracy (feature)" in line)
    assert linear.startswith("SeLa beats") and "within the spread" in linear


def test_no_verdicts_without_sela(study):
    assert study.verdicts([row("random", 0, 0.1, 80.0, 80.0)]) == []


def test_every_arm_names_a_trainer_method_and_its_labels(study):
    from sela_edu.training import config_from_preset

    for key, arm in study.METHODS.items():
        config_from_preset("classroom", **arm.trainer)  # refuses an unknown setting
        assert arm.own_labels == (key in ("sela", "kmeans", "sela-rot"))
        assert arm.trains or not arm.own_labels  # an untrained network has no pseudo-labels of its own


def test_rot_is_compared_with_sela_on_every_measure(study):
    rows = [row("sela", s, 0.58, 87.0 + 0.1 * s, 88.0) for s in range(3)]
    rows += [row("sela-rot", s, 0.60, 88.0 + 0.1 * s, 88.0 + 0.1 * s) for s in range(3)]
    rot = [line for line in study.verdicts(rows) if line.startswith("SeLa+Rot")]
    assert len(rot) == len(study.METRIC_NAMES) == 5
    assert any("kNN accuracy (feature) by 1.0 points" in line for line in rot)


def test_merged_ablation_is_a_variant_compared_with_its_method(study):
    plain = {"settings": {"set": []}, "rows": [row("sela", s, 0.58, 87.0, 88.0) for s in range(2)]}
    cosine = {"settings": {"set": ["head_temperature=0.1"]}, "rows": [row("sela", s, 0.63, 86.0, 88.0) for s in range(2)]}
    rows = study.merged_rows(plain) + study.merged_rows(cosine)
    assert {r["method"] for r in rows} == {"sela", "sela head_temperature=0.1"}
    assert study.summarise(rows)["sela"]["nmi"][0] == pytest.approx(0.58)  # the variant is not mixed in
    lines = study.verdicts(rows)
    assert "SeLa with head_temperature=0.1 beats SeLa on NMI of the K = 10 head's labels by 0.050" in " ".join(lines)
    assert "head_temperature=0.1" in study.format_summary(study.summarise(rows), 2)


def test_frozen_scores_are_the_kits_evaluation_on_both_layers(study):
    from sela_edu.data import ImageData
    from sela_edu.evaluation import evaluate
    from sela_edu.models import build_model
    from sela_edu.training import config_from_preset

    torch.manual_seed(0)
    model = build_model("smallcnn", num_heads=1, num_clusters=3, in_channels=1, image_size=8).eval()
    targets = torch.arange(40) % 3
    images = (targets.view(-1, 1, 1, 1) * 70 + torch.randint(0, 90, (40, 1, 8, 8))).to(torch.uint8)
    data = ImageData("toy", images, targets, ["a", "b", "c"], (0.4,), (0.3,))
    train, test = data.subset(torch.arange(30)), data.subset(torch.arange(30, 40))
    config = config_from_preset("classroom", device="cpu", batch_size=8)
    scores = study.frozen_scores(model, config, train, test)
    expected = evaluate(model, train, test, layers=("features", "conv_features"), knn_k=10, heads=False)
    assert scores == {"knn_feature": 100 * expected.knn["features"][10],
                      "linear_feature": 100 * expected.linear["features"],
                      "knn_conv": 100 * expected.knn["conv_features"][10],
                      "linear_conv": 100 * expected.linear["conv_features"]}
    assert scores["knn_feature"] != scores["knn_conv"] or scores["linear_feature"] != scores["linear_conv"]
