"""The loops and harnesses the notebooks call (sela_edu.course.studies.objective, imbalance_study, label_transfer,
timing, online), on the digits and tiny sizes."""

import numpy as np
import pytest
import torch

from sela_edu import build_model, config_from_preset, load_dataset, make_loader, self_label
from sela_edu.course.studies import imbalance_study, label_transfer, objective, timing
from sela_edu.labelling import synthetic_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLUSTERS = 10


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def digit_images(digits):
    part = digits.subset(torch.arange(400))
    return torch.cat([batch[0] for batch in make_loader(part, 512, train=False)]), part.targets


def _network(digits, seed=0):
    torch.manual_seed(seed)
    return build_model("smallcnn", num_heads=1, num_clusters=CLUSTERS, in_channels=digits.num_channels,
                       image_size=digits.image_size)


# ---------------------------------------------------------------- 02: the objective

def _loop(digits, x, relabel, seed=0):
    return objective.self_training(x, relabel, make_network=lambda: _network(digits, seed), clusters=CLUSTERS,
                                   rounds=2, steps=3, lr=0.02, seed=seed)


def test_self_training_records_sizes_per_round_and_is_seeded(digits, digit_images):
    x, _ = digit_images
    run = _loop(digits, x, lambda s: s.argmax(1))
    assert len(run.sizes) == 3 and all(int(s.sum()) == len(x) for s in run.sizes)
    assert run.sizes[0].tolist() == [len(x) // CLUSTERS] * CLUSTERS      # random equal-sized labels first
    assert run.labels.shape == (len(x),) and run.labels.device.type == "cpu"
    again = _loop(digits, x, lambda s: s.argmax(1))
    assert torch.equal(run.labels, again.labels)


def test_self_training_with_the_label_step_keeps_every_cluster(digits, digit_images):
    x, _ = digit_images
    run = _loop(digits, x, lambda s: self_label(s, 10.0, tol=1e-5, max_iter=5000).labels)
    assert run.nonempty_clusters() == CLUSTERS


def test_self_training_refuses_no_rounds(digits, digit_images):
    with pytest.raises(ValueError, match="rounds and steps"):
        objective.self_training(digit_images[0], lambda s: s.argmax(1), make_network=lambda: _network(digits),
                                clusters=CLUSTERS, rounds=0, steps=3, lr=0.02)


def test_row_entropy_is_one_for_uniform_rows_and_zero_for_one_hot():
    assert objective.row_entropy(np.full((5, 4), 0.25)) == pytest.approx(1.0)
    assert objective.row_entropy(np.eye(4)) == pytest.approx(0.0, abs=1e-12)


def test_lambda_sweep_flattens_rows_as_lambda_falls():
    scores = synthetic_scores(2000, CLUSTERS, seed=0)
    reference = self_label(scores, 10.0, tol=1e-5, max_iter=5000).labels
    targets = reference.numpy()
    sweep = objective.lambda_sweep(scores, [1.0, 10.0, 50.0], reference_labels=reference, targets=targets, tol=1e-5)
    assert [row["lam"] for row in sweep] == [1.0, 10.0, 50.0]
    assert sweep[0]["entropy"] > sweep[1]["entropy"] > sweep[2]["entropy"]
    assert sweep[1]["agreement"] == pytest.approx(1.0) and sweep[1]["nmi_truth"] == pytest.approx(1.0)
    assert all(row["smallest"] <= 200 <= row["largest"] for row in sweep)


def test_lambda_sweep_refuses_no_lambda():
    with pytest.raises(ValueError, match="lam_values is empty"):
        objective.lambda_sweep(torch.zeros(4, 2), [], reference_labels=torch.zeros(4), targets=np.zeros(4), tol=1e-5)


# ---------------------------------------------------------------- 05: imbalance

def test_imbalance_subsets(digits):
    subsets = imbalance_study.imbalance_subsets(digits.targets, seed=0)
    assert list(subsets) == ["full", "light", "heavy"]
    assert torch.equal(subsets["full"], torch.arange(len(digits)))
    counts = {s: torch.bincount(digits.targets[idx], minlength=10) for s, idx in subsets.items()}
    assert counts["light"][:9].tolist() == counts["full"][:9].tolist()
    assert counts["light"][9] == pytest.approx(counts["full"][9] / 2, abs=1)
    assert (counts["heavy"] < counts["full"]).all() and counts["heavy"][9] > 0   # capped below 100 %
    assert list(imbalance_study.imbalance_subsets(digits.targets, ["heavy"])) == ["heavy"]
    with pytest.raises(ValueError, match="unknown imbalance setting"):
        imbalance_study.imbalance_subsets(digits.targets, ["extreme"])


def test_method_config_gives_supervised_one_head_per_class():
    base = config_from_preset("smoke")
    sup = imbalance_study.method_config(base, "supervised", 10)
    assert (sup.method, sup.num_heads, sup.num_clusters) == ("supervised", 1, 10)
    assert imbalance_study.method_config(base, "kmeans", 10).num_clusters == base.num_clusters


def test_imbalance_study_fills_one_cell_per_setting_and_method(digits, tmp_path):
    base = config_from_preset("smoke", epochs=1, nopts=1, max_images=120, device="cpu")
    test = load_dataset("digits", "test")
    subsets = {"full": torch.arange(300)}
    table = imbalance_study.imbalance_study(digits, subsets, base, ["sela"], evaluation_split=digits.subset(
        torch.arange(300)), test=test.subset(torch.arange(100)), knn_k=5, output_dir=tmp_path)
    assert list(table) == ["full"] and list(table["full"]) == ["sela"]
    assert 0 <= table["full"]["sela"]["knn"] <= 100 and 0 <= table["full"]["sela"]["linear"] <= 100
    assert list((tmp_path / "checkpoints").glob("05full_sela_*"))
    with pytest.raises(ValueError, match="at least one"):
        imbalance_study.imbalance_study(digits, {}, base, ["sela"], evaluation_split=digits, test=test,
                                        knn_k=5, output_dir=tmp_path)


def test_accuracy_drops():
    table = {"full": {"sela": {"linear": 80.0}, "supervised": {"linear": 90.0}},
             "heavy": {"sela": {"linear": 78.5}}}
    assert imbalance_study.accuracy_drops(table) == {"sela": 1.5}
    assert imbalance_study.accuracy_drops({"full": table["full"]}) == {}


# ---------------------------------------------------------------- 06: label transfer

def test_label_fit_is_full_on_the_models_own_argmax_and_falls_on_shuffled_labels(digits):
    part = digits.subset(torch.arange(300))
    model = _network(digits).eval()
    with torch.no_grad():
        own = torch.cat([model(x)[0].argmax(1) for x, _, _ in make_loader(part, 512, train=False)])[None]
    assert label_transfer.label_fit(model, part, own, "cpu").tolist() == [100.0]
    shuffled = own[:, torch.randperm(own.shape[1], generator=torch.Generator().manual_seed(0))]
    assert label_transfer.label_fit(model, part, (own + 1) % CLUSTERS, "cpu")[0] == 0
    assert label_transfer.label_fit(model, part, shuffled, "cpu")[0] < 100


def test_label_fit_refuses_labels_of_another_size(digits):
    with pytest.raises(ValueError, match="num_heads x 300"):
        label_transfer.label_fit(_network(digits), digits.subset(torch.arange(300)), torch.zeros(1, 10).long(), "cpu")


# ---------------------------------------------------------------- 07: timing

def test_time_label_step_times_a_solve_of_the_asked_size():
    seconds, res = timing.time_label_step(500, 20, lam=25.0, storage_dtype=torch.float32, device="cpu")
    assert seconds > 0 and res.labels.shape == (500,) and res.passes >= 1


def test_label_step_timings_one_row_per_size():
    rows = timing.label_step_timings([300, 600], 20, lam=25.0, storage_dtype=torch.float32, device="cpu")
    assert [r["n"] for r in rows] == [300, 600]
    assert all(r["per_pass"] == pytest.approx(r["seconds"] / r["passes"]) for r in rows)
    with pytest.raises(ValueError, match="sizes is empty"):
        timing.label_step_timings([], 20, lam=25.0, storage_dtype=torch.float32, device="cpu")


def test_scaling_fit_recovers_a_linear_law_and_extrapolates_it():
    rows = [dict(n=n, per_pass=2e-9 * n * 100, passes=4) for n in (1000, 10000, 100000)]
    fit = timing.scaling_fit(rows, 100, n_target=10**6, k_target=100)
    assert fit["slope"] == pytest.approx(1.0)
    assert fit["per_entry"] == pytest.approx(2e-9) and fit["passes"] == 4
    assert fit["extrapolated"] == pytest.approx(2e-9 * 10**6 * 100 * 4)
    assert np.isnan(timing.scaling_fit(rows[:1], 100)["slope"])


# ---------------------------------------------------------------- 09: from SeLa to SwAV

def _cosines(n=320, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, generator=g) * 0.3
    scores[:, 0] += 0.4                             # one prototype preferred: codes must balance it away
    return scores.clamp(-1, 1)


def test_iteration_sweep_one_row_per_setting_and_iterations_balance_the_batches():
    from sela_edu.course.studies import online

    sweep = online.iteration_sweep(_cosines(), (1, 3, 100), batch=64, lam=10.0)
    assert list(sweep) == ["1 iteration", "3 iterations", "100 iterations", "full set"]
    for row in sweep.values():
        assert int(row["sizes"].sum()) == 320 and len(row["sizes"]) == 10
    # more iterations, clusters within a batch closer to B/K
    assert sweep["100 iterations"]["batch_largest"] <= sweep["1 iteration"]["batch_largest"]
    assert np.isnan(sweep["full set"]["batch_largest"])


def test_queue_sweep_measures_each_queue_length_on_the_same_batches():
    from sela_edu.course.studies import online

    queued = online.queue_sweep(_cosines(), (0, 32, 128), batch=16)
    assert list(queued) == [0, 32, 128]
    assert all(r["largest"] >= 1.0 and 0 <= r["empty"] <= 10 for r in queued.values())
    with pytest.raises(ValueError, match="cannot give a queue"):
        online.queue_sweep(_cosines(n=100), (0, 128), batch=16)


def test_successor_config_scales_the_small_crops_to_the_data_set():
    from sela_edu.course.studies import online
    from sela_edu.training import PRESETS

    fashion = online.successor_config("swav", "fashion-mnist", epochs=1)
    assert fashion.method == "swav" and fashion.small_crop_size == PRESETS["swav-classroom"]["small_crop_size"]
    assert fashion.epochs == 1
    digits = online.successor_config("sela-v2", "digits", max_images=None)
    assert digits.small_crop_size == 5 and digits.dataset == "digits"      # 16 px of 28, at 8 px
    with pytest.raises(ValueError, match="unknown successor"):
        online.successor_config("sela", "digits")


def test_prototype_scores_are_cosines_and_refuse_a_linear_head(digits):
    from sela_edu.course.studies import online

    part = digits.subset(torch.arange(64))
    torch.manual_seed(0)
    net = build_model("smallcnn", num_heads=1, num_clusters=CLUSTERS, in_channels=digits.num_channels,
                      image_size=digits.image_size, head_temperature=0.1, projection_dim=16)
    scores = online.prototype_scores(net, part)
    assert scores.shape == (64, CLUSTERS) and float(scores.abs().max()) <= 1.0 + 1e-5
    with pytest.raises(ValueError, match="no cosine heads"):
        online.prototype_scores(_network(digits), part)
