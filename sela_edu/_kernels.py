"""The hot loops of SeLa's label step, written for speed: forming ``P``, one pass over it, the argmax.

**One pass.** For cluster scalings ``b`` the solver needs, per image i and cluster k,

    u_i = sum_k P_ik b_k              (row sums)
    mass_k = sum_i b_k P_ik / u_i      (how much of each row's unit mass cluster k receives)
    sum_i log u_i                     (the semi-dual objective, see :mod:`sela_edu.sinkhorn`)

Done as two matrix-vector products this reads the N x K matrix ``P`` twice. Here a block of rows is read
once: ``u`` is computed for a row while it sits in the cache, and its contribution to the column sums is
added straight away. The work is memory-bound, so halving the bytes halves the time. ``mass`` is the
gradient of the semi-dual objective and ``sum log u`` its value, so one pass gives a quasi-Newton solver
both.

**Blocks in their own frame.** ``P`` is formed block by block as the scores stream in (see
:class:`~sela_edu.sinkhorn.ScoreBuffer`), each block shifted by its own column maxima. Rather than
rescaling every block to a common shift afterwards (a read and a write of all of ``P``), the CPU kernels
take the block's factors ``E[block]`` and use ``b = E[block] * w`` for its rows: a K-vector product per
block instead of a pass over N x K entries.

On the CPU the loops are compiled by numba (parallel over blocks of rows, each block keeping its own
float32 partial column sums, reduced in float64 so the result does not drift with N). Storage in bfloat16
is read as 16-bit integers and widened to float32 in registers: torch has no fast CPU kernel for a
bfloat16 vector-times-matrix product, and numpy has no bfloat16 at all. ``exp`` is a vectorised
polynomial (relative error below 3e-7 on the range used), several times faster than the scalar library
call numba would otherwise emit.

On a GPU, or where numba is missing, the same quantities are computed with torch matrix-vector
products (block by block for half-precision storage, so the float32 copy of a block stays small).
"""

from __future__ import annotations

import math

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
# Entries of P are at least e^LOG_FLOOR (see sinkhorn._LOG_FLOOR): exp never produces a denormal.
LOG_FLOOR = -87.0
# u_i is never taken below this (a row whose every scaled entry underflowed): 1/u stays finite.
_U_MIN = 1e-37


if HAVE_NUMBA:

    @njit(fastmath=True, cache=True)
    def _exp_floor(v, out, ibits):  # pragma: no cover - compiled
        """``out[j] = exp(max(v[j], -87))`` for ``v <= 0`` (about 0.1 above is fine): a vectorised polynomial.

        exp(v) = 2^n * exp(f), n = round(v / ln 2), |f| <= ln2 / 2, exp(f) by its degree-6 Taylor polynomial
        (relative error 2e-7); 2^n is built in the exponent bits of a float32 (n >= -126: never denormal).
        """
        fb = ibits.view(np.float32)
        for j in range(v.shape[0]):
            x = max(v[j], np.float32(LOG_FLOOR))
            ni = np.int32(x * np.float32(1.4426950408889634) - np.float32(0.5))  # truncation: x <= 0
            n = np.float32(ni)
            f = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
            out[j] = np.float32(1.0) + f * (np.float32(1.0) + f * (np.float32(0.5) + f * (
                np.float32(1 / 6) + f * (np.float32(1 / 24) + f * (np.float32(1 / 120) + f * np.float32(1 / 720))))))
            ibits[j] = (ni + np.int32(127)) << np.int32(23)
        for j in range(v.shape[0]):
            out[j] *= fb[j]

    @njit(fastmath=True, cache=True)
    def _to_bf16(src, bits, dst):  # pragma: no cover - compiled
        # round to nearest even: the top 16 bits of a float32, rounded on the 17th (inputs are finite, positive)
        for j in range(src.shape[0]):
            x = bits[j]
            dst[j] = np.uint16((x + np.uint32(0x7FFF) + ((x >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))

    @njit(parallel=True, fastmath=True, cache=True)
    def _form_block(S, lam, out32, out16, keep, nblocks):  # pragma: no cover - compiled
        """One staged block of scores to its rows of P, in the block's own frame.

        x_ik = lam S_ik - max_j lam S_ij; c_k = max_i x_ik; P_ik = exp(max(x_ik - c_k, -87)), written to
        ``out16`` (bfloat16 bits) when it has rows, else to ``out32``; ``keep`` (when it has rows) gets x.
        Returns c (float32 K-vector). Two sweeps over S, which is small enough to stay in cache.
        """
        m, k = S.shape
        row_max = np.empty(m, np.float32)
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
        col = partial[0].copy()
        for blk in range(1, nblocks):
            for j in range(k):
                col[j] = max(col[j], partial[blk, j])
        half = out16.shape[0] > 0
        kept = keep.shape[0] > 0
        for blk in prange(nblocks):
            v = np.empty(k, np.float32)
            e = np.empty(k, np.uint32)
            ibits = np.empty(k, np.int32)
            ef = e.view(np.float32)
            for i in range(blk * step, min(m, (blk + 1) * step)):
                row = S[i]
                r = row_max[i]
                if kept:
                    dst = keep[i]
                    for j in range(k):
                        x = lam * row[j] - r
                        dst[j] = x
                        v[j] = x - col[j]
                else:
                    for j in range(k):
                        v[j] = lam * row[j] - r - col[j]
                if half:
                    _exp_floor(v, ef, ibits)
                    _to_bf16(ef, e, out16[i])
                else:
                    _exp_floor(v, out32[i], ibits)
        return col

    @njit(parallel=True, fastmath=True, cache=True)
    def _reform_block(X, A, out32, out16, nblocks):  # pragma: no cover - compiled
        """P_ik = exp(max(X_ik + A_k - m_i, -87)), m_i = max_j (X_ij + A_j); returns sum_i m_i (float64)."""
        m, k = X.shape
        step = (m + nblocks - 1) // nblocks
        sums = np.zeros(nblocks, np.float64)
        half = out16.shape[0] > 0
        for blk in prange(nblocks):
            v = np.empty(k, np.float32)
            e = np.empty(k, np.uint32)
            ibits = np.empty(k, np.int32)
            ef = e.view(np.float32)
            s = 0.0
            for i in range(blk * step, min(m, (blk + 1) * step)):
                row = X[i]
                best = np.float32(-np.inf)
                for j in range(k):
                    x = row[j] + A[j]
                    v[j] = x
                    best = max(best, x)
                for j in range(k):
                    v[j] -= best
                s += best
                if half:
                    _exp_floor(v, ef, ibits)
                    _to_bf16(ef, e, out16[i])
                else:
                    _exp_floor(v, out32[i], ibits)
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

    @njit(fastmath=True, cache=True)
    def _widen(src, wide):  # pragma: no cover - compiled
        for j in range(src.shape[0]):  # bfloat16 is the top half of a float32
            wide[j] = np.uint32(src[j]) << np.uint32(16)

    @njit(parallel=True, fastmath=True, cache=True)
    def _pass(P, E, seg_stop, w, nblocks, half):  # pragma: no cover - compiled
        """Masses and sum of log u over rows, for float32 ``P`` or bfloat16 bits (``half``)."""
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
            wide = np.empty((4, k), np.uint32)
            rows = wide.view(np.float32)
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
                    if half:
                        for r in range(4):
                            _widen(P[i + r], wide[r])
                        ls += _rows4(rows[0], rows[1], rows[2], rows[3], b, acc)
                    else:
                        ls += _rows4(P[i], P[i + 1], P[i + 2], P[i + 3], b, acc)
                    i += 4
                while i < end:
                    if half:
                        _widen(P[i], wide[0])
                        ls += math.log(_row1(rows[0], b, acc))
                    else:
                        ls += math.log(_row1(P[i], b, acc))
                    i += 1
                # the segment's sums, scaled by its b, go into the block's partial sums
                for j in range(k):
                    out[j] += acc[j] * b[j]
                    acc[j] = 0.0
            logs[blk] = ls
        return partial, logs

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

    @njit(parallel=True, fastmath=True, cache=True)
    def _argmax_bf16(P16, E, seg_stop, w, nblocks):  # pragma: no cover - compiled
        n, k = P16.shape
        out = np.empty(n, np.int64)
        step = (n + nblocks - 1) // nblocks
        for blk in prange(nblocks):
            i0 = blk * step
            i1 = min(n, i0 + step)
            if i0 >= i1:
                continue
            b = np.empty(k, np.float32)
            wide = np.empty(k, np.uint32)
            row = wide.view(np.float32)
            seg = np.searchsorted(seg_stop, i0, side="right")
            for j in range(k):
                b[j] = E[seg, j] * w[j]
            for i in range(i0, i1):
                if seg_stop[seg] <= i:
                    while seg_stop[seg] <= i:
                        seg += 1
                    for j in range(k):
                        b[j] = E[seg, j] * w[j]
                src = P16[i]
                for j in range(k):
                    wide[j] = np.uint32(src[j]) << np.uint32(16)
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


_EMPTY32 = np.empty((0, 1), np.float32)
_EMPTY16 = np.empty((0, 1), np.uint16)


def form_block(S: torch.Tensor, lam: float, out: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Write ``exp(lam S - row max - column max)`` (floored at e^-87) into ``out`` in one compiled call.

    ``out`` (float32 or bfloat16, same shape as ``S``) receives the rows of P in the block's own frame;
    ``keep`` (float32, or None) receives ``lam S - row max``. Returns the block's column maxima of the
    latter (float32 K-vector): the block's frame.
    """
    Sn = S.numpy()
    half = out.dtype == torch.bfloat16
    out32 = _EMPTY32 if half else out.numpy()
    out16 = _as_numpy(out) if half else _EMPTY16
    keepn = keep.numpy() if keep is not None else _EMPTY32
    col = _form_block(Sn, np.float32(lam), out32, out16, keepn, _num_blocks(S.shape[0], 128))
    return torch.from_numpy(col)


def reform_block(X: torch.Tensor, A: torch.Tensor, out: torch.Tensor) -> float:
    """Rebuild rows of P from kept scaled scores ``X`` with potentials ``A`` absorbed; returns sum of row shifts."""
    if HAVE_NUMBA and numba_supports(out) and X.device.type == "cpu":
        half = out.dtype == torch.bfloat16
        out32 = _EMPTY32 if half else out.numpy()
        out16 = _as_numpy(out) if half else _EMPTY16
        return float(_reform_block(X.numpy(), A.numpy(), out32, out16, _num_blocks(X.shape[0], 128)))
    x = X + A
    m = x.amax(dim=1, keepdim=True)
    x.sub_(m).clamp_(min=LOG_FLOOR).exp_()
    out.copy_(x)
    return float(m.double().sum())


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
    if backend == "numba":
        partial, logs = _pass(_as_numpy(P), E.numpy(), seg_stop, w.numpy(), _num_blocks(P.shape[0]),
                              P.dtype == torch.bfloat16)
        return torch.from_numpy(partial.sum(axis=0, dtype=np.float64)), float(logs.sum())
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


def argmax_scaled(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor, backend: str) -> torch.Tensor:
    """Row-wise argmax of ``P_ik b_k`` with ``b = E[segment] * w``: the hard labels of the transport plan."""
    if backend == "numba":
        kernel = _argmax_bf16 if P.dtype == torch.bfloat16 else _argmax_f32
        return torch.from_numpy(kernel(_as_numpy(P), E.numpy(), seg_stop, w.numpy(), _num_blocks(P.shape[0])))
    # block by block: the product P * b would otherwise be a second N x K matrix
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
        yield P[start : start + rows].float()  # a view when P is already float32
