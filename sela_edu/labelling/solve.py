"""The API of the label step: :func:`self_label` and its :class:`SelfLabelResult`.

It checks the inputs, fills a :class:`~sela_edu.labelling.ScoreBuffer` when given a score matrix, picks the
backend (numba kernels or torch) and the optimiser, and takes the labels: the argmax of each row of the
transport plan at the potentials found.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from sela_edu.labelling import _kernels
from sela_edu.labelling.buffer import ScoreBuffer
from sela_edu.labelling.checks import check_init, check_lam, check_prior
from sela_edu.labelling.allreduce import all_reduce, distributed_active
from sela_edu.labelling.optimisers import NEWTON_BELOW, run_lbfgs, run_sinkhorn
from sela_edu.labelling.semidual import SemiDual

METHODS = ("auto", "lbfgs", "sinkhorn")
# The automatic method takes Newton's up to this many clusters: its pass adds a K x K Gram matrix, O(N K^2)
# work, which beyond a few hundred clusters costs more than the passes it saves
NEWTON_MAX_CLUSTERS = 256


@dataclass
class SelfLabelResult:
    """What one head's label optimisation produced."""

    labels: torch.Tensor  #: int64, one cluster id per row, on the device of the scores
    #: optimisation steps: Sinkhorn-Knopp iterations (``method="sinkhorn"``), or the accepted quasi-Newton and
    #: Newton steps plus any Sinkhorn steps taken after a stalled line search
    iterations: int
    error: float  #: largest relative deviation of a cluster's mass from its target, at the returned potentials
    converged: bool  #: whether ``error <= tol`` was reached within ``max_iter`` passes
    cluster_sizes: torch.Tensor  #: int64 K-vector, how many rows (over all ranks) got each label
    #: float64 K-vector ``L``: the soft assignment of image i is ``softmax_k(lam * scores_ik + L_k)``. Defined up
    #: to a common constant; pass it as ``init`` to warm-start the next label optimisation.
    cluster_potential: torch.Tensor
    #: how many times P was rebuilt with the scalings absorbed (only for very sharp problems)
    rebuilds: int = 0
    #: full passes over P that computed cluster masses (one per Sinkhorn iteration or evaluation). The
    #: final pass that takes the labels (the argmax) and any rebuilds of P are not counted: P is read
    #: ``passes + 1`` times after it is formed.
    passes: int = 0
    #: the cluster-mass error after each check (every pass for L-BFGS, every ``check_every`` for Sinkhorn)
    errors: list = field(default_factory=list)
    method: str = "lbfgs"  #: the optimiser that produced it: "lbfgs", "lbfgs+newton" or "sinkhorn"

    def __repr__(self) -> str:
        sizes = self.cluster_sizes
        return (
            f"SelfLabelResult(N={len(self.labels)}, K={len(sizes)}, method={self.method}, passes={self.passes}, "
            f"iterations={self.iterations}, error={self.error:.2e}, converged={self.converged}, "
            f"cluster sizes {int(sizes.min())}..{int(sizes.max())})"
        )


def _pick_backend(P: torch.Tensor, backend: str) -> str:
    if backend == "auto":
        if P.device.type == "cuda" and _kernels.triton_supports(P):
            return "triton"
        large = P.numel() >= _kernels.NUMBA_MIN_ENTRIES
        return "numba" if large and _kernels.numba_supports(P) else "torch"
    if backend == "triton" and not _kernels.triton_supports(P):
        raise ValueError(
            "backend='triton' needs triton and a contiguous float32, bfloat16 or float16 matrix on a CUDA device "
            f"(or TRITON_INTERPRET=1); got {P.dtype} on {P.device}"
        )
    if backend == "numba" and not _kernels.numba_supports(P):
        raise ValueError(
            "backend='numba' needs numba and a contiguous float32 or bfloat16 matrix on the CPU; "
            f"got {P.dtype} on {P.device} (numba installed: {_kernels.HAVE_NUMBA})"
        )
    if backend not in ("numba", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'numba', 'triton' or 'torch', got {backend!r}")
    return backend


def _total_rows(buffer: ScoreBuffer, device: torch.device, distributed: bool) -> float:
    """N, the rows over every rank; ValueError when there are fewer than clusters."""
    n_total = torch.tensor([float(buffer.num_rows)], dtype=torch.float64, device=device)
    if distributed:
        all_reduce(n_total, torch.distributed.ReduceOp.SUM)
    if n_total.item() < buffer.num_clusters:
        raise ValueError(f"fewer images ({int(n_total.item())}) than clusters ({buffer.num_clusters}): "
                         "equal-sized clusters are impossible")
    return n_total.item()


def _optimise(sd: SemiDual, L: torch.Tensor, method: str, *, tol: float, max_iter: int, check_every: int,
              errors: list) -> tuple[str, tuple]:
    """The cluster potentials by ``method`` from ``L``: the method that ran ("auto" picks L-BFGS with Newton's
    finish up to ``NEWTON_MAX_CLUSTERS`` active clusters, L-BFGS alone beyond) and its
    ``(L, error, converged, iterations)``."""
    if method == "auto":
        method = "lbfgs+newton" if int(sd.active.sum()) <= NEWTON_MAX_CLUSTERS else "lbfgs"
    if method == "lbfgs+newton":
        return method, run_lbfgs(sd, L, tol=tol, max_iter=max_iter, errors=errors, newton_below=NEWTON_BELOW)
    if method == "sinkhorn":
        return method, run_sinkhorn(sd, L, tol=tol, max_iter=max_iter, check_every=check_every, errors=errors)
    return method, run_lbfgs(sd, L, tol=tol, max_iter=max_iter, errors=errors)


def _solve_one(buffer: ScoreBuffer, *, tol: float, max_iter: int, prior: torch.Tensor | None, check_every: int,
               distributed: bool, backend: str, method: str, init: torch.Tensor | None) -> SelfLabelResult:
    """One head's label step on a filled buffer: the cluster potentials, then each row's label."""
    K = buffer.num_clusters
    prior = check_prior(prior, K)
    init = check_init(init, K)
    backend = _pick_backend(buffer.storage, backend)
    # the compiled kernels read every block in its own frame; the torch path wants one matrix
    P = buffer.finalise(distributed, fold=backend == "torch")
    vec_device = torch.device("cpu") if backend == "numba" else P.device
    # Rows are scaled to sum to 1, so cluster k must receive N * prior_k of the mass.
    target = (_total_rows(buffer, P.device, distributed) * prior).to(vec_device)
    sd = SemiDual(buffer, P, backend, vec_device, target, distributed)
    # The plan is Q_ik ∝ exp(x_ik + L_k), x = lam * scores - row max. Cold start: b = 1 on the formed P.
    L = sd.A.clone() if init is None else init.to(vec_device)
    L = torch.where(sd.active, L, torch.full_like(L, -math.inf))
    errors: list[float] = []
    method, (L, error, converged, iterations) = _optimise(sd, L, method, tol=tol, max_iter=max_iter,
                                                          check_every=check_every, errors=errors)
    if not converged:
        warnings.warn(
            f"the label step ({method}) stopped after max_iter={max_iter} passes with cluster-mass error "
            f"{error:.2e} > tol={tol:g}; labels are usable but not converged (raise max_iter or lower lam)",
            RuntimeWarning,
            stacklevel=3,  # the caller of self_label
        )
    labels = _kernels.argmax_scaled(P, sd.E, sd.stops, sd.scalings(L), backend).to(P.device)
    sizes = torch.bincount(labels, minlength=K)
    if distributed:
        all_reduce(sizes, torch.distributed.ReduceOp.SUM)
    return SelfLabelResult(labels, iterations, float(error), bool(converged), sizes.cpu(), L.cpu(), sd.rebuilds,
                           sd.passes, errors, method)


def _check_options(tol, max_iter, check_every, method) -> None:
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if int(max_iter) < 1 or int(check_every) < 1:
        raise ValueError(f"max_iter and check_every must be at least 1, got {max_iter} and {check_every}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")


def _as_buffer(scores, lam, *, distributed: bool, init, storage_dtype, keep_scores) -> ScoreBuffer:
    """``scores`` as a filled buffer: a ScoreBuffer as it is (``lam``, when given, must be its own), a score
    matrix streamed into a new one (checked first: its shape, and a warm start that fits it)."""
    if isinstance(scores, ScoreBuffer):
        if lam is not None and check_lam(lam) != scores.lam:
            raise ValueError(f"lam={lam} was given, but the ScoreBuffer was filled with lam={scores.lam}")
        return scores
    scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be an N x K matrix (images x clusters), got {scores.ndim} dimension(s)")
    n, k = scores.shape
    if k < 2:
        raise ValueError(f"need at least 2 clusters, got {k} column(s)")
    if not distributed and n < k:
        raise ValueError(f"fewer images ({n}) than clusters ({k}): equal-sized clusters are impossible")
    check_init(init, k)  # refuse a bad warm start before the work of forming P
    buffer = ScoreBuffer(n, k, 10.0 if lam is None else lam, storage_dtype=storage_dtype or torch.float32,
                         device=scores.device, keep_scores=keep_scores)
    buffer.add(scores)
    return buffer


def _label_each_head(scores: list | tuple, lam, init, options: dict) -> list[SelfLabelResult]:
    """:func:`self_label` on every head's scores, each warm-started from its own entry of ``init``."""
    if init is not None and (not isinstance(init, (list, tuple)) or len(init) != len(scores)):
        raise ValueError(f"with {len(scores)} heads, init must be a list of {len(scores)} potential vectors (or None)")
    inits = init if init is not None else [None] * len(scores)
    return [self_label(s, lam, init=i, **options) for s, i in zip(scores, inits)]


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
    method: str = "auto",
    init=None,
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
        values give harder assignments and need more passes. ``None`` takes it from the buffer, or
        uses 10 (the paper's CIFAR value) for a score matrix.
    tol:
        Stop when every cluster's mass is within this relative distance of its target.
    max_iter:
        Give up (with a warning and ``converged=False``) after this many passes over P (for
        ``method="sinkhorn"`` that is the number of iterations).
    prior:
        Optional K-vector of cluster proportions (non-negative, summing to 1); uniform by default.
    check_every:
        Sinkhorn iterations between stopping checks (each check costs a GPU synchronisation). L-BFGS
        needs the objective on the host anyway and checks after every pass.
    storage_dtype:
        Storage of ``P`` for a dense input: float32 (default), bfloat16 or float16.
    distributed:
        ``None`` follows ``torch.distributed.is_initialized()``. When on, ``scores`` are this rank's
        rows; every rank must call with the same settings, and the labels returned are this rank's.
    backend:
        ``"auto"`` (numba kernels on the CPU, Triton kernels on CUDA where triton is importable, torch
        elsewhere), ``"numba"``, ``"triton"`` or ``"torch"``.
    keep_scores:
        For a score matrix: keep a float32 copy of the scaled scores so that very sharp problems are
        solved exactly (see :class:`ScoreBuffer`). ``None``: when that copy costs at most 2 GB.
    method:
        ``"lbfgs"``: quasi-Newton on the K cluster potentials, tens of passes on real network scores,
        O(N K) work each. ``"auto"`` (default): the same up to 256 clusters until every cluster mass is
        within 30 % of its target, then Newton's method with the exact K x K Hessian (reported as
        ``"lbfgs+newton"``), which halves the passes on real scores (its passes also form a K x K Gram
        matrix, O(N K^2) work, which is why larger K stay with L-BFGS). ``"sinkhorn"``: the classic
        Sinkhorn-Knopp iteration, hundreds to thousands of passes on the same scores; kept for teaching
        and comparison.
    init:
        Warm start: a float64 K-vector of cluster potentials, e.g. the previous label optimisation's
        ``result.cluster_potential`` (a list of them, one per head, when ``scores`` is a list).
    """
    if isinstance(scores, (list, tuple)):
        return _label_each_head(scores, lam, init, dict(
            tol=tol, max_iter=max_iter, prior=prior, check_every=check_every, storage_dtype=storage_dtype,
            distributed=distributed, backend=backend, keep_scores=keep_scores, method=method))
    _check_options(tol, max_iter, check_every, method)
    dist = distributed_active(distributed)
    buffer = _as_buffer(scores, lam, distributed=dist, init=init, storage_dtype=storage_dtype, keep_scores=keep_scores)
    return _solve_one(buffer, tol=float(tol), max_iter=int(max_iter), prior=prior, check_every=int(check_every),
                      distributed=dist, backend=backend, method=method, init=init)
