"""SeLa's successors on the kit's trainer (SwAV's paper): the batch codes, the swapped-prediction loss,
spherical k-means, multi-crop, the projection head, and every new method's exact resume (with SwAV's
queue and DeepCluster-v2's memory bank across a checkpoint)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sela_edu.data import load_dataset
from sela_edu.data.augment_defaults import default_augment
from sela_edu.data.multicrop import MultiCrop
from sela_edu.labelling import batch_codes, code_balance
from sela_edu.models import build_model
from sela_edu.training import TrainConfig, config_from_preset, train
from sela_edu.training.config import ADDED_FIELDS
from sela_edu.training.methods import spherical_kmeans, swapped_prediction_loss
from sela_edu.training.state import check_resumable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUCCESSOR = dict(head_temperature=0.1, projection_dim=16, projection_hidden=32, large_crops=2, small_crops=2,
                 small_crop_size=6, small_crop_scale=[0.2, 0.5])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _small(method: str, **overrides) -> TrainConfig:
    base = dict(device="cpu", epochs=3, nopts=4, max_images=256, batch_size=32, method=method, **SUCCESSOR)
    return config_from_preset("smoke", **{**base, **overrides})


def _swav_reference(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """SwAV's distributed_sinkhorn on one process, in float64, written from its paper's algorithm."""
    q = np.exp(scores / epsilon).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


# --- the batch codes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_batch_codes_follow_swavs_sinkhorn(iterations):
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(96, 16, generator=g), dim=1) @ F.normalize(torch.randn(7, 16, generator=g), dim=1).t()
    codes = batch_codes(scores, 0.05, iterations)
    expected = _swav_reference(scores.double().numpy(), 0.05, iterations)
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(codes.sum(dim=1), torch.ones(96), atol=1e-5)


def test_batch_codes_are_equipartitioned_within_the_iterations_reach():
    g = torch.Generator().manual_seed(1)
    # one cluster far more likely than the others: the argmax would put most rows there
    scores = 0.3 * torch.randn(400, 8, generator=g)
    scores[:, 0] += 0.2
    spread = []
    for iterations in (0, 1, 3, 30):
        codes = batch_codes(scores, 0.05, iterations)
        spread.append(float((codes.sum(dim=0) * 8 / 400 - 1).abs().max()))
    assert spread[0] > 0.5                      # no iteration: far from equal masses
    assert spread[1] < spread[0] and spread[2] < spread[1] and spread[3] < 1e-3   # closer with every iteration


def test_no_iteration_is_each_rows_softmax():
    scores = torch.randn(20, 6, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(batch_codes(scores, 0.5, 0), torch.softmax(scores / 0.5, dim=1))


def test_batch_codes_refuse_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        batch_codes(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match="B x K"):
        batch_codes(torch.zeros(3))
    with pytest.raises(ValueError, match="epsilon"):
        batch_codes(torch.zeros(2, 2), epsilon=0.0)


def test_code_balance_counts_sizes_against_n_over_k():
    balance = code_balance(torch.tensor([0, 0, 0, 1, 2, 2]), 4)
    assert balance == {"largest": 2.0, "smallest": 0.0, "empty": 1}


# --- the swapped prediction ------------------------------------------------------------------------------

def test_swapped_prediction_loss_against_a_hand_computation():
    g = torch.Generator().manual_seed(2)
    views, n, k = 3, 4, 5
    logits = torch.randn(views * n, k, generator=g)
    codes = {a: torch.softmax(torch.randn(n, k, generator=g), dim=1) for a in (0, 1)}
    expected = 0.0
    for a, q in codes.items():
        terms = []
        for v in range(views):
            if v == a:
                continue
            rows = [-sum(q[i, j] * math.log(math.exp(logits[v * n + i, j]) / sum(math.exp(x) for x in logits[v * n + i]))
                         for j in range(k)) for i in range(n)]
            terms.append(sum(rows) / n)
        expected += sum(terms) / len(terms)
    expected /= len(codes)
    assert swapped_prediction_loss(logits, codes, views).item() == pytest.approx(float(expected), rel=1e-5)


# --- DeepCluster-v2's k-means ----------------------------------------------------------------------------

def test_spherical_kmeans_finds_separated_directions():
    g = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    truth = torch.arange(200) % 4
    x = F.normalize(centres[truth] + 0.05 * torch.randn(200, 8, generator=g), dim=1)
    centroids, labels = spherical_kmeans(x, 4, 10, torch.Generator().manual_seed(0))
    assert torch.allclose(centroids.norm(dim=1), torch.ones(4), atol=1e-5)
    from sela_edu.evaluation.metrics import nmi
    assert nmi(truth, labels) > 0.99
    with pytest.raises(ValueError, match="k-means needs"):
        spherical_kmeans(x[:3], 4)


# --- multi-crop and the projection head ------------------------------------------------------------------

def test_multicrop_gives_large_then_small_crops_reproducibly():
    base = default_augment("fashion-mnist")
    crops = MultiCrop(base, 2, 3, small_size=16, small_scale=(0.1, 0.4))
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    views = crops(x, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(5, 1, 28, 28)] * 2 + [(5, 1, 16, 16)] * 3
    again = crops(x, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    assert not torch.equal(views[0], views[1])
    with pytest.raises(ValueError, match="small_size"):
        MultiCrop(base, 2, 2, small_size=40)


def test_small_crops_and_the_projection_head_go_through_the_small_cnn():
    model = build_model("smallcnn", num_heads=2, num_clusters=[5, 7], in_channels=1, image_size=28,
                        head_temperature=0.1, projection_dim=16).eval()
    for side in (28, 16):
        outputs, z = model(torch.randn(3, 1, side, side), embedding=True)
        assert [o.shape for o in outputs] == [(3, 5), (3, 7)] and z.shape == (3, 16)
        assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
        assert outputs[0].abs().max() <= 1 / 0.1 + 1e-4          # cosines over the temperature
    with pytest.raises(ValueError, match="head_temperature"):
        build_model("smallcnn", in_channels=1, image_size=28, projection_dim=16)


def test_a_kit_model_file_keeps_its_projection_head(tmp_path):
    from sela_edu.apps import pretrained as pt

    model = build_model("smallcnn", num_heads=1, num_clusters=4, in_channels=1, image_size=28, head_temperature=0.1,
                        projection_dim=8, projection_hidden=32).eval()
    path = tmp_path / "model.pt"
    torch.save({"build_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict()}, path)
    loaded = pt.load_checkpoint_file(path).model.eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], model(x)[0], atol=1e-6)


# --- the methods on the trainer --------------------------------------------------------------------------

def _interrupt_after(epoch):
    def callback(record):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return callback


def _same_state(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("method, extra", [
    ("sela-v2", {}),
    ("deepcluster-v2", {"freeze_prototypes_steps": 10**6}),
    ("swav", {"queue_length": 64, "queue_start_epoch": 1, "freeze_prototypes_steps": 4}),
])
def test_each_method_resumes_bit_for_bit(digits, tmp_path, method, extra):
    straight = train(_small(method, **extra), digits, progress=False)
    config = _small(method, checkpoint_dir=str(tmp_path), **extra)
    with pytest.raises(KeyboardInterrupt):
        train(config, digits, progress=False, callback=_interrupt_after(2))
    resumed = train(config, digits, progress=False)
    assert _same_state(straight, resumed)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert all(math.isfinite(r["loss"]) for r in straight.history)


def test_the_swav_queue_survives_a_checkpoint(digits, tmp_path):
    from sela_edu.training.checkpoint import load_checkpoint

    config = _small("swav", epochs=2, queue_length=64, queue_start_epoch=0, checkpoint_dir=str(tmp_path))
    train(config, digits, progress=False)
    saved = load_checkpoint(tmp_path / "last.pt")["method_state"]
    queue = saved["queue"]
    assert queue.shape == (2, 64, 16) and saved["filled"] == 64
    assert torch.allclose(queue.norm(dim=2), torch.ones(2, 64), atol=1e-4)   # unit embeddings, all rows written
    # the restored method holds the same queue
    from sela_edu.training.build import build_run
    from sela_edu.training.state import restore

    s, loop = build_run(config, digits, None)
    restore(s, loop, tmp_path / "last.pt")
    assert torch.equal(s.method.queue, queue) and s.method.filled == 64


def test_swav_has_no_label_step_and_reports_its_codes_as_labels(digits):
    result = train(_small("swav", epochs=2), digits, progress=False)
    assert result.timings["relabels"] == 0 and result.timings["relabel_seconds"] == 0.0
    first = torch.randperm(256, generator=torch.Generator().manual_seed(0)) % 10
    assert not torch.equal(result.labels[0], first)      # the initial labels were replaced by the codes' argmax
    assert result.labels[0].max() < 10 and result.labels[1].max() < 20


def test_frozen_prototypes_do_not_move_and_deepcluster_v2s_are_its_centroids(digits):
    frozen = train(_small("swav", epochs=1, freeze_prototypes_steps=10**6), digits, progress=False)
    fresh = train(_small("swav", epochs=1, freeze_prototypes_steps=10**6, lr=1e-9), digits, progress=False)
    assert torch.equal(frozen.model.heads[0].weight, fresh.model.heads[0].weight)
    dc = train(_small("deepcluster-v2", epochs=1, nopts=1, freeze_prototypes_steps=10**6), digits, progress=False)
    weights = dc.model.heads[0].weight
    assert torch.allclose(weights.norm(dim=1), torch.ones(weights.shape[0]), atol=1e-5)


def test_the_successors_configs_refuse_what_they_cannot_run():
    with pytest.raises(ValueError, match="head_temperature"):
        config_from_preset("smoke", method="swav", large_crops=2)
    with pytest.raises(ValueError, match="large_crops"):
        config_from_preset("smoke", method="swav", head_temperature=0.1)
    with pytest.raises(ValueError, match="queue_length"):
        config_from_preset("smoke", method="swav", head_temperature=0.1, large_crops=2, queue_length=100)
    with pytest.raises(ValueError, match="small_crop_size"):
        config_from_preset("smoke", small_crops=2)
    with pytest.raises(ValueError, match="rotation"):
        config_from_preset("smoke", large_crops=2, rotation=True)
    with pytest.raises(ValueError, match="small_crop_scale"):
        config_from_preset("smoke", small_crop_scale=[0.5, 0.1])


def test_a_checkpoint_written_before_the_new_fields_still_resumes(tmp_path):
    config = config_from_preset("smoke")
    saved = {k: v for k, v in config.to_dict().items() if k not in ADDED_FIELDS}
    check_resumable(saved, config, tmp_path / "last.pt")   # no error: missing fields hold their defaults
    changed = dataclasses.replace(config, large_crops=2)
    with pytest.raises(ValueError, match="large_crops"):
        check_resumable(saved, changed, tmp_path / "last.pt")


def test_every_successor_preset_builds():
    for name in ("sela-v2-classroom", "deepcluster-v2-classroom", "swav-classroom", "swav-imagenet",
                 "deepcluster-v2-imagenet", "sela-v2-imagenet"):
        config = config_from_preset(name)
        assert config.method in ("sela-v2", "deepcluster-v2", "swav") and config.head_temperature == 0.1
