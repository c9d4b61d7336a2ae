"""The hot loops of SeLa's label step, written for speed: forming ``P``, one pass over it, the argmax.

**One pass.** For cluster scalings ``b`` the solver needs, per image i and cluster k,

    u_i = sum_k P_ik b_k              (row sums)
    mass_k = sum_i b_k P_ik / u_i      (how much of each row's unit mass cluster k receives)
    sum_i log u_i                     (the semi-dual objective, see :mod:`sela_edu.labelling`)

Done as two matrix-vector products this reads the N x K matrix ``P`` twice. Here a block of rows is read
once: ``u`` is computed for a row while it sits in the cache, and its contribution to the column sums is
added straight away. The work is memory-bound, so halving the bytes halves the time. ``mass`` is the
gradient of the semi-dual objective and ``sum log u`` its value, so one pass gives a quasi-Newton solver
both.

**Blocks in their own frame.** ``P`` is formed block by block as the scores stream in (see
:class:`~sela_edu.labelling.ScoreBuffer`), each block shifted by its own column maxima. Rather than
rescaling every block to a common shift afterwards (a read and a write of all of ``P``), the CPU kernels
take the block's factors ``E[block]`` and use ``b = E[block] * w`` for its rows: a K-vector product per
block instead of a pass over N x K entries.

On the CPU the loops are compiled by numba (parallel over blocks of rows, each block keeping its own
float32 partial column sums, reduced in float64 so the result does not drift with N). Storage in bfloat16
(with an even K) is read as 32-bit words of two entries, each decoded to float32 in registers by a shift
or a mask: torch has no fast CPU kernel for a bfloat16 vector-times-matrix product, and numpy has no
bfloat16 at all. ``exp`` is a vectorised polynomial (relative error below 3e-7 on the range used), several
times faster than the scalar library call numba would otherwise emit. Maxima go through LLVM's
``maxnum`` (:func:`_fmax`), which vectorises where numba's ``max`` does not.

On a GPU, where numba is missing, and for bfloat16 with an odd K or float16, the same quantities are
computed with torch matrix-vector products (block by block for half-precision storage, so the float32
copy of a block stays small).
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:  # numba is a dependency of the kit; the torch path keeps the solver usable without it.
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    # with NUMBA_DISABLE_JIT the kernels would run as Python loops (and the intrinsics not at all)
    HAVE_NUMBA = not numba.config.DISABLE_JIT
except ImportError:  # pragma: no cover - exercised only on installs without numba
    HAVE_NUMBA = False

# Rows per block of the torch path for half-precision storage: a float32 copy of about 32 MB.
_TORCH_BLOCK_BYTES = 32 * 2**20
# Rows per partial sum on the CPU: each block's float32 partial sums cover at most this many rows, so the
# rounding error of a column sum does not grow with N (the partials are added in float64).
_ROWS_PER_PARTIAL = 2048
# Entries of P are at least e^LOG_FLOOR (see sinkhorn._LOG_FLOOR): exp never produces a denormal.
LOG_FLOOR = -87.0
# u_i is never taken below this (a row whose every scaled entry underflowed): 1/u stays finite.
_U_MIN = 1e-37


if HAVE_NUMBA:

    @intrinsic
    def _f32_bits(typingctx, bits):
        """The float32 whose bit pattern is the low 32 bits of an integer (a register move, vectorisable)."""
        if not isinstance(bits, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            v = args[0]
            if v.type.width != 32:
                v = builder.trunc(v, ir.IntType(32)) if v.type.width > 32 else builder.zext(v, ir.IntType(32))
            return builder.bitcast(v, ir.FloatType())

        return types.float32(bits), codegen

    @intrinsic
    def _i32_bits(typingctx, value):
        """The bit pattern of a float32 as an int32 (a register move, vectorisable)."""
        if value != types.float32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(value), codegen

    @intrinsic
    def _fmax(typingctx, a, b):
        """max(a, b) of two float32 as LLVM's maxnum: one vmaxps once vectorised. numba's ``max`` and an
        ``a if a > b else b`` on an array element become a masked store, microcoded and slow on AMD CPUs."""
        if a != types.float32 or b != types.float32:
            return None

        def codegen(context, builder, signature, args):
            f = ir.FloatType()
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f]), "llvm.maxnum.f32")
            return builder.call(fn, args)

        return types.float32(types.float32, types.float32), codegen

    @njit(fastmath=True, cache=True, inline="always")
    def _exp_bits(x):  # pragma: no cover - compiled
        """The float32 bits of ``exp(max(x, -87))`` for ``x <= 0`` (about 0.1 above is fine), vectorisable.

        exp(x) = 2^n exp(f), n = round(x / ln 2), |f| <= ln2 / 2, exp(f) by its degree-6 Taylor polynomial
        (relative error 2e-7), and 2^n added to the exponent bits: x >= -87 keeps the result normal.
        """
        x = _fmax(x, np.float32(LOG_FLOOR))
        ni = np.int32(x * np.float32(1.4426950408889634) - np.float32(0.5))  # truncation: x <= 0
        n = np.float32(ni)
        f = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.0) + f * (np.float32(1.0) + f * (np.float32(0.5) + f * (
            np.float32(1 / 6) + f * (np.float32(1 / 24) + f * (np.float32(1 / 120) + f * np.float32(1 / 720))))))
        return _i32_bits(p) + (ni << np.int32(23))

    @njit(fastmath=True, cache=True, inline="always")
    def _bf16(bits):  # pragma: no cover - compiled
        # round to nearest even: the top 16 bits of a float32, rounded on the 17th (finite, positive inputs)
        b = np.uint32(bits)
        return np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))

    @njit(fastmath=True, cache=True)
    def _form_row(src, lam, r, col, keep, kept, out32, out16, half):  # pragma: no cover - compiled
        """P_j = exp(lam src_j - r - col_j) into ``out16`` (bfloat16 bits) or ``out32``; ``keep`` gets lam src - r."""
        for j in range(src.shape[0]):
            x = lam * src[j] - r
            if kept:
                keep[j] = x
            bits = _exp_bits(x - col[j])
            if half:
                out16[j] = _bf16(bits)
            else:
                out32[j] = _f32_bits(bits)

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
                    best = _fmax(best, row[j])
                    tot += row[j]
                row_sum[i] = tot
                r = lam * best
                row_max[i] = r
                for j in range(k):
                    acc[j] = _fmax(acc[j], lam * row[j] - r)
        col = partial[0].copy()
        for blk in range(1, nblocks):
            for j in range(k):
                col[j] = _fmax(col[j], partial[blk, j])
        for blk in prange(nblocks):
            for i in range(blk * step, min(m, (blk + 1) * step)):
                _form_row(S[i], lam, row_max[i], col, keep[i if kept else 0], kept,
                          out32[0 if half else i], out16[i if half else 0], half)
        return col

    @njit(fastmath=True, cache=True)
    def _reform_row(src, A, out32, out16, half):  # pragma: no cover - compiled
        best = np.float32(-np.inf)
        for j in range(src.shape[0]):
            best = _fmax(best, src[j] + A[j])
        for j in range(src.shape[0]):
            bits = _exp_bits(src[j] + A[j] - best)
            if half:
                out16[j] = _bf16(bits)
            else:
                out32[j] = _f32_bits(bits)
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

    @njit(fastmath=True, cache=True)
    def _rows4(r0, r1, r2, r3, b, acc):  # pragma: no cover - compiled
        """Four rows at once (each load of b and of acc serves four rows): returns the sum of their log u."""
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
        u0 = max(u0, np.float32(_U_MIN))
        u1 = max(u1, np.float32(_U_MIN))
        u2 = max(u2, np.float32(_U_MIN))
        u3 = max(u3, np.float32(_U_MIN))
        a0 = np.float32(1.0) / u0
        a1 = np.float32(1.0) / u1
        a2 = np.float32(1.0) / u2
        a3 = np.float32(1.0) / u3
        for j in range(k):
            acc[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j]
        return _log_product(u0, u1, u2, u3)

    @njit(cache=True)
    def _log_product(u0, u1, u2, u3):  # pragma: no cover - compiled
        # one log for four rows; in float64 without fast-math, which would let the product be narrowed
        # to float32, where four values near 1e-37 underflow
        return math.log((np.float64(u0) * np.float64(u1)) * (np.float64(u2) * np.float64(u3)))

    @njit(fastmath=True, cache=True)
    def _row1(r0, b, acc):  # pragma: no cover - compiled
        k = b.shape[0]
        u = np.float32(0.0)
        for j in range(k):
            u += r0[j] * b[j]
        u = max(u, np.float32(_U_MIN))
        a = np.float32(1.0) / u
        for j in range(k):
            acc[j] += a * r0[j]
        return np.float64(u)

    @njit(parallel=True, fastmath=True, cache=True)
    def _pass(P, E, seg_stop, w, nblocks):  # pragma: no cover - compiled
        """Masses and sum of log u over the rows of float32 ``P``."""
        n, k = P.shape
        partial = np.zeros((nblocks, k), np.float32)
        logs = np.zeros(nblocks, np.float64)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            i0 = blk * step
            i1 = min(n, i0 + step)
            if i0 >= i1:
                continue
            out = partial[blk]
            acc = np.zeros(k, np.float32)
            b = np.empty(k, np.float32)
            seg = np.searchsorted(seg_stop, i0, side="right")
            ls = 0.0
            i = i0
            while i < i1:
                while seg_stop[seg] <= i:
                    seg += 1
                for j in range(k):
                    b[j] = E[seg, j] * w[j]
                end = min(i1, seg_stop[seg])
                while i + 4 <= end:
                    ls += _rows4(P[i], P[i + 1], P[i + 2], P[i + 3], b, acc)
                    i += 4
                while i < end:
                    ls += math.log(_row1(P[i], b, acc))
                    i += 1
                # the segment's sums, scaled by its b, go into the block's partial sums
                for j in range(k):
                    out[j] += acc[j] * b[j]
                    acc[j] = 0.0
            logs[blk] = ls
        return partial, logs

    # bfloat16 pairs: a row of K bfloat16 read as K/2 uint32 words; word j holds entry 2j in its low half
    # and 2j+1 in its high half, so ``word << 16`` and ``word & HIGH`` are the two entries as float32 bits.
    # Decoding in registers (no widened copy of the row) lets the pass run near the memory's speed.
    _HIGH = np.uint32(0xFFFF0000)
    _SHIFT = np.uint32(16)

    @njit(fastmath=True, cache=True)
    def _pair_scalings(e, w, blo, bhi):  # pragma: no cover - compiled
        """A segment's scalings b = e * w, split into even (``blo``) and odd (``bhi``) clusters."""
        for j in range(blo.shape[0]):
            blo[j] = e[2 * j] * w[2 * j]
            bhi[j] = e[2 * j + 1] * w[2 * j + 1]

    @njit(fastmath=True, cache=True)
    def _pairs4(r0, r1, r2, r3, blo, bhi, alo, ahi):  # pragma: no cover - compiled
        """:func:`_rows4` on four rows of bfloat16 pairs, with b and the column sums split into even and odd."""
        h = blo.shape[0]
        u0 = np.float32(0.0)
        u1 = np.float32(0.0)
        u2 = np.float32(0.0)
        u3 = np.float32(0.0)
        for j in range(h):
            bl = blo[j]
            bh = bhi[j]
            x = r0[j]
            u0 += _f32_bits(x << _SHIFT) * bl + _f32_bits(x & _HIGH) * bh
            x = r1[j]
            u1 += _f32_bits(x << _SHIFT) * bl + _f32_bits(x & _HIGH) * bh
            x = r2[j]
            u2 += _f32_bits(x << _SHIFT) * bl + _f32_bits(x & _HIGH) * bh
            x = r3[j]
            u3 += _f32_bits(x << _SHIFT) * bl + _f32_bits(x & _HIGH) * bh
        u0 = max(u0, np.float32(_U_MIN))
        u1 = max(u1, np.float32(_U_MIN))
        u2 = max(u2, np.float32(_U_MIN))
        u3 = max(u3, np.float32(_U_MIN))
        a0 = np.float32(1.0) / u0
        a1 = np.float32(1.0) / u1
        a2 = np.float32(1.0) / u2
        a3 = np.float32(1.0) / u3
        for j in range(h):  # the four rows are still in cache
            w0 = r0[j]
            w1 = r1[j]
            w2 = r2[j]
            w3 = r3[j]
            alo[j] += (a0 * _f32_bits(w0 << _SHIFT) + a1 * _f32_bits(w1 << _SHIFT)
                       + a2 * _f32_bits(w2 << _SHIFT) + a3 * _f32_bits(w3 << _SHIFT))
            ahi[j] += (a0 * _f32_bits(w0 & _HIGH) + a1 * _f32_bits(w1 & _HIGH)
                       + a2 * _f32_bits(w2 & _HIGH) + a3 * _f32_bits(w3 & _HIGH))
        return _log_product(u0, u1, u2, u3)

    @njit(fastmath=True, cache=True)
    def _pair1(r, blo, bhi, alo, ahi):  # pragma: no cover - compiled
        u = np.float32(0.0)
        for j in range(blo.shape[0]):
            u += _f32_bits(r[j] << _SHIFT) * blo[j] + _f32_bits(r[j] & _HIGH) * bhi[j]
        u = max(u, np.float32(_U_MIN))
        a = np.float32(1.0) / u
        for j in range(blo.shape[0]):
            alo[j] += a * _f32_bits(r[j] << _SHIFT)
            ahi[j] += a * _f32_bits(r[j] & _HIGH)
        return math.log(np.float64(u))

    @njit(parallel=True, fastmath=True, cache=True)
    def _pass_pairs(W, E, seg_stop, w, nblocks):  # pragma: no cover - compiled
        """:func:`_pass` for bfloat16 ``P`` with an even K, read as the n x K/2 uint32 words ``W``."""
        n, h = W.shape
        partial = np.zeros((nblocks, 2 * h), np.float32)
        logs = np.zeros(nblocks, np.float64)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            i0 = blk * step
            i1 = min(n, i0 + step)
            if i0 >= i1:
                continue
            out = partial[blk]
            alo = np.zeros(h, np.float32)
            ahi = np.zeros(h, np.float32)
            blo = np.empty(h, np.float32)
            bhi = np.empty(h, np.float32)
            seg = np.searchsorted(seg_stop, i0, side="right")
            ls = 0.0
            i = i0
            while i < i1:
                while seg_stop[seg] <= i:
                    seg += 1
                _pair_scalings(E[seg], w, blo, bhi)
                end = min(i1, seg_stop[seg])
                while i + 4 <= end:
                    ls += _pairs4(W[i], W[i + 1], W[i + 2], W[i + 3], blo, bhi, alo, ahi)
                    i += 4
                while i < end:
                    ls += _pair1(W[i], blo, bhi, alo, ahi)
                    i += 1
                for j in range(h):
                    out[2 * j] += alo[j] * blo[j]
                    out[2 * j + 1] += ahi[j] * bhi[j]
                    alo[j] = 0.0
                    ahi[j] = 0.0
            logs[blk] = ls
        return partial, logs

    @njit(fastmath=True, cache=True)
    def _argmax_pair_row(r, blo, bhi):  # pragma: no cover - compiled
        """First k maximising P_ik b_k on one row of bfloat16 pairs."""
        h = blo.shape[0]
        m = np.float32(-1.0)
        first = 0
        for c0 in range(0, h, 32):  # chunk maxima (vectorised); the first chunk holding the row's maximum
            c1 = min(h, c0 + 32)
            cm = np.float32(-1.0)
            for j in range(c0, c1):
                x = r[j]
                cm = _fmax(cm, _fmax(_f32_bits(x << _SHIFT) * blo[j], _f32_bits(x & _HIGH) * bhi[j]))
            if cm > m:
                m = cm
                first = c0
        for j in range(first, min(h, first + 32)):  # its first entry equal to the maximum
            x = r[j]
            if _f32_bits(x << _SHIFT) * blo[j] == m:
                return 2 * j
            if _f32_bits(x & _HIGH) * bhi[j] == m:
                return 2 * j + 1
        return 2 * first

    @njit(parallel=True, fastmath=True, cache=True)
    def _argmax_pairs(W, E, seg_stop, w, nblocks):  # pragma: no cover - compiled
        n, h = W.shape
        out = np.empty(n, np.int64)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            i0 = blk * step
            i1 = min(n, i0 + step)
            if i0 >= i1:
                continue
            blo = np.empty(h, np.float32)
            bhi = np.empty(h, np.float32)
            seg = np.searchsorted(seg_stop, i0, side="right")
            stale = True
            for i in range(i0, i1):
                while seg_stop[seg] <= i:
                    seg += 1
                    stale = True
                if stale:
                    _pair_scalings(E[seg], w, blo, bhi)
                    stale = False
                out[i] = _argmax_pair_row(W[i], blo, bhi)
        return out

    @njit(parallel=True, fastmath=True, cache=True)
    def _argmax_f32(P, E, seg_stop, w, nblocks):  # pragma: no cover - compiled
        n, k = P.shape
        out = np.empty(n, np.int64)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            i0 = blk * step
            i1 = min(n, i0 + step)
            if i0 >= i1:
                continue
            b = np.empty(k, np.float32)
            seg = np.searchsorted(seg_stop, i0, side="right")
            for j in range(k):
                b[j] = E[seg, j] * w[j]
            for i in range(i0, i1):
                if seg_stop[seg] <= i:
                    while seg_stop[seg] <= i:
                        seg += 1
                    for j in range(k):
                        b[j] = E[seg, j] * w[j]
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


# Below this many entries a parallel region costs more than it saves (thread wake-ups dominate), so the
# automatic choice on the CPU is torch's single-threaded small-matrix path.
NUMBA_MIN_ENTRIES = 2**22


def numba_supports(P: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels can run on this storage."""
    return HAVE_NUMBA and P.device.type == "cpu" and P.dtype in (torch.float32, torch.bfloat16) and P.is_contiguous()


def can_form(S: torch.Tensor, storage: torch.Tensor) -> bool:
    """Whether :func:`form_block` applies: float32 scores on the CPU, stored as float32 or bfloat16."""
    return (HAVE_NUMBA and S.device.type == "cpu" and S.dtype == torch.float32 and S.is_contiguous()
            and storage.device.type == "cpu" and storage.dtype in (torch.float32, torch.bfloat16))


# stand-ins for the outputs a kernel call does not write (one row, so that row 0 exists)
_EMPTY32 = np.empty((1, 1), np.float32)
_EMPTY16 = np.empty((1, 1), np.uint16)


def form_block(S: torch.Tensor, lam: float, out: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """Write ``exp(lam S - row max - column max)`` (floored at e^-87) into ``out`` in one compiled call.

    ``out`` (float32 or bfloat16, same shape as ``S``) receives the rows of P in the block's own frame;
    ``keep`` (float32, or None) receives ``lam S - row max``. Returns the block's column maxima of the
    latter (float32 K-vector: the block's frame) and whether every row sum of ``S`` is finite (when it is
    not, a score is NaN or infinite, or a sum overflowed: the caller checks exactly).
    """
    Sn = S.numpy()
    half = out.dtype == torch.bfloat16
    out32 = _EMPTY32 if half else out.numpy()
    out16 = _as_numpy(out) if half else _EMPTY16
    keepn = keep.numpy() if keep is not None else _EMPTY32
    sums = np.empty(S.shape[0], np.float32)
    col = _form_block(Sn, np.float32(lam), out32, out16, keepn, sums, half, keep is not None,
                      _num_blocks(S.shape[0], 128))
    return torch.from_numpy(col), bool(np.isfinite(sums).all())


def reform_block(X: torch.Tensor, A: torch.Tensor, out: torch.Tensor) -> float:
    """Rebuild rows of P from kept scaled scores ``X`` with potentials ``A`` absorbed; returns sum of row shifts."""
    if HAVE_NUMBA and numba_supports(out) and X.device.type == "cpu":
        half = out.dtype == torch.bfloat16
        out32 = _EMPTY32 if half else out.numpy()
        out16 = _as_numpy(out) if half else _EMPTY16
        return float(_reform_block(X.numpy(), A.numpy(), out32, out16, half, _num_blocks(X.shape[0], 128)))
    x = X + A
    m = x.amax(dim=1, keepdim=True)
    x.sub_(m).clamp_(min=LOG_FLOOR).exp_()
    out.copy_(x)
    return float(m.double().sum())


def _pairs_view_ok(P: torch.Tensor) -> bool:
    """Whether bfloat16 ``P`` can be read as uint32 words of two entries (even K, 4-byte aligned)."""
    return (P.dtype == torch.bfloat16 and P.shape[1] % 2 == 0 and P.storage_offset() % 2 == 0
            and P.data_ptr() % 4 == 0)


def _as_numpy(P: torch.Tensor) -> np.ndarray:
    if P.dtype == torch.bfloat16:
        return P.view(torch.int16).numpy().view(np.uint16)
    return P.numpy()


def _num_blocks(n: int, rows_per_block: int = _ROWS_PER_PARTIAL) -> int:
    threads = numba.get_num_threads() if HAVE_NUMBA else 1
    return max(1, min(n, max(threads, -(-n // rows_per_block))))


def fused_pass(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor,
               backend: str) -> tuple[torch.Tensor, float]:
    """One read of ``P``: the cluster masses and ``sum_i log u_i`` for scalings ``b = E[segment] * w``.

    ``E`` is a (segments x K) float32 matrix of per-block factors, ``seg_stop`` the (int64) end row of each
    block, ``w`` a float32 K-vector. Returns ``mass`` (float64 K-vector, on the CPU for numba and on P's
    device for torch) and ``sum_i log(sum_k P_ik b_k)`` as a float.
    """
    if backend == "numba" and (P.dtype == torch.float32 or _pairs_view_ok(P)):
        if P.dtype == torch.float32:
            partial, logs = _pass(P.numpy(), E.numpy(), seg_stop, w.numpy(), _num_blocks(P.shape[0]))
        else:
            partial, logs = _pass_pairs(P.view(torch.int32).numpy().view(np.uint32), E.numpy(), seg_stop,
                                        w.numpy(), _num_blocks(P.shape[0]))
        return torch.from_numpy(partial.sum(axis=0, dtype=np.float64)), float(logs.sum())
    # torch, and half precision with an odd K on the CPU
    mass = torch.zeros(P.shape[1], dtype=torch.float64, device=P.device)
    logsum = torch.zeros((), dtype=torch.float64, device=P.device)
    start = 0
    for seg, stop in enumerate(seg_stop.tolist()):
        b = E[seg] * w
        for block in _torch_blocks(P[start:stop]):
            u = torch.mv(block, b).clamp_(min=_U_MIN)
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
            u = q.sum(dim=1).clamp_(min=_U_MIN)
            logsum += u.log().double().sum()
            q /= u[:, None]
            mass += q.sum(dim=0).double()
            gram += (q.t() @ q).double()
        start = stop
    return mass, float(logsum), gram


def argmax_scaled(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor, backend: str) -> torch.Tensor:
    """Row-wise argmax of ``P_ik b_k`` with ``b = E[segment] * w``: the hard labels of the transport plan."""
    if backend == "numba":
        if _pairs_view_ok(P):
            return torch.from_numpy(_argmax_pairs(P.view(torch.int32).numpy().view(np.uint32), E.numpy(), seg_stop,
                                                  w.numpy(), _num_blocks(P.shape[0])))
        if P.dtype == torch.float32:
            return torch.from_numpy(_argmax_f32(P.numpy(), E.numpy(), seg_stop, w.numpy(), _num_blocks(P.shape[0])))
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
