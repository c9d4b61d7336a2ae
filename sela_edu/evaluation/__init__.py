"""Evaluation of learnt representations and clusters: the one loop that scores a data set with a model
(:mod:`.scoring`), the one evaluation protocol and its parts, weighted kNN and linear probe
(:mod:`.protocol`), and the clustering metrics (:mod:`.metrics`).
"""

from .scoring import DatasetScores, score_dataset
from .protocol import (
    Evaluation,
    evaluate,
    extract_features,
    weighted_knn,
    knn_accuracy,
    pca_project,
    linear_probe,
    LinearProbe,
    LinearProbeResult,
    frozen_evaluation,
)

__all__ = ["DatasetScores", "score_dataset", "Evaluation", "evaluate", "extract_features", "weighted_knn",
           "knn_accuracy", "pca_project", "linear_probe", "LinearProbe", "LinearProbeResult", "frozen_evaluation"]
