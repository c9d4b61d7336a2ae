"""Evaluation of learnt representations and clusters: features of a frozen network, the weighted kNN
and linear-probe protocols (:mod:`.protocol`) and the clustering metrics (:mod:`.metrics`).
"""

from .protocol import (
    extract_features,
    weighted_knn,
    knn_accuracy,
    pca_project,
    linear_probe,
    LinearProbe,
    LinearProbeResult,
    frozen_evaluation,
)

__all__ = ["extract_features", "weighted_knn", "knn_accuracy", "pca_project", "linear_probe", "LinearProbe", "LinearProbeResult", "frozen_evaluation"]
