"""Multi-crop (SwAV, Caron et al. 2020): every image seen as a few large crops and several small ones in
one step, each crop a batched tensor augmentation (:class:`~sela_edu.data.augment.BatchAugment`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sela_edu.data.augment import BatchAugment

#: SwAV's small crops: 5-14 % of the image's area (``--min_scale_crops 0.14 0.05 --max_scale_crops 1. 0.14``).
SWAV_SMALL_SCALE = (0.05, 0.14)


class MultiCrop(nn.Module):
    """``large`` crops by the data set's training augmentation ``base`` (at its size and area range, or at
    ``large_scale``), then ``small`` crops of ``small_size`` px and ``small_scale`` of the area with the same
    flips and jitter. Called like a BatchAugment on an N x C x H x W batch, it returns the list of crops,
    large first: ``large + small`` tensors of N images each, drawn from ``generator`` in that order."""

    def __init__(self, base: BatchAugment, large: int = 2, small: int = 0, *, small_size: int | None = None,
                 small_scale: Sequence[float] = SWAV_SMALL_SCALE, large_scale: Sequence[float] | None = None) -> None:
        super().__init__()
        for name, value, minimum in (("large", large, 1), ("small", small, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} crops must be an integer >= {minimum}, got {value!r}")
        if small and (small_size is None or int(small_size) < 1 or int(small_size) > base.size):
            raise ValueError(f"small crops need small_size between 1 and the large crops' {base.size} px, "
                             f"got {small_size!r}")
        self.large_crop = _like(base, base.size, large_scale or base.scale)
        self.small_crop = _like(base, int(small_size), small_scale) if small else None
        self.large, self.small = int(large), int(small)

    def extra_repr(self) -> str:
        small = f", {self.small} x {self.small_crop.size} px at {self.small_crop.scale}" if self.small else ""
        return f"{self.large} x {self.large_crop.size} px at {self.large_crop.scale}{small}"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        crops = [self.large_crop(x, generator=generator) for _ in range(self.large)]
        return crops + [self.small_crop(x, generator=generator) for _ in range(self.small)]

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.large_crop.plain(x)


def _like(base: BatchAugment, size: int, scale: Sequence[float]) -> BatchAugment:
    """``base``'s augmentation at another output size and area range."""
    return BatchAugment(size, scale=tuple(scale), ratio=base.ratio, flip=base.flip, grayscale=base.grayscale,
                        brightness=base.brightness, contrast=base.contrast, saturation=base.saturation,
                        hue=base.hue, mean=base.mean, std=base.std)


__all__ = ["MultiCrop", "SWAV_SMALL_SCALE"]
