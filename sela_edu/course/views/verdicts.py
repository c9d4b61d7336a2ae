"""Result sentences computed from the measured numbers, so that a notebook never asserts in prose what
its own run may contradict.

>>> print(compare("SeLa", 88.3, "k-means labels", 86.1, metric="kNN accuracy", unit=" points"))
SeLa beats k-means labels on kNN accuracy by 2.2 points
>>> print(compare("SeLa", 85.0, "a random network", 85.04, metric="kNN accuracy", unit=" points"))
SeLa ties with a random network on kNN accuracy (85.0 against 85.0)

With several seeds, pass sequences: the means are compared and a difference no larger than the spread
over seeds (the sum of both standard deviations) is reported as such, not as a win.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

@dataclass(frozen=True)
class Verdict:
    """One comparison: ``outcome`` is "beats", "ties with" or "does not beat"; ``clear`` is False when
    the difference is within the spread over seeds. ``str(verdict)`` is the sentence."""

    text: str
    outcome: str
    difference: float
    clear: bool = True

    @property
    def wins(self) -> bool:
        """True when the first method is ahead by more than the rounding and the spread."""
        return self.outcome == "beats" and self.clear

    def __str__(self) -> str:
        return self.text


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the values over seeds."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise: give at least one measured value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def beyond_spread(margin: float, spread: float) -> int:
    """The kit's one rule for a difference over seeds: +1 when ``margin`` is ahead by more than ``spread``
    (the sum of both sides' standard deviations), -1 when it is behind by more, 0 within the spread.
    :func:`compare`, the ledger's verdicts and notebook 08's exercise checker all weigh margins with it."""
    return 1 if margin > spread else -1 if margin < -spread else 0


def _mean_spread(value) -> tuple[float, float | None, int]:
    """Mean, standard deviation over seeds (None for a single number or seed), and the number of seeds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None, 1
    values = list(value)
    mean, std = mean_std(values)
    return mean, (std if len(values) > 1 else None), len(values)


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def compare(name_a: str, a: float | Sequence[float], name_b: str, b: float | Sequence[float], *,
            metric: str, unit: str = "", higher_is_better: bool = True, decimals: int = 1) -> Verdict:
    """The sentence "A beats B on METRIC by D UNIT" / "A does not beat B ..." / "A ties with B ...".

    ``a`` and ``b`` are numbers or, over seeds, sequences of numbers (their means are compared).
    A difference that rounds to zero at ``decimals`` is a tie. With sequences, a difference no larger
    than the sum of the two standard deviations is reported as within the spread over seeds.
    ``higher_is_better=False`` for errors and losses.
    """
    mean_a, spread_a, n_a = _mean_spread(a)
    mean_b, spread_b, n_b = _mean_spread(b)
    if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
        text = f"{name_a} and {name_b} cannot be compared on {metric}: a value is missing ({mean_a}, {mean_b})"
        return Verdict(text, "ties with", float("nan"), clear=False)
    diff = mean_a - mean_b
    ahead = diff if higher_is_better else -diff
    shown = _fmt(abs(diff), decimals)
    if float(shown) == 0.0:
        text = f"{name_a} ties with {name_b} on {metric} ({_fmt(mean_a, decimals)} against {_fmt(mean_b, decimals)})"
        return Verdict(text, "ties with", diff, clear=False)
    outcome = "beats" if ahead > 0 else "does not beat"
    if outcome == "beats":
        text = f"{name_a} beats {name_b} on {metric} by {shown}{unit}"
    else:
        text = f"{name_a} does not beat {name_b} on {metric}: it is behind by {shown}{unit}"
    clear = True
    spreads = [s for s in (spread_a, spread_b) if s is not None]
    if spreads:
        spread = sum(spreads)
        seeds = max(n_a, n_b)
        clear = beyond_spread(abs(diff), spread) > 0
        text += (f" (mean of {seeds} seeds; spread {_fmt(spread, decimals)}{unit}"
                 + ("" if clear else ": within the spread, not a clear difference") + ")")
    return Verdict(text, outcome, diff, clear)


def rank(results: dict[str, float], *, metric: str, unit: str = "", decimals: int = 1) -> str:
    """One sentence ordering several methods on one metric, best first: "On kNN accuracy: SeLa 88.3,
    k-means labels 86.1, random network 83.0 (best: SeLa)"."""
    if not results:
        raise ValueError("rank() needs at least one result")
    ordered = sorted(results.items(), key=lambda kv: -float(kv[1]))
    body = ", ".join(f"{name} {_fmt(float(v), decimals)}{unit}" for name, v in ordered)
    return f"On {metric}: {body} (best: {ordered[0][0]})"


__all__ = ["compare", "rank", "Verdict", "mean_std", "beyond_spread"]
