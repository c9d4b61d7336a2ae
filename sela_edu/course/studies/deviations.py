"""Where a kit configuration departs from the official CIFAR code's settings (yukimasano/self-label,
``cifar.py``; the settings themselves are :data:`sela_edu.paper.OFFICIAL_CIFAR`): what notebook 04 prints
beside the paper's column."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sela_edu.paper import OFFICIAL_CIFAR as OFFICIAL


@dataclass(frozen=True)
class Setting:
    name: str
    official: str                       #: what the official code does (:data:`sela_edu.paper.OFFICIAL_CIFAR`)
    kit: Callable[[Any], str]           #: what the configuration does, in words
    same: Callable[[Any], bool]         #: whether that matches the official code


def _get(config, field: str, default=None):
    return getattr(config, field, default)


OFFICIAL_CIFAR: tuple[Setting, ...] = (
    Setting("network", OFFICIAL["network"],
            lambda c: str(c.arch), lambda c: c.arch == "alexnet"),
    Setting("input size", OFFICIAL["input size"],
            lambda c: f"{_get(c, 'image_size') or 'native'} px",
            lambda c: _get(c, "image_size") == 224),
    Setting("heads x clusters", OFFICIAL["heads x clusters"], lambda c: f"{c.num_heads} x {c.num_clusters}",
            lambda c: c.num_heads == 10 and c.cluster_list() == [128] * 10),
    Setting("lambda", OFFICIAL["lambda"], lambda c: f"{c.lam:g}", lambda c: c.lam == 10),
    Setting("epochs / label optimisations", OFFICIAL["epochs / label optimisations"],
            lambda c: f"{c.epochs} / {c.nopts}, {c.nopt_schedule}",
            lambda c: (c.epochs, c.nopts, c.nopt_schedule) == (400, 400, "even")),
    Setting("heads per optimisation", OFFICIAL["heads per optimisation"],
            lambda c: str(_get(c, "relabel_heads", "all")), lambda c: _get(c, "relabel_heads") == "round-robin"),
    Setting("scores for the label step", OFFICIAL["scores for the label step"],
            lambda c: str(_get(c, "score_mode", "plain")), lambda c: _get(c, "score_mode") == "augmented"),
    Setting("batch, lr, momentum, weight decay", OFFICIAL["batch, lr, momentum, weight decay"],
            lambda c: f"{c.batch_size}, {c.lr:g}, {c.momentum:g}, {c.weight_decay:g}",
            lambda c: (c.batch_size, c.lr, c.momentum, c.weight_decay) == (128, 0.03, 0.9, 5e-4)),
    Setting("Sinkhorn precision", OFFICIAL["Sinkhorn precision"],
            lambda c: f"{c.storage_dtype} storage, float64 potentials", lambda c: c.storage_dtype == "float64"),
    Setting("Sinkhorn stop", OFFICIAL["Sinkhorn stop"],
            lambda c: f"largest relative cluster-mass error < {c.label_tol:g}", lambda c: False),
    Setting("final kNN", OFFICIAL["final kNN"],
            lambda c: f"k = {_get(c, 'knn_k')}, sigma 0.1, PCA {_get(c, 'knn_pca') or 'none'}",
            lambda c: _get(c, "knn_k") == 10 and _get(c, "knn_pca") == 128),
)


def deviations(config, settings: tuple[Setting, ...] = OFFICIAL_CIFAR) -> list[tuple[str, str, str, bool]]:
    """``(setting, official code, this configuration, same?)`` for every setting of the official recipe."""
    rows = []
    for s in settings:
        try:
            kit, same = s.kit(config), bool(s.same(config))
        except Exception as exc:  # a field this configuration does not have
            kit, same = f"n/a ({type(exc).__name__})", False
        rows.append((s.name, s.official, kit, same))
    return rows


def deviation_table(config, settings: tuple[Setting, ...] = OFFICIAL_CIFAR) -> str:
    """A plain-text table of :func:`deviations`; departures are marked ``<- differs``."""
    rows = deviations(config, settings)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'setting':{w0}s}  {'official code':{w1}s}  this configuration"]
    lines += [f"{name:{w0}s}  {official:{w1}s}  {kit}{'' if same else '   <- differs'}"
              for name, official, kit, same in rows]
    return "\n".join(lines)


__all__ = ["Setting", "OFFICIAL_CIFAR", "deviations", "deviation_table"]
