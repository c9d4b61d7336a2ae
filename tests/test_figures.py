"""The shared plots: training curves mark the label optimisations."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from sela_edu.figures import plot_history, relabel_moments  # noqa: E402

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
