"""The ledger of the paper's claims (notebook 08, ``sela-edu ledger``): each claim as data, with the
paper's statement, the paper's figure and where it comes from, the runs it compares, the measure, and
the rule that turns the measured numbers into a verdict.

A claim names *settings* (``"sela"``, ``"kmeans-heavy"``, ``"k30x1"``, ...), not runs: every setting
runs once per seed (:mod:`sela_edu.course.ledger.runs`), and settings shared between claims run once
(the plain SeLa run is the baseline of claims 2, 3, 4, 7 and 8). The verdict rules:

* :class:`Beats`: "A is better than B". Reproduces when A's mean is ahead by more than the spread over
  seeds (the sum of the two standard deviations, as :func:`sela_edu.course.views.verdicts.compare`), does not
  reproduce when it is behind by more than the spread, else "within the spread".
* :class:`Close`: "A comes close to B" (within ``tolerance``; ``two_sided``: above or below).
  Reproduces when the gap is within the tolerance, "within the spread" when it misses by no more than
  the spread, else does not reproduce.
* :class:`InRange`: "the measure lies in [low, high]" (claim 9's growth exponents), the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sela_edu import paper
from sela_edu.course.views.verdicts import beyond_spread, mean_std

REPRODUCES = "reproduces"
DOES_NOT = "does not reproduce"
WITHIN = "within the spread"
NOT_RUN = "not run"
NOT_RECORDED = "not recorded"     #: a recorded ledger that is only read lacks the row's runs
VERDICTS = (REPRODUCES, DOES_NOT, WITHIN)

#: what each measure is, for the table; accuracies are % on the test split, NMI in [0, 1]
MEASURES = {
    "knn": ("weighted kNN (k = 10) %", 1),
    "linear": ("linear probe %", 1),
    "nmi": ("NMI of head 0 on the test split", 3),
    "nonempty": ("share of clusters still holding an image", 2),
    "slope_n": ("growth exponent of the solve time in N", 2),
    "slope_k": ("growth exponent of the solve time in K", 2),
    "seconds_kit": ("seconds of the kit's label step", 3),
    "seconds_reference": ("seconds of the official algorithm", 3),
    "relabel_share": ("share of the run's time in label steps %", 1),
    "largest_cluster": ("largest cluster of the training labels / (N/K)", 2),
}


@dataclass(frozen=True)
class Judgement:
    """A rule applied to the numbers: the verdict, and the numbers behind it."""

    verdict: str
    measured: str       #: the measured means +- std over seeds, as the table prints them
    margin: float       #: how far the claim holds (> 0) or fails (< 0), in the measure's unit
    spread: float       #: the spread over seeds the margin is weighed against


def _shown(name: str, values: Sequence[float], decimals: int) -> str:
    mean, std = mean_std(values)
    return f"{name} {mean:.{decimals}f} +- {std:.{decimals}f}"


def _verdict(margin: float, spread: float, *, needs_clear: bool) -> str:
    """``needs_clear``: the claim is a difference, so it must exceed the spread to count (Beats);
    otherwise a margin >= 0 is enough (Close, InRange: the claim is a bound)."""
    if not math.isfinite(margin):
        return NOT_RUN
    weighed = beyond_spread(margin, spread)
    if weighed > 0 or (not needs_clear and margin >= 0):
        return REPRODUCES
    return DOES_NOT if weighed < 0 else WITHIN


def beats_verdict(margin: float, spread: float) -> str:
    """The verdict of "A beats B" from A's margin over B and the spread over seeds (:class:`Beats`)."""
    return _verdict(margin, spread, needs_clear=True)


@dataclass(frozen=True)
class _Pair:
    """A rule comparing setting ``a`` with setting ``b`` on ``measure``."""

    a: str
    b: str
    measure: str

    @property
    def settings(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def _compared(self, values: Mapping[str, Sequence[float]]) -> tuple[float, float, float, str]:
        """Mean of a, mean of b, the sum of their spreads, and the "a vs b" line."""
        (ma, sa), (mb, sb) = mean_std(values[self.a]), mean_std(values[self.b])
        decimals = MEASURES[self.measure][1]
        measured = f"{_shown(self.a, values[self.a], decimals)} vs {_shown(self.b, values[self.b], decimals)}"
        return ma, mb, sa + sb, measured


@dataclass(frozen=True)
class Beats(_Pair):
    """Setting ``a`` is better than setting ``b`` on ``measure`` (lower is better for times)."""

    lower_is_better: bool = False

    def judge(self, values: Mapping[str, Sequence[float]]) -> Judgement:
        ma, mb, spread, measured = self._compared(values)
        margin = (mb - ma) if self.lower_is_better else (ma - mb)
        return Judgement(beats_verdict(margin, spread), measured, margin, spread)


@dataclass(frozen=True)
class Close(_Pair):
    """Setting ``a`` is within ``tolerance`` of setting ``b`` on ``measure``; one-sided
    (``two_sided=False``): ``a`` is not more than ``tolerance`` below ``b`` (being above is fine)."""

    tolerance: float
    two_sided: bool = True

    def judge(self, values: Mapping[str, Sequence[float]]) -> Judgement:
        ma, mb, spread, measured = self._compared(values)
        gap = abs(ma - mb) if self.two_sided else max(mb - ma, 0.0)
        margin = self.tolerance - gap
        return Judgement(_verdict(margin, spread, needs_clear=False), measured, margin, spread)


@dataclass(frozen=True)
class InRange:
    """The mean of setting ``a``'s ``measure`` lies in [``low``, ``high``]."""

    a: str
    measure: str
    low: float
    high: float

    @property
    def settings(self) -> tuple[str, ...]:
        return (self.a,)

    def judge(self, values: Mapping[str, Sequence[float]]) -> Judgement:
        mean, std = mean_std(values[self.a])
        margin = min(mean - self.low, self.high - mean)
        measured = f"{_shown(self.a, values[self.a], MEASURES[self.measure][1])} (claim: {self.low:g} to {self.high:g})"
        return Judgement(_verdict(margin, std, needs_clear=False), measured, margin, std)


@dataclass(frozen=True)
class Claim:
    """One row of the ledger: ``id`` ("2a": the issue's claim 2, first test), the paper's
    ``statement``, the paper's figure beside it (``paper``) and where that figure comes from
    (``source``), and the ``rule`` applied to the measured numbers."""

    id: str
    statement: str
    paper: str
    source: str
    rule: Beats | Close | InRange

    @property
    def number(self) -> int:
        """The paper's claim this row tests (the issue's numbering, 1 to 9)."""
        return int("".join(ch for ch in self.id if ch.isdigit()))

    @property
    def settings(self) -> tuple[str, ...]:
        return self.rule.settings

    @property
    def measure(self) -> str:
        return self.rule.measure


def _table3(data: str, method: str, column: int = 2) -> float:
    """A figure of the paper's imbalance table (column 2: linear probe on CIFAR-10)."""
    return paper.IMBALANCE[data][method][column]


def _nopts(n: int) -> float:
    return paper.LABEL_OPTIMISATIONS[n][2]          # conv5


def _k(clusters: str, layer: int = 2) -> float:
    return paper.CLUSTERS[clusters][layer]           # conv5 unless told


def _swav(method: str, crops: str = "multi-crop") -> float:
    return paper.SUCCESSORS[method][crops]


_SWAV = "facebookresearch/swav README (ImageNet, ResNet-50, 400 epochs, linear top-1) and SeLa's README"
_TABLE3 = "the paper's imbalance table (CIFAR-10, one head of 128; values, not its printed differences)"
_ABLATION = "the paper's ImageNet ablations (AlexNet, linear probes conv3/conv4/conv5)"

#: The ledger: the paper's claims, each tested at small scale. Settings are defined per profile in
#: :func:`sela_edu.course.ledger.runs.setting_specs`; ``k{K}x{h}`` is h heads of K clusters.
CLAIMS: tuple[Claim, ...] = (
    Claim("1", "self-labelling without equipartition collapses; with it, it does not",
          "degenerate without the constraint (every image in one cluster); equal clusters with it",
          "the paper's method section", Beats("collapse-sinkhorn", "collapse-argmax", "nonempty")),
    Claim("2a", "SK pseudo-labels beat k-means pseudo-labels (kNN)", f"kNN C10 {_table3('full', 'SK', 0)} vs {_table3('full', 'k-means', 0)}", _TABLE3,
          Beats("sela", "kmeans", "knn")),
    Claim("2b", "SK pseudo-labels beat k-means pseudo-labels (linear probe)", f"linear C10 {_table3('full', 'SK')} vs {_table3('full', 'k-means')}", _TABLE3,
          Beats("sela", "kmeans", "linear")),
    Claim("2c", "SK pseudo-labels cluster the classes at least as well as k-means pseudo-labels (NMI)",
          "not reported by the paper (the kit's own question: the clustering gap)", "-", Beats("sela", "kmeans", "nmi")),
    Claim("3a", "light imbalance barely matters (SeLa, within 1 point)", f"linear C10 {_table3('full', 'SK')} full vs {_table3('light', 'SK')} light",
          _TABLE3, Close("sela-light", "sela", "linear", tolerance=1.0)),
    Claim("3b", "heavy imbalance costs SeLa", f"linear C10 {_table3('full', 'SK')} full vs {_table3('heavy', 'SK')} heavy", _TABLE3,
          Beats("sela", "sela-heavy", "linear")),
    Claim("3c", "heavy imbalance costs k-means pseudo-labels", f"linear C10 {_table3('full', 'k-means')} full vs {_table3('heavy', 'k-means')} heavy", _TABLE3,
          Beats("kmeans", "kmeans-heavy", "linear")),
    Claim("3d", "under heavy imbalance SK still beats k-means", f"linear C10 {_table3('heavy', 'SK')} vs {_table3('heavy', 'k-means')}", _TABLE3,
          Beats("sela-heavy", "kmeans-heavy", "linear")),
    Claim("4a", "no label optimisation is far worse", f"[3k x 1] conv5 {_nopts(0)} (0 optimisations) vs {_nopts(80)} (80)",
          _ABLATION, Beats("sela", "nopts-0", "linear")),
    Claim("4b", "more label optimisations help (half the schedule's vs the schedule's)",
          f"conv5 {_nopts(40)} (40) vs {_nopts(80)} (80)", _ABLATION, Beats("sela", "nopts-half", "linear")),
    Claim("4c", "... up to a point: twice as many change little (within 1 point)", f"conv5 {_nopts(80)} (80) vs {_nopts(160)} (160)",
          _ABLATION, Close("nopts-double", "sela", "linear", tolerance=1.0)),
    Claim("5a", "over-clustering (3x the classes) beats K = the number of classes",
          f"conv5 {_k('3k')} [3k x 1] vs {_k('1k')} [1k x 1]", _ABLATION, Beats("k-over3", "k-classes", "linear")),
    Claim("5b", "over-clustering (10x the classes) beats K = the number of classes",
          f"conv5 {_k('10k')} [10k x 1] vs {_k('1k')} [1k x 1]", _ABLATION, Beats("k-over10", "k-classes", "linear")),
    Claim("5c", "over-clustering (30x the classes) beats K = the number of classes",
          "no such setting in the paper (largest: 10k = 10x)", "-", Beats("k-over30", "k-classes", "linear")),
    Claim("6", "several heads beat one (same K)",
          f"{paper.LABEL_TRANSFER['alexnet']} [3k x 10] (the label-transfer row; its layer is not in the notes) vs "
          f"{_k('3k', 1)} [3k x 1] (conv4)", _ABLATION,
          Beats("heads-several", "k-over3", "linear")),
    Claim("7", "labels transfer: a fresh network trained on them comes within 1 point of the one that made them",
          f"{paper.LABEL_TRANSFER['alexnet on alexnet labels']} (fresh AlexNet on AlexNet's [3k x 10] labels) vs "
          f"{paper.LABEL_TRANSFER['alexnet']}", "the paper's label-transfer experiment",
          Close("transfer", "sela", "linear", tolerance=1.0, two_sided=False)),
    Claim("8", "+Rot improves the features", "SeLa + Rot above SeLa (figures not in the kit's reference notes)",
          "the paper's ImageNet table", Beats("rot", "sela", "linear")),
    Claim("9a", "the label step is linear in N", "O(NK) per iteration",
          "the paper's method section", InRange("timing", "slope_n", 0.75, 1.25)),
    Claim("9b", "the label step is linear in K", "O(NK) per iteration",
          "the paper's method section", InRange("timing", "slope_k", 0.75, 1.25)),
    Claim("9c", "the label step is fast: the kit's solver beats the official algorithm on the same scores",
          "ImageNet (1.28M x 3000) within 2 minutes on a GPU", "the paper's implementation notes",
          Beats("timing", "timing-reference", "seconds_kit", lower_is_better=True)),
    # SeLa beside its successors (SwAV's paper, Caron et al. 2020), on the same schedule and evaluation
    Claim("10a", "SeLa-v2 beats SeLa (linear probe)", f"{_swav('sela-v2')} vs {_swav('sela')}", _SWAV,
          Beats("sela-v2", "sela", "linear")),
    Claim("10b", "SeLa-v2 beats SeLa (kNN)", "not reported (the kit's own measure)", "-", Beats("sela-v2", "sela", "knn")),
    Claim("11", "DeepCluster-v2 and SeLa-v2 are close (within the gap of SwAV's figures, 2.5 points)",
          f"{_swav('deepcluster-v2')} vs {_swav('sela-v2')}", _SWAV,
          Close("deepcluster-v2", "sela-v2", "linear", tolerance=2.5)),
    Claim("12", "multi-crop helps (SeLa-v2 with small crops beats it with two large crops only)",
          f"{_swav('sela-v2')} vs {_swav('sela-v2', '2 crops')}", _SWAV, Beats("sela-v2", "sela-v2-2crops", "linear")),
    Claim("13a", "SwAV matches the offline methods (within 1 point of DeepCluster-v2)",
          f"{_swav('swav')} vs {_swav('deepcluster-v2')}", _SWAV, Close("swav", "deepcluster-v2", "linear", tolerance=1.0)),
    Claim("13b", "... without their pass over the data set: less of its time in label steps than SeLa-v2",
          "SwAV computes codes per batch: no scoring pass", "SwAV's paper",
          Beats("swav", "sela-v2", "relabel_share", lower_is_better=True)),
    Claim("14", "SeLa's label step keeps clusters equal; SwAV's three iterations per batch do not",
          "not reported by SwAV (the kit measured 2.6-5.6x N/K for 3 iterations on a data set's real scores)", "-",
          Beats("sela-v2", "swav", "largest_cluster", lower_is_better=True)),
)


def claims_for(only: Sequence[str] | None = None, claims: Sequence[Claim] = CLAIMS) -> list[Claim]:
    """The claims ``only`` names: "2" selects 2a, 2b and 2c; "2b" only that row (None: all).
    Raises ValueError naming unknown ids."""
    if not only:
        return list(claims)
    chosen = [c for c in claims if c.id in only or str(c.number) in only]
    known = {c.id for c in claims} | {str(c.number) for c in claims}
    unknown = [o for o in only if o not in known]
    if unknown:
        raise ValueError(f"unknown claim(s) {unknown}; the ledger's claims are {sorted(known, key=_claim_order)}")
    return chosen


def _claim_order(text: str):
    digits = "".join(ch for ch in text if ch.isdigit())
    return (int(digits or 0), text)


def values_by_setting(results: Mapping[str, Mapping], measure: str) -> dict[str, list[float]]:
    """``{setting: [the measure of each seed's run]}`` from the stored run results (keyed by run name).
    Claim 9c compares two measures of one run: its ``seconds_reference`` is filed under the setting
    ``"timing-reference"`` so that the rules compare settings only."""
    values: dict[str, list[float]] = {}
    for result in results.values():
        measures = result["measures"]
        if measure in measures:
            values.setdefault(result["setting"], []).append(float(measures[measure]))
        if measure == "seconds_kit" and "seconds_reference" in measures:
            values.setdefault("timing-reference", []).append(float(measures["seconds_reference"]))
    return values


def judge(claim: Claim, results: Mapping[str, Mapping]) -> Judgement:
    """The claim's rule applied to the stored results; ``not run`` when a setting has no result."""
    values = values_by_setting(results, claim.measure)
    missing = [s for s in claim.settings if not values.get(s)]
    if missing:
        return Judgement(NOT_RUN, f"missing: {', '.join(missing)}", float("nan"), float("nan"))
    return claim.rule.judge(values)


def ledger_rows(results: Mapping[str, Mapping], claims: Sequence[Claim] = CLAIMS, *,
                record_command: str | None = None) -> list[dict]:
    """One row per claim: id, claim, paper (figure and source), measure, measured, verdict.

    ``record_command`` (e.g. ``"sela-edu ledger --profile classroom"``): the results are a recorded
    ledger that is only read, so a row whose runs are missing is "not recorded" and names the command
    that records it, instead of listing the missing settings."""
    rows = []
    for claim in claims:
        j = judge(claim, results)
        measured, verdict = j.measured, j.verdict
        if verdict == NOT_RUN and record_command:
            measured, verdict = f"record it: `{record_command} --only {claim.id}`", NOT_RECORDED
        rows.append({"claim": claim.id, "statement": claim.statement, "paper": claim.paper, "source": claim.source,
                     "measure": MEASURES[claim.measure][0], "measured": measured, "verdict": verdict})
    return rows


def format_table(rows: Sequence[Mapping]) -> str:
    """The rows as a Markdown table (what ``sela-edu ledger`` prints and the notebook shows)."""
    head = "| claim | statement | paper | measure | measured (mean +- std over seeds) | verdict |"
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['claim']} | {r['statement']} | {r['paper']} | {r['measure']} | {r['measured']} "
                     f"| {r['verdict']} |")
    return "\n".join(lines)


def verdict_counts(rows: Sequence[Mapping]) -> dict[str, int]:
    """How many rows got each verdict (and how many were not run, or not recorded)."""
    return {v: sum(r["verdict"] == v for r in rows) for v in (*VERDICTS, NOT_RUN, NOT_RECORDED)}


__all__ = ["REPRODUCES", "DOES_NOT", "WITHIN", "NOT_RUN", "NOT_RECORDED", "VERDICTS", "MEASURES", "Judgement",
           "beats_verdict", "Beats", "Close", "InRange", "Claim", "CLAIMS", "claims_for", "values_by_setting", "judge",
           "ledger_rows", "format_table", "verdict_counts"]
