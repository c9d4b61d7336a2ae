"""Checker of notebook 08: the ledger's verdict rule, "A beats B" judged against the spread over seeds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sela_edu.course.teaching.exercises.checking import ExerciseFailure, call_answer, passed, without_kit

#: (what the problem shows, A's values over seeds, B's values over seeds); each problem is built so that
#: one foreseeable mistake changes the verdict (the margin's sign, no spread at all, the population
#: standard deviation instead of the sample one, one side's spread instead of the sum, one seed per side)
_PROBLEMS = (
    ("a clear win", [80.0, 81.0, 82.0], [70.0, 71.0, 72.0]),
    ("a clear loss", [70.0, 71.0, 72.0], [80.0, 81.0, 82.0]),
    ("a difference smaller than the spread", [75.0, 77.0, 79.0], [74.0, 76.0, 78.0]),
    ("two seeds, where the sample std (ddof=1) matters", [10.0, 12.0], [9.7, 9.7]),
    ("a difference above each side's std but below their sum", [10.0, 12.0], [8.2, 10.2]),
    ("one seed per side (no spread)", [5.0], [4.0]),
)


def _foreseen_mistakes(a, b) -> dict[str, str]:
    """Mistake -> the verdict it gives on (a, b), from the ledger's own margin and standard deviations."""
    from sela_edu.course.ledger.claims import Beats, beats_verdict
    from sela_edu.course.views.verdicts import mean_std

    judged = Beats("a", "b", "knn").judge({"a": a, "b": b})
    stds = [mean_std(x)[1] for x in (a, b)]
    return {
        "flipped": beats_verdict(-judged.margin, judged.spread),
        "population std": beats_verdict(judged.margin, float(np.std(a) + np.std(b))),
        "larger std": beats_verdict(judged.margin, max(stds)),
        "no spread": beats_verdict(judged.margin, 0.0),
    }


def check_beats_verdict(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(a, b) -> verdict``: ``a`` and ``b`` are one measure (higher is better) over seeds for
    two settings, and the claim is "A beats B". The verdict is ``"reproduces"`` when A's mean is ahead
    of B's by more than the spread (the sum of the two sample standard deviations; 0 for one seed),
    ``"does not reproduce"`` when it is behind by more than the spread, else ``"within the spread"``.
    Compared with the ledger's own rule, :class:`sela_edu.course.ledger.claims.Beats`, which the answer may
    not call (nor the rule's parts, ``beats_verdict`` and ``beyond_spread``)."""
    from sela_edu.course.ledger.claims import VERDICTS, WITHIN, Beats, beats_verdict, judge
    from sela_edu.course.views.verdicts import beyond_spread

    rule = Beats("a", "b", "knn")
    for name, a, b in _PROBLEMS:
        want = rule.judge({"a": a, "b": b}).verdict
        with without_kit(fn, Beats, judge, beats_verdict, beyond_spread, exercise="beats_verdict"):
            got = call_answer(fn, list(a), list(b), what="beats_verdict")
        if got == want:
            continue
        if got not in VERDICTS:
            raise ExerciseFailure(f"on {name} you returned {got!r}: return one of {list(VERDICTS)}")
        if len(a) == 1 and got == WITHIN:     # np.std(x, ddof=1) of one value is nan: no comparison holds
            raise ExerciseFailure(f"on {name} you returned {got!r}: with one seed the spread is 0, but "
                                  "np.std(x, ddof=1) of one value is nan and every comparison with nan is False")
        mistakes = _foreseen_mistakes(a, b)
        if got == mistakes["flipped"]:
            raise ExerciseFailure(f"on {name} you returned {got!r}: the margin is mean(a) - mean(b) (A must be "
                                  "ahead), you computed it the other way round")
        if got == mistakes["population std"]:
            raise ExerciseFailure(f"on {name} you returned {got!r}: the spread over seeds uses the sample standard "
                                  "deviation (np.std(x, ddof=1), statistics.stdev), not the population one (ddof=0)")
        if got == mistakes["larger std"]:
            raise ExerciseFailure(f"on {name} you returned {got!r}: the spread is the sum of the two sides' "
                                  "standard deviations, not the larger one (each mean is uncertain)")
        if got == mistakes["no spread"]:
            raise ExerciseFailure(f"on {name} you returned {got!r}: a difference counts only when it is larger than "
                                  "the spread over seeds, std(a) + std(b); smaller is 'within the spread'")
        raise ExerciseFailure(f"on {name} (a = {a}, b = {b}) you returned {got!r}, expected {want!r}: compare "
                              "mean(a) - mean(b) with std(a) + std(b)")
    return passed("the difference of the means is weighed against the summed spread over seeds.", quiet)
