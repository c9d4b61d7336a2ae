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
* **Few passes on real scores.** The rows of the plan are exact after every row rescaling, so the problem
  is a smooth convex one in the K cluster potentials alone (the semi-dual). L-BFGS on it needs tens of
  passes where Sinkhorn-Knopp needs hundreds to thousands; up to 256 clusters Newton's method with the
  exact K x K Hessian takes over near the optimum and finishes in a few.
* **One pass over P per evaluation** (see :mod:`sela_edu.labelling._kernels`).
* **Distributed.** When ``torch.distributed`` is initialised each rank holds its own rows; the only
  communication is an all-reduce of K-vectors (column maxima once, column sums every iteration). Every
  rank takes the same decisions, so all ranks stop together.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch

from sela_edu.labelling import _kernels

__all__ = [
    "SelfLabelResult",
    "ScoreBuffer",
    "self_label",
    "ReferenceResult",
    "reference_self_label",
    "marginal_error",
    "synthetic_scores",
]

STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
METHODS = ("auto", "lbfgs", "sinkhorn")
# Rows turned into P at a time: large enough for the kernels to run at speed, small enough to stay in L3.
_STAGE_BYTES = 8 * 2**20
# Entries of P below e^-87 (less than 1e-38 of their row's and column's largest, so they weigh nothing) are
# stored as e^-87 rather than as float32 denormals: exp, and every product with a denormal, is many times
# slower (0.56 s against 0.05 s for exp over 50M entries here).
_LOG_FLOOR = _kernels.LOG_FLOOR
# ScoreBuffer keeps the scores themselves (for exact solutions of very sharp problems) up to this size.
_KEEP_SCORES_BYTES = 2 * 2**30
# Rebuild P once the cluster scalings at an accepted step spread this far (in nats, largest minus smallest)
# since it was built: entries at the floor (e^-87 of their row's largest) then still weigh less than e^-47
# of the largest. Trial points of a line search rebuild only beyond _MAX_SPREAD_NATS.
_ABSORB_NATS = 40.0
# Without the scores to rebuild from, the scalings may spread this far: beyond it, entries stored at the
# floor (e^-87) could weigh as much as real ones once scaled, and the answer would be the floor's.
_MAX_SPREAD_NATS = 60.0
# Curvature pairs kept by L-BFGS.
_LBFGS_MEMORY = 20
# Newton's method: steps longer than this (in nats of any cluster potential) are shortened
_NEWTON_STEP_NATS = 8.0
# The automatic method takes Newton's up to this many clusters: its pass adds a K x K Gram matrix, O(N K^2)
# work, which beyond a few hundred clusters costs more than the passes it saves
NEWTON_MAX_CLUSTERS = 256
# ... and hands over from L-BFGS to Newton's method once every cluster mass is within this of its target
_NEWTON_BELOW = 0.3
# ... and back to L-BFGS if this many Newton passes have not halved the error (a problem too sharp for it)
_NEWTON_PATIENCE = 6


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

    Each block of at most ``stage rows`` is turned into its rows of ``P = exp(lam * scores - row max - block
    column max)`` as it arrives (one compiled call on the CPU: maxima, exp and the store) and stored in
    ``storage_dtype``. Every block keeps its own column shift: the solver folds the K factors that bring a
    block to the common shift into its cluster scalings, so P is never rewritten (on the torch path,
    :meth:`finalise` rescales the blocks instead).

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
        self._stage_rows = max(64, min(self.num_rows, _STAGE_BYTES // (4 * self.num_clusters)))
        self._stage = torch.empty(self._stage_rows, self.num_clusters, dtype=torch.float32, device=self.device)
        self._staged = 0
        self._seg_stops: list[int] = []  # end row of each block formed so far
        self._seg_max: list[torch.Tensor] = []  # its column maxima (its frame)
        self._finalised = False
        self._folded = False
        #: after :meth:`finalise`: P_ik exp(segment_shift[s, k]) = exp(x_ik - column_shift_k) for rows of block s
        self.column_shift: torch.Tensor | None = None
        self.segment_stops: np.ndarray | None = None
        self.segment_shift: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.num_rows

    def reset(self) -> None:
        """Empty the buffer for the next scores of the same shape, keeping its memory.

        A new buffer per label optimisation makes the operating system hand over fresh pages for ``P``, each
        zeroed on its first write: about 1 s per GB on the virtual machines the kit was measured on, as
        long as forming ``P`` itself. A buffer that is reset and refilled writes into pages it already owns
        (the trainer does this on the CPU; on a GPU torch's caching allocator already reuses memory).
        """
        self.filled = self._staged = 0
        if self._stage.shape[0] == 0:
            self._stage = torch.empty(self._stage_rows, self.num_clusters, dtype=torch.float32, device=self.device)
        self._seg_stops, self._seg_max = [], []
        self._finalised = self._folded = False
        self.column_shift = self.segment_stops = self.segment_shift = None

    def add(self, scores: torch.Tensor) -> None:
        """Append the next rows (an n x K tensor of scores, any float dtype, any device)."""
        if self._finalised:
            raise ValueError("this ScoreBuffer was already solved; reset() it (or make a new one) for new scores")
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
        # float32 scores already where P lives are formed straight from the caller's tensor, block by block
        # (after topping up and forming what is staged, so rows keep their order); the compiled kernel checks
        # those blocks for NaN and inf as it reads them, the rows that are copied are checked here first
        direct = (scores.dtype == torch.float32 and scores.device == self.device and scores.is_contiguous()
                  and _kernels.can_form(scores, self.storage))
        top = min(n, self._stage_rows - self._staged) if direct and self._staged else 0
        bulk = top + (n - top) // self._stage_rows * self._stage_rows if direct else 0
        _check_finite(scores[:top])
        _check_finite(scores[bulk:])
        mark = (self.filled, len(self._seg_stops), self._staged)
        self._stage_rows_from(scores[:top])
        try:
            for start in range(top, bulk, self._stage_rows):
                self._form(scores[start : start + self._stage_rows], scratch=False, check=True)
        except ValueError:  # nothing of this call is kept: the compiled kernels left the stage as it was
            self.filled, self._staged = mark[0], mark[2]
            del self._seg_stops[mark[1]:], self._seg_max[mark[1]:]
            raise
        self._stage_rows_from(scores[bulk:])

    def _stage_rows_from(self, scores: torch.Tensor) -> None:
        start, n = 0, scores.shape[0]
        while start < n:
            take = min(n - start, self._stage.shape[0] - self._staged)
            self._stage[self._staged : self._staged + take].copy_(scores[start : start + take])
            self._staged += take
            start += take
            if self._staged == self._stage.shape[0]:
                self._flush()

    def _flush(self) -> None:
        if self._staged:
            self._form(self._stage[: self._staged], scratch=True)
            self._staged = 0

    def _form(self, x: torch.Tensor, scratch: bool, check: bool = False) -> None:
        """Rows ``filled ..`` of P from float32 scores ``x`` (overwritten when ``scratch``; checked for NaN
        and inf when ``check``)."""
        m = x.shape[0]
        rows = slice(self.filled, self.filled + m)
        keep = None if self.log_scores is None else self.log_scores[rows]
        if _kernels.can_form(x, self.storage):
            col, finite = _kernels.form_block(x, self.lam, self.storage[rows], keep)
            if check and not finite:
                _check_finite(x)
        else:
            if check:
                _check_finite(x)
            x = x.mul(self.lam) if not scratch else x.mul_(self.lam)
            x.sub_(x.amax(dim=1, keepdim=True))
            if keep is not None:
                keep.copy_(x)
            col = x.amax(dim=0)
            x.sub_(col).clamp_(min=_LOG_FLOOR).exp_()
            self.storage[rows].copy_(x)
        self._seg_stops.append(self.filled + m)
        self._seg_max.append(col.to(self.device, torch.float32).clone())
        self.filled += m

    def finalise(self, distributed: bool | None = None, fold: bool = True) -> torch.Tensor:
        """Complete the buffer and return ``P`` (N x K, storage dtype).

        With ``fold`` (the default) every block is rescaled to the common column shift, so that ``P`` is one
        matrix ``exp(x - column_shift)``; without it the blocks stay in their own frames and
        ``segment_stops`` / ``segment_shift`` say how to bring them there (what the compiled kernels use).
        """
        if not self._finalised:
            self._flush()
            if self.filled != self.num_rows:
                raise ValueError(f"only {self.filled} of the buffer's {self.num_rows} rows were added")
            maxima = torch.stack(self._seg_max)
            col_max = maxima.amax(dim=0)
            if _dist_active(distributed):
                _all_reduce(col_max, torch.distributed.ReduceOp.MAX)
            self.column_shift = col_max
            self.segment_stops = np.asarray(self._seg_stops, dtype=np.int64)
            self.segment_shift = maxima - col_max  # <= 0: a block's entries only shrink when brought over
            self._seg_max.clear()
            self._stage = self._stage[:0]
            self._finalised = True
        if fold and not self._folded:
            start = 0
            for stop, shift in zip(self.segment_stops.tolist(), self.segment_shift):
                if bool((shift != 0).any()):
                    factor = shift.exp()
                    if self.storage.dtype == torch.float32:
                        self.storage[start:stop].mul_(factor)
                    else:
                        self.storage[start:stop] = (self.storage[start:stop].float() * factor).to(self.storage.dtype)
                start = stop
            self._one_segment()
        return self.storage

    def _one_segment(self) -> None:
        self.segment_stops = np.asarray([self.num_rows], dtype=np.int64)
        self.segment_shift = torch.zeros(1, self.num_clusters, dtype=torch.float32, device=self.device)
        self._folded = True

    def reform(self, potential: torch.Tensor) -> float:
        """Rebuild ``P_ik = exp(x_ik + potential_k - m_i)``, ``m_i = max_j(x_ij + potential_j)``, from the kept
        scores; returns ``sum_i m_i`` (float64), which the solver's objective needs."""
        if self.log_scores is None:
            raise ValueError("reform needs the scores: make the ScoreBuffer with keep_scores=True")
        pot = potential.to(device=self.device, dtype=torch.float32)
        rows = max(1, _STAGE_BYTES // (4 * self.num_clusters))
        total = 0.0
        for start in range(0, self.num_rows, rows):
            total += _kernels.reform_block(self.log_scores[start : start + rows], pot, self.storage[start : start + rows])
        self._one_segment()
        return total


def _check_finite(scores: torch.Tensor) -> None:
    # a sum is one fast pass and is finite whenever every entry is (bar overflow, checked exactly)
    if not torch.isfinite(scores.sum()) and not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"scores contain {bad} non-finite values (NaN or inf): check the network's outputs")


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


def _check_init(init, num_clusters: int) -> torch.Tensor | None:
    if init is None:
        return None
    try:
        init = torch.as_tensor(init).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"init must be a float64 vector of {num_clusters} cluster potentials, got {type(init).__name__}") from None
    if init.ndim != 1 or init.numel() != num_clusters:
        raise ValueError(
            f"init must be a vector of {num_clusters} cluster potentials (a previous result's cluster_potential), "
            f"got shape {tuple(init.shape)}"
        )
    if torch.isnan(init).any() or (init == math.inf).any():
        raise ValueError("init contains NaN or +inf: pass a previous result's cluster_potential, or None")
    return init


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


class _Stop(Exception):
    """Raised inside the objective to end the optimiser: converged, or out of passes."""


class _SemiDual:
    """The label step as a function of the K cluster potentials L alone (the semi-dual).

    Rows of the plan are exact for any L (each row is rescaled to sum to 1), so what remains is

        F(L) = sum_i log sum_k exp(x_ik + L_k) - sum_k target_k L_k,

    convex, with gradient ``mass_k(L) - target_k``: the cluster masses of the row-normalised plan. One fused
    pass over P gives both. P holds ``exp(x_ik - column shift)`` in per-block frames (``E``) or, after a
    rebuild, with potentials ``A`` absorbed; ``M`` is the sum of the row shifts of the last rebuild, so F is
    the same function of L whatever the frame, and an optimiser may go on across a rebuild.
    """

    def __init__(self, buffer: ScoreBuffer, P: torch.Tensor, backend: str, vec_device, target, distributed: bool):
        self.buffer, self.P, self.backend, self.vec_device = buffer, P, backend, vec_device
        self.target, self.distributed = target, distributed
        self.active = target > 0  # clusters with a zero prior get no mass: their scaling is 0
        self.A = -buffer.column_shift.to(vec_device, torch.float64)
        self.E = buffer.segment_shift.to(vec_device, torch.float32).exp()
        self.stops = buffer.segment_stops
        self.M = 0.0
        self.passes = 0
        self.rebuilds = 0

    def spread(self, L: torch.Tensor) -> float:
        d = (L - self.A)[self.active]
        return float(d.max() - d.min())

    def settle(self, L: torch.Tensor, limit: float = _ABSORB_NATS) -> None:
        """Rebuild P around ``L`` when the scalings it needs have spread beyond ``limit`` (kept scores only)."""
        if self.buffer.log_scores is not None and self.spread(L) > limit:
            A = L - L[self.active].max()
            self.M = self.buffer.reform(torch.where(self.active, A, torch.full_like(A, _LOG_FLOOR)))
            self.A = torch.where(self.active, A, A.new_zeros(()))
            self.E = self.buffer.segment_shift.to(self.vec_device, torch.float32).exp()
            self.stops = self.buffer.segment_stops
            self.rebuilds += 1

    def __call__(self, L: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``(F(L), mass(L))`` from one pass over P (rebuilding P first when L has drifted very far)."""
        return self._evaluate(L, hessian=False)[:2]

    def with_hessian(self, L: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(F(L), mass(L), Hessian(L))`` from one pass over P; the Hessian is K x K (float64)."""
        return self._evaluate(L, hessian=True)

    def _evaluate(self, L: torch.Tensor, hessian: bool):
        self.settle(L, _MAX_SPREAD_NATS)
        d = L - self.A
        s = float(d[self.active].max())
        w = torch.where(self.active, (d - s).exp(), d.new_zeros(())).float()
        if hessian:
            mass, logsum, gram = _kernels.hessian_pass(self.P, self.E, self.stops, w)
        else:
            mass, logsum = _kernels.fused_pass(self.P, self.E, self.stops, w, self.backend)
        self.passes += 1
        parts = [mass.to(self.vec_device, torch.float64),
                 torch.tensor([logsum + self.buffer.num_rows * s + self.M], dtype=torch.float64, device=self.vec_device)]
        if hessian:
            parts.append(gram.to(self.vec_device).flatten())
        packed = torch.cat(parts)
        if self.distributed:
            packed = _all_reduce(packed.to(self.P.device), torch.distributed.ReduceOp.SUM).to(self.vec_device)
        if not torch.isfinite(packed).all():
            raise FloatingPointError(
                f"the label step broke down at pass {self.passes}: a cluster mass is not finite. The scores are "
                f"too sharp for lam={self.buffer.lam:g} or the prior has zeros some images cannot avoid: lower lam"
            )
        k = len(self.target)
        L_act = torch.where(self.active, L, L.new_zeros(()))
        F = float(packed[k]) - float((self.target * L_act).sum())
        mass = packed[:k]
        if not hessian:
            return F, mass, None
        # F's Hessian: diag(mass) - sum_i q_i q_i^T
        return F, mass, torch.diag(mass) - packed[k + 1:].view(k, k)

    def scalings(self, L: torch.Tensor) -> torch.Tensor:
        d = L - self.A
        s = float(d[self.active].max())
        return torch.where(self.active, (d - s).exp(), d.new_zeros(())).float()


def _run_sinkhorn(sd: _SemiDual, L: torch.Tensor, *, tol, max_iter, check_every, errors):
    """Plain Sinkhorn-Knopp: each pass rescales the columns to their targets (L += log(target / mass))."""
    error, converged, it = math.inf, False, 0
    for it in range(1, max_iter + 1):
        _, mass = sd(L)
        if it % check_every == 0 or it == max_iter:
            error = marginal_error(mass, sd.target)
            errors.append(error)
            if error <= tol:  # keep the L that was measured: rows exact, every cluster's mass within tol
                converged = True
                break
        # a cluster that receives no mass at all gets a huge scaling, which the next rebuild absorbs
        step = (sd.target / mass.clamp_min(1e-300)).log()
        L = torch.where(sd.active, L + step, L)
        sd.settle(L)
        if sd.buffer.log_scores is None and sd.spread(L) > _MAX_SPREAD_NATS:
            _too_sharp(sd, L, it)
    return L, error, converged, it


def _run_lbfgs(sd: _SemiDual, L0: torch.Tensor, *, tol, max_iter, errors, newton_below: float = 0.0):
    """Quasi-Newton (SciPy's L-BFGS-B) on the semi-dual, stopped by the cluster-mass rule.

    Every evaluation is one pass over P. Near a tight tolerance the float32 sums make F too noisy for a
    line search; when the optimiser stops on its own, it restarts from the best point (if it was still
    making progress) or goes on with Sinkhorn steps, which need no line search.
    """
    from scipy.optimize import minimize

    act = sd.active
    n_total = float(sd.target.sum())
    base = L0.clone()
    best, record = _best_tracker(sd, L0, errors)
    steps = [0]
    switch = [False]

    def full(x) -> torch.Tensor:
        L = base.clone()
        L[act] = torch.from_numpy(x).to(L.device)
        return L

    def fun(x):
        L = full(x)
        F, mass = sd(L)
        error = record(L, mass)
        if error <= tol or sd.passes >= max_iter:
            raise _Stop
        if error <= newton_below:
            switch[0] = True
            raise _Stop
        grad = ((mass - sd.target)[act] / n_total).cpu().numpy()
        return F / n_total, grad

    def count(intermediate_result):  # an accepted step: rebuild P around it if it has drifted far
        steps[0] += 1
        sd.settle(full(intermediate_result.x))

    x = L0[act].cpu().numpy()
    try:
        while True:
            start_error = best["error"]
            minimize(fun, x, jac=True, method="L-BFGS-B", callback=count,
                     options=dict(maxcor=_LBFGS_MEMORY, maxiter=max_iter + 1, maxfun=max_iter + 1,
                                  ftol=0.0, gtol=0.0, maxls=20))
            if not best["error"] < 0.5 * start_error:
                break  # no headway: the line search is defeated by rounding noise
            x = best["L"][act].cpu().numpy()
        steps[0] += _finish_with_sinkhorn(sd, best, record, tol=tol, max_iter=max_iter)
    except _Stop:
        pass
    if switch[0]:  # close enough for Newton's quadratic model: it usually finishes in a few passes
        L, error, converged, more = _run_newton(sd, best["L"], tol=tol, max_iter=max_iter, errors=errors,
                                                patience=_NEWTON_PATIENCE)
        if converged or sd.passes >= max_iter:
            return L, error, converged, steps[0] + more
        # a problem so sharp that the quadratic model misleads: back to L-BFGS from the best point
        L, error, converged, more_lbfgs = _run_lbfgs(sd, L, tol=tol, max_iter=max_iter, errors=errors)
        return L, error, converged, steps[0] + more + more_lbfgs
    return _best_point(sd, best, tol, steps[0])


def _best_tracker(sd: _SemiDual, L0: torch.Tensor, errors: list):
    """``(best, record)``: the best point so far (a dict of error, L, mass) and ``record(L, mass)``, which
    appends a pass's cluster-mass error to ``errors``, keeps the point when it is the best, and returns it."""
    best = {"error": math.inf, "L": L0.clone(), "mass": None}

    def record(L, mass) -> float:
        error = marginal_error(mass, sd.target)
        errors.append(error)
        if error < best["error"]:
            best.update(error=error, L=L, mass=mass)
        return error

    return best, record


def _finish_with_sinkhorn(sd: _SemiDual, best: dict, record, *, tol, max_iter) -> int:
    """Sinkhorn steps from the best point until converged or out of passes (they need no line search)."""
    L, mass, steps = best["L"], best["mass"], 0
    while True:
        L = torch.where(sd.active, L + (sd.target / mass.clamp_min(1e-300)).log(), L)
        steps += 1
        sd.settle(L)
        _, mass = sd(L)
        error = record(L, mass)
        if error <= tol or sd.passes >= max_iter:
            return steps


def _best_point(sd: _SemiDual, best: dict, tol: float, steps: int):
    L, error = best["L"], best["error"]
    if sd.buffer.log_scores is None and sd.spread(L) > _MAX_SPREAD_NATS:
        _too_sharp(sd, L, sd.passes)
    return L, error, error <= tol, steps


def _run_newton(sd: _SemiDual, L: torch.Tensor, *, tol, max_iter, errors, patience: int | None = None):
    """Newton's method on the semi-dual, each pass giving F, its gradient and its K x K Hessian.

    The Hessian ``diag(mass) - sum_i q_i q_i^T`` is exact, so near the optimum the error falls
    quadratically. Far from it (a confident network: few images sit at a cluster's boundary, the
    quadratic model holds only close by) the step is damped, Levenberg-Marquardt style: the system
    ``H + damping * diag(mass)`` moves from Newton's step towards a short Sinkhorn-like step ``-g / mass``
    after every step that fails to lower F, and back after every success. Steps are also capped at
    ``_NEWTON_STEP_NATS``. F is flat along a common shift of all potentials; a tiny ridge makes the
    system solvable without changing the step elsewhere. With ``patience``, it gives up (unconverged) when
    that many passes have not halved the error it started from.
    """
    act = sd.active
    first_pass = sd.passes
    best, record = _best_tracker(sd, L, errors)
    steps, damping = 0, 0.0
    F, mass, H = sd.with_hessian(L)
    if record(L, mass) <= tol:
        return _best_point(sd, best, tol, steps)
    start_error = best["error"]
    while sd.passes < max_iter:
        if patience is not None and sd.passes - first_pass >= patience and best["error"] > 0.5 * start_error:
            break
        g = (mass - sd.target)[act]
        h = H[act][:, act] + torch.diag(damping * mass[act])
        ridge = 1e-9 * float(h.diagonal().abs().mean()) + 1e-300
        d = -torch.linalg.solve(h + ridge * torch.eye(len(g), dtype=h.dtype, device=h.device), g)
        if not float(g @ d) < 0:  # no descent direction left (rounding): Sinkhorn steps finish the job
            steps += _finish_with_sinkhorn(sd, best, record, tol=tol, max_iter=max_iter)
            return _best_point(sd, best, tol, steps)
        d *= min(1.0, _NEWTON_STEP_NATS / float(d.abs().max()))
        trial = L.clone()
        trial[act] += d
        F_new, mass_new, H_new = sd.with_hessian(trial)
        if record(trial, mass_new) <= tol:
            return _best_point(sd, best, tol, steps + 1)
        if F_new <= F + 1e-4 * float(g @ d):
            L, F, mass, H = trial, F_new, mass_new, H_new
            steps += 1
            damping = damping / 4 if damping > 1e-3 else 0.0
            sd.settle(L)
        elif damping > 1e12:  # F too noisy in float32 to see a decrease: Sinkhorn steps finish the job
            steps += _finish_with_sinkhorn(sd, best, record, tol=tol, max_iter=max_iter)
            return _best_point(sd, best, tol, steps)
        else:
            damping = max(4 * damping, 0.25)
    return _best_point(sd, best, tol, steps)


def _too_sharp(sd: _SemiDual, L: torch.Tensor, where: int):
    raise FloatingPointError(
        f"the label step broke down at pass {where}: the cluster scalings spread over "
        f"{sd.spread(L):.0f} nats, so entries too small for float32 would decide the answer. The scores are "
        f"too sharp for lam={sd.buffer.lam:g}: lower lam, "
        "or fill the ScoreBuffer with keep_scores=True so the solver can rebuild P as it goes"
    )


def _solve_one(
    buffer: ScoreBuffer,
    *,
    tol: float,
    max_iter: int,
    prior: torch.Tensor | None,
    check_every: int,
    distributed: bool,
    backend: str,
    method: str,
    init: torch.Tensor | None,
) -> SelfLabelResult:
    K = buffer.num_clusters
    prior = _check_prior(prior, K)
    init = _check_init(init, K)
    backend = _pick_backend(buffer.storage, backend)
    # the compiled kernels read every block in its own frame; the torch path wants one matrix
    P = buffer.finalise(distributed, fold=backend != "numba")
    n_total = torch.tensor([float(buffer.num_rows)], dtype=torch.float64, device=P.device)
    if distributed:
        _all_reduce(n_total, torch.distributed.ReduceOp.SUM)
    if n_total.item() < K:
        raise ValueError(f"fewer images ({int(n_total.item())}) than clusters ({K}): equal-sized clusters are impossible")
    vec_device = torch.device("cpu") if backend == "numba" else P.device
    # Rows are scaled to sum to 1, so cluster k must receive N * prior_k of the mass.
    target = (n_total.item() * prior).to(vec_device)
    sd = _SemiDual(buffer, P, backend, vec_device, target, distributed)
    # The plan is Q_ik ∝ exp(x_ik + L_k), x = lam * scores - row max. Cold start: b = 1 on the formed P.
    L = sd.A.clone() if init is None else init.to(vec_device)
    L = torch.where(sd.active, L, torch.full_like(L, -math.inf))
    errors: list[float] = []
    if method == "auto":
        method = "lbfgs+newton" if int(sd.active.sum()) <= NEWTON_MAX_CLUSTERS else "lbfgs"
    if method == "lbfgs+newton":
        L, error, converged, iterations = _run_lbfgs(sd, L, tol=tol, max_iter=max_iter, errors=errors,
                                                     newton_below=_NEWTON_BELOW)
    elif method == "sinkhorn":
        L, error, converged, iterations = _run_sinkhorn(sd, L, tol=tol, max_iter=max_iter, check_every=check_every,
                                                        errors=errors)
    else:
        L, error, converged, iterations = _run_lbfgs(sd, L, tol=tol, max_iter=max_iter, errors=errors)
    if not converged:
        warnings.warn(
            f"the label step ({method}) stopped after max_iter={max_iter} passes with cluster-mass error "
            f"{error:.2e} > tol={tol:g}; labels are usable but not converged (raise max_iter or lower lam)",
            RuntimeWarning,
            stacklevel=3,
        )
    labels = _kernels.argmax_scaled(P, sd.E, sd.stops, sd.scalings(L), backend).to(P.device)
    sizes = torch.bincount(labels, minlength=K)
    if distributed:
        _all_reduce(sizes, torch.distributed.ReduceOp.SUM)
    return SelfLabelResult(labels, iterations, float(error), bool(converged), sizes.cpu(), L.cpu(), sd.rebuilds,
                           sd.passes, errors, method)


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
        ``"auto"`` (numba kernels on the CPU, torch elsewhere), ``"numba"`` or ``"torch"``.
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
        if init is not None and (not isinstance(init, (list, tuple)) or len(init) != len(scores)):
            raise ValueError(f"with {len(scores)} heads, init must be a list of {len(scores)} potential vectors (or None)")
        inits = init if init is not None else [None] * len(scores)
        return [
            self_label(
                s, lam, tol=tol, max_iter=max_iter, prior=prior, check_every=check_every,
                storage_dtype=storage_dtype, distributed=distributed, backend=backend, keep_scores=keep_scores,
                method=method, init=i,
            )
            for s, i in zip(scores, inits)
        ]
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if int(max_iter) < 1 or int(check_every) < 1:
        raise ValueError(f"max_iter and check_every must be at least 1, got {max_iter} and {check_every}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
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
        _check_init(init, k)  # refuse a bad warm start before the work of forming P
        buffer = ScoreBuffer(n, k, lam, storage_dtype=storage_dtype or torch.float32, device=scores.device,
                             keep_scores=keep_scores)
        buffer.add(scores)
    return _solve_one(
        buffer, tol=float(tol), max_iter=int(max_iter), prior=prior, check_every=int(check_every),
        distributed=dist, backend=backend, method=method, init=init,
    )


def synthetic_scores(n: int, k: int, *, gap: tuple[float, float] = (4.0, 6.0), skew: float = 1.0,
                     noise: float = 0.5, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Scores shaped like a trained network's: the hard case for the label step (float32, n x k).

    Each row prefers one cluster, drawn from a skewed popularity (log-normal with spread ``skew``, so some
    clusters are wanted by many more images than their share), by a logit gap drawn uniformly from ``gap``
    over Gaussian noise of scale ``noise``. Equipartition must then push many confident rows away from
    their favourite, which is what makes plain Sinkhorn-Knopp slow on real scores (hundreds to thousands
    of iterations) where standard-normal logits need tens. The defaults are calibrated on recorded scores
    of the kit's classroom network (``benchmarks/scores``, lambda 10): at 10,000 rows and K = 10, 50, 100
    plain Sinkhorn-Knopp needs about 490, 780 and 420 iterations to tol 1e-3 (the recorded heads: 560 to
    850), L-BFGS 23 to 46 passes (recorded: 15 to 46). At another lambda, multiply the scores by
    10 / lambda for the same problem in nats. Rows ``offset .. offset + n`` of one stream (same ``seed``)
    can be generated block by block.
    """
    g = torch.Generator().manual_seed(int(seed))
    popularity = torch.softmax(skew * torch.randn(k, generator=g, dtype=torch.float64), dim=0)
    rows = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * int(offset) + 1)
    scores = noise * torch.randn(n, k, generator=rows)
    favourite = torch.multinomial(popularity, n, replacement=True, generator=rows)
    lo, hi = gap
    scores[torch.arange(n), favourite] += lo + (hi - lo) * torch.rand(n, generator=rows)
    return scores


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
