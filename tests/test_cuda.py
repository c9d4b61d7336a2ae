"""The GPU paths against the CPU: the label step, the scoring loop and a training run on a CUDA device.

They run where a GPU is (``benchmarks/gpu_check.sh`` records them) and are skipped elsewhere.
``SELA_TEST_DEVICE=cpu`` runs them on the CPU instead (the check script's dry run uses it to prove the
script itself), where each comparison is then CPU against CPU.
"""

import dataclasses
import os

import pytest
import torch

from sela_edu.evaluation import score_dataset
from sela_edu.labelling import ScoreBuffer, self_label, synthetic_scores
from sela_edu.models import build_model
from sela_edu.training import config_from_preset, train
from sela_edu.data import ImageData


def _device() -> str | None:
    wanted = os.environ.get("SELA_TEST_DEVICE")
    if wanted:
        return wanted
    return "cuda" if torch.cuda.is_available() else None


DEVICE = _device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device (SELA_TEST_DEVICE=cpu runs these on the CPU)")


@pytest.mark.parametrize("storage", [torch.float32, torch.bfloat16])
def test_label_step_on_the_device_gives_the_cpu_labels(storage):
    scores = synthetic_scores(20_000, 100, seed=0)
    cpu = self_label(scores, 10.0, storage_dtype=storage)
    dev = self_label(scores.to(DEVICE), 10.0, storage_dtype=storage)
    assert dev.converged and cpu.converged
    agree = (dev.labels.cpu() == cpu.labels).float().mean().item()
    # different reduction orders move a few near-ties; bfloat16 rounds P itself
    assert agree > (0.999 if storage == torch.float32 else 0.99), agree
    sizes = [torch.bincount(r.labels.cpu(), minlength=100) for r in (dev, cpu)]
    assert (sizes[0] - sizes[1]).abs().max() <= 0.02 * 200   # 200 images per cluster


def test_streamed_buffer_on_the_device_equals_the_dense_solve():
    scores = synthetic_scores(10_000, 50, seed=1).to(DEVICE)
    buf = ScoreBuffer(10_000, 50, 10.0, storage_dtype=torch.bfloat16, device=DEVICE)
    for start in range(0, 10_000, 3_000):
        buf.add(scores[start:start + 3_000])
    streamed, dense = self_label(buf), self_label(scores, 10.0, storage_dtype=torch.bfloat16)
    assert torch.equal(streamed.labels.cpu(), dense.labels.cpu())


def test_scoring_on_the_device_matches_the_cpu():
    torch.manual_seed(0)
    model = build_model("smallcnn", num_heads=2, num_clusters=[10, 20], in_channels=1, image_size=28).eval()
    images = torch.randn(300, 1, 28, 28)
    cpu = score_dataset(model, images, outputs=("heads", "features"), batch_size=128)
    dev = score_dataset(model.to(DEVICE), images, outputs=("heads", "features"), batch_size=128, device=DEVICE)
    torch.testing.assert_close(dev["features"], cpu["features"], rtol=1e-3, atol=1e-3)
    for a, b in zip(dev["heads"], cpu["heads"]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("precision", [dict(amp_dtype="float16"), dict(amp_dtype="bfloat16", channels_last=True)])
def test_training_runs_on_the_device_with_mixed_precision(precision):
    g = torch.Generator().manual_seed(0)
    data = ImageData("fashion-mnist",  # a made-up set with Fashion-MNIST's shape and augmentation
                     torch.randint(0, 256, (512, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(512) % 10,
                     [str(i) for i in range(10)], (0.5,), (0.25,))
    config = config_from_preset("smoke", dataset="fashion-mnist", device=DEVICE, amp=True, max_images=None, **precision)
    result = train(config, data, progress=False)
    assert next(result.model.parameters()).device.type == torch.device(DEVICE).type
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert result.labels.shape == (2, 512)
    for head, k in enumerate(config.cluster_list()):
        assert torch.bincount(result.labels[head], minlength=k).min() > 0


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_the_training_step_and_its_batches_never_wait_for_the_device(monkeypatch, amp_dtype):
    """On CUDA, torch's sync debug mode raises at any operation that makes the host wait for the GPU: none
    may happen while a batch is gathered, augmented and trained on (after the first epoch, which copies
    the set there). float16 too: its GradScaler hands the overflow flag to the fused SGD on the device."""
    if torch.device(DEVICE).type != "cuda":
        pytest.skip("torch's sync debug mode watches CUDA only")
    from sela_edu.data import make_loader
    from sela_edu.training import loop

    g = torch.Generator().manual_seed(0)
    data = ImageData("cifar10", torch.randint(0, 256, (512, 3, 32, 32), generator=g, dtype=torch.uint8),
                     torch.arange(512) % 10, [str(i) for i in range(10)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    loader = make_loader(data, 64, train=True, device=DEVICE)
    for _ in loader:  # the first epoch copies the set to the device (and makes the constants there)
        pass
    loader.set_epoch(1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = [x for x, _, _ in loader]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(batches) == len(loader) and batches[0].device.type == "cuda"

    steps = []
    original = loop.sgd_step

    def watched(s, *args, **kwargs):
        steps.append(1)
        if len(steps) <= s.steps_per_epoch:  # the first epoch warms up cuDNN and cuBLAS
            return original(s, *args, **kwargs)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return original(s, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(loop, "sgd_step", watched)
    config = config_from_preset("smoke", dataset="cifar10", device=DEVICE, amp=True, amp_dtype=amp_dtype,
                                method="supervised", epochs=2, max_images=None, batch_size=64)
    result = train(config, data, progress=False)
    assert len(steps) == 2 * 8 and len(result.history) == 2


def test_an_interrupted_run_resumes_exactly_on_the_device(monkeypatch, tmp_path):
    """Stopped after its second epoch and resumed, a run on the device ends with the weights and labels of
    the run that never stopped: the checkpoint holds every random state (the device's included), and
    ``SELA_DETERMINISTIC=1`` makes torch pick kernels that add up in one order."""
    monkeypatch.setenv("SELA_DETERMINISTIC", "1")
    g = torch.Generator().manual_seed(1)
    data = ImageData("fashion-mnist", torch.randint(0, 256, (512, 1, 28, 28), generator=g, dtype=torch.uint8),
                     torch.arange(512) % 10, [str(i) for i in range(10)], (0.5,), (0.25,))
    config = config_from_preset("smoke", dataset="fashion-mnist", device=DEVICE, amp=True, amp_dtype="bfloat16",
                                max_images=None, epochs=4, nopts=4, checkpoint_dir=str(tmp_path))

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    try:
        straight = train(dataclasses.replace(config, checkpoint_dir=None), data, progress=False)
        with pytest.raises(KeyboardInterrupt):
            train(config, data, progress=False, callback=stop_after_two)
        resumed = train(config, data, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(resumed.history) == 4
    assert torch.equal(straight.labels, resumed.labels)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
