"""Feature vectors as a data set: what SeLa trains heads on when the backbone is frozen.

``sela-edu label --backbone`` computes a frozen network's features of every image once; the kit's
trainer then trains new heads on them as it trains a network on images. For that the features are a
data set of their own kind, with the same interface as :class:`~sela_edu.data.ImageData`:

* :class:`FeatureData` holds one float32 N x D matrix (the "images"), targets, and per-dimension mean
  and std (the "normalisation": every batch is standardised, as images are normalised per channel);
* :class:`FeatureNoise` is its training augmentation: Gaussian noise of a tenth of each dimension's
  spread within the batch, then dropout, then standardisation (the features are fixed, so this
  noise is what keeps the heads from memorising them);
* :class:`FeatureLoader` yields ``(x, targets, index)`` batches like the other loaders, seeded per epoch
  and sharded like ``DistributedSampler`` (:func:`feature_loader` builds one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sela_edu.data.datasets import as_index_tensor, derive_seed
from sela_edu.data.loaders import Loader, dist_rank_world


@dataclass
class FeatureData:
    """Feature vectors held in memory: one float32 N x D tensor, its int64 targets (-1: unknown), and the
    per-dimension mean and std every batch is standardised with."""

    name: str
    features: torch.Tensor
    targets: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        if not torch.is_floating_point(self.features) or self.features.dim() != 2:
            raise ValueError(f"features must be a float N x D tensor, got {self.features.dtype} "
                             f"of shape {tuple(self.features.shape)}")
        self.features = self.features.float()
        self.targets = torch.as_tensor(self.targets, dtype=torch.long)
        if self.targets.shape != (self.features.shape[0],):
            raise ValueError(f"need one target per feature vector: {self.features.shape[0]} vectors, "
                             f"targets of shape {tuple(self.targets.shape)}")
        self.mean, self.std = torch.as_tensor(self.mean).float(), torch.as_tensor(self.std).float()
        if self.mean.shape != (self.feature_dim,) or self.std.shape != (self.feature_dim,):
            raise ValueError(f"mean and std need one value per dimension ({self.feature_dim}), got shapes "
                             f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}")
        if not bool((self.std > 0).all()):
            raise ValueError("std must be positive in every dimension")

    @classmethod
    def from_features(cls, features: torch.Tensor, targets: torch.Tensor | None = None,
                      name: str = "features") -> FeatureData:
        """Features with their own mean and std (a dimension that never varies gets std 1: left as it is)."""
        features = torch.as_tensor(features).float()
        std = features.std(0) if features.shape[0] > 1 else torch.ones(features.shape[1:])
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        targets = torch.full((features.shape[0],), -1, dtype=torch.long) if targets is None else targets
        return cls(name, features, targets, features.mean(0), std)

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per dimension, on ``x``'s device (the plain transform: labels, final scores)."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def subset(self, indices) -> FeatureData:
        """The vectors at ``indices`` (positions or a boolean mask), in that order, with the same standardisation."""
        idx = as_index_tensor(indices, len(self))
        return FeatureData(self.name, self.features[idx], self.targets[idx], self.mean, self.std)


class FeatureNoise(nn.Module):
    """The training augmentation of feature vectors, called like a ``BatchAugment``: ``noise(x, generator=g)``.

    Adds Gaussian noise of ``noise`` times each dimension's std within the batch, zeroes a ``dropout``
    fraction of the values (scaling the others by 1 / (1 - dropout), as ``F.dropout``), then standardises
    with the data's mean and std. Noise and dropout act on the raw features, where a zero means "absent"
    for the ReLU features of a network.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, *, noise: float = 0.1, dropout: float = 0.2) -> None:
        super().__init__()
        if not noise >= 0:
            raise ValueError(f"noise must be a non-negative number, got {noise!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.noise, self.dropout = float(noise), float(dropout)
        self.mean, self.std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()

    def extra_repr(self) -> str:
        return f"noise={self.noise}, dropout={self.dropout}"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"FeatureNoise needs an N x D batch, got shape {tuple(x.shape)}")
        # random draws on the CPU from the loader's generator (as BatchAugment): the same seed gives the
        # same batches on every device, and a resumed run draws what an uninterrupted one would
        spread = x.std(0, keepdim=True) if x.shape[0] > 1 else torch.zeros_like(x[:1])
        x = x + self.noise * spread * torch.randn(x.shape, generator=generator).to(x.device)
        if self.dropout:
            keep = torch.rand(x.shape, generator=generator).to(x.device) >= self.dropout
            x = x * keep / (1 - self.dropout)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class FeatureLoader(Loader):
    """Loader for :class:`FeatureData`: gathers batches by index on ``device``; ``augment`` when training,
    standardised otherwise."""

    def __init__(self, data: FeatureData, batch_size: int, *, augment: Callable, **kw) -> None:
        super().__init__(data, batch_size, **kw)
        self.augment = augment
        self._features: torch.Tensor | None = None

    def _device_features(self) -> torch.Tensor:
        if self._features is None or self._features.device != self.device:
            self._features = self.data.features.to(self.device)
        return self._features

    def __iter__(self):
        features = self._device_features()
        order = self.indices()
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank))
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = features[index.to(self.device)]
            x = self.augment(x, generator=g) if self.train else self.data.standardise(x)
            yield x, self.data.targets[index], index


def feature_loader(data: FeatureData, batch_size: int, *, train: bool, shuffle: bool | None = None,
                   device: str | torch.device = "cpu", seed: int = 0, drop_last: bool | None = None,
                   distributed: bool = False, augment: Callable | None = None) -> FeatureLoader:
    """:func:`~sela_edu.data.make_loader` for feature vectors: the same arguments and defaults, and
    :class:`FeatureNoise` with the data's standardisation as the default training augmentation."""
    if not isinstance(data, FeatureData):
        raise ValueError(f"feature_loader needs a FeatureData, got {type(data).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if len(data) == 0:
        raise ValueError("the data set is empty")
    rank, world_size = dist_rank_world(None, None) if distributed else (0, 1)
    if augment is None and train:
        augment = FeatureNoise(data.mean, data.std)
    return FeatureLoader(data, batch_size, augment=augment, train=train,
                         shuffle=train if shuffle is None else bool(shuffle), device=torch.device(device), seed=seed,
                         drop_last=train if drop_last is None else bool(drop_last), rank=rank, world_size=world_size)


__all__ = ["FeatureData", "FeatureNoise", "FeatureLoader", "feature_loader"]
