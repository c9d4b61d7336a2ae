"""The score buffer: a head's scores, streamed in block by block, stored as ``P`` for the solver.

``P^lam`` is ``exp(lam * scores)`` up to a constant per row, and any constant per row or per column only
changes the scalings the solver finds. So each block of ``lam * scores`` is shifted by its row maxima, then
by its column maxima, before ``exp``: every entry is at most 1 and softmax is never formed (the scores may
be logits or log-probabilities). Each block is turned into its rows of ``P`` as it arrives and stored in
float32, bfloat16 or float16, so a float32 N x K matrix never has to exist.
"""

from __future__ import annotations

import numpy as np
import torch

from sela_edu.labelling import _kernels
from sela_edu.labelling.checks import check_finite, check_lam
from sela_edu.labelling.allreduce import all_reduce, distributed_active

#: The torch dtypes P can be stored in (``storage_dtype``).
STORAGE_TORCH_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Rows turned into P at a time: large enough for the kernels to run at speed, small enough to stay in L3.
_STAGE_BYTES = 8 * 2**20
# Entries of P below e^-87 (less than 1e-38 of their row's and column's largest, so they weigh nothing) are
# stored as e^-87 rather than as float32 denormals: exp, and every product with a denormal, is many times
# slower (0.56 s against 0.05 s for exp over 50M entries here).
LOG_FLOOR = _kernels.LOG_FLOOR
# ScoreBuffer keeps the scores themselves (for exact solutions of very sharp problems) up to this size.
_KEEP_SCORES_BYTES = 2 * 2**30


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
        if storage_dtype not in STORAGE_TORCH_DTYPES:
            names = ", ".join(str(d).replace("torch.", "") for d in STORAGE_TORCH_DTYPES)
            raise ValueError(f"storage_dtype must be one of {names}, got {storage_dtype}")
        self.num_rows, self.num_clusters = int(num_rows), int(num_clusters)
        self.lam = check_lam(lam)
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

    def keep_rows(self, rows: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep the scores of the images at positions ``rows`` (any order), for :meth:`form_from_kept`.

        For a caller that sees the images out of order, several times over: a training pass keeps every
        image's latest head outputs here instead of scoring the set again. What is kept is what :meth:`add`
        keeps, ``lam * scores - row max`` in float32, one row at a time (so a row may be rewritten at any
        moment); ``P`` is formed only when :meth:`form_from_kept` is called. Needs ``keep_scores=True``.
        """
        if self.log_scores is None:
            raise ValueError("keep_rows keeps the scores: make the ScoreBuffer with keep_scores=True")
        scores = torch.as_tensor(scores)
        if scores.ndim != 2 or scores.shape[1] != self.num_clusters or scores.shape[0] != len(rows):
            raise ValueError(f"scores must be a {len(rows)} x {self.num_clusters} matrix (one row per position in "
                             f"rows), got shape {tuple(scores.shape)}")
        x = scores.detach().to(self.device, torch.float32) * self.lam
        self.log_scores[torch.as_tensor(rows, device=self.device)] = x - x.amax(dim=1, keepdim=True)

    def form_from_kept(self) -> None:
        """Form ``P`` from the kept scores of every row, in row order, as :meth:`add` forms streamed blocks.

        The kept rows are already ``lam * scores - row max`` (row max 0), so they are formed with lam 1 and
        left as they are: forming again later, after some rows were rewritten by :meth:`keep_rows`, starts
        from the same kept values. Rows are checked for NaN and inf as they are formed.
        """
        if self.log_scores is None:
            raise ValueError("form_from_kept needs the scores: make the ScoreBuffer with keep_scores=True")
        self.reset()
        for start in range(0, self.num_rows, self._stage_rows):
            self._form(self.log_scores[start : start + self._stage_rows], scratch=False, check=True, kept=True)

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
        check_finite(scores[:top])
        check_finite(scores[bulk:])
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

    def _form(self, x: torch.Tensor, scratch: bool, check: bool = False, kept: bool = False) -> None:
        """Rows ``filled ..`` of P from float32 scores ``x`` (overwritten when ``scratch``; checked for NaN
        and inf when ``check``; ``kept``: ``x`` are this buffer's own kept rows, already scaled by lam)."""
        m = x.shape[0]
        rows = slice(self.filled, self.filled + m)
        keep = None if self.log_scores is None or kept else self.log_scores[rows]
        lam = 1.0 if kept else self.lam
        if _kernels.can_form(x, self.storage):
            col, finite = _kernels.form_block(x, lam, self.storage[rows], keep)
            if check and not finite:
                check_finite(x)
        elif _kernels.triton_forms(x, self.storage):  # CUDA: two launches, P written once
            col, bad = _kernels.triton_kernels().form_block(x, lam, self.storage[rows], keep)
            if check and int(bad):
                check_finite(x)
        else:
            if check:
                check_finite(x)
            x = x.mul(lam) if not scratch else x.mul_(lam)
            x.sub_(x.amax(dim=1, keepdim=True))
            if keep is not None:
                keep.copy_(x)
            col = x.amax(dim=0)
            x.sub_(col).clamp_(min=LOG_FLOOR).exp_()
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
            if distributed_active(distributed):
                all_reduce(col_max, torch.distributed.ReduceOp.MAX)
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
