"""Checkers of notebooks 01 and 02: one Sinkhorn iteration, the equipartition check, hard labels from the plan."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sela_edu.course.teaching.exercises.checking import ExerciseFailure, as_numbers, call_answer, passed, without_kit


# --------------------------------------------------------------------------------------------------
# 01: one Sinkhorn iteration


def _sinkhorn_problems():
    rng = np.random.default_rng(0)
    problems = []
    # the totals must agree (else no plan exists) but the entries are uneven, so that a wrong axis or
    # order shows in the sums
    for n, m in ((3, 4), (5, 2), (4, 4)):
        q = rng.uniform(0.05, 1.0, size=(n, m))
        a = rng.uniform(0.5, 2.0, size=n)
        b = rng.uniform(0.5, 2.0, size=m)
        b *= a.sum() / b.sum()
        problems.append((q, a, b))
    return problems


def check_sinkhorn_step(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(Q, a, b)``: one Sinkhorn iteration on a positive matrix ``Q`` (n x m) with source
    masses ``a`` (n) and target masses ``b`` (m): scale each row so it sums to ``a``, then each column
    so it sums to ``b``. Returns the new matrix (the input may be left alone or modified).

    The right answer is the kit's solver after one iteration started from ``K = Q`` (cost
    ``-log Q``, eps 1): ``sinkhorn(-log Q, a, b, 1, max_iter=1)``."""
    from sela_edu.ot import sinkhorn

    for q, a, b in _sinkhorn_problems():
        want = sinkhorn(-np.log(q), a, b, 1.0, max_iter=1)
        with without_kit(fn, sinkhorn, exercise="sinkhorn_step"):
            out = call_answer(fn, q.copy(), a.copy(), b.copy(), what="sinkhorn_step")
        got = as_numbers(out, "the returned matrix")
        if got.shape != q.shape:
            hint = " (did you return a vector of sums instead of the rescaled matrix?)" if got.ndim == 1 else ""
            raise ExerciseFailure(f"the result has shape {got.shape}, expected {q.shape} like Q{hint}")
        if not np.all(np.isfinite(got)):
            raise ExerciseFailure("the result contains NaN or inf: did you divide by zero somewhere?")
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(got, q):
            raise ExerciseFailure("the matrix came back unchanged: did you forget to return the rescaled matrix?")
        rows, cols = got.sum(axis=1), got.sum(axis=0)
        ratio = got / q
        if np.allclose(rows, a) and not np.allclose(cols, b):
            if np.allclose(ratio, ratio[:, :1]):  # every row multiplied by one number: no column step
                raise ExerciseFailure(
                    f"your rows sum to a, but your columns sum to {np.round(cols, 3)}, not to b = {np.round(b, 3)}: "
                    "after scaling the rows, scale the columns by b / (column sums)"
                )
            raise ExerciseFailure(
                "you scaled the columns first and the rows second: the rows now sum to a but the columns "
                f"sum to {np.round(cols, 3)}, not b. Do rows first, then columns"
            )
        if np.allclose(cols, 1.0) and not np.allclose(b, 1.0):
            raise ExerciseFailure(
                "your columns sum to 1, not to b: multiply by the target masses, i.e. scale by b / (column "
                "sums), and the rows by a / (row sums)"
            )
        if np.allclose(cols, b):
            raise ExerciseFailure(
                f"your columns sum to b, but the matrix differs from one row-then-column rescaling (your rows "
                f"sum to {np.round(rows, 3)}): did you scale the rows by a / (row sums) before the column step?"
            )
        raise ExerciseFailure(
            f"your columns sum to {np.round(cols, 3)}, not to b = {np.round(b, 3)}: did you divide by the "
            "row sums (axis=1) for rows and the column sums (axis=0) for columns?"
        )
    return passed("one iteration scales rows to a, then columns to b.", quiet)


# --------------------------------------------------------------------------------------------------
# 02: the equipartition check


def _equipartition_problems():
    """(name, Q, (row_error, col_error)) with the errors known by construction."""
    n, k, d = 12, 4, 0.01
    uniform = np.full((n, k), 1.0 / (n * k))
    hard = np.zeros((n, k))
    hard[np.arange(n), np.arange(n) % k] = 1.0 / n
    moved_in_row = uniform.copy()            # mass moved between two clusters of one image: columns off by d
    moved_in_row[0, 0] += d
    moved_in_row[0, 1] -= d
    moved_in_col = uniform.copy()            # mass moved between two images of one cluster: rows off by d
    moved_in_col[0, 0] += d
    moved_in_col[1, 0] -= d
    collapsed = np.zeros((n, k))
    collapsed[:, 0] = 1.0 / n
    return n, k, d, [
        ("a uniform feasible plan", uniform, (0.0, 0.0)),
        ("a hard equipartition", hard, (0.0, 0.0)),
        ("a plan with mass moved between two clusters", moved_in_row, (0.0, d)),
        ("a plan with mass moved between two images", moved_in_col, (d, 0.0)),
        ("a plan with 10 % of its mass missing", 0.9 * uniform, (0.1 / n, 0.1 / k)),
        ("a collapsed plan (every image in cluster 0)", collapsed, (0.0, 1.0 - 1.0 / k)),
    ]


def check_equipartition(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(Q) -> (row_error, col_error)``: for an N x K assignment matrix ``Q``, the largest
    absolute deviation of the row sums from 1/N (each image carries mass 1/N) and of the column sums
    from 1/K (each cluster receives 1/K of the data: the equipartition constraint)."""
    n, k, d, problems = _equipartition_problems()
    for name, q, want in problems:
        out = call_answer(fn, q.copy(), what="marginal_errors")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ExerciseFailure("return two numbers: (row_error, col_error)")
        got = tuple(float(as_numbers(v, "each error").max()) for v in out)
        if np.allclose(got, want, rtol=1e-6, atol=1e-12):
            continue
        if min(got) < -1e-12:
            raise ExerciseFailure(f"on {name} an error came out negative ({np.round(got, 5)}): take the absolute "
                                  "value of the deviation before the maximum")
        if np.allclose(got, want[::-1], rtol=1e-6, atol=1e-12):
            raise ExerciseFailure("your two errors are swapped: return (row_error, col_error)")
        if want == (0.0, 0.0) and np.allclose(got, (abs(1 / n - 1 / k),) * 2):
            raise ExerciseFailure(
                "you compared rows with 1/K and columns with 1/N: rows are the N images (each carries "
                "1/N), columns are the K clusters (each gets 1/K)"
            )
        if want == (0.0, 0.0) and np.allclose(got, (1 - 1 / n, 1 - 1 / k)):
            raise ExerciseFailure(
                "you compared the sums with 1: in SeLa's form Q is a joint distribution (total mass 1), "
                "so rows should sum to 1/N and columns to 1/K"
            )
        if d in want and np.allclose(got, [2 * w for w in want]):
            raise ExerciseFailure("you summed the deviations: the check asks for the largest one (max)")
        if d in want and not np.allclose(got, want) and max(got) < d:
            raise ExerciseFailure(f"on {name} you returned {np.round(got, 5)}: did you average the deviations? "
                                  "The check asks for the largest one (max)")
        raise ExerciseFailure(
            f"on {name} you returned {np.round(got, 5)}, expected {np.round(want, 5)}: the row sums are "
            f"{np.round(q.sum(axis=1)[:4], 4)}... (target 1/N = {1 / n:.4f}); the column sums are "
            f"{np.round(q.sum(axis=0), 4)} (target 1/K = {1 / k:.4f})"
        )
    return passed("rows are checked against 1/N and columns against 1/K.", quiet)


# --------------------------------------------------------------------------------------------------
# 02: hard labels from the plan


def check_labels_from_plan(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(P, r, c) -> labels``: given the N x K matrix ``P`` (= P^lambda up to scaling) and
    Sinkhorn's scaling vectors ``r`` (N) and ``c`` (K), the plan is ``diag(r) P diag(c)``; each image's
    label is the cluster where its row of the plan is largest (an int array of length N)."""
    rng = np.random.default_rng(2)
    n, k = 40, 5
    # Plant the answer: a plan whose row i peaks at planted[i], then hide it behind the scalings
    planted = rng.permutation(np.arange(n) % k)
    plan = rng.uniform(0.05, 0.6, size=(n, k))
    plan[np.arange(n), planted] = 1.0
    r = rng.uniform(0.5, 2.0, size=n)
    c = np.array([0.1, 1.0, 1.2, 0.9, 1.1])      # P = plan / (r c): the raw P favours cluster 0
    p = plan / r[:, None] / c[None, :]
    out = call_answer(fn, p.copy(), r.copy(), c.copy(), what="labels_from_plan")
    got = as_numbers(out, "the labels")
    if got.shape != (n,):
        hint = " (did you return the plan instead of argmax over its rows?)" if got.shape == (n, k) else ""
        raise ExerciseFailure(f"expected {n} labels, one per image, got shape {got.shape}{hint}")
    if np.array_equal(got.astype(np.int64), planted):
        return passed("labels are the argmax of the scaled plan, not of the raw scores.", quiet)
    if np.array_equal(got, np.argmax(p, axis=1)):
        raise ExerciseFailure(
            "these are the argmax of the raw scores P: the labels must come from the plan diag(r) P diag(c), "
            "otherwise the equipartition that Sinkhorn found is thrown away"
        )
    if got.min() < 0 or got.max() >= k:
        raise ExerciseFailure("take the argmax over clusters (axis=1), one label per image")
    sizes = np.bincount(got.astype(np.int64).clip(0, k - 1), minlength=k)
    raise ExerciseFailure(
        f"{int((got != planted).sum())} of {n} labels differ from the argmax of the plan diag(r) P diag(c) "
        f"(your cluster sizes: {sizes.tolist()}, the plan's: {np.bincount(planted, minlength=k).tolist()}): "
        "multiply (not divide) the columns by c and the rows by r before the argmax over axis 1"
    )
