"""One way to save a figure, and the plots that several notebooks share.

Every figure the kit writes goes through :func:`save_figure`, so they all land in
``settings.figures_dir()`` (``$SELA_FIGURES_DIR``, default ``figures/``) as PNG files with predictable
names. The plotting helpers take arrays or tensors and an optional ``ax``; they draw and return the
axes (or figure), and never save or show anything themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import settings

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _as_numpy(x) -> np.ndarray:
    """Tensors (any device, with or without grad) and array-likes as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def save_figure(fig, name: str, *, dpi: int = 120, folder: str | Path | None = None) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` and return that path.

    ``name`` is a plain file stem (letters, digits, ``_``, ``-``, ``.``), e.g. ``"01_plan_eps"``; a
    trailing ``.png`` is accepted. ``folder`` overrides ``settings.figures_dir()`` (tests use it).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"figure name must be a non-empty string, got {name!r}")
    stem = name[:-4] if name.lower().endswith(".png") else name
    if not _NAME_PATTERN.match(stem):
        raise ValueError(
            f"figure name {name!r} must be a plain file name (letters, digits, '_', '-', '.'; no folders)"
        )
    if not hasattr(fig, "savefig"):
        raise ValueError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}")
    out_dir = Path(folder) if folder is not None else settings.figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.png"
    # metadata without the matplotlib version/date so the same figure gives the same bytes
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def _new_axes(ax, figsize=(4.5, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_transport_plan(plan, ax=None, *, row_labels: Sequence[str] | None = None,
                        col_labels: Sequence[str] | None = None, title: str | None = None,
                        annotate: bool | None = None, cmap: str = "Blues", vmax: float | None = None):
    """A transport plan (rows: sources, columns: targets) as a heat map, with the amounts written in
    the cells when the matrix is small enough to read them (``annotate=None`` decides for you)."""
    plan = _as_numpy(plan).astype(float)
    if plan.ndim != 2:
        raise ValueError(f"a transport plan is a 2-d matrix, got shape {plan.shape}")
    ax = _new_axes(ax)
    im = ax.imshow(plan, cmap=cmap, vmin=0.0, vmax=vmax if vmax is not None else plan.max() or 1.0,
                   aspect="auto")
    n, m = plan.shape
    if annotate is None:
        annotate = n * m <= 64
    if annotate:
        top = plan.max() or 1.0
        for i in range(n):
            for j in range(m):
                ax.text(j, i, f"{plan[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if plan[i, j] > 0.6 * top else "black")
    if row_labels is not None:
        ax.set_yticks(range(n), labels=list(row_labels))
    if col_labels is not None:
        ax.set_xticks(range(m), labels=list(col_labels))
    if title:
        ax.set_title(title, fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_convergence(errors: Mapping[str, Sequence[float]] | Sequence[float], ax=None, *,
                     xlabel: str = "iteration", ylabel: str = "marginal error", title: str | None = None):
    """Error against iteration on a log scale; pass a dict to draw several runs (e.g. one per eps)."""
    ax = _new_axes(ax)
    runs = errors if isinstance(errors, Mapping) else {"": errors}
    for label, err in runs.items():
        err = np.maximum(_as_numpy(err).astype(float), 1e-300)  # log scale cannot show exact zeros
        ax.semilogy(np.arange(1, len(err) + 1), err, label=str(label) if label != "" else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if isinstance(errors, Mapping):
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_cluster_sizes(labels, num_clusters: int | None = None, ax=None, *, title: str | None = None,
                       sort: bool = True, color: str = "C0"):
    """How many points each cluster got (sorted, largest first), with the equal share as a line."""
    labels = _as_numpy(labels).astype(np.int64).ravel()
    if labels.size == 0:
        raise ValueError("plot_cluster_sizes needs at least one label")
    k = int(num_clusters) if num_clusters is not None else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    sizes = np.bincount(labels, minlength=k)
    if sort:
        sizes = np.sort(sizes)[::-1]
    ax = _new_axes(ax)
    ax.bar(np.arange(k), sizes, color=color)
    ax.axhline(labels.size / k, color="k", ls="--", lw=1, label="equal share N/K")
    ax.set_xlabel("cluster (sorted by size)" if sort else "cluster")
    ax.set_ylabel("points")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


def plot_history(history: Sequence[Mapping[str, float]], keys: Sequence[str] = ("loss", "nmi"), *,
                 title: str | None = None):
    """Training curves from a trainer history (a list of per-epoch dicts), one panel per key present;
    per-head values (lists) get one line per head. Label optimisations (the records' ``label_steps``)
    are marked as faint vertical lines at the fraction of an epoch where they happened."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in row and row[k] is not None for row in history)]
    if not keys:
        raise ValueError("none of the requested keys appear in the history")
    moments = relabel_moments(history)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = [row for row in history if row.get(key) is not None]
        epochs = [row.get("epoch", i) for i, row in enumerate(rows)]
        values = [row[key] for row in rows]
        for i, at in enumerate(moments):
            ax.axvline(at, color="0.6", lw=0.6, alpha=0.5, zorder=0, label="label optimisation" if i == 0 else None)
        if values and isinstance(values[0], (list, tuple)):  # one value per head
            for h in range(len(values[0])):
                ax.plot(epochs, [v[h] for v in values], "o-", ms=3, label=f"head {h}")
        else:
            ax.plot(epochs, values, "o-", ms=3, label=key)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=7, loc="best", framealpha=0.85)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def relabel_moments(history: Sequence[Mapping]) -> list[float]:
    """When each label optimisation happened, in epochs (its step over the steps per epoch), from the
    ``label_steps`` rows of a trainer history; several heads solved at one step count once."""
    per_epoch = next((row["step"] / row["epoch"] for row in history if row.get("epoch") and row.get("step")), None)
    if not per_epoch:
        return []
    steps = sorted({r["step"] for row in history for r in row.get("label_steps") or []})
    return [step / per_epoch for step in steps]


def _image_for_display(img: np.ndarray) -> np.ndarray:
    """C x H x W (uint8 or float) to H x W or H x W x C in [0, 1]."""
    img = img.astype(float)
    if img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    return np.clip(img, 0.0, 1.0)


def image_grid_by_cluster(images, labels, *, clusters: Sequence[int] | None = None, per_cluster: int = 8,
                          max_clusters: int = 10, title: str | None = None, seed: int = 0):
    """A grid with one row per cluster, showing ``per_cluster`` of its images (the largest clusters
    first unless ``clusters`` names them). ``images`` is N x C x H x W (uint8 or floats in [0, 1])."""
    import matplotlib.pyplot as plt

    images = _as_numpy(images)
    labels = _as_numpy(labels).astype(np.int64).ravel()
    if images.ndim != 4 or images.shape[0] != labels.size:
        raise ValueError(f"need N x C x H x W images and N labels, got {images.shape} and {labels.size}")
    if clusters is None:
        counts = np.bincount(labels)
        clusters = [int(c) for c in np.argsort(-counts, kind="stable")[:max_clusters] if counts[c] > 0]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(clusters), per_cluster, figsize=(per_cluster * 0.9, len(clusters) * 0.95),
                             squeeze=False)
    for r, c in enumerate(clusters):
        members = np.flatnonzero(labels == c)
        pick = rng.choice(members, size=min(per_cluster, members.size), replace=False) if members.size else []
        for j in range(per_cluster):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(pick):
                img = _image_for_display(images[pick[j]])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[r, 0].set_ylabel(f"{c}\n(n={members.size})", rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def bar_comparison(values: Mapping[str, Mapping[str, float]], *, ylabel: str = "accuracy (%)",
                   title: str | None = None, ax=None):
    """Grouped bars: ``values[group][method] = number`` (e.g. group = imbalance setting, method =
    SK / k-means / supervised). Missing entries are left as gaps."""
    groups = list(values)
    methods: list[str] = []
    for g in groups:
        methods.extend(m for m in values[g] if m not in methods)
    ax = _new_axes(ax, figsize=(1.6 * len(groups) + 2, 3.2))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(groups))
    for i, m in enumerate(methods):
        ys = [values[g].get(m, np.nan) for g in groups]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, ys, width, label=m)
    ax.set_xticks(x, labels=groups)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


__all__ = [
    "save_figure",
    "plot_transport_plan",
    "plot_convergence",
    "plot_cluster_sizes",
    "plot_history",
    "relabel_moments",
    "image_grid_by_cluster",
    "bar_comparison",
]
