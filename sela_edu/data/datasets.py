"""Data sets that give every image's index, imbalanced subsets, and loaders with the paper's augmentation.

SeLa needs each image's position in the data set: the labels it optimises are a table indexed by image,
and every training batch looks its labels up there. Every loader here therefore yields
``(x, targets, index)``.

Two kinds of data set:

* :class:`ImageData` holds a small set (digits, Fashion-MNIST, CIFAR-10/100, SVHN) as one uint8
  N x C x H x W tensor. Its loader gathers a batch by index and augments it *as a batch* on the
  training device (:class:`sela_edu.data.augment.BatchAugment`): on a 2-core machine, per-image PIL
  transforms would cost more than the network.
* :class:`FolderData` wraps a folder of image files (ImageNet, or any ``ImageFolder`` layout). Images
  are decoded and augmented one by one by ``DataLoader`` workers with torchvision transforms, the
  paper's pipeline at 224 px.

Files live under :func:`sela_edu.settings.data_root` (``$SELA_DATA_ROOT``, default ``data/``), in
torchvision's layouts:

* ``fashion-mnist``: ``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
* ``cifar10``: ``<root>/cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``)
* ``cifar100``: ``<root>/cifar-100-python/`` (``train``, ``test``, ``meta``)
* ``svhn``: ``<root>/svhn/{train,test}_32x32.mat``
* ``imagenet``: ``<root>/imagenet/{train,val}/<class>/<image>``, one sub-folder per class
* ``digits`` ships with scikit-learn; ``folder`` takes the folder itself as ``root``.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sela_edu.data.augment import BatchAugment, plain_transform
from sela_edu.settings import data_root

DATASET_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagenet", "folder")

#: Per data set: channel mean and std (in [0, 1] units, over the training images), image size, classes.
#: Digits' values were measured on scikit-learn's 1797 images after scaling 0..16 to 0..255.
DATASET_INFO: dict[str, dict] = {
    "digits": dict(mean=(0.3053,), std=(0.3759,), image_size=8, num_channels=1, num_classes=10),
    "fashion-mnist": dict(mean=(0.2860,), std=(0.3530,), image_size=28, num_channels=1, num_classes=10),
    "cifar10": dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), image_size=32,
                    num_channels=3, num_classes=10),
    "cifar100": dict(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), image_size=32,
                     num_channels=3, num_classes=100),
    "svhn": dict(mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), image_size=32,
                 num_channels=3, num_classes=10),
    "imagenet": dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), image_size=224,
                     num_channels=3, num_classes=1000),
    # Any image folder: ImageNet statistics are the usual default for natural photographs.
    "folder": dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), image_size=224,
                   num_channels=3, num_classes=None),
}

_SPLITS = {
    "digits": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn": ("train", "test", "extra"),
    "imagenet": ("train", "val"),
}

#: Seed and test fraction of the fixed digits split (stratified, so every class is in both parts).
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


def _as_index_tensor(indices, n: int) -> torch.Tensor:
    """Integer positions (list, array, tensor) or a boolean mask of length ``n`` as an int64 tensor, range-checked."""
    idx = torch.as_tensor(np.asarray(indices) if not torch.is_tensor(indices) else indices)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise ValueError(f"a boolean mask must have length {n}, got shape {tuple(idx.shape)}")
        return idx.nonzero().flatten()
    if idx.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if torch.is_floating_point(idx) or idx.dim() != 1:
        raise ValueError(f"indices must be a 1-D list of integers, got dtype {idx.dtype} and shape {tuple(idx.shape)}")
    idx = idx.long()
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices must lie in [0, {n}), got values from {int(idx.min())} to {int(idx.max())}")
    return idx


@dataclass
class ImageData:
    """A small data set held in memory: one uint8 N x C x H x W tensor and its int64 targets."""

    name: str
    images: torch.Tensor
    targets: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {self.images.dtype} "
                             f"of shape {tuple(self.images.shape)}")
        self.targets = torch.as_tensor(self.targets, dtype=torch.long)
        if self.targets.shape != (self.images.shape[0],):
            raise ValueError(f"need one target per image: {self.images.shape[0]} images, "
                             f"targets of shape {tuple(self.targets.shape)}")
        if len(self.mean) != self.num_channels or len(self.std) != self.num_channels:
            raise ValueError(f"mean and std need one value per channel ({self.num_channels})")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices) -> ImageData:
        """The images at ``indices`` (positions or a boolean mask), in that order; positions are renumbered."""
        idx = _as_index_tensor(indices, len(self))
        return replace(self, images=self.images[idx], targets=self.targets[idx])


class IndexedImageFiles(Dataset):
    """Image files with targets; ``dataset[i]`` is ``(transform(image), target, i)``.

    When ``seed`` is set, the random transform of image ``i`` is seeded from ``(seed, epoch, i)``
    (inside ``torch.random.fork_rng``, so the caller's random state is untouched): the augmentation
    then depends only on seed, epoch and image, not on the number of workers.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable | None = None,
                 seed: int | None = None, epoch: int = 0) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def with_transform(self, transform: Callable | None, seed: int | None = None, epoch: int = 0) -> IndexedImageFiles:
        return IndexedImageFiles(self.samples, transform, seed, epoch)

    def __getitem__(self, i: int):
        from torchvision.datasets.folder import default_loader

        path, target = self.samples[i]
        image = default_loader(path)
        if self.transform is not None:
            if self.seed is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_derive_seed(self.seed, self.epoch, int(i)))
                    image = self.transform(image)
        return image, target, i


@dataclass
class FolderData:
    """A folder of image files (ImageNet, any ImageFolder layout), decoded on the fly.

    ``dataset[i]`` gives ``(image tensor after the plain transform, target, i)``; :func:`make_loader`
    swaps in the training transform when ``train=True``.
    """

    name: str
    dataset: IndexedImageFiles
    targets: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int = 224
    num_channels: int = 3

    def __len__(self) -> int:
        return len(self.dataset)

    def subset(self, indices) -> FolderData:
        idx = _as_index_tensor(indices, len(self)).tolist()
        samples = [self.dataset.samples[i] for i in idx]
        return replace(self, dataset=IndexedImageFiles(samples, self.dataset.transform), targets=self.targets[idx])


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, one of {DATASET_NAMES}; got {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; valid names are {', '.join(DATASET_NAMES)}")
    return key


def _check_split(name: str, split: str) -> None:
    valid = _SPLITS[name]
    if split not in valid:
        hint = " (ImageNet's held-out part is 'val')" if name == "imagenet" and split == "test" else ""
        raise ValueError(f"split {split!r} does not exist for {name}; use one of {valid}{hint}")


def _missing_error(name: str, folder: Path, files: Sequence[str], how: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name}: missing file(s) {', '.join(files)} in folder {folder}. {how} "
        f"(The data root is $SELA_DATA_ROOT, else data/ in the kit; or pass root=...)"
    )


def _download_hint(name: str) -> str:
    return (f"To fetch them, run `load_dataset({name!r}, download=True)` on a machine with internet "
            f"and copy the folder here.")


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, *, verify: bool = True) -> ImageData | FolderData:
    """Load a data set by name; see :data:`DATASET_NAMES` and the module docstring for the file layout.

    Args:
        name: one of :data:`DATASET_NAMES`.
        split: ``"train"`` or ``"test"`` (SVHN also ``"extra"``; ImageNet ``"train"`` or ``"val"``).
            Digits' split is a fixed, stratified, seeded 80/20 split of scikit-learn's 1797 images.
            Not used for ``"folder"``.
        root: data root (default :func:`sela_edu.settings.data_root`); for ``"folder"``, the image
            folder itself (one sub-folder per class).
        download: let torchvision download missing files (Fashion-MNIST, CIFAR, SVHN).
        verify: check torchvision's MD5 sums of CIFAR and SVHN files (as torchvision always does).
            ``verify=False`` accepts any file in the right format and place: for copies re-packed by
            hand, and for the small stand-in files the tests write.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or split.
        FileNotFoundError: files missing; the message names them, their folder and how to get them.
        RuntimeError: a file fails its MD5 check (``verify=True``).
    """
    key = _canonical_name(name)
    if key == "folder":
        if root is None:
            raise ValueError("load_dataset('folder') needs root=<folder with one sub-folder per class>")
        return _load_folder(key, Path(root), "the folder given as root")
    _check_split(key, split)
    base = Path(root) if root is not None else data_root()
    if key == "digits":
        return _load_digits(split)
    if key == "imagenet":
        folder = base / "imagenet" / split
        how = ("ImageNet cannot be downloaded automatically: get ILSVRC-2012 from https://image-net.org, "
               f"and arrange {folder} with one sub-folder of images per class (the val images too).")
        if download:
            raise ValueError(how)
        return _load_folder(key, folder, how)
    if key == "fashion-mnist":
        return _load_fashion_mnist(base, split, download)
    if key in ("cifar10", "cifar100"):
        return _load_cifar(key, base, split, download, verify)
    return _load_svhn(base, split, download, verify)


def _load_digits(split: str) -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    positions = np.arange(len(images))
    train, test = train_test_split(positions, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                   stratify=digits.target)
    keep = np.sort(train if split == "train" else test)
    info = DATASET_INFO["digits"]
    return ImageData("digits", torch.from_numpy(images[keep]).unsqueeze(1),
                     torch.from_numpy(digits.target[keep].astype(np.int64)),
                     [str(c) for c in range(10)], info["mean"], info["std"])


def _load_fashion_mnist(base: Path, split: str, download: bool) -> ImageData:
    from torchvision.datasets import FashionMNIST

    prefix = "train" if split == "train" else "t10k"
    folder = base / "FashionMNIST" / "raw"
    files = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    if not download:
        # torchvision wants all four files even for one split; name every missing one.
        every = [f"{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
        missing = [f for f in every if not (folder / f).is_file()]
        if missing:
            raise _missing_error("fashion-mnist", folder, missing, _download_hint("fashion-mnist"))
    ds = FashionMNIST(root=str(base), train=split == "train", download=download)
    info = DATASET_INFO["fashion-mnist"]
    return ImageData("fashion-mnist", ds.data.to(torch.uint8).unsqueeze(1).contiguous(),
                     torch.as_tensor(ds.targets, dtype=torch.long), list(ds.classes), info["mean"], info["std"])


def _unverified(cls):
    """A torchvision CIFAR/SVHN class whose integrity check only asks that the files exist.

    torchvision compares every file's MD5 with the official archive's, so any other copy in the same
    format (re-packed, or the small files the tests write) is refused. Used for ``verify=False`` only.
    """

    class Unverified(cls):
        def _check_integrity(self) -> bool:
            if hasattr(self, "train_list"):
                paths = [os.path.join(self.root, self.base_folder, f) for f, _ in self.train_list + self.test_list]
            else:
                paths = [os.path.join(self.root, self.filename)]
            return all(os.path.isfile(p) for p in paths)

        def _load_meta(self) -> None:  # CIFAR only: the same as torchvision's, minus the MD5 check
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    Unverified.__name__ = Unverified.__qualname__ = f"Unverified{cls.__name__}"
    return Unverified


def _check_md5(name: str, folder: Path, files: Sequence[tuple[str, str]]) -> None:
    from torchvision.datasets.utils import check_integrity

    bad = [f for f, md5 in files if not check_integrity(str(folder / f), md5)]
    if bad:
        raise RuntimeError(f"{name}: file(s) {', '.join(bad)} in {folder} do not match the official MD5 sums "
                           f"(corrupted download?). Delete and download again, or pass verify=False to "
                           f"accept copies in the same format.")


def _load_cifar(key: str, base: Path, split: str, download: bool, verify: bool) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if key == "cifar10" else CIFAR100
    folder = base / cls.base_folder
    listed = [tuple(x) for x in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]
    if not download:
        missing = [f for f, _ in listed if not (folder / f).is_file()]
        if missing:
            raise _missing_error(key, folder, missing, _download_hint(key))
        if verify:
            _check_md5(key, folder, listed)
    ds = (cls if verify else _unverified(cls))(root=str(base), train=split == "train", download=download)
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    info = DATASET_INFO[key]
    return ImageData(key, images, torch.as_tensor(ds.targets, dtype=torch.long), list(ds.classes),
                     info["mean"], info["std"])


def _load_svhn(base: Path, split: str, download: bool, verify: bool) -> ImageData:
    from torchvision.datasets import SVHN

    folder = base / "svhn"
    filename, md5 = SVHN.split_list[split][1:]
    if not download:
        if not (folder / filename).is_file():
            raise _missing_error("svhn", folder, [filename], _download_hint("svhn"))
        if verify:
            _check_md5("svhn", folder, [(filename, md5)])
    ds = (SVHN if verify else _unverified(SVHN))(root=str(folder), split=split, download=download)
    info = DATASET_INFO["svhn"]
    return ImageData("svhn", torch.from_numpy(np.ascontiguousarray(ds.data)),
                     torch.as_tensor(ds.labels, dtype=torch.long), [str(c) for c in range(10)],
                     info["mean"], info["std"])


def _load_folder(key: str, folder: Path, how: str) -> FolderData:
    from torchvision.datasets import ImageFolder

    if not folder.is_dir():
        raise FileNotFoundError(f"{key}: folder {folder} does not exist; expected one sub-folder of images "
                                f"per class in it. {how}")
    try:
        base = ImageFolder(str(folder))
    except FileNotFoundError as err:  # no class folders, or no image files in them
        raise FileNotFoundError(f"{key}: {err} Expected {folder}/<class>/<image file> "
                                f"(.jpg, .png, ...). {how}") from err
    info = DATASET_INFO[key]
    dataset = IndexedImageFiles(base.samples, folder_transform(False, info["mean"], info["std"], info["image_size"]))
    return FolderData(key, dataset, torch.as_tensor(base.targets, dtype=torch.long), list(base.classes),
                      info["mean"], info["std"], info["image_size"], 3)


# --------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------


def default_augment(name: str, *, size: int | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> BatchAugment:
    """The kit's training augmentation for a data set, as a :class:`BatchAugment` that also normalises.

    * digits: crops of 60-100 % of the area, no flip (8 px digits; a flipped 2 is not a 2);
    * fashion-mnist: crops of 20-100 %, flip, brightness and contrast 0.4 (stronger crops and the
      photometric jitter lifted NMI after half an epoch from 0.36 to 0.42 in benchmarks/recipe_search.py);
    * cifar10, cifar100, imagenet, folder: the paper's, crops of 20-100 %, greyscale p = 0.2, colour jitter
      0.4 (hue approximate, see :mod:`sela_edu.data.augment`), flip;
    * svhn: the same without flip (house numbers read left to right).

    ``size``, ``mean`` and ``std`` default to the data set's own.
    """
    key = _canonical_name(name)
    info = DATASET_INFO[key]
    size = info["image_size"] if size is None else size
    mean = info["mean"] if mean is None else mean
    std = info["std"] if std is None else std
    if key == "digits":
        return BatchAugment(size, scale=(0.6, 1.0), flip=False, mean=mean, std=std)
    if key == "fashion-mnist":
        return BatchAugment(size, scale=(0.2, 1.0), flip=True, brightness=0.4, contrast=0.4, mean=mean, std=std)
    return BatchAugment(size, scale=(0.2, 1.0), flip=key != "svhn", grayscale=0.2, brightness=0.4,
                        contrast=0.4, saturation=0.4, hue=0.4, mean=mean, std=std)


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


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from several integers (seed, epoch, rank or image), well spread by SeedSequence."""
    a, b = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


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


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
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

    def _device_images(self) -> torch.Tensor:
        # Small sets fit on a GPU whole (CIFAR's 50k images are 150 MB of uint8): copy once, gather there.
        if self._images is None or self._images.device != self.device:
            self._images = self.data.images.to(self.device)
        return self._images

    def __iter__(self):
        images = self._device_images()
        targets = self.data.targets
        order = self.indices()
        g = torch.Generator().manual_seed(_derive_seed(self.seed, self.epoch, self.rank))
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = images[index.to(self.device)]
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
        dataset = self.data.dataset.with_transform(self.transform, seed=_derive_seed(self.seed, 1), epoch=self.epoch)
        if self.distributed:
            sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                         shuffle=self.shuffle, seed=self.seed, drop_last=False)
            sampler.set_epoch(self.epoch)
        else:
            sampler = _ListSampler(self)
        loader = DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                            drop_last=self.drop_last, pin_memory=self.device.type == "cuda",
                            # DataLoader draws its workers' base seed from this, not from the global stream
                            generator=torch.Generator().manual_seed(_derive_seed(self.seed, self.epoch, 2)))
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
        rank, world_size = _dist_rank_world(rank, world_size)
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


# --------------------------------------------------------------------------------------------------
# Imbalance
# --------------------------------------------------------------------------------------------------


def imbalanced_indices(targets, removed_fractions: Sequence[float] | Mapping[int, float], seed: int = 0) -> torch.Tensor:
    """Sorted positions kept after removing ``removed_fractions[c]`` of class ``c``'s images at random.

    Class ``c`` with ``n_c`` images loses ``floor(f_c * n_c + 1/2)`` of them, chosen by a generator
    seeded with ``seed``: the same subset every time. ``removed_fractions`` is a sequence (one value
    per class, at least as many as the largest target + 1) or a mapping ``{class: fraction}`` (classes
    not named lose nothing).
    """
    t = torch.as_tensor(targets).long().flatten()
    if t.numel() and t.min() < 0:
        raise ValueError("targets must be non-negative class numbers")
    num_classes = int(t.max()) + 1 if t.numel() else 0
    if isinstance(removed_fractions, Mapping):
        fractions = [0.0] * num_classes
        for c, f in removed_fractions.items():
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"class {c} in removed_fractions does not occur in targets (0..{num_classes - 1})")
            fractions[int(c)] = f
    else:
        fractions = list(removed_fractions)
        if len(fractions) < num_classes:
            raise ValueError(f"removed_fractions has {len(fractions)} values, targets have {num_classes} classes")
    for c, f in enumerate(fractions):
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= float(f) <= 1.0:
            raise ValueError(f"removed fraction for class {c} must be in [0, 1], got {f!r}")
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(t.numel(), dtype=torch.bool)
    for c in range(num_classes):
        members = (t == c).nonzero().flatten()
        n_remove = int(math.floor(float(fractions[c]) * members.numel() + 0.5))
        # Always draw the permutation so one class's fraction does not change another class's subset.
        perm = torch.randperm(members.numel(), generator=g)
        keep[members[perm[:n_remove]]] = False
    return keep.nonzero().flatten()


def light_imbalance(targets, seed: int = 0, cls: int = -1) -> torch.Tensor:
    """Half of one class removed (default the last: CIFAR-10's truck, as in the paper); kept positions."""
    t = torch.as_tensor(targets).long()
    num_classes = int(t.max()) + 1
    if not -num_classes <= cls < num_classes:
        raise ValueError(f"cls must be a class in [0, {num_classes}) (or negative from the end), got {cls}")
    fractions = [0.0] * num_classes
    fractions[cls] = 0.5
    return imbalanced_indices(t, fractions, seed)


def heavy_imbalance(targets, seed: int = 0, step: float = 0.1, max_fraction: float = 1.0) -> torch.Tensor:
    """Class ``c`` loses ``step * (c + 1)`` of its images (capped at ``max_fraction``); kept positions.

    The paper's words: "10 % of the first class removed, 20 % of the second, and so on". Read
    literally with 10 classes and ``step = 0.1``, the last class (CIFAR-10's truck) loses 100 % and
    disappears; that literal reading is the default. ``max_fraction=0.9`` keeps a tenth of the last
    class instead (the "capped below 100 %" reading).
    """
    if not 0.0 <= step <= 1.0:
        raise ValueError(f"step must be in [0, 1], got {step}")
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
    t = torch.as_tensor(targets).long()
    num_classes = int(t.max()) + 1
    fractions = [min(step * (c + 1), max_fraction) for c in range(num_classes)]
    return imbalanced_indices(t, fractions, seed)


# --------------------------------------------------------------------------------------------------
# Availability, download with a short timeout, and the CPU notebooks' fallback to the digits
# --------------------------------------------------------------------------------------------------

#: Data sets torchvision can download, with the host its first mirror is on (checked before downloading).
DOWNLOAD_HOSTS: dict[str, tuple[str, int]] = {
    "fashion-mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "cifar100": ("www.cs.toronto.edu", 443),
    "svhn": ("ufldl.stanford.edu", 80),
}
#: Seconds to wait for a download host before giving up (an offline machine is not held up).
DOWNLOAD_TIMEOUT = 4.0
#: The lessons whose point needs real images: on the digits they run, but show little.
FASHION_LESSONS = ("02 (the objective on real images), 03 (SeLa against k-means pseudo-labels and a random "
                   "network), 05 (imbalance) and 06 (label transfer)")


def _expected_file(key: str, base: Path) -> Path | None:
    return {
        "digits": None,  # ships with scikit-learn
        "fashion-mnist": base / "FashionMNIST" / "raw" / "train-images-idx3-ubyte",
        "cifar10": base / "cifar-10-batches-py" / "data_batch_1",
        "cifar100": base / "cifar-100-python" / "train",
        "svhn": base / "svhn" / "train_32x32.mat",
        "imagenet": base / "imagenet" / "train",
    }.get(key, None)


def available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether ``load_dataset(name, root=root)`` would find its files: a cheap look at the paths this
    module reads (it does not open them). Digits are always available; ``"folder"`` when ``root`` is
    a folder."""
    key = _canonical_name(name)
    if key == "folder":
        return root is not None and Path(root).expanduser().is_dir()
    base = Path(root).expanduser() if root else data_root()
    path = _expected_file(key, base)
    if path is None:
        return True
    if key == "fashion-mnist":
        raw = path.parent
        return all((raw / f"{p}-{k}-ubyte").is_file() for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
    return path.exists()


def how_to_get(name: str) -> str:
    """One sentence on fetching a data set by hand."""
    key = _canonical_name(name)
    if key == "imagenet":
        return ("ImageNet (ILSVRC-2012) cannot be downloaded automatically: get it from https://image-net.org "
                "and arrange <data root>/imagenet/train/<class>/<images> and .../val/<class>/<images>.")
    return (f"On a machine with internet, `python -c \"from sela_edu.data import ensure_dataset; "
            f"ensure_dataset('{key}')\"` downloads it into the data root ($SELA_DATA_ROOT, default data/); "
            f"or copy the files there.")


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included)."""
    import socket
    import threading

    result: dict[str, bool] = {}

    def _try() -> None:  # getaddrinfo ignores socket timeouts: run it where we can stop waiting
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    worker = threading.Thread(target=_try, daemon=True)
    worker.start()
    worker.join(timeout)
    return result.get("ok", False)


def _download(key: str, base: Path, timeout: float) -> None:
    """Let torchvision download ``key`` into ``base`` (its progress bar shows), every socket operation
    limited to ``timeout`` seconds."""
    import socket

    from torchvision import datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        if key == "fashion-mnist":
            datasets.FashionMNIST(root=str(base), train=True, download=True)
            datasets.FashionMNIST(root=str(base), train=False, download=True)
        elif key in ("cifar10", "cifar100"):
            cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
            cls(root=str(base), train=True, download=True)
        elif key == "svhn":
            for split in ("train", "test"):
                datasets.SVHN(root=str(base / "svhn"), split=split, download=True)
        else:  # pragma: no cover - guarded by the caller
            raise ValueError(f"{key} cannot be downloaded automatically")
    finally:
        socket.setdefaulttimeout(previous)


def ensure_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool | None = None,
                   timeout: float | None = None, log: Callable[[str], None] | None = print) -> bool:
    """Make a data set available under the data root; return whether it is.

    Files already there: True at once. Otherwise, for a data set torchvision can fetch (Fashion-MNIST
    is about 30 MB) and unless ``download`` is False or ``$SELA_OFFLINE`` is set: check within
    ``timeout`` seconds (default :data:`DOWNLOAD_TIMEOUT`) that the download host answers, then let
    torchvision download it with its progress bar, each network operation limited to the same timeout.
    Any failure is reported through ``log`` and gives False, quickly; nothing is raised.
    """
    from sela_edu.settings import offline

    key = _canonical_name(name)
    base = Path(root).expanduser() if root else data_root()
    if available(key, base):
        return True
    if download is None:
        download = not offline()
    if not download or key not in DOWNLOAD_HOSTS:
        return False
    wait = DOWNLOAD_TIMEOUT if timeout is None else float(timeout)
    host, port = DOWNLOAD_HOSTS[key]
    say = log or (lambda message: None)
    if not _reachable(host, port, wait):
        say(f"{key}: the download server ({host}) did not answer within {wait:g} s (offline?)")
        return False
    say(f"{key}: downloading into the data root ({base}) ...")
    try:
        base.mkdir(parents=True, exist_ok=True)
        _download(key, base, wait)
    except Exception as exc:  # network errors, timeouts, a full disk: all mean "not available"
        say(f"{key}: the download failed ({type(exc).__name__}: {str(exc)[:160]})")
        return False
    return available(key, base)


def fallback_notice(wanted: str = "fashion-mnist") -> str:
    """The notice printed when a run falls back to the digits."""
    wanted = {"fashion-mnist": "Fashion-MNIST"}.get(wanted, wanted)
    return (f"NOTICE: {wanted} is not in the data root and could not be downloaded, so this run uses "
            f"scikit-learn's digits (1797 images of 8 x 8 px). Lessons {FASHION_LESSONS} need {wanted} "
            f"to show what they teach; on the digits a random network is already a strong feature and the "
            f"differences between methods are a few test images. {how_to_get(wanted)}")


def cpu_dataset(profile: str, dataset: str | None = None, data_root: str | os.PathLike | None = None, *,
                log: Callable[[str], None] | None = print) -> str:
    """The data set of the CPU notebooks (02, 03, 05, 06) and of ``sela-edu run``.

    ``dataset`` when given; the digits at the ``smoke`` profile (seconds, for tests); otherwise
    Fashion-MNIST from the data root, downloaded there when it is missing (:func:`ensure_dataset`), and
    only when neither works the digits, with :func:`fallback_notice` printed through ``log``.
    """
    if dataset:
        return _canonical_name(dataset)
    if profile == "smoke":
        return "digits"
    if ensure_dataset("fashion-mnist", data_root, log=log):
        return "fashion-mnist"
    if log:
        log(fallback_notice("fashion-mnist"))
    return "digits"
