"""Label optimisation by optimal transport: SeLa's Sinkhorn-Knopp, and a general entropic OT solver.

SeLa's label step (Asano et al., ICLR 2020, eq. 6-8) finds the assignment ``Q`` of N images to K clusters
that maximises ``<Q, log P>`` subject to equal cluster sizes, relaxed by an entropy term of weight
``1/lam``. The solution has the form

    Q = diag(a) P^lam diag(b),

where ``P`` holds the network's softmax outputs, and Sinkhorn-Knopp finds the scalings ``a`` (one per
image) and ``b`` (one per cluster) by rescaling rows and columns in turn. The hard label of image i is
the argmax of row i of ``Q``.

What this module adds to the textbook algorithm, and why:

* **No underflow in float32.** ``P^lam`` is ``exp(lam * scores)`` up to a constant per row, and any
  constant per row or per column only changes ``a`` or ``b``. So ``lam * scores`` is shifted by its row
  maxima, then by its column maxima, before ``exp``: every entry is at most 1 and every row and every
  column keeps an entry equal to 1. Softmax is never formed; the scores may be logits or log-probabilities.
* **A stopping rule that does not depend on N.** The published rule sums a relative change over all N
  images; its float32 rounding noise alone grows with N, so it cannot be met at ImageNet scale. Here the
  solver stops when the largest relative deviation of the K cluster masses from their targets is below
  ``tol``; it is checked after every row rescaling, where it costs nothing extra.
* **Streaming and half-precision storage.** A :class:`ScoreBuffer` receives the scores block by block
  (as the trainer produces them), turns each block into its part of ``P`` at once and stores it in
  float32, bfloat16 or float16. A float32 N x K matrix never has to exist: the peak is one N x K matrix in
  the storage dtype plus vectors.
* **One pass over P per iteration** (see :mod:`sela_edu._kernels`).
* **Distributed.** When ``torch.distributed`` is initialised each rank holds its own rows; the only
  communication is an all-reduce of K-vectors (column maxima once, column sums every iteration). Every
  rank takes the same decisions, so all ranks stop together.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from . import _kernels

__all__ = [
    "SelfLabelResult",
    "ScoreBuffer",
    "self_label",
    "sinkhorn",
    "ReferenceResult",
    "reference_self_label",
    "marginal_error",
]

STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Rows turned into P at a time: large enough for torch's kernels to run at speed, small enough to stay in L3.
_STAGE_BYTES = 8 * 2**20
# Entries of P below e^-87 (less than 1e-38 of their row's and column's largest, so they weigh nothing) are
# stored as e^-87 rather than as float32 denormals: exp, and every product with a denormal, is many times
# slower (0.56 s against 0.05 s for exp over 50M entries here).
_LOG_FLOOR = -87.0
# ScoreBuffer keeps the scores themselves (for exact solutions of very sharp problems) up to this size.
_KEEP_SCORES_BYTES = 2 * 2**30
# Rebuild P once the cluster scalings spread this far (in nats, largest minus smallest) since it was built:
# entries at the floor (e^-87 of their row's largest) then still weigh less than e^-57 of the largest.
_ABSORB_NATS = 30.0
# Without the scores to rebuild from, the scalings may spread this far: beyond it, entries stored at the
# floor (e^-87) could weigh as much as real ones once scaled, and the answer would be the floor's.
_MAX_SPREAD_NATS = 60.0


@dataclass
class SelfLabelResult:
    """What one head's label optimisation produced."""

    labels: torch.Tensor  #: int64, one cluster id per row, on the device of the scores
    iterations: int  #: Sinkhorn-Knopp iterations run (one row and one column rescaling each)
    error: float  #: largest relative deviation of a cluster's mass from its target, at the last check
    converged: bool  #: whether ``error <= tol`` was reached within ``max_iter``
    cluster_sizes: torch.Tensor  #: int64 K-vector, how many rows (over all ranks) got each label
    #: float64 K-vector ``L``: the soft assignment of image i is ``softmax_k(lam * scores_ik + L_k)``
    cluster_potential: torch.Tensor
    #: how many times P was rebuilt with the scalings absorbed (only for very sharp problems)
    rebuilds: int = 0

    def __repr__(self) -> str:
        sizes = self.cluster_sizes
        return (
            f"SelfLabelResult(N={len(self.labels)}, K={len(sizes)}, iterations={self.iterations}, "
            f"error={self.error:.2e}, converged={self.converged}, "
            f"cluster sizes {int(sizes.min())}..{int(sizes.max())})"
        )


def _dist_active(distributed: bool | None) -> bool:
    available = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and not available:
        raise ValueError("distributed=True, but torch.distributed is not initialised (call init_process_group first)")
    return available if distributed is None else bool(distributed)


def _all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    torch.distributed.all_reduce(t, op=op)
    return t


def _check_lam(lam) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a positive number, got {lam!r}") from None
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be a positive, finite number (it is the inverse entropy weight), got {lam}")
    return lam


class ScoreBuffer:
    """Collects one head's scores block by block and stores ``P`` for the solver.

    Each block is turned into its rows of ``P = exp(lam * scores - row max - block column max)`` as it
    arrives and stored in ``storage_dtype``; the per-block column maxima (K floats per block of at least
    ``stage rows``) are reconciled once all rows are in, so the result equals the one-shot computation.

    ``keep_scores`` also keeps ``lam * scores - row max`` in float32 (one more N x K matrix). With it the
    solver stays exact however sharp the problem: when the cluster scalings drift far (very peaked scores,
    large ``lam``), it rebuilds ``P`` with the scalings absorbed, so that the entries that matter are always
    within float32's range. ``None`` keeps them when that costs at most 2 GB.

    >>> buf = ScoreBuffer(num_rows=1000, num_clusters=10, lam=10.0)
    >>> for start in range(0, 1000, 250):
    ...     buf.add(torch.randn(250, 10))
    >>> result = self_label(buf)
    """

    def __init__(
        self,
        num_rows: int,
        num_clusters: int,
        lam: float,
        *,
        storage_dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        keep_scores: bool | None = None,
    ) -> None:
        if int(num_clusters) < 2:
            raise ValueError(f"need at least 2 clusters, got num_clusters={num_clusters}")
        if int(num_rows) < 1:
            raise ValueError(f"need at least one row, got num_rows={num_rows}")
        if storage_dtype not in STORAGE_DTYPES:
            names = ", ".join(str(d).replace("torch.", "") for d in STORAGE_DTYPES)
            raise ValueError(f"storage_dtype must be one of {names}, got {storage_dtype}")
        self.num_rows, self.num_clusters = int(num_rows), int(num_clusters)
        self.lam = _check_lam(lam)
        self.device = torch.device(device)
        self.storage = torch.empty(self.num_rows, self.num_clusters, dtype=storage_dtype, device=self.device)
        if keep_scores is None:
            keep_scores = 4 * self.num_rows * self.num_clusters <= _KEEP_SCORES_BYTES
        self.log_scores = torch.empty_like(self.storage, dtype=torch.float32) if keep_scores else None
        self.filled = 0
        stage_rows = max(64, min(self.num_rows, _STAGE_BYTES // (4 * self.num_clusters)))
        self._stage = torch.empty(stage_rows, self.num_clusters, dtype=torch.float32, device=self.device)
        self._staged = 0
        self._segments: list[tuple[int, int, torch.Tensor]] = []  # (start, stop, column maxima of the block)
        self._finalised = False

    def __len__(self) -> int:
        return self.num_rows

    def add(self, scores: torch.Tensor) -> None:
        """Append the next rows (an n x K tensor of scores, any float dtype, any device)."""
        if self._finalised:
            raise ValueError("this ScoreBuffer was already solved; make a new one for new scores")
        scores = torch.as_tensor(scores)
        if scores.ndim != 2 or scores.shape[1] != self.num_clusters:
            raise ValueError(
                f"scores must be an n x {self.num_clusters} matrix (one row per image, one column per cluster), "
                f"got shape {tuple(scores.shape)}"
            )
        if not scores.is_floating_point():
            raise ValueError(f"scores must be floating point, got {scores.dtype}")
        n = scores.shape[0]
        if self.filled + self._staged + n > self.num_rows:
            raise ValueError(
                f"too many rows: the buffer holds {self.num_rows}, {self.filled + self._staged} are in, "
                f"and {n} more were added"
            )
        # a sum is one fast pass and is finite whenever every entry is (bar overflow, checked exactly)
        if not torch.isfinite(scores.sum()) and not torch.isfinite(scores).all():
            bad = int((~torch.isfinite(scores)).sum())
            raise ValueError(f"scores contain {bad} non-finite values (NaN or inf): check the network's outputs")
        start = 0
        while start < n:
            take = min(n - start, self._stage.shape[0] - self._staged)
            self._stage[self._staged : self._staged + take].copy_(scores[start : start + take])
            self._staged += take
            start += take
            if self._staged == self._stage.shape[0]:
                self._flush()

    def _flush(self) -> None:
        m = self._staged
        if m == 0:
            return
        x = self._stage[:m]
        rows = slice(self.filled, self.filled + m)
        maxima = _kernels.row_and_column_max(x, self.lam)
        x.mul_(self.lam)
        if maxima is None:
            x.sub_(x.amax(dim=1, keepdim=True))
            col_max = x.amax(dim=0)
        else:
            row_max, col_max = maxima
            x.sub_(row_max[:, None])
        if self.log_scores is not None:
            self.log_scores[rows].copy_(x)
        x.sub_(col_max).clamp_(min=_LOG_FLOOR).exp_()
        self.storage[rows].copy_(x)
        self._segments.append((self.filled, self.filled + m, col_max.to(self.device).clone()))
        self.filled += m
        self._staged = 0

    def finalise(self, distributed: bool | None = None) -> torch.Tensor:
        """Bring every block to the common column shift and return ``P`` (N x K, storage dtype)."""
        if self._finalised:
            return self.storage
        self._flush()
        if self.filled != self.num_rows:
            raise ValueError(f"only {self.filled} of the buffer's {self.num_rows} rows were added")
        col_max = torch.stack([seg[2] for seg in self._segments]).amax(dim=0)
        if _dist_active(distributed):
            _all_reduce(col_max, torch.distributed.ReduceOp.MAX)
        self.column_shift = col_max  # P_ik = exp(lam * s_ik - row shift_i - column_shift_k)
        for start, stop, block_max in self._segments:
            # exp(block max - global max) <= 1: entries can only shrink, so nothing overflows
            factor = (block_max - col_max).exp_()
            if self.storage.dtype == torch.float32:
                self.storage[start:stop].mul_(factor)
            else:
                self.storage[start:stop] = (self.storage[start:stop].float() * factor).to(self.storage.dtype)
        self._segments.clear()
        self._stage = self._stage[:0]
        self._finalised = True
        return self.storage

    def reform(self, potential: torch.Tensor) -> None:
        """Rebuild ``P_ik = exp(x_ik + potential_k - max_j(x_ij + potential_j))`` from the kept scores."""
        if self.log_scores is None:
            raise ValueError("reform needs the scores: make the ScoreBuffer with keep_scores=True")
        pot = potential.to(device=self.device, dtype=torch.float32)
        rows = max(1, _STAGE_BYTES // (4 * self.num_clusters))
        for start in range(0, self.num_rows, rows):
            x = self.log_scores[start : start + rows] + pot
            x.sub_(x.amax(dim=1, keepdim=True)).clamp_(min=_LOG_FLOOR).exp_()
            self.storage[start : start + rows].copy_(x)


def marginal_error(mass: torch.Tensor, target: torch.Tensor) -> float:
    """Largest relative deviation of cluster masses from their targets (0 where both are 0)."""
    scale = torch.where(target > 0, target, torch.ones_like(target))
    return float(((mass - target).abs() / scale).max())


def _check_prior(prior, num_clusters: int) -> torch.Tensor:
    if prior is None:
        return torch.full((num_clusters,), 1.0 / num_clusters, dtype=torch.float64)
    prior = torch.as_tensor(prior, dtype=torch.float64).cpu()
    if prior.ndim != 1 or prior.numel() != num_clusters:
        raise ValueError(f"prior must be a vector of {num_clusters} cluster proportions, got shape {tuple(prior.shape)}")
    if not torch.isfinite(prior).all():
        raise ValueError("prior contains non-finite values")
    if (prior < 0).any():
        raise ValueError(f"prior must not be negative, got minimum {float(prior.min())}")
    if abs(float(prior.sum()) - 1.0) > 1e-6:
        raise ValueError(f"prior must sum to 1, got {float(prior.sum()):.8g}")
    return prior


def _pick_backend(P: torch.Tensor, backend: str) -> str:
    if backend == "auto":
        large = P.numel() >= _kernels.NUMBA_MIN_ENTRIES
        return "numba" if large and _kernels.numba_supports(P) else "torch"
    if backend == "numba" and not _kernels.numba_supports(P):
        raise ValueError(
            "backend='numba' needs numba and a contiguous float32 or bfloat16 matrix on the CPU; "
            f"got {P.dtype} on {P.device} (numba installed: {_kernels.HAVE_NUMBA})"
        )
    if backend not in ("numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    return backend


def _solve_one(
    buffer: ScoreBuffer,
    *,
    tol: float,
    max_iter: int,
    prior: torch.Tensor | None,
    check_every: int,
    distributed: bool,
    backend: str,
) -> SelfLabelResult:
    P = buffer.finalise(distributed)
    K = buffer.num_clusters
    prior = _check_prior(prior, K)
    n_total = torch.tensor([float(buffer.num_rows)], dtype=torch.float64, device=P.device)
    if distributed:
        _all_reduce(n_total, torch.distributed.ReduceOp.SUM)
    if n_total.item() < K:
        raise ValueError(f"fewer images ({int(n_total.item())}) than clusters ({K}): equal-sized clusters are impossible")
    backend = _pick_backend(P, backend)
    vec_device = torch.device("cpu") if backend == "numba" else P.device
    # Rows are scaled to sum to 1, so cluster k must receive N * prior_k of the mass.
    target = (n_total.item() * prior).to(vec_device)
    # The plan is Q_ik ∝ exp(x_ik + L_k) with x = lam * scores - row max. P holds exp(x_ik + A_k) up to a
    # row factor, so the iteration works with b = exp(L - A); A changes only when P is rebuilt.
    absorbed = -buffer.column_shift.to(vec_device, torch.float64)
    potential = absorbed.clone()
    b = torch.ones(K, dtype=torch.float32, device=vec_device)
    error, converged, iterations, rebuilds = math.inf, False, 0, 0
    for iterations in range(1, max_iter + 1):
        col = _kernels.column_sums(P, b, backend)  # float64: sum over images of a_i P_ik, with a = 1 / (P b)
        if distributed:
            col = _all_reduce(col.to(P.device), torch.distributed.ReduceOp.SUM).to(vec_device)
        if not torch.isfinite(col).all():
            raise FloatingPointError(
                f"Sinkhorn-Knopp broke down at iteration {iterations}: a column sum is not finite. The scores are "
                f"too sharp for lam={buffer.lam:g} or the prior has zeros some images cannot avoid: lower lam"
            )
        if iterations % check_every == 0 or iterations == max_iter:
            error = marginal_error(b.double() * col, target)
            converged = error <= tol
            if converged:  # keep the b that was measured: rows exact, every cluster's mass within tol
                break
        # a cluster that receives no mass at all gets a huge scaling, which the next rebuild absorbs
        potential = absorbed + (target / col.clamp_min(1e-300)).log()
        drift = potential - absorbed
        spread = float(drift.max() - drift.min())
        if spread > _ABSORB_NATS and buffer.log_scores is not None:
            absorbed = potential - potential.max()
            buffer.reform(absorbed)
            potential = absorbed.clone()
            rebuilds += 1
        elif spread > _MAX_SPREAD_NATS:
            raise FloatingPointError(
                f"Sinkhorn-Knopp broke down at iteration {iterations}: the cluster scalings spread over "
                f"{spread:.0f} nats, so entries too small for float32 would decide the answer. The scores are "
                f"too sharp for lam={buffer.lam:g}: lower lam, "
                "or fill the ScoreBuffer with keep_scores=True so the solver can rebuild P as it goes"
            )
        b = (potential - absorbed).exp().float()
    if not converged:
        warnings.warn(
            f"Sinkhorn-Knopp stopped after max_iter={max_iter} iterations with cluster-mass error {error:.2e} "
            f"> tol={tol:g}; labels are usable but not converged (raise max_iter or lower lam)",
            RuntimeWarning,
            stacklevel=3,
        )
    labels = _kernels.argmax_scaled(P, b, backend).to(P.device)
    sizes = torch.bincount(labels, minlength=K)
    if distributed:
        _all_reduce(sizes, torch.distributed.ReduceOp.SUM)
    return SelfLabelResult(labels, iterations, float(error), bool(converged), sizes.cpu(), potential.cpu(), rebuilds)


def self_label(
    scores,
    lam: float | None = None,
    *,
    tol: float = 1e-3,
    max_iter: int = 1000,
    prior=None,
    check_every: int = 1,
    storage_dtype: torch.dtype | None = None,
    distributed: bool | None = None,
    backend: str = "auto",
    keep_scores: bool | None = None,
):
    """Pseudo-labels for N images from network scores, with equal-sized clusters (SeLa's label step).

    Parameters
    ----------
    scores:
        An N x K tensor of scores before softmax (logits or log-probabilities), on any device and in any
        float dtype; or a :class:`ScoreBuffer` that received them block by block. A list or tuple of
        them (one per head) gives a list of results.
    lam:
        Inverse weight of the entropy term (the paper's lambda: 10 for CIFAR, 25 for ImageNet). Larger
        values give harder assignments and need more iterations. ``None`` takes it from the buffer, or
        uses 10 (the paper's CIFAR value) for a score matrix.
    tol:
        Stop when every cluster's mass is within this relative distance of its target.
    max_iter:
        Give up (with a warning and ``converged=False``) after this many iterations.
    prior:
        Optional K-vector of cluster proportions (non-negative, summing to 1); uniform by default.
    check_every:
        Iterations between stopping checks (each check costs a GPU synchronisation).
    storage_dtype:
        Storage of ``P`` for a dense input: float32 (default), bfloat16 or float16.
    distributed:
        ``None`` follows ``torch.distributed.is_initialized()``. When on, ``scores`` are this rank's
        rows; every rank must call with the same settings, and the labels returned are this rank's.
    backend:
        ``"auto"`` (numba kernels on the CPU, torch elsewhere), ``"numba"`` or ``"torch"``.
    keep_scores:
        For a score matrix: keep a float32 copy of the scaled scores so that very sharp problems are
        solved exactly (see :class:`ScoreBuffer`). ``None``: when that copy costs at most 2 GB.
    """
    if isinstance(scores, (list, tuple)):
        return [
            self_label(
                s, lam, tol=tol, max_iter=max_iter, prior=prior, check_every=check_every,
                storage_dtype=storage_dtype, distributed=distributed, backend=backend, keep_scores=keep_scores,
            )
            for s in scores
        ]
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if int(max_iter) < 1 or int(check_every) < 1:
        raise ValueError(f"max_iter and check_every must be at least 1, got {max_iter} and {check_every}")
    dist = _dist_active(distributed)
    if isinstance(scores, ScoreBuffer):
        if lam is not None and _check_lam(lam) != scores.lam:
            raise ValueError(f"lam={lam} was given, but the ScoreBuffer was filled with lam={scores.lam}")
        buffer = scores
    else:
        scores = torch.as_tensor(scores)
        if scores.ndim != 2:
            raise ValueError(f"scores must be an N x K matrix (images x clusters), got {scores.ndim} dimension(s)")
        lam = 10.0 if lam is None else lam
        n, k = scores.shape
        if k < 2:
            raise ValueError(f"need at least 2 clusters, got {k} column(s)")
        if not dist and n < k:
            raise ValueError(f"fewer images ({n}) than clusters ({k}): equal-sized clusters are impossible")
        buffer = ScoreBuffer(n, k, lam, storage_dtype=storage_dtype or torch.float32, device=scores.device,
                             keep_scores=keep_scores)
        buffer.add(scores)
    return _solve_one(
        buffer, tol=float(tol), max_iter=int(max_iter), prior=prior, check_every=int(check_every),
        distributed=dist, backend=backend,
    )


# --------------------------------------------------------------------------------------------------
# The published algorithm, as a reference


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
    P = np.exp(_check_lam(lam) * log_p).astype(dtype).T  # K x N, as in the published code
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


# --------------------------------------------------------------------------------------------------
# General entropic optimal transport, for the teaching notebooks


def sinkhorn(cost, a, b, eps: float, *, max_iter: int = 1000, tol: float = 1e-9, return_log: bool = False):
    """Entropic optimal transport: the plan ``T`` minimising ``<T, cost> - eps * H(T)`` with marginals ``a``, ``b``.

    Works in the log domain (potentials ``f``, ``g``), so a small ``eps`` does not underflow:
    ``T_ij = exp((f_i + g_j - cost_ij) / eps)``. Stops when the column marginal's L1 error is below
    ``tol`` (rows are exact after each row update). NumPy in, NumPy out; torch in, torch out.
    ``return_log=True`` also returns ``{"err": [...], "iterations": n}``.
    """
    is_numpy = not isinstance(cost, torch.Tensor)
    C = torch.as_tensor(np.asarray(cost) if is_numpy else cost, dtype=torch.float64)
    a = torch.as_tensor(np.asarray(a) if is_numpy else a, dtype=torch.float64, device=C.device)
    b = torch.as_tensor(np.asarray(b) if is_numpy else b, dtype=torch.float64, device=C.device)
    if C.ndim != 2 or a.shape != (C.shape[0],) or b.shape != (C.shape[1],):
        raise ValueError(f"cost must be n x m with a of length n and b of length m; got {tuple(C.shape)}, {tuple(a.shape)}, {tuple(b.shape)}")
    if not (torch.isfinite(C).all() and torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("cost, a and b must be finite")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("marginals a and b must not be negative")
    if not math.isclose(float(a.sum()), float(b.sum()), rel_tol=1e-9):
        raise ValueError(f"a and b must have the same total mass, got {float(a.sum())} and {float(b.sum())}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    errors = []
    for it in range(1, max_iter + 1):
        f = eps * (log_a - torch.logsumexp((g[None, :] - C) / eps, dim=1))
        g = eps * (log_b - torch.logsumexp((f[:, None] - C) / eps, dim=0))
        # after the g update columns are exact; measure the rows, which the next f update will fix
        plan_rows = torch.exp((f[:, None] + g[None, :] - C) / eps).sum(dim=1)
        errors.append(float((plan_rows - a).abs().sum()))
        if errors[-1] < tol:
            break
    plan = torch.exp((f[:, None] + g[None, :] - C) / eps)
    out = plan.numpy() if is_numpy else plan
    if return_log:
        return out, {"err": errors, "iterations": it}
    return out
