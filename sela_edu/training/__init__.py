"""Training: configuration and presets, the loop that alternates label steps and SGD, the methods
(SeLa, k-means pseudo-labels, supervised, +Rot), checkpoints, distributed runs and label transfer.

One job per module: ``config`` (TrainConfig and its field names; the K-per-head rule re-exported from
:mod:`sela_edu.models`), ``presets`` (named settings, as data), ``schedule`` (when to relabel, the first
labels, the image subset), ``run_loaders`` (the loaders a run reads), ``relabel`` (score a data set into
the solver and solve: relabelling; the features k-means clusters), ``labelstep`` (SeLa's or k-means' label
step), ``build`` (a run's network, optimiser and loaders), ``state`` (the run's records, RNG and
checkpoints: bit-exact resume), ``loop`` (:func:`train`), ``monitor`` (kNN while training), ``transfer``
(label transfer), ``baselines`` (k-means), ``checkpoint``, ``torchrun`` (process groups and collectives
of a run under torchrun), ``runtime`` (device synchronisation, progress bars), ``labels_io``.
"""

from .config import METHODS, SCHEDULES, TrainConfig, clusters_per_head
from .presets import PRESETS, config_from_preset, folder_config, list_presets
from .schedule import initial_labels, relabel_schedule, subset_indices
from .run_loaders import plain_loader, training_augment
from .relabelling import compute_features, relabel
from .labelstep import kmeans_relabel
from .build import build_for_config, random_init_model, resolve_arch
from .loop import StopTraining, TrainResult, train
from .transfer import transfer_labels
from .baselines import kmeans_labels
from .labels_io import (
    export_labels_csv,
    read_labels_csv,
    export_path_labels_csv,
    read_path_labels_csv,
    read_released_labels_csv,
    read_any_labels_csv,
)

__all__ = ["TrainConfig", "TrainResult", "StopTraining", "PRESETS", "METHODS", "SCHEDULES", "config_from_preset",
           "list_presets", "folder_config", "clusters_per_head", "train", "relabel", "relabel_schedule",
           "initial_labels", "kmeans_relabel", "compute_features", "random_init_model", "build_for_config",
           "transfer_labels", "subset_indices", "resolve_arch", "plain_loader", "training_augment", "kmeans_labels",
           "export_labels_csv", "read_labels_csv", "export_path_labels_csv", "read_path_labels_csv",
           "read_released_labels_csv", "read_any_labels_csv"]
