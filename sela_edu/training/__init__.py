"""Training: configuration and presets, the loop that alternates label steps and SGD, the methods
(SeLa, k-means pseudo-labels, supervised, +Rot), checkpoints, distributed runs and label transfer.
"""

from .trainer import (
    TrainConfig,
    TrainResult,
    StopTraining,
    PRESETS,
    METHODS,
    SCHEDULES,
    config_from_preset,
    train,
    relabel,
    relabel_schedule,
    initial_labels,
    kmeans_relabel,
    compute_features,
    random_init_model,
    build_for_config,
    transfer_labels,
    subset_indices,
    resolve_arch,
    plain_loader,
    training_augment,
)
from .baselines import kmeans_labels
from .labels_io import (
    export_labels_csv,
    read_labels_csv,
    export_path_labels_csv,
    read_path_labels_csv,
    read_released_labels_csv,
    read_any_labels_csv,
)

__all__ = ["TrainConfig", "TrainResult", "StopTraining", "PRESETS", "METHODS", "SCHEDULES", "config_from_preset", "train", "relabel", "relabel_schedule", "initial_labels", "kmeans_relabel", "compute_features", "random_init_model", "build_for_config", "transfer_labels", "subset_indices", "resolve_arch", "plain_loader", "training_augment", "kmeans_labels", "export_labels_csv", "read_labels_csv", "export_path_labels_csv", "read_path_labels_csv", "read_released_labels_csv", "read_any_labels_csv"]
