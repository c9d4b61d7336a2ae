"""Tests for sela_edu.data.augment: batched random crops, flips, greyscale, colour jitter, normalisation."""

import pytest
import torch

from sela_edu.data.augment import BatchAugment, normalise, plain_transform


def _batch(n=16, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_output_shape_dtype_device(device, dtype):
    x = _batch(8, 3, 40, 30).to(device)
    if dtype is torch.float32:
        x = x.float() / 255
    aug = BatchAugment(24, grayscale=0.2, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4,
                       mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    y = aug(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == (8, 3, 24, 24)
    assert y.dtype == torch.float32
    assert y.device.type == device
    assert torch.isfinite(y).all()
    # normalised values of [0, 1] images stay within [(0 - 0.5) / 0.25, (1 - 0.5) / 0.25]
    assert y.min() >= -2 - 1e-5 and y.max() <= 2 + 1e-5


def test_same_generator_seed_same_output_and_different_seed_differs():
    x = _batch()
    aug = BatchAugment(32, grayscale=0.2, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(x, generator=torch.Generator().manual_seed(5))
    c = aug(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_parameters_differ_per_image():
    x = _batch(1).expand(8, -1, -1, -1).contiguous()
    y = BatchAugment(32)(x, generator=torch.Generator().manual_seed(0))
    flat = y.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 8


def test_full_crop_without_flip_is_identity():
    x = _batch(4)
    y = BatchAugment(32, scale=(1, 1), ratio=(1, 1), flip=False)(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, x.float() / 255, atol=1e-5)


def test_flip_really_flips():
    x = _batch(64)
    y = BatchAugment(32, scale=(1, 1), ratio=(1, 1), flip=True)(x, generator=torch.Generator().manual_seed(0))
    ref = x.float() / 255
    same = torch.isclose(y, ref, atol=1e-5).flatten(1).all(1)
    flipped = torch.isclose(y, ref.flip(-1), atol=1e-5).flatten(1).all(1)
    assert (same ^ flipped).all()          # every image is either itself or its mirror image
    assert 10 < int(flipped.sum()) < 54    # and about half are mirrored


def test_no_flip_option_never_flips():
    x = _batch(64)
    y = BatchAugment(32, scale=(1, 1), ratio=(1, 1), flip=False)(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, x.float() / 255, atol=1e-5)


def test_crop_is_an_exact_patch_at_matching_scale():
    # A crop of exactly 16 x 16 pixels resampled to 16 x 16 must copy pixels, not blur them.
    x = _batch(6, 3, 32, 32)
    y = BatchAugment(16, scale=(0.25, 0.25), ratio=(1, 1), flip=False)(x, generator=torch.Generator().manual_seed(3))
    ref = x.float() / 255
    for i in range(6):
        patches = ref[i].unfold(1, 16, 1).unfold(2, 16, 1)  # C x 17 x 17 x 16 x 16
        err = (patches - y[i][:, None, None]).abs().amax(dim=(0, 3, 4))
        assert err.min() < 1e-5


def test_crop_scale_bounds_area():
    aug = BatchAugment(32, scale=(0.2, 0.5))
    box = aug.crop_boxes(2000, 64, 48, torch.Generator().manual_seed(0))
    area = box[:, 2] * box[:, 3]          # fractions of width and height
    assert area.min() >= 0.2 - 0.05 and area.max() <= 0.5 + 0.05  # rounding to whole pixels
    assert (box[:, 2] <= 1).all() and (box[:, 3] <= 1).all()
    # the box stays inside the image
    assert (box[:, 0] - box[:, 2] >= -1 - 1e-6).all() and (box[:, 0] + box[:, 2] <= 1 + 1e-6).all()


def test_grayscale_makes_channels_equal():
    x = _batch(8)
    y = BatchAugment(32, scale=(1, 1), flip=False, grayscale=1.0)(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    expected = (x.float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert torch.allclose(y[:, 0], expected, atol=1e-5)


def test_hue_and_saturation_keep_grey_images_grey():
    grey = _batch(8, 1).expand(-1, 3, -1, -1).contiguous()
    y = BatchAugment(32, scale=(1, 1), flip=False, saturation=0.4, hue=0.5)(grey, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, grey.float() / 255, atol=1e-4)


def test_hue_changes_colour_images():
    x = _batch(8)
    y = BatchAugment(32, scale=(1, 1), flip=False, hue=0.3)(x, generator=torch.Generator().manual_seed(0))
    assert (y - x.float() / 255).abs().mean() > 0.01


def test_brightness_factor_range():
    x = torch.full((64, 3, 8, 8), 100, dtype=torch.uint8)
    y = BatchAugment(8, scale=(1, 1), flip=False, brightness=0.5)(x, generator=torch.Generator().manual_seed(0))
    factors = y[:, 0, 0, 0] / (100 / 255)
    assert factors.min() >= 0.5 - 1e-5 and factors.max() <= 1.5 + 1e-5
    assert factors.std() > 0.1


def test_one_channel_skips_colour_operations():
    x = _batch(8, 1, 28, 28)
    aug = BatchAugment(28, scale=(1, 1), flip=False, grayscale=1.0, saturation=0.4, hue=0.4)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, x.float() / 255, atol=1e-5)


def test_normalise_and_plain_transform():
    x = _batch(4)
    y = normalise(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    assert torch.allclose(y[:, 1], (x[:, 1].float() / 255 - 0.4) / 0.2)
    z = plain_transform(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), size=16)
    assert z.shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="one value per channel"):
        normalise(x, (0.5,), (0.2,))


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=(0.5, 0.2)), "scale"),
    (dict(scale=(0.0, 1.5)), "scale"),
    (dict(grayscale=1.5), "grayscale"),
    (dict(brightness=-0.1), "brightness"),
    (dict(hue=0.7), "hue"),
    (dict(mean=(0.5,)), "both mean and std"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchAugment(32, **kwargs)


def test_bad_batch_shape():
    with pytest.raises(ValueError, match="N x C x H x W"):
        BatchAugment(8)(torch.zeros(3, 8, 8))


# ------------------------------------------------------------------------------- the device path (GPU-free)


class _Copies:
    """Counts copies from the host to ``device`` (``Tensor.to`` from a CPU tensor) while installed."""

    def __init__(self, monkeypatch, device="meta"):
        self.count, self.device = 0, torch.device(device)
        original = torch.Tensor.to

        def counting_to(tensor, *args, **kwargs):
            out = original(tensor, *args, **kwargs)
            if tensor.device.type == "cpu" and out.device.type == self.device.type:
                self.count += 1
            return out

        monkeypatch.setattr(torch.Tensor, "to", counting_to)


def test_a_device_batch_takes_one_copy_from_the_host(monkeypatch):
    """On a device (the meta device stands in for a GPU here), a batch's random parameters arrive in one
    packed copy, and the constants (luma, colour matrices, mean and std) are made there once, not per batch."""
    aug = BatchAugment(24, grayscale=0.2, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4,
                       mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
    x = _batch(8).to("meta")
    g = torch.Generator().manual_seed(0)
    aug(x, generator=g)  # the first batch makes the constants
    copies = _Copies(monkeypatch)
    made = []
    original_tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(k.get("device")) or original_tensor(*a, **k))
    for _ in range(3):
        y = aug(x, generator=g)
    assert y.shape == (8, 3, 24, 24) and y.device.type == "meta"
    assert copies.count == 3, copies.count  # one per batch: the packed parameters
    assert not [d for d in made if d is not None and torch.device(d).type == "meta"]


def test_packed_parameters_are_the_drawn_ones_and_give_the_same_images():
    """The device path's one packed copy carries every parameter exactly: augmenting with the unpacked
    parameters gives the CPU path's images bit for bit."""
    from sela_edu.data.augment import params_to_device

    aug = BatchAugment(20, grayscale=0.3, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4)
    x = _batch(32).float() / 255
    p = aug.sample_params(32, 3, 32, 32, torch.Generator().manual_seed(3))
    q = params_to_device(p, torch.device("cpu"))
    assert p.keys() == q.keys()
    for key in p:
        assert q[key].dtype == p[key].dtype and torch.equal(q[key], p[key]), key
    direct = aug.colour(aug.crop(x, p["box"], p["flip"]), p)
    packed = aug.colour(aug.crop(x, q["box"], q["flip"]), q)
    assert torch.equal(direct, packed)


def test_normalise_on_a_device_makes_its_constants_once():
    from sela_edu.data import augment

    x = torch.rand(4, 3, 8, 8, device="meta")
    mean, std = (0.11, 0.22, 0.33), (0.5, 0.6, 0.7)
    normalise(x, mean, std)
    keys = set(augment._CONSTANTS)
    normalise(x, list(mean), list(std))  # the same numbers as a list: the same constants
    assert set(augment._CONSTANTS) == keys
    # the CPU keeps nothing: its tensors are made as before
    before = len(augment._CONSTANTS)
    normalise(torch.rand(4, 3, 8, 8), (0.9, 0.8, 0.7), std)
    assert len(augment._CONSTANTS) == before
