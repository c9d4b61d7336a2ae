"""The shared plots: training curves mark the label optimisations."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from sela_edu.course.views.figures import plot_history, relabel_moments  # noqa: E402

HISTORY = [
    {"epoch": 1, "step": 10, "loss": 2.0, "nmi": [0.2, 0.3],
     "label_steps": [{"step": 0, "head": 0}, {"step": 0, "head": 1}, {"step": 5, "head": 0}, {"step": 5, "head": 1}]},
    {"epoch": 2, "step": 20, "loss": 1.5, "nmi": [0.4, 0.5], "label_steps": [{"step": 15, "head": 0}]},
]


def test_relabel_moments_are_in_epochs_and_count_each_step_once():
    assert relabel_moments(HISTORY) == [0.0, 0.5, 1.5]
    assert relabel_moments([{"epoch": 1, "step": 10, "loss": 1.0}]) == []


def test_plot_history_marks_every_label_optimisation_on_every_panel():
    fig = plot_history(HISTORY, keys=("loss", "nmi"))
    for ax in fig.axes:
        marks = [line for line in ax.get_lines() if list(line.get_xdata()) in ([0.0, 0.0], [0.5, 0.5], [1.5, 1.5])]
        assert len(marks) == 3
    legend = fig.axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["label optimisation", "head 0", "head 1"]
    with pytest.raises(ValueError, match="none of the requested keys"):
        plot_history(HISTORY, keys=("accuracy",))


# ---------------------------------------------------------------- comparison figures

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from sela_edu.course.views import figures  # noqa: E402

# 03's recorded make run: kNN of a random network, k-means pseudo-labels and SeLa
EVALUATION = {"kNN": {"random network": 83.0, "k-means labels": 82.3, "SeLa": 86.1},
              "linear probe": {"random network": 81.4, "k-means labels": 83.0, "SeLa": 86.6}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _visible_heights(ax):
    """The part of each bar inside the axes' y-range, in data units (bars are drawn from 0)."""
    low, high = ax.get_ylim()
    spans = [sorted((p.get_y(), p.get_y() + p.get_height())) for p in ax.patches]
    return [max(min(top, high) - max(bottom, low), 0.0) for bottom, top in spans]


def _legend_overlaps_a_bar(fig, legend):
    fig.canvas.draw()
    box = legend.get_window_extent()
    for ax in fig.axes:
        for bar in ax.patches:
            shown = Bbox.intersection(bar.get_window_extent(), ax.bbox)   # bars are clipped to the axes
            if shown is not None and shown.width > 0 and shown.height > 0 and box.overlaps(shown):
                return True
    return False


def _bar_containers(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_a_four_point_difference_fills_most_of_a_fitted_axis():
    ax = figures.bar_comparison({"kNN": {"k-means labels": 87.1, "SeLa": 91.1}})
    low, high = ax.get_ylim()
    assert low > 50.0, f"the axis starts at {low}, so a few points cannot be seen"
    shorter, taller = _visible_heights(ax)
    assert shorter > 0.0, "the lower bar must still show as a bar"
    assert (taller - shorter) / (high - low) > 0.5
    assert [t.get_text() for t in ax.texts] == ["87.1", "91.1"]


def test_a_tenth_of_a_point_is_not_drawn_as_a_landslide():
    ax = figures.bar_comparison({"kNN": {"k-means labels": 87.1, "SeLa": 87.2}})
    low, high = ax.get_ylim()
    assert 0.1 / (high - low) < 0.1


def test_an_axis_over_accuracies_starts_at_zero_when_zero_is_near():
    assert figures.bar_comparison({"kNN": {"a": 2.0, "b": 60.0}}).get_ylim()[0] == 0.0   # never below 0
    assert figures.bar_comparison({"kNN": {"random": 33.5, "paper": 77.6}}).get_ylim()[0] == 0.0


def test_the_legend_of_a_comparison_covers_no_bar():
    fig, ax = plt.subplots(figsize=(6, 3))
    figures.bar_comparison(EVALUATION, ax=ax, title="frozen features")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["random network", "k-means labels", "SeLa"]
    assert not _legend_overlaps_a_bar(fig, legend)


def test_per_seed_values_draw_their_mean_and_standard_deviation():
    seeds = {"kNN": {"random": [83.02, 83.56, 83.0], "SeLa": [87.68, 87.19, 87.6]}}
    ax = figures.bar_comparison(seeds)
    containers = _bar_containers(ax)
    assert [bar.get_height() for c in containers for bar in c] == pytest.approx([83.1933, 87.49], abs=1e-3)
    for container, runs in zip(containers, seeds["kNN"].values()):
        assert container.errorbar is not None
        (segment,) = container.errorbar.lines[2][0].get_segments()
        assert segment[1, 1] - segment[0, 1] == pytest.approx(2 * np.std(runs, ddof=1))
    single = figures.bar_comparison({"kNN": {"random": 83.0, "SeLa": 87.5}})
    assert all(c.errorbar is None for c in _bar_containers(single))


def test_a_missing_entry_is_a_gap_without_a_label():
    ax = figures.bar_comparison({"kNN": {"random": 83.0, "paper": 91.1}, "linear": {"random": 81.4}})
    assert sorted(t.get_text() for t in ax.texts if t.get_text()) == ["81.4", "83.0", "91.1"]


def test_differences_from_a_baseline_are_drawn_from_zero():
    ax = figures.difference_comparison(EVALUATION, "k-means labels")
    heights = [bar.get_height() for c in _bar_containers(ax) for bar in c]
    # random network (kNN, linear probe), then SeLa (kNN, linear probe); the baseline is the zero line
    assert heights == pytest.approx([0.7, -1.6, 3.8, 3.6])
    low, high = ax.get_ylim()
    assert low < -1.6 and high > 3.8 and (3.8 + 1.6) / (high - low) > 0.5
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())
    assert "k-means labels" in ax.get_ylabel()
    assert [t.get_text() for t in ax.texts] == ["+0.7", "-1.6", "+3.8", "+3.6"]


def test_the_spread_of_a_difference_is_the_one_a_verdict_compares_against():
    a, b = [87.7, 87.2, 87.6], [83.0, 83.6, 83.0]
    ax = figures.difference_comparison({"kNN": {"random": b, "SeLa": a}}, "random")
    (container,) = _bar_containers(ax)
    (segment,) = container.errorbar.lines[2][0].get_segments()
    # verdicts.compare calls a difference within the spread when it is no larger than the sum of both
    assert segment[1, 1] - segment[0, 1] == pytest.approx(2 * (np.std(a, ddof=1) + np.std(b, ddof=1)))


def test_comparison_figure_puts_values_and_differences_side_by_side_under_one_legend():
    tables = {"weighted kNN": {"full": {"sela": 84.5, "kmeans": 82.5, "supervised": 87.0},
                               "heavy": {"sela": 83.8, "kmeans": 82.9, "supervised": 86.1}},
              "linear probe": {"full": {"sela": 83.9, "kmeans": 82.3, "supervised": 86.7},
                               "heavy": {"sela": 83.6, "kmeans": 82.8, "supervised": 86.6}}}
    fig = figures.comparison_figure(tables, baseline="kmeans", title="imbalance")
    assert len(fig.axes) == 4
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["sela", "kmeans", "supervised"]
    assert not _legend_overlaps_a_bar(fig, legend)
    values, differences = fig.axes[0], fig.axes[1]
    assert values.get_ylim()[0] > 50.0
    colour = {c.get_label(): c.patches[0].get_facecolor() for c in _bar_containers(values)}
    for c in _bar_containers(differences):
        assert c.patches[0].get_facecolor() == colour[c.get_label()], "a method changes colour between panels"
    assert len(figures.comparison_figure(tables).axes) == 2


def test_comparisons_name_the_problem_with_bad_input():
    with pytest.raises(ValueError, match="non-empty mapping"):
        figures.bar_comparison({})
    with pytest.raises(ValueError, match="kNN / SeLa"):
        figures.bar_comparison({"kNN": {"SeLa": "high"}})
    with pytest.raises(ValueError, match="empty sequence of seeds"):
        figures.bar_comparison({"kNN": {"SeLa": []}})
    with pytest.raises(ValueError, match="at least one finite value"):
        figures.bar_comparison({"kNN": {"SeLa": float("nan")}})
    with pytest.raises(ValueError, match="baseline 'kmeans' is not one of"):
        figures.difference_comparison(EVALUATION, "kmeans")
    with pytest.raises(ValueError, match="needs at least one other method"):
        figures.difference_comparison({"kNN": {"SeLa": 86.1}}, "SeLa")
