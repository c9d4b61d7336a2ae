"""Clustering and classification scores: how well do cluster labels match the true classes?

All functions accept 1-D torch tensors (any device), NumPy arrays or lists of integer labels. The
scores that compare two labellings are invariant to renaming clusters, so a perfect clustering with
permuted cluster ids scores 1.

* ``nmi``, ``adjusted_nmi``, ``ari``: scikit-learn's normalised / adjusted mutual information and
  adjusted Rand index (the three numbers the SeLa paper reports on ImageNet).
* ``cluster_accuracy``: accuracy after the best one-to-one matching of clusters to classes
  (Hungarian algorithm).
* ``purity``: accuracy when every cluster takes its majority class (many-to-one).
* ``label_change``, ``label_change_nmi``, ``cluster_size_spread``: training diagnostics (how much the
  pseudo-labels moved between two label optimisations, and how equal the clusters are).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


def as_label_array(labels, name: str = "labels") -> np.ndarray:
    """A 1-D int64 NumPy copy of ``labels`` (tensor, array or list); ValueError if that is not possible."""
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of labels, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer labels; found non-integer or non-finite values")
    return arr.astype(np.int64)


def _pair(labels_true, labels_pred, names=("labels_true", "labels_pred")) -> tuple[np.ndarray, np.ndarray]:
    a = as_label_array(labels_true, names[0])
    b = as_label_array(labels_pred, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {a.size} and {b.size}")
    return a, b


def nmi(labels_true, labels_pred, *, average_method: str = "arithmetic") -> float:
    """Normalised mutual information in [0, 1] (scikit-learn; arithmetic mean of the entropies)."""
    a, b = _pair(labels_true, labels_pred)
    return float(skm.normalized_mutual_info_score(a, b, average_method=average_method))


def adjusted_nmi(labels_true, labels_pred, *, average_method: str = "arithmetic") -> float:
    """Adjusted mutual information: NMI corrected for chance (0 for random labels, 1 for a perfect match)."""
    a, b = _pair(labels_true, labels_pred)
    return float(skm.adjusted_mutual_info_score(a, b, average_method=average_method))


def ari(labels_true, labels_pred) -> float:
    """Adjusted Rand index (0 for random labels, 1 for a perfect match, can be negative)."""
    a, b = _pair(labels_true, labels_pred)
    return float(skm.adjusted_rand_score(a, b))


def _contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    """``clusters x classes`` count matrix over the ids that occur (sparse ids are compacted)."""
    return skm.cluster.contingency_matrix(labels_pred, labels_true)


def cluster_accuracy(labels_true, labels_pred, *, return_mapping: bool = False):
    """Accuracy of the clustering under the best one-to-one matching of clusters to classes.

    The matching maximises the number of correctly labelled images (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment`` on the cluster x class count matrix). It also works when the
    number of clusters K differs from the number of classes C: only ``min(K, C)`` pairs are matched,
    and every image in an unmatched cluster (K > C) or of an unmatched class (K < C) counts as wrong.
    Many-to-one matching (several clusters to one class) is *not* allowed: that is :func:`purity`.
    So with K > C the accuracy is capped at the fraction of images in the C matched clusters.

    Returns:
        The accuracy in [0, 1]; with ``return_mapping=True`` also a dict ``{cluster id: class id}``.
    """
    a, b = _pair(labels_true, labels_pred)
    clusters, cluster_idx = np.unique(b, return_inverse=True)
    classes, class_idx = np.unique(a, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (cluster_idx, class_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    acc = float(counts[rows, cols].sum() / a.size)
    if return_mapping:
        return acc, {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}
    return acc


def purity(labels_true, labels_pred) -> float:
    """Fraction of images whose class is the majority class of their cluster (many-to-one matching).

    Purity rises with the number of clusters (one image per cluster gives 1), so compare it only
    between clusterings with the same K.
    """
    a, b = _pair(labels_true, labels_pred)
    return float(_contingency(a, b).max(axis=1).sum() / a.size)


def label_change(old, new) -> float:
    """Fraction of images whose pseudo-label id differs between two labellings (raw, not matched).

    Cluster ids are arbitrary, so a relabelling that only renames clusters changes many ids; the
    paper tracks the NMI between successive labellings for that reason (:func:`label_change_nmi`).
    Between two label optimisations of one training run the ids are tied to the same head outputs,
    so the raw fraction is meaningful there too.
    """
    a, b = _pair(old, new, ("old", "new"))
    return float(np.mean(a != b))


def label_change_nmi(old, new) -> float:
    """NMI between two labellings of the same images: 1 when they are the same partition up to renaming."""
    a, b = _pair(old, new, ("old", "new"))
    return float(skm.normalized_mutual_info_score(a, b))


def cluster_size_spread(labels, k: int) -> dict[str, float]:
    """How equal the K cluster sizes are, relative to the equipartition size N/K.

    Returns a dict with ``min``, ``max`` and ``std`` of ``size / (N / K)`` (so a perfect
    equipartition gives min = max = 1 and std = 0) and ``empty``, the number of clusters with no image.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    arr = as_label_array(labels, "labels")
    if arr.min() < 0 or arr.max() >= k:
        raise ValueError(f"labels must lie in [0, k) = [0, {k}), found labels from {int(arr.min())} to {int(arr.max())}")
    rel = np.bincount(arr, minlength=k) / (arr.size / k)
    return {"min": float(rel.min()), "max": float(rel.max()), "std": float(rel.std()),
            "empty": int(np.sum(rel == 0))}


__all__ = ["nmi", "adjusted_nmi", "ari", "cluster_accuracy", "purity", "label_change", "label_change_nmi",
           "cluster_size_spread", "as_label_array"]
