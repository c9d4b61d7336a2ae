"""The label step as published (the official code's ``optimize_L_sk``), in NumPy, to cross-check against."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sela_edu.labelling.checks import check_lam


class ReferenceResult(NamedTuple):
    labels: np.ndarray
    iterations: int
    error: float
    converged: bool


def reference_self_label(scores, lam: float, tol: float = 1e-2, max_iter: int = 10_000, dtype=np.float64) -> ReferenceResult:
    """The label step as published (numpy, float64 by default), kept plain for tests and teaching.

    It raises the softmax outputs to the power ``lam`` (computed as ``exp(lam * log_softmax)``, the same
    numbers without the intermediate underflow), alternates the cluster and image rescalings, and every 10
    iterations stops when ``sum_i |c_i / c_new_i - 1| < tol``, a sum over all N images. With
    ``dtype=np.float32`` it shows why that rule fails at scale: rounding noise alone keeps the sum above tol.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be an N x K matrix, got {s.ndim} dimension(s)")
    n, k = s.shape
    log_p = s - s.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    P = np.exp(check_lam(lam) * log_p).astype(dtype).T  # K x N, as in the published code
    r = np.ones(k, dtype) / k
    c = np.ones(n, dtype) / n
    inv_k, inv_n = dtype(1.0 / k), dtype(1.0 / n)
    err, it = np.inf, 0
    while it < max_iter:
        r = inv_k / (P @ c)
        c_new = inv_n / (r @ P)
        if it % 10 == 0:
            err = float(np.nansum(np.abs(c / c_new - 1)))
        c = c_new
        it += 1
        if err < tol:
            break
    labels = np.argmax(P * r[:, None], axis=0).astype(np.int64)
    return ReferenceResult(labels, it, err, err < tol)
