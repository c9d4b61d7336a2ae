"""Evaluation of learnt representations and clusters: the one loop that scores a data set with a model
(:mod:`.scoring`), the one evaluation protocol and its parts, weighted kNN and linear probe
(:mod:`.protocol`), and the clustering metrics (:mod:`.metrics`).
"""

from .scoring import DatasetScores, score_dataset
from .protocol import (
    Evaluation,
    evaluate,
    weighted_knn,
    knn_accuracy,
    pca_project,
    linear_probe,
    LinearProbe,
    LinearProbeResult,
)

__all__ = ["DatasetScores", "score_dataset", "Evaluation", "evaluate", "weighted_knn", "knn_accuracy", "pca_project",
           "linear_probe", "LinearProbe", "LinearProbeResult"]
