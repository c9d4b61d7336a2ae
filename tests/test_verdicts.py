"""The verdict helper: result sentences computed from the numbers."""

import math

import pytest

from sela_edu.course.views.verdicts import compare, rank


def test_beats_and_does_not_beat():
    v = compare("SeLa", 88.3, "k-means labels", 86.1, metric="kNN accuracy", unit=" points")
    assert str(v) == "SeLa beats k-means labels on kNN accuracy by 2.2 points"
    assert v.outcome == "beats" and v.wins and v.difference == pytest.approx(2.2)
    v = compare("SeLa", 86.1, "k-means labels", 88.3, metric="kNN accuracy", unit=" points")
    assert str(v) == "SeLa does not beat k-means labels on kNN accuracy: it is behind by 2.2 points"
    assert v.outcome == "does not beat" and not v.wins


def test_tie_at_the_printed_precision():
    v = compare("A", 85.01, "B", 84.98, metric="NMI", decimals=1)
    assert v.outcome == "ties with" and not v.wins
    assert str(v) == "A ties with B on NMI (85.0 against 85.0)"
    assert compare("A", 0.651, "B", 0.648, metric="NMI", decimals=3).outcome == "beats"


def test_lower_is_better():
    v = compare("new", 1.5, "old", 2.0, metric="error", unit=" %", higher_is_better=False)
    assert v.outcome == "beats" and str(v).endswith("by 0.5 %")


def test_spread_over_seeds():
    clear = compare("SeLa", [88.0, 88.4, 88.2], "k-means", [85.0, 85.3, 85.1], metric="kNN", unit=" points")
    assert clear.wins and "mean of 3 seeds" in str(clear) and "not a clear" not in str(clear)
    close = compare("SeLa", [88.0, 86.0, 87.0], "k-means", [86.5, 86.9, 85.9], metric="kNN", unit=" points")
    assert close.outcome == "beats" and not close.clear and not close.wins
    assert "within the spread" in str(close)


def test_missing_values_and_rank():
    v = compare("A", float("nan"), "B", 1.0, metric="kNN")
    assert math.isnan(v.difference) and "cannot be compared" in str(v)
    with pytest.raises(ValueError):
        compare("A", [], "B", 1.0, metric="kNN")
    assert rank({"b": 1.0, "a": 3.0}, metric="kNN", unit=" %") == "On kNN: a 3.0 %, b 1.0 % (best: a)"
