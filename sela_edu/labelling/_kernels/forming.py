"""Forming ``P`` from scores in one compiled call per block, and rebuilding it with potentials absorbed."""

from __future__ import annotations

import numpy as np
import torch

from sela_edu.labelling._kernels.ops import (EMPTY16, EMPTY32, HAVE_NUMBA, LOG_FLOOR, as_numpy, num_blocks,
                                              numba_supports)

if HAVE_NUMBA:
    from numba import njit, prange

    from sela_edu.labelling._kernels.ops import bf16, exp_bits, f32_bits, fmax

    @njit(fastmath=True, cache=True)
    def _form_row(src, lam, r, col, keep, kept, out32, out16, half):  # pragma: no cover - compiled
        """P_j = exp(lam src_j - r - col_j) into ``out16`` (bfloat16 bits) or ``out32``; ``keep`` gets lam src - r."""
        for j in range(src.shape[0]):
            x = lam * src[j] - r
            if kept:
                keep[j] = x
            bits = exp_bits(x - col[j])
            if half:
                out16[j] = bf16(bits)
            else:
                out32[j] = f32_bits(bits)

    @njit(parallel=True, fastmath=True, cache=True)
    def _form_block(S, lam, out32, out16, keep, row_sum, half, kept, nblocks):  # pragma: no cover - compiled
        """One staged block of scores to its rows of P, in the block's own frame.

        x_ik = lam S_ik - max_j lam S_ij; c_k = max_i x_ik; P_ik = exp(max(x_ik - c_k, -87)), written to
        ``out16`` (bfloat16 bits) when ``half``, else to ``out32``; ``keep`` gets x when ``kept``.
        ``row_sum`` receives each row's sum (float32), which is finite when the row is: the caller's check
        for NaN and inf, at no extra read of S. Returns c (float32 K-vector). Two sweeps over S, which is
        small enough to stay in cache.
        """
        m, k = S.shape
        row_max = np.empty(m, np.float32)
        partial = np.full((nblocks, k), -np.inf, np.float32)
        step = (m + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            acc = partial[blk]
            for i in range(blk * step, min(m, (blk + 1) * step)):
                row = S[i]
                best = np.float32(-np.inf)
                tot = np.float32(0.0)
                for j in range(k):
                    best = fmax(best, row[j])
                    tot += row[j]
                row_sum[i] = tot
                r = lam * best
                row_max[i] = r
                for j in range(k):
                    acc[j] = fmax(acc[j], lam * row[j] - r)
        col = partial[0].copy()
        for blk in range(1, nblocks):
            for j in range(k):
                col[j] = fmax(col[j], partial[blk, j])
        for blk in prange(nblocks):
            for i in range(blk * step, min(m, (blk + 1) * step)):
                _form_row(S[i], lam, row_max[i], col, keep[i if kept else 0], kept,
                          out32[0 if half else i], out16[i if half else 0], half)
        return col

    @njit(fastmath=True, cache=True)
    def _reform_row(src, A, out32, out16, half):  # pragma: no cover - compiled
        best = np.float32(-np.inf)
        for j in range(src.shape[0]):
            best = fmax(best, src[j] + A[j])
        for j in range(src.shape[0]):
            bits = exp_bits(src[j] + A[j] - best)
            if half:
                out16[j] = bf16(bits)
            else:
                out32[j] = f32_bits(bits)
        return best

    @njit(parallel=True, fastmath=True, cache=True)
    def _reform_block(X, A, out32, out16, half, nblocks):  # pragma: no cover - compiled
        """P_ik = exp(max(X_ik + A_k - m_i, -87)), m_i = max_j (X_ij + A_j); returns sum_i m_i (float64)."""
        m, k = X.shape
        step = (m + nblocks - 1) // nblocks
        sums = np.zeros(nblocks, np.float64)
        for blk in prange(nblocks):
            s = 0.0
            for i in range(blk * step, min(m, (blk + 1) * step)):
                s += _reform_row(X[i], A, out32[0 if half else i], out16[i if half else 0], half)
            sums[blk] = s
        return sums.sum()


def can_form(S: torch.Tensor, storage: torch.Tensor) -> bool:
    """Whether :func:`form_block` applies: float32 scores on the CPU, stored as float32 or bfloat16."""
    return (HAVE_NUMBA and S.device.type == "cpu" and S.dtype == torch.float32 and S.is_contiguous()
            and storage.device.type == "cpu" and storage.dtype in (torch.float32, torch.bfloat16))


def form_block(S: torch.Tensor, lam: float, out: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """Write ``exp(lam S - row max - column max)`` (floored at e^-87) into ``out`` in one compiled call.

    ``out`` (float32 or bfloat16, same shape as ``S``) receives the rows of P in the block's own frame;
    ``keep`` (float32, or None) receives ``lam S - row max``. Returns the block's column maxima of the
    latter (float32 K-vector: the block's frame) and whether every row sum of ``S`` is finite (when it is
    not, a score is NaN or infinite, or a sum overflowed: the caller checks exactly).
    """
    Sn = S.numpy()
    half = out.dtype == torch.bfloat16
    out32 = EMPTY32 if half else out.numpy()
    out16 = as_numpy(out) if half else EMPTY16
    keepn = keep.numpy() if keep is not None else EMPTY32
    sums = np.empty(S.shape[0], np.float32)
    col = _form_block(Sn, np.float32(lam), out32, out16, keepn, sums, half, keep is not None,
                      num_blocks(S.shape[0], 128))
    return torch.from_numpy(col), bool(np.isfinite(sums).all())


def reform_block(X: torch.Tensor, A: torch.Tensor, out: torch.Tensor) -> float:
    """Rebuild rows of P from kept scaled scores ``X`` with potentials ``A`` absorbed; returns sum of row shifts."""
    if HAVE_NUMBA and numba_supports(out) and X.device.type == "cpu":
        half = out.dtype == torch.bfloat16
        out32 = EMPTY32 if half else out.numpy()
        out16 = as_numpy(out) if half else EMPTY16
        return float(_reform_block(X.numpy(), A.numpy(), out32, out16, half, num_blocks(X.shape[0], 128)))
    x = X + A
    m = x.amax(dim=1, keepdim=True)
    x.sub_(m).clamp_(min=LOG_FLOOR).exp_()
    out.copy_(x)
    return float(m.double().sum())
