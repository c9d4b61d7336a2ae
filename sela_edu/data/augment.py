"""The paper's augmentations: as batched tensor operations for in-memory sets, as torchvision
per-image pipelines (:func:`folder_transform`) for image files.

SeLa trains with random resized crops (scale 0.2 to 1), random greyscale (p = 0.2), colour jitter
(0.4) and horizontal flips, then normalises. torchvision applies these to one PIL image at a time,
which on a 2-core machine costs more than the network itself on 32 px images. Here every image of a
batch gets its own random parameters, but the work is done for the whole batch at once, on whatever
device the batch lives on:

* the crop (and the flip, a negative x scale) is one ``affine_grid`` + ``grid_sample`` call;
* greyscale, brightness, contrast, saturation and hue are per-image blends and 3 x 3 colour matrices.

Random parameters are always drawn on the CPU from a ``torch.Generator`` and then moved to the
batch's device, so a seed gives the same augmentations on CPU and GPU. On a GPU they travel as one
packed tensor, copied from pinned memory without waiting, and the constants (luma weights, colour
matrices, mean and std) are made once per device: augmenting a batch never makes the host wait for the GPU.

Differences from torchvision, on purpose:

* the crop is bilinear ``grid_sample`` without antialiasing (torchvision's ``Resize`` antialiases
  PIL images); at the kit's small image sizes this hardly matters;
* the jitter operations run in a fixed order (brightness, contrast, saturation, hue), where
  torchvision shuffles them per image;
* hue is approximate: a rotation of the chroma plane in YIQ space, not a shift of H in HSV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: ITU-R 601 luma weights, as torchvision's ``rgb_to_grayscale`` uses.
_LUMA = (0.299, 0.587, 0.114)

# RGB <-> YIQ, for the approximate hue rotation.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

#: (name, values, dtype, device) -> the constant as a tensor there: ``torch.tensor(..., device=cuda)`` copies
#: from the host and waits for the copy, so every batch would make the host wait for the GPU.
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(values, dtype: torch.dtype, device: torch.device, shape=None) -> torch.Tensor:
    """``torch.tensor(values, dtype, device)`` (viewed as ``shape``), made once per device and dtype.

    ``values``: a tuple of numbers, or a CPU tensor (kept by identity: the module's fixed matrices).
    On the CPU the tensor is made afresh, exactly as before, and not kept."""
    if device.type == "cpu":
        t = values.to(dtype=dtype) if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
        return t if shape is None else t.view(shape)
    key = (id(values) if isinstance(values, torch.Tensor) else values, dtype, device, shape)
    t = _CONSTANTS.get(key)
    if t is None:
        t = values.to(device, dtype) if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype, device=device)
        t = t if shape is None else t.view(shape)
        if len(_CONSTANTS) > 256:  # a bounded cache: a handful of (mean, std) pairs and devices in practice
            _CONSTANTS.clear()
        _CONSTANTS[key] = t
    return t


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without making the host wait (on CUDA: pinned memory, non-blocking
    copy, ordered on the current stream); elsewhere ``t.to(device)``."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (0..255) becomes float32 in [0, 1]; a float batch is taken to be in [0, 1] already."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not torch.is_floating_point(x):
        raise ValueError(f"images must be uint8 or floating point, got dtype {x.dtype}")
    return x.float()


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for an N x C x H x W (or C x H x W) batch; uint8 is scaled to [0, 1] first."""
    x = to_float(x)
    channels = x.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got {len(mean)} and {len(std)}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    shape = (channels, 1, 1)
    m = _constant(tuple(float(v) for v in mean), x.dtype, x.device, shape)
    s = _constant(tuple(float(v) for v in std), x.dtype, x.device, shape)
    return (x - m) / s


def plain_transform(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], size: int | None = None
) -> torch.Tensor:
    """The evaluation transform for in-memory batches: to float, (optionally) resize to ``size``, normalise.

    Used when computing labels and features. Images already at ``size`` are not touched.
    """
    x = to_float(x)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalise(x, mean, std)


class CenterUpsample(nn.Module):
    """torchvision's ``Resize(round(size * 256 / 224))`` + ``CenterCrop(size)`` for in-memory batches.

    The official CIFAR code feeds 32 px images to the ImageNet AlexNet this way: the central 224/256 of
    each image (28 of 32 pixels) at ``size`` x ``size``, then normalised. Called like a
    :class:`BatchAugment` (``generator`` is accepted and unused: nothing is random).
    """

    def __init__(self, size: int, *, mean: Sequence[float], std: Sequence[float], resize: int | None = None) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.size = int(size)
        self.resize = round(self.size * 256 / 224) if resize is None else int(resize)
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least the crop size ({self.size})")
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = F.interpolate(to_float(x), size=(self.resize, self.resize), mode="bilinear", align_corners=False,
                          antialias=True)
        top = (self.resize - self.size) // 2
        return normalise(x[..., top:top + self.size, top:top + self.size], self.mean, self.std)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luma of an N x 3 x H x W batch."""
    w = _constant(_LUMA, x.dtype, x.device, (1, 3, 1, 1))
    return (x * w).sum(dim=1, keepdim=True)


def _check_range(name: str, pair: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    a, b = float(pair[0]), float(pair[1])
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must be a range (min, max) with {low} <= min <= max <= {high}, got {pair}")
    return a, b


class BatchAugment(nn.Module):
    """Per-image random augmentation of a whole batch at once (the paper's pipeline, batched).

    Args:
        size: output height and width (square crops, as in the paper).
        scale: range of the crop's area as a fraction of the image (paper: 0.2 to 1).
        ratio: range of the crop's aspect ratio (torchvision's default 3/4 to 4/3).
        flip: random horizontal flip with probability 1/2 (off for digits and house numbers).
        grayscale: probability of turning an image grey (colour images only).
        brightness, contrast, saturation: jitter strengths as in ``torchvision.transforms.ColorJitter``;
            the factor is drawn uniformly from [1 - s, 1 + s]. Brightness and contrast also apply to
            one-channel images; saturation, hue and greyscale only to three-channel ones.
        hue: hue jitter in [0, 0.5]; the shift is drawn from [-hue, hue] turns, applied as a rotation of
            the YIQ chroma plane (an approximation of torchvision's HSV hue shift).
        mean, std: per-channel normalisation applied last (None: no normalisation).

    Call it on an N x C x H x W batch, uint8 (0..255) or float ([0, 1]), on any device; it returns
    float32 N x C x size x size on the same device. Pass ``generator`` for reproducible draws.
    """

    def __init__(
        self,
        size: int,
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        grayscale: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.size = int(size)
        self.scale = _check_range("scale", scale, 1e-6, 1.0)
        self.ratio = _check_range("ratio", ratio, 1e-6, math.inf)
        self.flip = bool(flip)
        if not 0.0 <= grayscale <= 1.0:
            raise ValueError(f"grayscale is a probability in [0, 1], got {grayscale}")
        self.grayscale = float(grayscale)
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} jitter must be in [0, 1] (factor drawn from [1-s, 1+s]), got {value}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            float(brightness), float(contrast), float(saturation), float(hue))
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)

    def extra_repr(self) -> str:
        return (f"size={self.size}, scale={self.scale}, flip={self.flip}, grayscale={self.grayscale}, "
                f"jitter=({self.brightness}, {self.contrast}, {self.saturation}, {self.hue})")

    # --- random parameters (CPU generator, so a seed means the same thing on every device) ---

    def _uniform(self, n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low

    def crop_boxes(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N x 4 crops (centre x, centre y, half width, half height) in normalised [-1, 1] coordinates.

        Like torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of (area, log-ratio) per
        image, the first that fits is used; images where none fits get the central crop at the
        clamped ratio. The draws are made for all images at once.
        """
        tries = 10
        area = height * width
        s = self._uniform(n * tries, *self.scale, generator).view(n, tries) * area
        log_r = self._uniform(n * tries, math.log(self.ratio[0]), math.log(self.ratio[1]), generator)
        r = torch.exp(log_r).view(n, tries)
        w = torch.sqrt(s * r).round()
        h = torch.sqrt(s / r).round()
        ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
        first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.zeros(n, dtype=torch.long))
        w = w.gather(1, first[:, None]).squeeze(1)
        h = h.gather(1, first[:, None]).squeeze(1)
        # Fallback: the whole image at the ratio clamped into range (torchvision's rule).
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw, fh = round(height * self.ratio[1]), height
        else:
            fw, fh = width, height
        none_fit = ~ok.any(dim=1)
        w = torch.where(none_fit, torch.full_like(w, fw), w)
        h = torch.where(none_fit, torch.full_like(h, fh), h)
        # Top-left corner uniform over the valid integer positions (none_fit: centred).
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        left = torch.floor(u[:, 0] * (width - w + 1))
        top = torch.floor(u[:, 1] * (height - h + 1))
        left = torch.where(none_fit, torch.round((width - w) / 2), left)
        top = torch.where(none_fit, torch.round((height - h) / 2), top)
        # Pixel box -> normalised coordinates (align_corners=False: the image spans [-1, 1]).
        cx = (left + w / 2) / width * 2 - 1
        cy = (top + h / 2) / height * 2 - 1
        return torch.stack([cx, cy, w / width, h / height], dim=1).float()

    def sample_params(
        self, n: int, channels: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """All random parameters for a batch of ``n`` images (CPU tensors), in a fixed draw order."""
        params = {"box": self.crop_boxes(n, height, width, generator)}
        params["flip"] = (torch.rand(n, generator=generator) < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
        colour = channels == 3
        params["grey"] = (torch.rand(n, generator=generator) < self.grayscale) if colour else torch.zeros(n, dtype=torch.bool)
        params["brightness"] = self._uniform(n, 1 - self.brightness, 1 + self.brightness, generator).float()
        params["contrast"] = self._uniform(n, 1 - self.contrast, 1 + self.contrast, generator).float()
        params["saturation"] = self._uniform(n, 1 - self.saturation, 1 + self.saturation, generator).float()
        params["hue"] = self._uniform(n, -self.hue, self.hue, generator).float()
        return params

    # --- the operations ---

    def crop(self, x: torch.Tensor, box: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Resample every image's box to ``size`` x ``size`` in one ``grid_sample`` call; flip by negating x scale."""
        n = x.shape[0]
        box = box.to(x.device, x.dtype)
        sign = 1.0 - 2.0 * flip.to(x.device, x.dtype)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = box[:, 2] * sign
        theta[:, 0, 2] = box[:, 0]
        theta[:, 1, 1] = box[:, 3]
        theta[:, 1, 2] = box[:, 1]
        grid = F.affine_grid(theta, [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def colour(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Greyscale, then brightness, contrast, saturation, hue (fixed order), each clamped to [0, 1]."""
        dev, dt = x.device, x.dtype
        per = lambda key: p[key].to(dev, dt).view(-1, 1, 1, 1)  # noqa: E731
        colour = x.shape[1] == 3
        if colour and self.grayscale > 0:
            x = torch.where(p["grey"].to(dev).view(-1, 1, 1, 1), _grey(x).expand_as(x), x)
        if self.brightness > 0:
            x = (x * per("brightness")).clamp_(0, 1)
        if self.contrast > 0:
            lum = _grey(x) if colour else x
            m = lum.mean(dim=(1, 2, 3), keepdim=True)
            c = per("contrast")
            x = (c * x + (1 - c) * m).clamp_(0, 1)
        if colour and self.saturation > 0:
            s = per("saturation")
            x = (s * x + (1 - s) * _grey(x)).clamp_(0, 1)
        if colour and self.hue > 0:
            angle = p["hue"].to(dev, dt) * (2 * math.pi)
            cos, sin = torch.cos(angle), torch.sin(angle)
            rot = torch.zeros(x.shape[0], 3, 3, dtype=dt, device=dev)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
            rot[:, 2, 1], rot[:, 2, 2] = sin, cos
            mat = _constant(_YIQ_TO_RGB, dt, dev) @ rot @ _constant(_RGB_TO_YIQ, dt, dev)  # N x 3 x 3
            x = torch.einsum("nij,njhw->nihw", mat, x).clamp_(0, 1)
        return x

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BatchAugment needs an N x C x H x W batch, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        if self.mean is not None and len(self.mean) != c:
            raise ValueError(f"this augmentation normalises {len(self.mean)} channels, the batch has {c}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("pass a CPU torch.Generator: parameters are drawn on the CPU for every device")
        x = to_float(x)
        if n == 0:
            return x.new_zeros(0, c, self.size, self.size)
        p = self.sample_params(n, c, h, w, generator)
        if x.device.type != "cpu":
            p = params_to_device(p, x.device)
        x = self.crop(x, p["box"], p["flip"])
        x = self.colour(x, p)
        if self.mean is not None:
            x = normalise(x, self.mean, self.std)
        return x

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The matching evaluation transform: resize to ``size`` if needed, normalise."""
        x = to_float(x)
        if self.mean is None:
            if tuple(x.shape[-2:]) != (self.size, self.size):
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
            return x
        return plain_transform(x, self.mean, self.std, self.size)


#: The order of the columns of :func:`params_to_device`'s packed tensor after the box's four.
_PACKED = ("flip", "grey", "brightness", "contrast", "saturation", "hue")


def params_to_device(p: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's random parameters (:meth:`BatchAugment.sample_params`) on ``device`` in one copy that the
    host does not wait for: packed as float32 columns (box, then :data:`_PACKED`; the flags as 0 / 1, read
    back exactly), instead of one waiting copy per parameter."""
    packed = torch.cat([p["box"].float(), torch.stack([p[k].float() for k in _PACKED], dim=1)], dim=1)
    packed = to_device_async(packed, device)
    out = {"box": packed[:, :4]}
    for i, key in enumerate(_PACKED):
        column = packed[:, 4 + i]
        out[key] = column > 0.5 if p[key].dtype == torch.bool else column
    return out


def folder_transform(train: bool, mean: Sequence[float], std: Sequence[float], size: int = 224):
    """torchvision per-image transforms for image files: the paper's training pipeline, or the plain one.

    Training: RandomResizedCrop(size, scale=(0.2, 1)), RandomGrayscale(0.2), ColorJitter(0.4, 0.4, 0.4,
    0.4), RandomHorizontalFlip, ToTensor, Normalize. Plain: Resize(size * 256 / 224), CenterCrop(size),
    ToTensor, Normalize.
    """
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if train:
        return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomGrayscale(0.2),
                          T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip(), *norm])
    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *norm])
