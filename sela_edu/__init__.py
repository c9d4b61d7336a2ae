"""sela-edu: a teaching and reproduction kit for SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020).

The names a notebook or a script needs, each from the sub-package that holds it::

    from sela_edu import self_label, train, config_from_preset, load_dataset, evaluate, nmi

* :mod:`sela_edu.labelling`: the label step (optimal transport to equal-sized clusters);
* :mod:`sela_edu.training`: configuration, presets, the training loop and its methods;
* :mod:`sela_edu.data`, :mod:`sela_edu.models`, :mod:`sela_edu.evaluation`;
* :mod:`sela_edu.ot`: general entropic optimal transport (notebook 01);
* :mod:`sela_edu.apps`: label a folder, assign new images, the authors' models, VOC;
* :mod:`sela_edu.course`: what the notebooks call around the science (profiles, runner, exercises).

Names load on first use, so ``import sela_edu`` (and the command line) stay quick.
"""

from importlib import import_module

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "self_label": "labelling", "SelfLabelResult": "labelling", "ScoreBuffer": "labelling",
    "sinkhorn": "ot",
    "TrainConfig": "training", "PRESETS": "training", "config_from_preset": "training", "train": "training",
    "transfer_labels": "training", "random_init_model": "training", "initial_labels": "training",
    "subset_indices": "training", "kmeans_labels": "training",
    "export_labels_csv": "training", "read_labels_csv": "training", "read_path_labels_csv": "training",
    "load_dataset": "data", "make_loader": "data", "available": "data", "how_to_get": "data",
    "ensure_dataset": "data",
    "build_model": "models",
    "evaluate": "evaluation", "score_dataset": "evaluation", "knn_accuracy": "evaluation",
    "linear_probe": "evaluation", "weighted_knn": "evaluation",
    "nmi": "evaluation.metrics", "adjusted_nmi": "evaluation.metrics", "ari": "evaluation.metrics",
    "cluster_accuracy": "evaluation.metrics", "cluster_size_spread": "evaluation.metrics",
    "browse": "course.views.browser", "compare": "course.views.verdicts",
    "label_folder": "apps", "assign_folder": "apps",
    "list_released": "apps.pretrained", "load_released": "apps.pretrained",
    "torchrun_command": "cli",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
