"""Loaders that yield ``(x, targets, index)``: seeded per epoch, sharded like ``DistributedSampler``.

:class:`TensorLoader` gathers in-memory batches by index and augments them as a batch on the training
device; :class:`FolderLoader` decodes image files in ``DataLoader`` workers with per-image transforms.

On a GPU, :class:`TensorLoader` keeps the whole set there as uint8 (one copy per loader, made at its first
epoch), copies each epoch's order once, and gathers, converts, augments and normalises every batch there:
nothing of a batch comes from the host but its few random augmentation parameters (one non-blocking copy),
and nothing in it makes the host wait for the GPU. ``index`` and ``targets`` stay on the host (``index``
pinned on CUDA, so that moving it to the GPU does not wait either).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from sela_edu.data.augment import folder_transform, plain_transform
from sela_edu.data.augment_defaults import default_augment
from sela_edu.data.datasets import DATASET_NAMES, FolderData, ImageData, derive_seed


def epoch_indices(n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                  world_size: int = 1) -> torch.Tensor:
    """This rank's image positions for one epoch, with ``torch.utils.data.DistributedSampler`` semantics.

    Shuffled with a generator seeded by ``seed + epoch`` (the same permutation on every rank); when
    ``world_size > 1`` the list is padded by repeating its start to a multiple of ``world_size`` and
    rank ``r`` takes positions ``r, r + world_size, ...``. The padding makes every rank see the same
    number of images, hence the same number of batches (DistributedDataParallel hangs otherwise); the
    price is that up to ``world_size - 1`` images appear twice in an epoch.
    """
    if shuffle:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            reps = math.ceil((total - n) / max(n, 1))
            order = torch.cat([order, order.repeat(reps)[: total - n]])
        order = order[rank:total:world_size]
    return order


def dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's (rank, world size): the ones given, else torch.distributed's; ValueError when neither
    is there or the pair is impossible."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True needs torch.distributed to be initialised "
                             "(or rank= and world_size= passed explicitly)")
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


class Loader:
    """Iterable of ``(x, targets, index)`` batches; ``len()`` is the number of batches; ``set_epoch(e)`` reseeds."""

    def __init__(self, data, batch_size: int, *, train: bool, shuffle: bool, device: torch.device, seed: int,
                 drop_last: bool, rank: int, world_size: int) -> None:
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.shuffle = shuffle
        self.device = device
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: shuffle order and augmentation are a function of (seed, epoch)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def indices(self) -> torch.Tensor:
        """The positions this rank visits this epoch, in order (before dropping a short last batch)."""
        return epoch_indices(len(self.data), shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
                             rank=self.rank, world_size=self.world_size)

    @property
    def num_samples(self) -> int:
        """Images per epoch on this rank (padded in distributed mode)."""
        return math.ceil(len(self.data) / self.world_size) if self.world_size > 1 else len(self.data)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


class TensorLoader(Loader):
    """Loader for :class:`ImageData`: gathers uint8 batches by index, augments them as a batch on ``device``."""

    def __init__(self, data: ImageData, batch_size: int, *, augment: Callable, **kw) -> None:
        super().__init__(data, batch_size, **kw)
        self.augment = augment
        self._images: torch.Tensor | None = None
        self._images_for: torch.device | None = None

    def _device_images(self) -> torch.Tensor:
        # Small sets fit on a GPU whole (CIFAR's 50k images are 150 MB of uint8): copy once, gather there.
        # Kept per asked-for device: torch.device("cuda") != the copy's "cuda:0", which would copy every epoch.
        if self._images is None or self._images_for != self.device:
            self._images = self.data.images.to(self.device)
            self._images_for = self.device
        return self._images

    def _epoch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's positions on the host (what the batches' ``index`` is cut from) and on the device
        (what the images are gathered with): one copy per epoch, never one per batch. On CUDA the host
        copy is pinned, so that a consumer's ``index.to(device, non_blocking=True)`` does not wait."""
        order = self.indices()
        if self.device.type != "cuda":
            return order, order.to(self.device)
        order = order.pin_memory()
        return order, order.to(self.device, non_blocking=True)

    def __iter__(self):
        images = self._device_images()
        targets = self.data.targets
        order, device_order = self._epoch_order()
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank))
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = images[device_order[b * self.batch_size:(b + 1) * self.batch_size]]
            if self.train:
                x = self.augment(x, generator=g)
            else:
                x = plain_transform(x, self.data.mean, self.data.std)
            yield x, targets[index], index


class _ListSampler(Sampler[int]):
    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def __iter__(self):
        return iter(self.loader.indices().tolist())

    def __len__(self) -> int:
        return self.loader.num_samples


class FolderLoader(Loader):
    """Loader for :class:`FolderData`: a torch ``DataLoader`` with per-image torchvision transforms."""

    def __init__(self, data: FolderData, batch_size: int, *, transform: Callable, num_workers: int,
                 distributed: bool, **kw) -> None:
        super().__init__(data, batch_size, **kw)
        self.transform = transform
        self.num_workers = num_workers
        self.distributed = distributed

    def __iter__(self):
        from torch.utils.data.distributed import DistributedSampler

        # A fresh dataset per epoch carries (seed, epoch) to the workers, which are started per epoch.
        dataset = self.data.dataset.with_transform(self.transform, seed=derive_seed(self.seed, 1), epoch=self.epoch)
        if self.distributed:
            sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                         shuffle=self.shuffle, seed=self.seed, drop_last=False)
            sampler.set_epoch(self.epoch)
        else:
            sampler = _ListSampler(self)
        loader = DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                            drop_last=self.drop_last, pin_memory=self.device.type == "cuda",
                            # DataLoader draws its workers' base seed from this, not from the global stream
                            generator=torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 2)))
        for x, target, index in loader:
            yield x.to(self.device, non_blocking=True), target.long(), index.long()


def make_loader(data: ImageData | FolderData, batch_size: int, *, train: bool, shuffle: bool | None = None,
                device: str | torch.device = "cpu", seed: int = 0, drop_last: bool | None = None,
                distributed: bool = False, num_workers: int = 0, augment: Callable | None = None,
                rank: int | None = None, world_size: int | None = None) -> Loader:
    """Batches ``(x, targets, index)``: x float32 normalised on ``device``, targets and index int64.

    ``index`` holds positions in ``data``. ``train=True`` applies the training augmentation
    (``augment``, default :func:`default_augment` for the data set: a :class:`BatchAugment` called as
    ``augment(x, generator=g)`` for :class:`ImageData`, a torchvision transform of one PIL image for
    :class:`FolderData`); ``train=False`` the plain transform used for labels and features.

    ``shuffle`` defaults to ``train``; ``drop_last`` defaults to ``train`` (a short last batch is
    dropped while training, where BatchNorm dislikes tiny batches; never when computing labels).
    Shuffle order and augmentation are a function of ``seed`` and the epoch set by
    ``loader.set_epoch(e)``.

    ``distributed=True`` shards like ``DistributedSampler`` (see :func:`epoch_indices`): rank and
    world size come from ``torch.distributed`` unless ``rank``/``world_size`` are given. Each rank
    gets ``ceil(N / world_size)`` images, padded by repetition, so every rank runs the same number of
    batches, as DistributedDataParallel requires; the union over ranks covers every image.
    ``num_workers`` is used by :class:`FolderData` only (in-memory batches need no workers).
    """
    if not isinstance(data, (ImageData, FolderData)):
        raise ValueError(f"make_loader needs an ImageData or FolderData, got {type(data).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if len(data) == 0:
        raise ValueError("the data set is empty")
    shuffle = train if shuffle is None else bool(shuffle)
    drop_last = train if drop_last is None else bool(drop_last)
    device = torch.device(device)
    if distributed:
        rank, world_size = dist_rank_world(rank, world_size)
    elif rank not in (None, 0) or world_size not in (None, 1):
        raise ValueError("rank and world_size are for distributed=True")
    else:
        rank, world_size = 0, 1
    common = dict(train=train, shuffle=shuffle, device=device, seed=seed, drop_last=drop_last,
                  rank=rank, world_size=world_size)
    if isinstance(data, ImageData):
        if augment is None and train:
            if data.name not in DATASET_NAMES:
                raise ValueError(f"no default augmentation for data set {data.name!r}; pass augment=")
            augment = default_augment(data.name, size=data.image_size, mean=data.mean, std=data.std)
        return TensorLoader(data, batch_size, augment=augment, **common)
    transform = augment if (train and augment is not None) else folder_transform(train, data.mean, data.std,
                                                                                   data.image_size)
    return FolderLoader(data, batch_size, transform=transform, num_workers=num_workers,
                        distributed=distributed, **common)
