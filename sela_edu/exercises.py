"""Checkers for the course's exercise cells.

Each ``check_*`` function takes the student's function, runs it on a few small problems chosen so
that the usual mistakes give visibly different answers, and either prints a short confirmation and
returns ``None`` or raises :class:`ExerciseFailure` (an ``AssertionError``) whose message says what
came out and which mistake most likely produced it, e.g. *"your rows sum to 0.73, not to a: did you
divide by the row sums?"*.

The reference answers live in the solution edition of the notebooks (cells tagged ``solution``);
this module only knows how to recognise a right answer and the common wrong ones.

| exercise | notebook | student writes |
| --- | --- | --- |
| :func:`check_sinkhorn_step` | 01 | ``sinkhorn_step(Q, a, b) -> Q``: rescale rows to ``a``, then columns to ``b`` |
| :func:`check_equipartition` | 02 | ``marginal_errors(Q) -> (row_error, col_error)`` for SeLa's marginals 1/N and 1/K |
| :func:`check_labels_from_plan` | 02 | ``labels_from_plan(P, r, c) -> labels``: hard labels from the scaled plan |
| :func:`check_weighted_knn_vote` | 03 | ``weighted_knn_vote(sims, neighbour_labels, num_classes, temperature)`` |
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "ExerciseFailure",
    "check_sinkhorn_step",
    "check_equipartition",
    "check_labels_from_plan",
    "check_weighted_knn_vote",
    "EXERCISES",
]


class ExerciseFailure(AssertionError):
    """A wrong answer to an exercise; the message is the hint."""


def _to_numpy(x, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ExerciseFailure(f"{what} should be an array or tensor of numbers, got {type(x).__name__}") from exc


def _call(fn: Callable, *args, what: str):
    if not callable(fn):
        raise ExerciseFailure(f"pass your function itself (e.g. check(my_function)), not {type(fn).__name__}")
    try:
        return fn(*args)
    except NotImplementedError as exc:
        raise ExerciseFailure(
            f"{what} is not written yet: replace the `# YOUR CODE HERE` stub and `raise NotImplementedError`"
        ) from exc


def _done(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"Correct: {message}")


# --------------------------------------------------------------------------------------------------
# 01: one Sinkhorn iteration


def _sinkhorn_problems():
    rng = np.random.default_rng(0)
    problems = []
    # rectangular, uneven marginals with different totals per side would be infeasible, so keep the
    # totals equal but the entries uneven: a wrong axis or order shows up in the sums
    for n, m in ((3, 4), (5, 2), (4, 4)):
        q = rng.uniform(0.05, 1.0, size=(n, m))
        a = rng.uniform(0.5, 2.0, size=n)
        b = rng.uniform(0.5, 2.0, size=m)
        b *= a.sum() / b.sum()
        problems.append((q, a, b))
    return problems


def _reference_sinkhorn_step(q, a, b):
    q = q * (a / q.sum(axis=1))[:, None]
    return q * (b / q.sum(axis=0))[None, :]


def check_sinkhorn_step(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(Q, a, b)``: one Sinkhorn iteration on a positive matrix ``Q`` (n x m) with source
    masses ``a`` (n) and target masses ``b`` (m): scale each row so it sums to ``a``, then each column
    so it sums to ``b``. Returns the new matrix (the input may be left alone or modified)."""
    for q, a, b in _sinkhorn_problems():
        want = _reference_sinkhorn_step(q, a, b)
        got = _to_numpy(_call(fn, q.copy(), a.copy(), b.copy(), what="sinkhorn_step"), "the returned matrix")
        if got.shape != q.shape:
            hint = " (did you return a vector of sums instead of the rescaled matrix?)" if got.ndim == 1 else ""
            raise ExerciseFailure(f"the result has shape {got.shape}, expected {q.shape} like Q{hint}")
        if not np.all(np.isfinite(got)):
            raise ExerciseFailure("the result contains NaN or inf: did you divide by zero somewhere?")
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        cols, rows = got.sum(axis=0), got.sum(axis=1)
        rows_only = q * (a / q.sum(axis=1))[:, None]
        swapped = _reference_sinkhorn_step(q.T, b, a).T  # columns first, then rows
        if np.allclose(got, q):
            raise ExerciseFailure("the matrix came back unchanged: did you forget to return the rescaled matrix?")
        if np.allclose(got, rows_only):
            raise ExerciseFailure(
                f"your rows sum to a, but your columns sum to {np.round(cols, 3)}, not to b = {np.round(b, 3)}: "
                "after scaling the rows, scale the columns by b / (column sums)"
            )
        if np.allclose(got, swapped):
            raise ExerciseFailure(
                "you scaled the columns first and the rows second: the rows now sum to a but the columns "
                f"sum to {np.round(cols, 3)}, not b. Do rows first, then columns"
            )
        unit_rows = q / q.sum(axis=1, keepdims=True)
        if np.allclose(got, unit_rows / unit_rows.sum(axis=0)):
            raise ExerciseFailure(
                "your columns sum to 1, not to b: multiply by the target masses, i.e. scale by b / (column "
                "sums), and the rows by a / (row sums)"
            )
        if np.allclose(cols, b) and not np.allclose(got, want):
            raise ExerciseFailure(
                f"your columns sum to b, but the matrix differs from one row-then-column rescaling "
                f"(rows sum to {np.round(rows, 3)}, reference {np.round(want.sum(axis=1), 3)}): "
                "did you divide the rows by the row sums and multiply by a before the column step?"
            )
        raise ExerciseFailure(
            f"your columns sum to {np.round(cols, 3)}, not to b = {np.round(b, 3)}: did you divide by the "
            "row sums (axis=1) for rows and the column sums (axis=0) for columns?"
        )
    return _done("one iteration scales rows to a, then columns to b.", quiet)


# --------------------------------------------------------------------------------------------------
# 02: the equipartition check


def _reference_marginal_errors(q):
    n, k = q.shape
    return float(np.abs(q.sum(axis=1) - 1.0 / n).max()), float(np.abs(q.sum(axis=0) - 1.0 / k).max())


def check_equipartition(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(Q) -> (row_error, col_error)``: for an N x K assignment matrix ``Q``, the largest
    absolute deviation of the row sums from 1/N (each image carries mass 1/N) and of the column sums
    from 1/K (each cluster receives 1/K of the data: the equipartition constraint)."""
    rng = np.random.default_rng(1)
    n, k = 12, 4
    exact = np.full((n, k), 1.0 / (n * k))                       # a feasible plan: both errors 0
    hard = np.zeros((n, k))
    hard[np.arange(n), np.arange(n) % k] = 1.0 / n               # hard, equal clusters: still feasible
    skew = rng.uniform(0.1, 1.0, size=(n, k))
    skew /= skew.sum()                                           # total mass 1 but marginals off
    collapsed = np.zeros((n, k))
    collapsed[:, 0] = 1.0 / n                                    # everything in one cluster
    for name, q in (("a uniform feasible plan", exact), ("a hard equipartition", hard),
                    ("a random plan", skew), ("a collapsed plan", collapsed)):
        out = _call(fn, q.copy(), what="marginal_errors")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ExerciseFailure("return two numbers: (row_error, col_error)")
        got = tuple(float(_to_numpy(v, "each error").max()) for v in out)
        want = _reference_marginal_errors(q)
        if np.allclose(got, want, rtol=1e-6, atol=1e-12):
            continue
        row_sums, col_sums = q.sum(axis=1), q.sum(axis=0)
        if np.allclose(got, want[::-1], rtol=1e-6, atol=1e-12):
            raise ExerciseFailure("your two errors are swapped: return (row_error, col_error)")
        if np.allclose(got, (np.abs(row_sums - 1.0 / k).max(), np.abs(col_sums - 1.0 / n).max())):
            raise ExerciseFailure(
                "you compared rows with 1/K and columns with 1/N: rows are the N images (each carries "
                "1/N), columns are the K clusters (each gets 1/K)"
            )
        if np.allclose(got, (np.abs(row_sums - 1).max(), np.abs(col_sums - 1).max())):
            raise ExerciseFailure(
                "you compared the sums with 1: in SeLa's form Q is a joint distribution (total mass 1), "
                "so rows should sum to 1/N and columns to 1/K"
            )
        if np.allclose(got, ((row_sums - 1.0 / n).max(), (col_sums - 1.0 / k).max())):
            raise ExerciseFailure(f"on {name} your error is negative or too small: take the absolute value "
                                  "of the deviation before the maximum")
        if np.allclose(got, (np.abs(row_sums - 1.0 / n).sum(), np.abs(col_sums - 1.0 / k).sum())):
            raise ExerciseFailure("you summed the deviations: the check asks for the largest one (max)")
        raise ExerciseFailure(
            f"on {name} you returned {np.round(got, 5)}, expected {np.round(want, 5)}: the row sums are "
            f"{np.round(row_sums[:4], 4)}... (target 1/N = {1 / n:.4f}); the column sums are "
            f"{np.round(col_sums, 4)} (target 1/K = {1 / k:.4f})"
        )
    return _done("rows are checked against 1/N and columns against 1/K.", quiet)


# --------------------------------------------------------------------------------------------------
# 02: hard labels from the plan


def check_labels_from_plan(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(P, r, c) -> labels``: given the N x K matrix ``P`` (= P^lambda up to scaling) and
    Sinkhorn's scaling vectors ``r`` (N) and ``c`` (K), the plan is ``diag(r) P diag(c)``; each image's
    label is the cluster where its row of the plan is largest (an int array of length N)."""
    rng = np.random.default_rng(2)
    n, k = 40, 5
    p = rng.uniform(0.01, 1.0, size=(n, k))
    p[:, 0] *= 4.0                        # raw scores favour cluster 0 ...
    r = rng.uniform(0.5, 2.0, size=n)
    c = np.array([0.1, 1.0, 1.2, 0.9, 1.1])  # ... but the column scaling pushes mass elsewhere
    out = _call(fn, p.copy(), r.copy(), c.copy(), what="labels_from_plan")
    got = _to_numpy(out, "the labels")
    want = np.argmax(p * r[:, None] * c[None, :], axis=1)
    if got.shape != (n,):
        hint = " (did you return the plan instead of argmax over its rows?)" if got.shape == (n, k) else ""
        raise ExerciseFailure(f"expected {n} labels, one per image, got shape {got.shape}{hint}")
    if np.array_equal(got.astype(np.int64), want):
        return _done("labels are the argmax of the scaled plan, not of the raw scores.", quiet)
    if np.array_equal(got, np.argmax(p, axis=1)):
        raise ExerciseFailure(
            "these are the argmax of the raw scores P: the labels must come from the plan diag(r) P diag(c), "
            "otherwise the equipartition that Sinkhorn found is thrown away"
        )
    if got.min() < 0 or got.max() >= k:
        raise ExerciseFailure("take the argmax over clusters (axis=1), one label per image")
    if np.array_equal(got, np.argmax(p / r[:, None] / c[None, :], axis=1)):
        raise ExerciseFailure("you divided by the scalings: the plan multiplies rows by r and columns by c")
    sizes = np.bincount(got.astype(np.int64).clip(0, k - 1), minlength=k)
    raise ExerciseFailure(
        f"{int((got != want).sum())} of {n} labels differ from the argmax of diag(r) P diag(c) (your cluster "
        f"sizes: {sizes.tolist()}): scale columns by c (and rows by r) before the argmax over axis 1"
    )


# --------------------------------------------------------------------------------------------------
# 03: the weighted kNN vote


def _reference_vote(sims, neighbour_labels, num_classes, temperature):
    weights = np.exp(sims / temperature)
    votes = np.zeros((sims.shape[0], num_classes))
    np.add.at(votes, (np.arange(sims.shape[0])[:, None], neighbour_labels), weights)
    return votes.argmax(axis=1)


def check_weighted_knn_vote(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(similarities, neighbour_labels, num_classes, temperature) -> predictions``: each test
    point has k neighbours with cosine similarities (n x k) and labels (n x k, ints); each neighbour votes
    for its label with weight exp(similarity / temperature) (Wu et al. 2018, used by SeLa with
    temperature 0.1); the prediction is the class with the largest total weight."""
    rng = np.random.default_rng(3)
    n, k, classes, temperature = 200, 7, 4, 0.1
    sims = np.sort(rng.uniform(-0.2, 1.0, size=(n, k)), axis=1)[:, ::-1].copy()
    labels = rng.integers(0, classes, size=(n, k))
    # rows where the plain majority and the weighted vote disagree make the weighting matter
    labels[:50, 0] = 3
    labels[:50, 1:] = rng.integers(0, 3, size=(50, k - 1))
    sims[:50, 0] = 0.95
    sims[:50, 1:] = rng.uniform(0.3, 0.6, size=(50, k - 1))
    out = _call(fn, sims.copy(), labels.copy(), classes, temperature, what="weighted_knn_vote")
    got = _to_numpy(out, "the predictions")
    want = _reference_vote(sims, labels, classes, temperature)
    if got.shape != (n,):
        hint = " (did you return the vote totals? take the argmax over classes)" if got.shape == (n, classes) else ""
        raise ExerciseFailure(f"expected one prediction per test point, shape ({n},), got {got.shape}{hint}")
    got = got.astype(np.int64)
    if np.array_equal(got, want):
        return _done("each neighbour votes with weight exp(similarity / temperature).", quiet)
    majority = np.array([np.bincount(row, minlength=classes).argmax() for row in labels])
    if np.array_equal(got, majority):
        raise ExerciseFailure("this is a plain majority vote: weight each neighbour's vote by exp(similarity / temperature)")
    if np.array_equal(got, _reference_vote(np.log(np.clip(sims, 1e-12, None)) * temperature, labels, classes,
                                           temperature)):
        raise ExerciseFailure("you weighted votes by the similarity itself: use exp(similarity / temperature)")
    if np.array_equal(got, _reference_vote(sims, labels, classes, 1.0)):
        raise ExerciseFailure("you used exp(similarity) without the temperature: divide by temperature (0.1) first")
    if np.array_equal(got, _reference_vote(sims * temperature, labels, classes, 1.0)):
        raise ExerciseFailure("you multiplied by the temperature: the weight is exp(similarity / temperature)")
    if np.array_equal(got, labels[:, 0]):
        raise ExerciseFailure("you took the nearest neighbour's label (k = 1): sum the weighted votes over all k")
    wrong = int((got != want).sum())
    raise ExerciseFailure(
        f"{wrong} of {n} predictions differ from the weighted vote: sum exp(s / T) per class over the k "
        "neighbours (e.g. with np.add.at or a one-hot matrix) and take the argmax over classes"
    )


#: exercise name -> (checker, notebook it appears in)
EXERCISES: dict[str, tuple[Callable, str]] = {
    "sinkhorn_step": (check_sinkhorn_step, "01_optimal_transport_toy"),
    "marginal_errors": (check_equipartition, "02_self_labelling_objective"),
    "labels_from_plan": (check_labels_from_plan, "02_self_labelling_objective"),
    "weighted_knn_vote": (check_weighted_knn_vote, "03_self_labelling_on_cpu"),
}
