"""Notebook 08's figures: one per ablation of the ledger (the measure against the setting, mean and
spread over seeds, the paper's trend in a panel beside), and the label step's time against N.

The ablations are data (:data:`ABLATIONS`): which settings form the axis, how each is labelled at
the profile's sizes, and the paper's values for the same axis with their source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sela_edu import paper
from sela_edu.course.views.figures import legend_outside
from sela_edu.course.views.verdicts import mean_std
from sela_edu.course.ledger.claims import MEASURES, values_by_setting
from sela_edu.course.ledger.runs import LedgerProfile, base_config, setting_specs


@dataclass(frozen=True)
class Ablation:
    """One ablation: ``lines`` maps a line's name to its settings along the axis (None where the
    ledger has no run); ``paper`` maps a line's name to the paper's values at ``paper_axis``."""

    claim: int
    title: str
    axis: str
    lines: Mapping[str, Sequence[str | None]]
    paper_axis: Sequence[str]
    paper: Mapping[str, Sequence[float]]
    paper_measure: str
    measure: str = "linear"


def _imbalance(method: str) -> tuple[float, ...]:
    """The paper's CIFAR-10 linear probe of ``method`` trained on full, light and heavy imbalance."""
    column = paper.IMBALANCE_COLUMNS.index("linear C10")
    return tuple(paper.IMBALANCE[data][method][column] for data in ("full", "light", "heavy"))


CONV4, CONV5 = 1, 2
ABLATIONS: dict[int, Ablation] = {
    3: Ablation(3, "imbalance", "training set", {"SeLa": ("sela", "sela-light", "sela-heavy"),
                                                  "k-means labels": ("kmeans", None, "kmeans-heavy")},
                ("full", "light", "heavy"), {"SeLa": _imbalance("SK"), "k-means labels": _imbalance("k-means")},
                "CIFAR-10 linear probe %"),
    4: Ablation(4, "number of label optimisations", "label optimisations",
                {"SeLa": ("nopts-0", "nopts-half", "sela", "nopts-double")},
                tuple(str(n) for n in paper.LABEL_OPTIMISATIONS),
                {"[3k x 1]": tuple(v[CONV5] for v in paper.LABEL_OPTIMISATIONS.values())}, "ImageNet conv5 linear %"),
    5: Ablation(5, "number of clusters (one head)", "K", {"one head": ("k-classes", "k-over3", "k-over10", "k-over30")},
                ("1k", "3k", "5k", "10k"), {"[K x 1]": tuple(paper.CLUSTERS[k][CONV5] for k in ("1k", "3k", "5k", "10k"))},
                "ImageNet conv5 linear %"),
    6: Ablation(6, "number of heads (same K)", "heads", {"3x classes": ("k-over3", "heads-several")},
                ("1", "10"), {"3k": (paper.CLUSTERS["3k"][CONV4], paper.LABEL_TRANSFER["alexnet"])},
                "ImageNet linear % (1 head: conv4)"),
}


def axis_labels(ablation: Ablation, profile: LedgerProfile) -> list[str]:
    """The measured axis at this profile's sizes: nopts, K or heads of each setting of the first line."""
    specs, base = setting_specs(profile), base_config(profile)
    labels = []
    for name in next(iter(ablation.lines.values())):
        cfg = base_config(profile, **specs[name].overrides)
        if ablation.claim == 3:
            labels.append(specs[name].subset)
        elif ablation.claim == 4:
            labels.append(str(cfg.nopts) + (" (schedule)" if cfg.nopts == base.nopts else ""))
        elif ablation.claim == 5:
            labels.append(str(cfg.cluster_list()[0]))
        else:
            labels.append(f"{cfg.num_heads} x {cfg.cluster_list()[0]}")
    return labels


def ablation_figure(results: Mapping[str, Mapping], ablation: Ablation, profile: LedgerProfile):
    """Measured (left: mean with error bars of one std over seeds) and the paper (right), one figure."""
    import matplotlib.pyplot as plt

    values = values_by_setting(results, ablation.measure)
    fig, (ax, ax_paper) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(axis_labels(ablation, profile)))
    for i, (line, names) in enumerate(ablation.lines.items()):
        pts = [(j, *mean_std(values[n])) for j, n in enumerate(names) if n and values.get(n)]
        if pts:
            j, mean, std = map(np.array, zip(*pts))
            ax.errorbar(j, mean, yerr=std, marker="o", capsize=3, color=f"C{i}", label=line)
    ax.set_xticks(x, axis_labels(ablation, profile))
    ax.set_xlabel(ablation.axis)
    ax.set_ylabel(MEASURES[ablation.measure][0])
    ax.set_title(f"measured ({profile.dataset}, {profile.name})", fontsize=9)
    for i, (line, figures) in enumerate(ablation.paper.items()):
        ax_paper.plot(np.arange(len(figures)), figures, marker="s", linestyle="--", color=f"C{i}", label=line)
    ax_paper.set_xticks(np.arange(len(ablation.paper_axis)), ablation.paper_axis)
    ax_paper.set_xlabel(ablation.axis)
    ax_paper.set_ylabel(ablation.paper_measure)
    ax_paper.set_title("the paper", fontsize=9)
    legend_outside(ax_paper)
    if ablation.lines and any(values.get(n) for names in ablation.lines.values() for n in names if n):
        legend_outside(ax, loc="lower left", bbox_to_anchor=(0.0, 1.08), ncol=2)
    fig.suptitle(f"claim {ablation.claim}: {ablation.title}", fontsize=10)
    fig.tight_layout()
    return fig


def timing_figure(results: Mapping[str, Mapping]):
    """Seconds per pass over the scores against N (and against K), every timing run, with a line of slope
    one (linear growth) through the first point of each."""
    import matplotlib.pyplot as plt

    runs = [r for r in results.values() if r["setting"] == "timing"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, axis in ((axes[0], "by_n", "n"), (axes[1], "by_k", "k")):
        for i, r in enumerate(runs):
            xs = np.array([row[axis] for row in r[key]], dtype=float)
            ys = np.array([row["per_pass"] for row in r[key]])
            ax.loglog(xs, ys, marker="o", color=f"C{i}", label=f"seed {r['seed']}")
            if i == 0:
                ax.loglog(xs, ys[0] * xs / xs[0], linestyle=":", color="grey", label="linear growth")
        ax.set_xlabel("N (images)" if axis == "n" else "K (clusters)")
        ax.set_ylabel("seconds per pass over the scores")
    if runs:
        legend_outside(axes[1])
    fig.suptitle("claim 9: the label step's time", fontsize=10)
    fig.tight_layout()
    return fig


def collapse_figure(results: Mapping[str, Mapping]):
    """Cluster sizes after the collapse loop, per seed, without (argmax) and with the label step."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for ax, setting, title in ((axes[0], "collapse-argmax", "labels = argmax (no equipartition)"),
                               (axes[1], "collapse-sinkhorn", "labels = label step (equipartition)")):
        runs = [r for r in results.values() if r["setting"] == setting]
        width = 0.8 / max(len(runs), 1)
        for i, r in enumerate(runs):
            sizes = np.array(r["cluster_sizes"])
            ax.bar(np.arange(len(sizes)) + i * width, sizes, width, label=f"seed {r['seed']}", color=f"C{i}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("cluster")
    axes[0].set_ylabel("images")
    legend_outside(axes[1])
    fig.suptitle("claim 1: the label/train loop", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["Ablation", "ABLATIONS", "axis_labels", "ablation_figure", "timing_figure", "collapse_figure"]
