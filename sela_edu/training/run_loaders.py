"""The loaders a run reads: the loader of its kind of data (images, or a frozen backbone's feature
vectors), un-augmented batches in data order (what the label step and the features see), the training
augmentation at the config's image size, and this rank's rows without the shard padding."""

from __future__ import annotations

import torch

from sela_edu.settings import pick_device
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.config import TrainConfig


def kept_rows(loader) -> int:
    """Rows of this rank's non-augmented pass that are real images, not the shard padding.

    make_loader pads the ordered list to a multiple of world_size and deals it out round robin, so
    rank r's k-th row is global position r + k * world_size; positions >= N are padding repeats.
    Leaving them out keeps the solver's equipartition over exactly N images.
    """
    n = len(loader.data)
    if loader.world_size <= 1:
        return n
    positions = loader.rank + torch.arange(loader.num_samples) * loader.world_size
    return int((positions < n).sum())


def kept_batches(loader):
    """This rank's ``(x, index)`` batches in loader order, without the shard padding (see :func:`kept_rows`)."""
    rows, filled = kept_rows(loader), 0
    for x, _, index in loader:
        take = min(index.shape[0], rows - filled)
        if take <= 0:
            break
        yield x[:take], index[:take].cpu()
        filled += take


def run_loader(data, batch_size: int, *, train: bool, num_workers: int = 0, **kw):
    """:func:`~sela_edu.data.make_loader` for images, :func:`~sela_edu.data.features.feature_loader` for
    the feature vectors of a frozen backbone (:class:`~sela_edu.data.features.FeatureData`): the trainer
    reads both kinds the same way. ``kw``: shuffle, device, seed, drop_last, distributed, augment."""
    from sela_edu.data import make_loader
    from sela_edu.data.features import FeatureData, feature_loader

    if isinstance(data, FeatureData):
        return feature_loader(data, batch_size, train=train, **kw)
    return make_loader(data, batch_size, train=train, num_workers=num_workers, **kw)


def scoring_loader(data, batch_size: int, device: torch.device, seed: int, num_workers: int):
    distributed = dist_utils.get_world_size() > 1
    return run_loader(data, batch_size, train=False, shuffle=False, device=device, seed=seed,
                      distributed=distributed, num_workers=num_workers)


def training_augment(config: TrainConfig, data):
    """The training augmentation of ``data`` at ``config.image_size`` (None: the loader's default), as
    :class:`~sela_edu.data.multicrop.MultiCrop` under multi-crop."""
    from sela_edu.data import ImageData, default_augment
    from sela_edu.data.multicrop import MultiCrop

    if not isinstance(data, ImageData):
        if config.multi_crop():
            raise ValueError(f"multi-crop augments in-memory images (ImageData) on the device; {type(data).__name__} "
                             "is read another way: set large_crops=1 and small_crops=0")
        return None
    if config.multi_crop():
        base = default_augment(data.name, size=config.image_size or data.image_size, mean=data.mean, std=data.std)
        return MultiCrop(base, config.large_crops, config.small_crops, small_size=config.small_crop_size,
                         small_scale=config.small_crop_scale, large_scale=config.large_crop_scale)
    if config.image_size is None or config.image_size == data.image_size:
        return None
    return default_augment(data.name, size=config.image_size, mean=data.mean, std=data.std)


def plain_loader(config: TrainConfig, data, batch_size: int, *, device=None, seed: int = 0,
                 distributed: bool | None = None):
    """Un-augmented batches in data order, as the config's network sees them (labels, features, kNN).

    With ``config.image_size`` set, in-memory images are upsampled as torchvision's Resize(size * 256 / 224)
    + CenterCrop(size) would (the official CIFAR code's test transform).
    """
    from sela_edu.data.augment import CenterUpsample
    from sela_edu.data import ImageData

    distributed = dist_utils.get_world_size() > 1 if distributed is None else distributed
    device = pick_device(config.device) if device is None else torch.device(device)
    common = dict(device=device, seed=seed, distributed=distributed, num_workers=config.num_workers)
    if config.image_size is None or not isinstance(data, ImageData) or config.image_size == data.image_size:
        return run_loader(data, batch_size, train=False, shuffle=False, **common)
    # the loader applies its "augment" to every batch when train=True; here it is a fixed transform
    upsample = CenterUpsample(config.image_size, mean=data.mean, std=data.std)
    return run_loader(data, batch_size, train=True, shuffle=False, drop_last=False, augment=upsample, **common)


__all__ = ['run_loader', 'plain_loader', 'training_augment', 'scoring_loader', 'kept_rows', 'kept_batches']
