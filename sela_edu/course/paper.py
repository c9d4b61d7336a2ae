"""The official CIFAR code's settings (yukimasano/self-label, ``cifar.py``), and where a kit
configuration departs from them: what notebook 04 prints beside the paper's column."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    official: str                       #: what the official code does (facts file)
    kit: Callable[[Any], str]           #: what the configuration does, in words
    same: Callable[[Any], bool]         #: whether that matches the official code


def _get(config, field: str, default=None):
    return getattr(config, field, default)


OFFICIAL_CIFAR: tuple[Setting, ...] = (
    Setting("network", "AlexNet with BatchNorm (the ImageNet model)",
            lambda c: str(c.arch), lambda c: c.arch == "alexnet"),
    Setting("input size", "upsampled: Resize 256, random resized crop 224 (scale 0.2-1)",
            lambda c: f"{_get(c, 'image_size') or 'native'} px",
            lambda c: _get(c, "image_size") == 224),
    Setting("heads x clusters", "10 x 128", lambda c: f"{c.num_heads} x {c.num_clusters}",
            lambda c: c.num_heads == 10 and c.cluster_list() == [128] * 10),
    Setting("lambda", "10", lambda c: f"{c.lam:g}", lambda c: c.lam == 10),
    Setting("epochs / label optimisations", "400 / 400, evenly spaced",
            lambda c: f"{c.epochs} / {c.nopts}, {c.nopt_schedule}",
            lambda c: (c.epochs, c.nopts, c.nopt_schedule) == (400, 400, "even")),
    Setting("heads per optimisation", "one, round robin (epoch % heads)",
            lambda c: str(_get(c, "relabel_heads", "all")), lambda c: _get(c, "relabel_heads") == "round-robin"),
    Setting("scores for the label step", "training loader: augmented images, BatchNorm in train mode",
            lambda c: str(_get(c, "score_mode", "plain")), lambda c: _get(c, "score_mode") == "augmented"),
    Setting("batch, lr, momentum, weight decay", "128, 0.03, 0.9, 5e-4",
            lambda c: f"{c.batch_size}, {c.lr:g}, {c.momentum:g}, {c.weight_decay:g}",
            lambda c: (c.batch_size, c.lr, c.momentum, c.weight_decay) == (128, 0.03, 0.9, 5e-4)),
    Setting("Sinkhorn precision", "float64 (numpy), one head's P at a time",
            lambda c: f"{c.storage_dtype} storage, float64 potentials", lambda c: c.storage_dtype == "float64"),
    Setting("Sinkhorn stop", "every 10 iterations, sum_i |c_i / c_new_i - 1| < 1e-2",
            lambda c: f"largest relative cluster-mass error < {c.sinkhorn_tol:g}", lambda c: False),
    Setting("final kNN", "k = 10, sigma 0.1, 4096-d fc features after PCA to 128",
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
