"""Data sets and loaders: the digits, Fashion-MNIST, CIFAR-10/100, SVHN, ImageNet and image folders,
their augmentations, imbalanced subsets, availability and downloads.
"""

from .datasets import (
    DATASET_NAMES,
    DATASET_INFO,
    ImageData,
    IndexedImageFiles,
    FolderData,
    load_dataset,
    default_augment,
    folder_transform,
    epoch_indices,
    Loader,
    TensorLoader,
    FolderLoader,
    make_loader,
    imbalanced_indices,
    light_imbalance,
    heavy_imbalance,
    available,
    how_to_get,
    ensure_dataset,
    fallback_notice,
    cpu_dataset,
)

__all__ = ["DATASET_NAMES", "DATASET_INFO", "ImageData", "IndexedImageFiles", "FolderData", "load_dataset", "default_augment", "folder_transform", "epoch_indices", "Loader", "TensorLoader", "FolderLoader", "make_loader", "imbalanced_indices", "light_imbalance", "heavy_imbalance", "available", "how_to_get", "ensure_dataset", "fallback_notice", "cpu_dataset"]
