"""One read of ``P`` per evaluation: cluster masses, the objective, the Hessian's Gram matrix, the argmax."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

from sela_edu.labelling._kernels.ops import HAVE_NUMBA, U_MIN, num_blocks
from sela_edu.labelling._kernels.walk import walk

# Rows per block of the torch path for half-precision storage: a float32 copy of about 32 MB.
_TORCH_BLOCK_BYTES = 32 * 2**20


if HAVE_NUMBA:
    from numba import njit, prange, types
    from numba.extending import overload

    from sela_edu.labelling._kernels.ops import f32_bits, fmax

    # The two walks (:func:`_pass`, :func:`_argmax`) read P's rows as their storage holds them: float32
    # entries, or bfloat16 pairs, a row of K bfloat16 read as K/2 uint32 words (word j holds entry 2j in its
    # low half and 2j+1 in its high half, so ``word << 16`` and ``word & HIGH`` are the two entries as
    # float32 bits: decoded in registers, with no widened copy of the row). A segment's scalings b and the
    # column sums acc are c x K/c arrays, entry k at [k % c, k // c]: c = 1 for float32, 2 for pairs. The
    # row kernels are chosen by the row's dtype when the walk is compiled (``_rows4``, ``_row1``,
    # ``_chunk_max``, ``_first_equal`` below).
    _HIGH = np.uint32(0xFFFF0000)
    _SHIFT = np.uint32(16)

    @njit(parallel=True, fastmath=True, cache=True)
    def _pass(X, E, ranges, first, w):  # pragma: no cover - compiled
        """Masses and sum of log u over the rows of ``X``, part by part of the walk (:func:`walk`)."""
        k, h = E.shape[1], X.shape[1]
        nblocks = first.shape[0] - 1
        partial = np.zeros((nblocks, k), np.float32)
        logs = np.zeros(nblocks, np.float64)
        for blk in prange(nblocks):
            b = np.empty((k // h, h), np.float32)
            acc = np.zeros((k // h, h), np.float32)
            ls = 0.0
            for r in range(first[blk], first[blk + 1]):
                i = ranges[r, 0]
                end = ranges[r, 1]
                _scalings(E[ranges[r, 2]], w, b)
                while i + 4 <= end:
                    ls += _rows4(X[i], X[i + 1], X[i + 2], X[i + 3], b, acc)
                    i += 4
                while i < end:
                    ls += _row1(X[i], b, acc)
                    i += 1
                _flush(partial[blk], acc, b)
            logs[blk] = ls
        return partial, logs

    @njit(parallel=True, fastmath=True, cache=True)
    def _argmax(X, E, ranges, first, w):  # pragma: no cover - compiled
        """First k maximising P_ik b_k on every row of ``X``, part by part of the walk."""
        n, h = X.shape
        k = E.shape[1]
        nblocks = first.shape[0] - 1
        out = np.empty(n, np.int64)
        for blk in prange(nblocks):
            b = np.empty((k // h, h), np.float32)
            for r in range(first[blk], first[blk + 1]):
                _scalings(E[ranges[r, 2]], w, b)
                for i in range(ranges[r, 0], ranges[r, 1]):
                    out[i] = _argmax_row(X[i], b)
        return out

    @njit(fastmath=True, cache=True)
    def _scalings(e, w, b):  # pragma: no cover - compiled
        """A segment's scalings b = e * w, in the c x K/c layout."""
        c, h = b.shape
        for t in range(c):
            for j in range(h):
                b[t, j] = e[j * c + t] * w[j * c + t]

    @njit(fastmath=True, cache=True)
    def _flush(out, acc, b):  # pragma: no cover - compiled
        """A segment's column sums, scaled by its b, into the part's masses; acc is zeroed for the next."""
        c, h = b.shape
        for t in range(c):
            for j in range(h):
                out[j * c + t] += acc[t, j] * b[t, j]
                acc[t, j] = 0.0

    @njit(cache=True)
    def _log_product(u0, u1, u2, u3):  # pragma: no cover - compiled
        # one log for four rows; in float64 without fast-math, which would let the product be narrowed
        # to float32, where four values near 1e-37 underflow
        return math.log((np.float64(u0) * np.float64(u1)) * (np.float64(u2) * np.float64(u3)))

    @njit(fastmath=True, cache=True)
    def _f32_rows4(r0, r1, r2, r3, b2, acc2):  # pragma: no cover - compiled
        """Four float32 rows at once (each load of b and of acc serves four rows): the sum of their log u."""
        b = b2[0]
        acc = acc2[0]
        k = b.shape[0]
        u0 = np.float32(0.0)
        u1 = np.float32(0.0)
        u2 = np.float32(0.0)
        u3 = np.float32(0.0)
        for j in range(k):
            bj = b[j]
            u0 += r0[j] * bj
            u1 += r1[j] * bj
            u2 += r2[j] * bj
            u3 += r3[j] * bj
        u0 = max(u0, np.float32(U_MIN))
        u1 = max(u1, np.float32(U_MIN))
        u2 = max(u2, np.float32(U_MIN))
        u3 = max(u3, np.float32(U_MIN))
        a0 = np.float32(1.0) / u0
        a1 = np.float32(1.0) / u1
        a2 = np.float32(1.0) / u2
        a3 = np.float32(1.0) / u3
        for j in range(k):
            acc[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j]
        return _log_product(u0, u1, u2, u3)

    @njit(fastmath=True, cache=True)
    def _f32_row1(r0, b2, acc2):  # pragma: no cover - compiled
        b = b2[0]
        acc = acc2[0]
        u = np.float32(0.0)
        for j in range(b.shape[0]):
            u += r0[j] * b[j]
        u = max(u, np.float32(U_MIN))
        a = np.float32(1.0) / u
        for j in range(b.shape[0]):
            acc[j] += a * r0[j]
        return math.log(np.float64(u))

    @njit(fastmath=True, cache=True)
    def _pairs_rows4(r0, r1, r2, r3, b, acc):  # pragma: no cover - compiled
        """:func:`_f32_rows4` on four rows of bfloat16 pairs: b and acc's rows 0 and 1 are the even and odd
        clusters."""
        blo = b[0]
        bhi = b[1]
        alo = acc[0]
        ahi = acc[1]
        h = blo.shape[0]
        u0 = np.float32(0.0)
        u1 = np.float32(0.0)
        u2 = np.float32(0.0)
        u3 = np.float32(0.0)
        for j in range(h):
            bl = blo[j]
            bh = bhi[j]
            x = r0[j]
            u0 += f32_bits(x << _SHIFT) * bl + f32_bits(x & _HIGH) * bh
            x = r1[j]
            u1 += f32_bits(x << _SHIFT) * bl + f32_bits(x & _HIGH) * bh
            x = r2[j]
            u2 += f32_bits(x << _SHIFT) * bl + f32_bits(x & _HIGH) * bh
            x = r3[j]
            u3 += f32_bits(x << _SHIFT) * bl + f32_bits(x & _HIGH) * bh
        u0 = max(u0, np.float32(U_MIN))
        u1 = max(u1, np.float32(U_MIN))
        u2 = max(u2, np.float32(U_MIN))
        u3 = max(u3, np.float32(U_MIN))
        a0 = np.float32(1.0) / u0
        a1 = np.float32(1.0) / u1
        a2 = np.float32(1.0) / u2
        a3 = np.float32(1.0) / u3
        for j in range(h):  # the four rows are still in cache
            w0 = r0[j]
            w1 = r1[j]
            w2 = r2[j]
            w3 = r3[j]
            alo[j] += (a0 * f32_bits(w0 << _SHIFT) + a1 * f32_bits(w1 << _SHIFT)
                       + a2 * f32_bits(w2 << _SHIFT) + a3 * f32_bits(w3 << _SHIFT))
            ahi[j] += (a0 * f32_bits(w0 & _HIGH) + a1 * f32_bits(w1 & _HIGH)
                       + a2 * f32_bits(w2 & _HIGH) + a3 * f32_bits(w3 & _HIGH))
        return _log_product(u0, u1, u2, u3)

    @njit(fastmath=True, cache=True)
    def _pairs_row1(r, b, acc):  # pragma: no cover - compiled
        blo = b[0]
        bhi = b[1]
        u = np.float32(0.0)
        for j in range(blo.shape[0]):
            u += f32_bits(r[j] << _SHIFT) * blo[j] + f32_bits(r[j] & _HIGH) * bhi[j]
        u = max(u, np.float32(U_MIN))
        a = np.float32(1.0) / u
        for j in range(blo.shape[0]):
            acc[0, j] += a * f32_bits(r[j] << _SHIFT)
            acc[1, j] += a * f32_bits(r[j] & _HIGH)
        return math.log(np.float64(u))

    @njit(fastmath=True, cache=True, inline="always")
    def _f32_chunk_max(r, b2, c0, c1):  # pragma: no cover - compiled
        b = b2[0]
        cm = np.float32(-1.0)
        for j in range(c0, c1):
            cm = fmax(cm, r[j] * b[j])
        return cm

    @njit(fastmath=True, cache=True, inline="always")
    def _f32_first_equal(r, b2, c0, c1, m):  # pragma: no cover - compiled
        b = b2[0]
        for j in range(c0, c1):
            if r[j] * b[j] == m:
                return j
        return c0

    @njit(fastmath=True, cache=True, inline="always")
    def _pairs_chunk_max(r, b, c0, c1):  # pragma: no cover - compiled
        blo = b[0]
        bhi = b[1]
        cm = np.float32(-1.0)
        for j in range(c0, c1):
            x = r[j]
            cm = fmax(cm, fmax(f32_bits(x << _SHIFT) * blo[j], f32_bits(x & _HIGH) * bhi[j]))
        return cm

    @njit(fastmath=True, cache=True, inline="always")
    def _pairs_first_equal(r, b, c0, c1, m):  # pragma: no cover - compiled
        for j in range(c0, c1):
            x = r[j]
            if f32_bits(x << _SHIFT) * b[0, j] == m:
                return 2 * j
            if f32_bits(x & _HIGH) * b[1, j] == m:
                return 2 * j + 1
        return 2 * c0

    @njit(fastmath=True, cache=True)
    def _argmax_row(r, b):  # pragma: no cover - compiled
        """First k maximising P_ik b_k on one row: the maxima of chunks of 32 words (vectorised), then the
        first entry equal to the row's maximum in the first chunk that holds it."""
        h = r.shape[0]
        m = np.float32(-1.0)
        first = 0
        for c0 in range(0, h, 32):
            cm = _chunk_max(r, b, c0, min(h, c0 + 32))
            if cm > m:
                m = cm
                first = c0
        return _first_equal(r, b, first, min(h, first + 32), m)

    def _rows4(r0, r1, r2, r3, b, acc):  # the row kernels by storage, chosen at compile time
        raise NotImplementedError

    def _row1(r, b, acc):
        raise NotImplementedError

    def _chunk_max(r, b, c0, c1):
        raise NotImplementedError

    def _first_equal(r, b, c0, c1, m):
        raise NotImplementedError

    def _pairs(row) -> bool:
        return row.dtype == types.uint32

    @overload(_rows4)
    def _rows4_for(r0, r1, r2, r3, b, acc):
        kernel = _pairs_rows4 if _pairs(r0) else _f32_rows4
        return lambda r0, r1, r2, r3, b, acc: kernel(r0, r1, r2, r3, b, acc)

    @overload(_row1)
    def _row1_for(r, b, acc):
        kernel = _pairs_row1 if _pairs(r) else _f32_row1
        return lambda r, b, acc: kernel(r, b, acc)

    @overload(_chunk_max, inline="always")
    def _chunk_max_for(r, b, c0, c1):
        kernel = _pairs_chunk_max if _pairs(r) else _f32_chunk_max
        return lambda r, b, c0, c1: kernel(r, b, c0, c1)

    @overload(_first_equal, inline="always")
    def _first_equal_for(r, b, c0, c1, m):
        kernel = _pairs_first_equal if _pairs(r) else _f32_first_equal
        return lambda r, b, c0, c1, m: kernel(r, b, c0, c1, m)


def triton_kernels():
    """The Triton kernels (:mod:`.triton_passes`), imported on first use: importing triton costs time, and
    only CUDA storage (or a test under ``TRITON_INTERPRET=1``) needs it. None where triton is missing."""
    try:
        from sela_edu.labelling._kernels import triton_passes
    except ImportError:  # pragma: no cover - triton_passes itself guards the import of triton
        return None
    return triton_passes if triton_passes.HAVE_TRITON else None


def triton_supports(P: torch.Tensor) -> bool:
    """Whether ``backend="triton"`` can read ``P`` (CUDA storage, or any under ``TRITON_INTERPRET=1``)."""
    if P.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") \
            and "sela_edu.labelling._kernels.triton_passes" not in sys.modules:
        return False  # no import of triton for CPU storage
    tk = triton_kernels()
    return tk is not None and tk.supports(P)


def triton_forms(S: torch.Tensor, storage: torch.Tensor) -> bool:
    """Whether a block of CUDA storage is formed by the Triton kernels (:func:`.triton_passes.form_block`)."""
    if storage.device.type != "cuda":
        return False
    tk = triton_kernels()
    return tk is not None and tk.can_form(S, storage)


def _pairs_view_ok(P: torch.Tensor) -> bool:
    """Whether bfloat16 ``P`` can be read as uint32 words of two entries (even K, 4-byte aligned)."""
    return (P.dtype == torch.bfloat16 and P.shape[1] % 2 == 0 and P.storage_offset() % 2 == 0
            and P.data_ptr() % 4 == 0)


def _walk_args(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor) -> tuple | None:
    """The numba walks' arguments: P's rows as they read them (float32, or bfloat16 as uint32 words of two
    entries), the factors, the walk over blocks and segments (:func:`walk`), w. None where they cannot read
    P (float16, or bfloat16 with an odd K)."""
    if P.dtype == torch.float32:
        rows = P.numpy()
    elif _pairs_view_ok(P):
        rows = P.view(torch.int32).numpy().view(np.uint32)
    else:
        return None
    return (rows, E.numpy(), *walk(P.shape[0], seg_stop, num_blocks(P.shape[0])), w.numpy())


def fused_pass(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor,
               backend: str) -> tuple[torch.Tensor, float]:
    """One read of ``P``: the cluster masses and ``sum_i log u_i`` for scalings ``b = E[segment] * w``.

    ``E`` is a (segments x K) float32 matrix of per-block factors, ``seg_stop`` the (int64) end row of each
    block, ``w`` a float32 K-vector. Returns ``mass`` (float64 K-vector, on the CPU for numba and on P's
    device for torch and triton) and ``sum_i log(sum_k P_ik b_k)`` as a float (triton: a float64 0-d tensor
    on P's device, so that the pass does not wait for the device).
    """
    if backend == "triton":
        return triton_kernels().fused_pass(P, E, seg_stop, w)
    args = _walk_args(P, E, seg_stop, w) if backend == "numba" else None
    if args is not None:
        partial, logs = _pass(*args)
        return torch.from_numpy(partial.sum(axis=0, dtype=np.float64)), float(logs.sum())
    # torch, and half precision with an odd K on the CPU
    mass = torch.zeros(P.shape[1], dtype=torch.float64, device=P.device)
    logsum = torch.zeros((), dtype=torch.float64, device=P.device)
    start = 0
    for seg, stop in enumerate(seg_stop.tolist()):
        b = E[seg] * w
        for block in _torch_blocks(P[start:stop]):
            u = torch.mv(block, b).clamp_(min=U_MIN)
            logsum += u.log().double().sum()
            mass += torch.mv(block.t(), u.reciprocal_()).double() * b.double()
        start = stop
    return mass, float(logsum)


def hessian_pass(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor
                 ) -> tuple[torch.Tensor, float, torch.Tensor]:
    """:func:`fused_pass` plus ``sum_i q_i q_i^T`` (K x K, float64), q_i the row-normalised plan's row i.

    Blocks of rows are scaled and normalised in float32 and their Gram matrices (one matrix product each,
    O(N K^2) work in all) added in float64; what Newton's method needs besides the gradient.
    """
    k = P.shape[1]
    mass = torch.zeros(k, dtype=torch.float64, device=P.device)
    gram = torch.zeros(k, k, dtype=torch.float64, device=P.device)
    logsum = torch.zeros((), dtype=torch.float64, device=P.device)
    start = 0
    for seg, stop in enumerate(seg_stop.tolist()):
        b = (E[seg] * w).to(P.device)
        for block in _torch_blocks(P[start:stop], whole=False):
            q = block * b
            u = q.sum(dim=1).clamp_(min=U_MIN)
            logsum += u.log().double().sum()
            q /= u[:, None]
            mass += q.sum(dim=0).double()
            gram += (q.t() @ q).double()
        start = stop
    return mass, float(logsum), gram


def argmax_scaled(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor, backend: str) -> torch.Tensor:
    """Row-wise argmax of ``P_ik b_k`` with ``b = E[segment] * w``: the hard labels of the transport plan."""
    if backend == "triton":
        return triton_kernels().argmax_scaled(P, E, seg_stop, w)
    args = _walk_args(P, E, seg_stop, w) if backend == "numba" else None
    if args is not None:
        return torch.from_numpy(_argmax(*args))
    # torch (and half precision with an odd K): block by block, the product P * b would otherwise be a
    # second N x K matrix
    out, start = [], 0
    for seg, stop in enumerate(seg_stop.tolist()):
        b = E[seg] * w
        out += [(block * b).argmax(dim=1) for block in _torch_blocks(P[start:stop], whole=False)]
        start = stop
    return torch.cat(out)


def _torch_blocks(P: torch.Tensor, whole: bool = True):
    """Float32 views (or small float32 copies, for half storage) of consecutive row blocks of ``P``."""
    if P.dtype == torch.float32 and whole:
        yield P  # cuBLAS / MKL matrix-vector products are already bandwidth-bound on the whole matrix
        return
    rows = max(1, _TORCH_BLOCK_BYTES // (4 * P.shape[1]))
    for start in range(0, P.shape[0], rows):
        yield P[start : start + rows].float()  # a view when P is already float32: callers do not write it
