"""Checker of notebook 09: SwAV's codes for one batch, a few Sinkhorn-Knopp iterations on ``exp(scores / epsilon)``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sela_edu.course.teaching.exercises.checking import ExerciseFailure, as_numbers, call_answer, passed, without_kit


def _codes_problems():
    """(what it is, scores B x K in [-1, 1], epsilon, iterations): uneven batches, so that a missed step, a
    wrong axis, a wrong temperature or an iteration too many or too few each change the codes."""
    g = torch.Generator().manual_seed(9)
    problems = []
    for b, k, eps, its in ((12, 4, 0.05, 3), (7, 5, 0.1, 1), (20, 3, 0.05, 10), (9, 6, 0.2, 2)):
        scores = torch.rand(b, k, generator=g) * 2 - 1
        scores[:, 0] += 0.5                    # one prototype preferred by most rows: balancing matters
        problems.append((f"a batch of {b} rows and {k} prototypes (epsilon {eps}, {its} iterations)",
                         scores.clamp(-1, 1), eps, its))
    return problems


def _rows_first(scores, eps, its) -> np.ndarray:
    """A foreseeable mistake: the two scalings of each iteration in the other order (rows to 1, then columns)."""
    q = np.exp((scores.double().numpy() - float(scores.max())) / eps)
    b, k = q.shape
    for _ in range(its):
        q = q / q.sum(axis=1, keepdims=True)
        q = q / q.sum(axis=0, keepdims=True) * (b / k)
    return q


def check_batch_codes(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(scores, epsilon, iterations) -> codes``: SwAV's codes of a batch. ``scores`` is a B x K
    float tensor of prototype cosines; ``Q = exp(scores / epsilon)``, then ``iterations`` times: scale every
    column (cluster) to the same mass B/K, then every row (image) to 1. The result is B x K with rows
    summing to 1. Compared with :func:`sela_edu.labelling.batch_codes`, which the answer may not call."""
    from sela_edu.labelling import batch_codes

    for name, scores, eps, its in _codes_problems():
        want = batch_codes(scores, eps, its).double().numpy()
        with without_kit(fn, batch_codes, exercise="my_batch_codes"):
            out = call_answer(fn, scores.clone(), eps, its, what="my_batch_codes")
        got = as_numbers(out, "the codes")
        b, k = want.shape
        if got.shape != want.shape:
            hint = " (transposed? return B x K, one row per image)" if got.shape == (k, b) else ""
            raise ExerciseFailure(f"on {name} your codes have shape {got.shape}, expected {want.shape}{hint}")
        if not np.all(np.isfinite(got)):
            raise ExerciseFailure(f"on {name} your codes hold NaN or inf: exp(scores / epsilon) overflows for a "
                                  "small epsilon; subtract scores.max() before exp (it cancels in the scalings)")
        if np.allclose(got, want, rtol=1e-4, atol=1e-6):
            continue
        rows, cols = got.sum(axis=1), got.sum(axis=0)
        if not np.allclose(rows, 1.0, atol=1e-4):
            if np.allclose(cols, b / k, atol=1e-4):
                raise ExerciseFailure(f"on {name} your columns sum to B/K but your rows sum to {np.round(rows, 3)}: "
                                      "each iteration scales the columns first and the rows last, so that every "
                                      "row is a distribution (sums to 1)")
            raise ExerciseFailure(f"on {name} your rows sum to {np.round(rows, 3)}, not 1: after scaling every "
                                  "column to B/K, divide every row by its sum (the codes are one distribution per image)")
        if np.allclose(got, _rows_first(scores, eps, its), rtol=1e-4, atol=1e-6):
            raise ExerciseFailure(f"on {name} you scaled rows first and columns second: then the rows do not sum "
                                  "to 1. Each iteration: columns to B/K, then rows to 1")
        if np.allclose(got, torch.softmax(scores.double() / eps, dim=1).numpy(), rtol=1e-4, atol=1e-6):
            raise ExerciseFailure(f"on {name} your codes are a softmax of scores / epsilon: no column was scaled. "
                                  "Run `iterations` rounds of (columns to B/K, rows to 1)")
        for wrong, hint in ((its - 1, "one iteration too few"), (its + 1, "one iteration too many")):
            if wrong >= 1 and np.allclose(got, batch_codes(scores, eps, wrong).double().numpy(), rtol=1e-4, atol=1e-6):
                raise ExerciseFailure(f"on {name} your codes are those of {wrong} iterations: {hint}; run exactly "
                                      "`iterations` rounds of (columns to B/K, rows to 1)")
        for temperature, how in ((1.0, "exp(scores), without epsilon"), (1.0 / eps, "exp(scores * epsilon)")):
            if np.allclose(got, batch_codes(scores, temperature, its).double().numpy(), rtol=1e-4, atol=1e-6):
                raise ExerciseFailure(f"on {name} your codes match {how}: start from exp(scores / epsilon); a small "
                                      "epsilon makes the codes sharp")
        raise ExerciseFailure(f"on {name} your rows sum to 1 but the codes differ from SwAV's (largest difference "
                              f"{np.abs(got - want).max():.3g}): start from exp(scores / epsilon), then "
                              "`iterations` times scale the columns to B/K and the rows to 1")
    return passed("exp(scores / epsilon), then columns to B/K and rows to 1, `iterations` times.", quiet)
