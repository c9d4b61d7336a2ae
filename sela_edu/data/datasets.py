"""Data sets by name, each image with its index: the containers and the loader of each set's files.

SeLa needs each image's position in the data set: the labels it optimises are a table indexed by image,
and every training batch looks its labels up there. Every loader (:mod:`sela_edu.data.loaders`)
therefore yields ``(x, targets, index)``.

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

import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sela_edu.data.augment import folder_transform
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


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from several integers (seed, epoch, rank or image), well spread by SeedSequence."""
    a, b = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


def as_index_tensor(indices, n: int) -> torch.Tensor:
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
        idx = as_index_tensor(indices, len(self))
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
                    torch.manual_seed(derive_seed(self.seed, self.epoch, int(i)))
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
        idx = as_index_tensor(indices, len(self)).tolist()
        samples = [self.dataset.samples[i] for i in idx]
        return replace(self, dataset=IndexedImageFiles(samples, self.dataset.transform), targets=self.targets[idx])


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def normalise_name(text: str) -> str:
    """A name as the kit writes it, whatever the user typed: trimmed, lower case, ``-`` for ``_``
    (``" Fashion_MNIST"`` -> ``"fashion-mnist"``). Data sets, released models and backbones are looked up so."""
    return text.strip().lower().replace("_", "-")


def canonical_name(name: str) -> str:
    """The :data:`DATASET_NAMES` entry ``name`` means (:func:`normalise_name`, then the aliases
    ``fashionmnist``, ``cifar-10``, ``cifar-100``); ValueError listing the names for any other."""
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, one of {DATASET_NAMES}; got {name!r}")
    key = normalise_name(name)
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
    key = canonical_name(name)
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

    folder = base / "FashionMNIST" / "raw"
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
