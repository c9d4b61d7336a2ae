"""One way to save a figure, and the plots that several notebooks share.

Every figure the kit writes goes through :func:`save_figure`, so they all land in
``settings.figures_dir()`` (``$SELA_FIGURES_DIR``, default ``<results>/figures``; only ``sela-edu
refresh`` writes the committed ``figures/``) as PNG files with predictable names. The plotting helpers take arrays or tensors and an optional ``ax``; they draw and return the
axes (or figure), and never save or show anything themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sela_edu import settings

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def to_numpy(x, dtype=None) -> np.ndarray:
    """A tensor (any device, with or without grad; floats as float64) or array-like as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.double().numpy() if x.is_floating_point() else x.numpy()
    return np.asarray(x, dtype=dtype)


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
    plan = to_numpy(plan).astype(float)
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
        err = np.maximum(to_numpy(err).astype(float), 1e-300)  # log scale cannot show exact zeros
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
    labels = to_numpy(labels).astype(np.int64).ravel()
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


def image_for_display(img: np.ndarray) -> np.ndarray:
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

    images = to_numpy(images)
    labels = to_numpy(labels).astype(np.int64).ravel()
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
                img = image_for_display(images[pick[j]])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[r, 0].set_ylabel(f"{c}\n(n={members.size})", rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


#: One measured value in a comparison: a number (one run), or one number per seed.
MeasuredValue = float | Sequence[float]
#: A comparison table: ``table[group][method] = value``, e.g. group = metric or imbalance setting.
ComparisonTable = Mapping[str, Mapping[str, MeasuredValue]]

# An axis fitted to the numbers must not turn noise into a landslide: its span is at least this fraction
# of the largest value shown, so 87.1 against 87.2 stays two bars of nearly equal height.
_MIN_SPAN_FRACTION = 0.02


def _mean_and_spread(value, where: str) -> tuple[float, float]:
    """A number as (value, nan); per-seed numbers as (mean, standard deviation over seeds), the
    spread ``verdicts.compare`` uses; a single seed has no spread (nan)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number or one number per seed, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value), float("nan")
    try:
        runs = to_numpy(value).astype(float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number or one number per seed, got {value!r}") from None
    if runs.size == 0:
        raise ValueError(f"{where}: no measured value (an empty sequence of seeds)")
    if runs.size == 1:
        return float(runs[0]), float("nan")
    return float(runs.mean()), float(runs.std(ddof=1))


def _comparison_arrays(values: ComparisonTable) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Groups, methods (in order of first appearance), and G x M arrays of means and spreads; a method
    missing from a group is nan there (drawn as a gap)."""
    if not isinstance(values, Mapping) or not values:
        raise ValueError("a comparison needs a non-empty mapping values[group][method] = number")
    groups = [str(g) for g in values]
    methods: list[str] = []
    for g, row in values.items():
        if not isinstance(row, Mapping):
            raise ValueError(f"group {g!r}: expected a mapping method -> number, got {type(row).__name__}")
        methods.extend(str(m) for m in row if str(m) not in methods)
    means = np.full((len(groups), len(methods)), np.nan)
    spreads = np.full_like(means, np.nan)
    for i, row in enumerate(values.values()):
        for m, value in row.items():
            j = methods.index(str(m))
            means[i, j], spreads[i, j] = _mean_and_spread(value, f"{groups[i]} / {m}")
    if not np.isfinite(means).any():
        raise ValueError("a comparison needs at least one finite value; every entry is missing or nan")
    return groups, methods, means, spreads


def _fitted_limits(lows: np.ndarray, highs: np.ndarray, *, scale: float, include_zero: bool = False,
                   below: float = 0.35, above: float = 0.25) -> tuple[float, float]:
    """Axis limits around the finite values (``lows``/``highs``: the ends of bars and error bars), with
    a margin of ``below``/``above`` times their span: the lowest bar keeps a visible height and the
    value labels fit above the highest. The span is at least ``_MIN_SPAN_FRACTION * scale``. Over values
    that are all non-negative, an axis whose floor would lie within one span of 0 starts at 0: the
    differences stay visible from there, and bar lengths keep their true ratios."""
    lo, hi = float(np.nanmin(lows)), float(np.nanmax(highs))
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo
    min_span = _MIN_SPAN_FRACTION * scale or 1.0
    if span < min_span:
        lo, hi = lo - (min_span - span) / 2, hi + (min_span - span) / 2
        span = min_span
    bottom, top = lo - below * span, hi + above * span
    if float(np.nanmin(lows)) >= 0.0 and bottom < span:
        bottom = 0.0
    return bottom, top


def _method_colors(methods: Sequence[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    """One colour per method, the same in every panel of a figure (``colors`` fixes them)."""
    colors = dict(colors or {})
    missing = [m for m in methods if m not in colors]
    for i, m in enumerate(missing, start=len(colors)):
        colors[m] = f"C{i % 10}"
    return colors


def legend_outside(ax, **kwargs):
    """The legend to the right of the axes, where it cannot cover any data (``save_figure`` crops to
    include it). Extra keyword arguments go to ``ax.legend``."""
    options = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)
    return ax.legend(**{**options, **kwargs})


def _grouped_bars(ax, groups: Sequence[str], methods: Sequence[str], heights: np.ndarray, errors: np.ndarray,
                  colors: Mapping[str, str], label_format: str) -> None:
    """Bars for each group side by side, one colour per method, error bars where a spread is known,
    and each bar's value written at its end (bars that are gaps get no label)."""
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(groups))
    for j, m in enumerate(methods):
        err = errors[:, j]
        bars = ax.bar(x + (j - (len(methods) - 1) / 2) * width, heights[:, j], width, color=colors[m], label=m,
                      yerr=err if np.isfinite(err).any() else None, capsize=3,
                      error_kw=dict(elinewidth=1, ecolor="0.2"))
        labels = [label_format.format(h) if np.isfinite(h) else "" for h in heights[:, j]]
        ax.bar_label(bars, labels=labels, padding=2, fontsize=7)
    ax.set_xticks(x, labels=list(groups))


def bar_comparison(values: ComparisonTable, *, ylabel: str = "accuracy (%)", title: str | None = None, ax=None,
                   legend: bool = True, colors: Mapping[str, str] | None = None, decimals: int = 1):
    """Grouped bars: ``values[group][method]`` is a number, or one number per seed (the bar is their mean,
    the error bar their standard deviation). Missing entries are left as gaps.

    The y-axis is fitted to the numbers, not drawn from 0, so that differences of a few points are seen
    (each bar carries its value, and the tick labels say where the axis starts); the legend sits outside
    the axes. For differences themselves, drawn from an honest zero, see :func:`difference_comparison`.
    """
    groups, methods, means, spreads = _comparison_arrays(values)
    colors = _method_colors(methods, colors)
    ax = _new_axes(ax, figsize=(1.6 * len(groups) + 2, 3.2))
    err = np.nan_to_num(spreads)
    _grouped_bars(ax, groups, methods, means, spreads, colors, f"{{:.{decimals}f}}")
    ax.set_ylim(*_fitted_limits(means - err, means + err, scale=float(np.nanmax(np.abs(means)))))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        legend_outside(ax)
    return ax


def _differences(means: np.ndarray, spreads: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Each method's mean minus the baseline's, per group, and the spread of that difference: the sum of
    the two standard deviations, the threshold under which ``verdicts.compare`` calls a difference within
    the spread, so an error bar crossing zero means what that verdict says. Nan where no spread is known."""
    diffs = means - means[:, [base]]
    known = np.isfinite(spreads) | np.isfinite(spreads[:, [base]])
    spread = np.where(known, np.nan_to_num(spreads) + np.nan_to_num(spreads[:, [base]]), np.nan)
    return diffs, spread


def difference_comparison(values: ComparisonTable, baseline: str, *, unit: str = "points",
                          ylabel: str | None = None, title: str | None = None, ax=None, legend: bool = True,
                          colors: Mapping[str, str] | None = None, decimals: int = 1):
    """Each method's difference from ``baseline`` in every group of ``values`` (as in
    :func:`bar_comparison`), as bars from zero: above the line is ahead of the baseline, below is behind.
    With per-seed values the error bars are the spread a verdict compares against (see
    :func:`_differences`); the baseline itself is the zero line."""
    groups, methods, means, spreads = _comparison_arrays(values)
    if baseline not in methods:
        raise ValueError(f"baseline {baseline!r} is not one of the compared methods {methods}")
    others = [j for j, m in enumerate(methods) if m != baseline]
    if not others:
        raise ValueError(f"a difference from {baseline!r} needs at least one other method")
    diffs, spread = _differences(means, spreads, methods.index(baseline))
    diffs, spread = diffs[:, others], spread[:, others]
    if not np.isfinite(diffs).any():
        raise ValueError(f"no group has both {baseline!r} and another method: there is no difference to draw")
    colors = _method_colors(methods, colors)
    ax = _new_axes(ax, figsize=(1.6 * len(groups) + 2, 3.2))
    ax.axhline(0.0, color="k", lw=0.8, zorder=0)
    _grouped_bars(ax, groups, [methods[j] for j in others], diffs, spread, colors, f"{{:+.{decimals}f}}")
    err = np.nan_to_num(spread)
    ax.set_ylim(*_fitted_limits(diffs - err, diffs + err, scale=float(np.nanmax(np.abs(means))),
                                include_zero=True, below=0.25))
    ax.set_ylabel(ylabel or f"difference from {baseline} ({unit})")
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        legend_outside(ax)
    return ax


def comparison_figure(tables: Mapping[str, ComparisonTable], *, baseline: str | None = None,
                      ylabel: str = "accuracy (%)", unit: str = "points", title: str | None = None):
    """One row per table (``tables[panel title][group][method] = value``): the values
    (:func:`bar_comparison`), and with a ``baseline`` beside them every method's difference from it
    (:func:`difference_comparison`). One legend for the whole figure, below the panels; a method has the
    same colour in every panel."""
    import matplotlib.pyplot as plt

    if not isinstance(tables, Mapping) or not tables:
        raise ValueError("comparison_figure needs a non-empty mapping panel title -> values[group][method]")
    methods: list[str] = []
    for table in tables.values():
        methods.extend(m for m in _comparison_arrays(table)[1] if m not in methods)
    colors = _method_colors(methods, None)
    columns = 1 if baseline is None else 2
    width = max(1.6 * max(len(t) for t in tables.values()) + 1.5, 4.0)
    fig, axes = plt.subplots(len(tables), columns, figsize=(width * columns, 2.9 * len(tables)), squeeze=False)
    for row, (name, table) in zip(axes, tables.items()):
        bar_comparison(table, ylabel=ylabel, title=name, ax=row[0], legend=False, colors=colors)
        if baseline is not None:
            difference_comparison(table, baseline, unit=unit, ylabel=unit, title=f"difference from {baseline}",
                                  ax=row[1], legend=False, colors=colors)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in methods]
    # below the panels, where it covers nothing; save_figure's tight crop keeps it
    fig.legend(handles, methods, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(methods), fontsize=8,
               frameon=False)
    return fig


__all__ = [
    "to_numpy",
    "image_for_display",
    "save_figure",
    "plot_transport_plan",
    "plot_convergence",
    "plot_cluster_sizes",
    "plot_history",
    "relabel_moments",
    "image_grid_by_cluster",
    "legend_outside",
    "bar_comparison",
    "difference_comparison",
    "comparison_figure",
]
