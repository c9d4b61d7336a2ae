"""The two hot loops of SeLa's Sinkhorn-Knopp, written for speed.

An iteration of the solver needs, for the current column scaling ``b``:

    u = P b            (row sums, one per image)
    a = 1 / u          (row scaling)
    s = P^T a          (column sums, one per cluster)

Done as two matrix-vector products this reads the N x K matrix ``P`` from memory twice. Here a block of
rows is read once, ``u`` and ``a`` are computed for it while it sits in the cache, and its contribution to
``s`` is added straight away: one pass over ``P`` per iteration, which halves the memory traffic. The work
is memory-bound, so halving the bytes halves the time.

On the CPU the loops are compiled by numba (parallel over blocks of rows, each block keeping its own
float32 partial column sums, reduced in float64 so the result does not drift with N). Storage in bfloat16
is read as 16-bit integers and widened to float32 in registers: torch has no fast CPU kernel for a
bfloat16 vector-times-matrix product (see the facts file), and numpy has no bfloat16 at all.

On a GPU, or where numba is missing, the same quantities are computed with torch matrix-vector
products (block by block for half-precision storage, so the float32 copy of a block stays small).
"""

from __future__ import annotations

import numpy as np
import torch

try:  # numba is a dependency of the kit; the torch path keeps the solver usable without it.
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only on installs without numba
    HAVE_NUMBA = False

# Rows per block of the torch path for half-precision storage: a float32 copy of about 32 MB.
_TORCH_BLOCK_BYTES = 32 * 2**20
# Rows per partial sum on the CPU: each block's float32 partial sums cover at most this many rows, so the
# rounding error of a column sum does not grow with N (the partials are added in float64).
_ROWS_PER_PARTIAL = 2048


if HAVE_NUMBA:

    @njit(parallel=True, fastmath=True, cache=True)
    def _fused_pass_f32(P, b, nblocks):  # pragma: no cover - compiled
        n, k = P.shape
        partial = np.zeros((nblocks, k), np.float32)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            acc = partial[blk]
            for i in range(blk * step, min(n, (blk + 1) * step)):
                row = P[i]
                u = np.float32(0.0)
                for j in range(k):
                    u += row[j] * b[j]
                a = np.float32(1.0) / u
                for j in range(k):
                    acc[j] += a * row[j]
        return partial

    @njit(parallel=True, fastmath=True, cache=True)
    def _fused_pass_bf16(P16, b, nblocks):  # pragma: no cover - compiled
        n, k = P16.shape
        partial = np.zeros((nblocks, k), np.float32)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            acc = partial[blk]
            wide = np.empty(k, np.uint32)
            row = wide.view(np.float32)
            for i in range(blk * step, min(n, (blk + 1) * step)):
                src = P16[i]
                for j in range(k):  # bfloat16 is the top half of a float32
                    wide[j] = np.uint32(src[j]) << 16
                u = np.float32(0.0)
                for j in range(k):
                    u += row[j] * b[j]
                a = np.float32(1.0) / u
                for j in range(k):
                    acc[j] += a * row[j]
        return partial

    @njit(parallel=True, cache=True)
    def _argmax_scaled_f32(P, b):  # pragma: no cover - compiled
        n, k = P.shape
        out = np.empty(n, np.int64)
        for i in prange(n):
            row = P[i]
            best = row[0] * b[0]
            arg = 0
            for j in range(1, k):
                v = row[j] * b[j]
                if v > best:
                    best = v
                    arg = j
            out[i] = arg
        return out

    @njit(parallel=True, cache=True)
    def _argmax_scaled_bf16(P16, b, nblocks):  # pragma: no cover - compiled
        n, k = P16.shape
        out = np.empty(n, np.int64)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            wide = np.empty(k, np.uint32)
            row = wide.view(np.float32)
            for i in range(blk * step, min(n, (blk + 1) * step)):
                src = P16[i]
                for j in range(k):
                    wide[j] = np.uint32(src[j]) << 16
                best = row[0] * b[0]
                arg = 0
                for j in range(1, k):
                    v = row[j] * b[j]
                    if v > best:
                        best = v
                        arg = j
                out[i] = arg
        return out


# Below this many entries a parallel region costs more than it saves (thread wake-ups dominate), so the
# automatic choice on the CPU is torch's single-threaded small-matrix path.
NUMBA_MIN_ENTRIES = 2**22


if HAVE_NUMBA:

    @njit(parallel=True, fastmath=True, cache=True)
    def _row_shift_and_column_max(S, lam, row_max, nblocks):  # pragma: no cover - compiled
        # row_max_i = max_k lam * S_ik; returns max_i (lam * S_ik - row_max_i) per column
        m, k = S.shape
        partial = np.full((nblocks, k), -np.inf, np.float32)
        step = (m + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            acc = partial[blk]
            for i in range(blk * step, min(m, (blk + 1) * step)):
                row = S[i]
                best = row[0]
                for j in range(1, k):
                    best = max(best, row[j])
                r = lam * best
                row_max[i] = r
                for j in range(k):
                    acc[j] = max(acc[j], lam * row[j] - r)
        out = partial[0].copy()
        for blk in range(1, nblocks):
            for j in range(k):
                out[j] = max(out[j], partial[blk, j])
        return out


def row_and_column_max(S: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``r_i = max_k lam S_ik`` and ``c_k = max_i (lam S_ik - r_i)`` in one compiled pass over ``S``, or
    ``None`` where the kernel does not apply (torch's column reduction is slow at this shape on the CPU)."""
    if not (HAVE_NUMBA and S.device.type == "cpu" and S.dtype == torch.float32 and S.is_contiguous()):
        return None
    row_max = np.empty(S.shape[0], np.float32)
    col_max = _row_shift_and_column_max(S.numpy(), np.float32(lam), row_max, _num_blocks(S.shape[0], 256))
    return torch.from_numpy(row_max), torch.from_numpy(col_max)


def numba_supports(P: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels can run on this storage."""
    return HAVE_NUMBA and P.device.type == "cpu" and P.dtype in (torch.float32, torch.bfloat16) and P.is_contiguous()


def _as_numpy(P: torch.Tensor) -> np.ndarray:
    if P.dtype == torch.bfloat16:
        return P.view(torch.int16).numpy().view(np.uint16)
    return P.numpy()


def _num_blocks(n: int, rows_per_block: int = _ROWS_PER_PARTIAL) -> int:
    threads = numba.get_num_threads() if HAVE_NUMBA else 1
    return max(1, min(n, max(threads, -(-n // rows_per_block))))


def column_sums(P: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    """``P^T (1 / (P b))`` in float64, reading ``P`` once (numba) or block by block (torch)."""
    if backend == "numba":
        bn = b.numpy()
        kernel = _fused_pass_bf16 if P.dtype == torch.bfloat16 else _fused_pass_f32
        partial = kernel(_as_numpy(P), bn, _num_blocks(P.shape[0]))
        return torch.from_numpy(partial.sum(axis=0, dtype=np.float64))
    out = torch.zeros(P.shape[1], dtype=torch.float64, device=P.device)
    for block in _torch_blocks(P):
        a = torch.mv(block, b).reciprocal_()
        out += torch.mv(block.t(), a).double()
    return out


def argmax_scaled(P: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    """Row-wise argmax of ``P diag(b)``: the hard labels of the transport plan (row scaling cannot change them)."""
    b = b / b.max()  # the argmax ignores a common factor; this keeps every product at most 1
    if backend == "numba":
        if P.dtype == torch.bfloat16:
            return torch.from_numpy(_argmax_scaled_bf16(_as_numpy(P), b.numpy(), _num_blocks(P.shape[0])))
        return torch.from_numpy(_argmax_scaled_f32(P.numpy(), b.numpy()))
    # block by block: the product P * b would otherwise be a second N x K matrix
    return torch.cat([(block * b).argmax(dim=1) for block in _torch_blocks(P, whole=False)])


def _torch_blocks(P: torch.Tensor, whole: bool = True):
    """Float32 views (or small float32 copies, for half storage) of consecutive row blocks of ``P``."""
    if P.dtype == torch.float32 and whole:
        yield P  # cuBLAS / MKL matrix-vector products are already bandwidth-bound on the whole matrix
        return
    rows = max(1, _TORCH_BLOCK_BYTES // (4 * P.shape[1]))
    for start in range(0, P.shape[0], rows):
        yield P[start : start + rows].float()  # a view when P is already float32
