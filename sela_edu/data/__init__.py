"""Data sets and loaders: the digits, Fashion-MNIST, CIFAR-10/100, SVHN, ImageNet and image folders.

* :mod:`.datasets`: names, the containers (:class:`ImageData`, :class:`FolderData`) and :func:`load_dataset`.
* :mod:`.loaders`: seeded, shardable loaders of ``(x, targets, index)`` batches (:func:`make_loader`).
* :mod:`.augment`: the paper's augmentations, batched on the device or per image file;
  :mod:`.augment_defaults`: which of them each data set trains with (:func:`default_augment`).
* :mod:`.imbalance`: seeded imbalanced subsets.
* :mod:`.download`: whether a data set is under the data root, and its download with a short timeout.

Which data set the course's CPU notebooks use is a course decision: :func:`sela_edu.course.cpu_dataset`.
"""

from sela_edu.data.augment import folder_transform
from sela_edu.data.augment_defaults import default_augment
from sela_edu.data.datasets import (DATASET_INFO, DATASET_NAMES, FolderData, ImageData, IndexedImageFiles,
                                    load_dataset)
from sela_edu.data.download import available, ensure_dataset, how_to_get
from sela_edu.data.imbalance import heavy_imbalance, imbalanced_indices, light_imbalance
from sela_edu.data.loaders import FolderLoader, Loader, TensorLoader, epoch_indices, make_loader

__all__ = ["DATASET_NAMES", "DATASET_INFO", "ImageData", "IndexedImageFiles", "FolderData", "load_dataset",
           "default_augment", "folder_transform", "epoch_indices", "Loader", "TensorLoader", "FolderLoader",
           "make_loader", "imbalanced_indices", "light_imbalance", "heavy_imbalance", "available", "how_to_get",
           "ensure_dataset"]
