"""The label step's passes over ``P`` as Triton kernels: one read of ``P`` per pass, in its storage dtype.

Imported only where triton is importable (see :func:`supports`); chosen by ``backend="auto"`` for CUDA storage.
With ``TRITON_INTERPRET=1`` set before import, the same kernels run on the CPU (numpy): how they are tested.

**The pass.** Rows are walked in ranges that lie in one segment (the ranges of
:func:`~sela_edu.labelling._kernels.walk.walk`, at most ``TILES_PER_RANGE`` tiles long, uploaded once per
segmentation and cached); each program takes a run of consecutive ranges, loads a range's scalings
``b = E[segment] * w`` once and reads its rows in tiles of ``BLOCK_M`` rows. A tile is read whole
(``BLOCK_M`` x ``next_pow2(K)`` entries, float32, bfloat16 or float16, widened to float32 in registers): the
program forms ``q = P * b``, the row sums ``u`` (clamped at ``U_MIN``), adds ``sum log u`` (float64) and
``sum_rows q / u`` (float32) to its own accumulators, and goes on to its next tile: ``P`` is read once.
Each program writes one row of partial column sums and one log sum; torch adds them (in float64)
afterwards, so the result does not depend on the order programs finish in (no atomics).

**Forming.** :func:`form_block` writes a block of ``P`` from float32 scores in two launches (the rows'
maxima and per-program column maxima, then the exponentials written in the storage dtype), reading the
scores twice and writing ``P`` once, as the CPU's compiled kernel does, instead of the seven sweeps of
the torch ops it replaces.

**Counting.** :data:`COUNTS` counts the kernel launches and the host-to-device uploads the wrappers make;
nothing here reads a device value back to the host (no ``.item()``, ``.cpu()``, ``.tolist()``), so a pass
is one launch and two small torch reductions, and the solver's one synchronisation per pass is where the
optimiser reads ``F``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from sela_edu.labelling._kernels.ops import LOG_FLOOR, U_MIN
from sela_edu.labelling._kernels.walk import walk

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - installs without triton
    HAVE_TRITON = False

# The widest K a tile holds in registers (next power of two); wider P goes to the torch path.
MAX_BLOCK_K = 16384
# Entries of one tile: BLOCK_M = max(1, TILE_ENTRIES // next_pow2(K)) rows (K = 3000: 4 rows, 8 warps).
TILE_ENTRIES = 16384
# Tiles per range of the walk: a range's scalings b = E[segment] * w are loaded once for this many tiles.
TILES_PER_RANGE = 64
STORAGE = (torch.float32, torch.bfloat16, torch.float16)

#: launches and uploads made by the wrappers since the last :func:`reset_counts`
COUNTS = {"launches": 0, "uploads": 0}


def reset_counts() -> None:
    COUNTS["launches"] = 0
    COUNTS["uploads"] = 0


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: whether the kernels below were made under ``TRITON_INTERPRET=1`` (read when they are defined, as triton does)
INTERPRETED = _interpret_env()


def supports(P: torch.Tensor) -> bool:
    """Whether the Triton kernels can read this storage: CUDA (or any device under the interpreter),
    float32 / bfloat16 / float16, contiguous rows, K within :data:`MAX_BLOCK_K`."""
    return (HAVE_TRITON and (P.device.type == "cuda" or INTERPRETED) and P.dtype in STORAGE and P.dim() == 2
            and P.is_contiguous() and 0 < P.shape[1] <= MAX_BLOCK_K)


if HAVE_TRITON:

    @triton.jit
    def _pass_kernel(P, E, W, RANGES, PARTIAL, LOGS, n_ranges, per_prog, K, stride_p, stride_e,
                     U_FLOOR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):  # pragma: no cover
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_K)
        cmask = cols < K
        w = tl.load(W + cols, mask=cmask, other=0.0)
        acc = tl.zeros([BLOCK_K], dtype=tl.float32)
        logs = tl.zeros([BLOCK_M], dtype=tl.float64)
        r0 = pid * per_prog
        r1 = tl.minimum(r0 + per_prog, n_ranges)
        for r in range(r0, r1):  # this program's ranges of the walk: rows of one segment each
            start = tl.load(RANGES + 3 * r)
            stop = tl.load(RANGES + 3 * r + 1)
            seg = tl.load(RANGES + 3 * r + 2)
            b = tl.load(E + seg * stride_e + cols, mask=cmask, other=0.0) * w
            for i in range(start, stop, BLOCK_M):  # tiles of BLOCK_M rows, each read once
                rows = i + tl.arange(0, BLOCK_M)
                rmask = rows < stop
                p = tl.load(P + rows[:, None] * stride_p + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                            other=0.0).to(tl.float32)
                q = p * b[None, :]
                u = tl.maximum(tl.sum(q, axis=1), U_FLOOR)
                logs += tl.where(rmask, tl.log(u), 0.0).to(tl.float64)
                a = tl.where(rmask, 1.0 / u, 0.0)
                acc += tl.sum(q * a[:, None], axis=0)
        tl.store(PARTIAL + pid * K + cols, acc, mask=cmask)
        tl.store(LOGS + pid, tl.sum(logs, axis=0))

    @triton.jit
    def _argmax_kernel(P, E, W, RANGES, OUT, n_ranges, per_prog, K, stride_p, stride_e,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):  # pragma: no cover
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_K)
        cmask = cols < K
        w = tl.load(W + cols, mask=cmask, other=0.0)
        r0 = pid * per_prog
        r1 = tl.minimum(r0 + per_prog, n_ranges)
        for r in range(r0, r1):
            start = tl.load(RANGES + 3 * r)
            stop = tl.load(RANGES + 3 * r + 1)
            seg = tl.load(RANGES + 3 * r + 2)
            b = tl.load(E + seg * stride_e + cols, mask=cmask, other=0.0) * w
            for i in range(start, stop, BLOCK_M):
                rows = i + tl.arange(0, BLOCK_M)
                rmask = rows < stop
                p = tl.load(P + rows[:, None] * stride_p + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                            other=0.0).to(tl.float32)
                q = tl.where(cmask[None, :], p * b[None, :], -1.0)  # entries are >= 0: padding never wins
                arg = tl.argmax(q, axis=1, tie_break_left=True)
                tl.store(OUT + rows, arg.to(tl.int64), mask=rmask)


    @triton.jit
    def _form_max_kernel(S, ROWMAX, PARTIAL, BAD, m, K, stride_s, per_prog, lam,
                         BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):  # pragma: no cover
        """Rows' maxima of lam S; per program the column maxima of lam S - row max and the non-finite count."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_K)
        cmask = cols < K
        acc = tl.full([BLOCK_K], float("-inf"), tl.float32)
        bad = tl.zeros([BLOCK_M], dtype=tl.int32)
        r0 = pid * per_prog
        r1 = tl.minimum(r0 + per_prog, m)
        for i in range(r0, r1, BLOCK_M):
            rows = i + tl.arange(0, BLOCK_M)
            rmask = rows < r1
            mask = rmask[:, None] & cmask[None, :]
            s = tl.load(S + rows[:, None] * stride_s + cols[None, :], mask=mask, other=0.0)
            finite = (s == s) & (tl.abs(s) < float("inf"))
            bad += tl.sum(tl.where(mask & ~finite, 1, 0), axis=1)
            x = tl.where(mask, lam * s, float("-inf"))
            r = tl.where(rmask, tl.max(x, axis=1), 0.0)  # padding rows: no -inf - -inf
            tl.store(ROWMAX + rows, r, mask=rmask)
            acc = tl.maximum(acc, tl.max(tl.where(mask, x - r[:, None], float("-inf")), axis=0))
        tl.store(PARTIAL + pid * K + cols, acc, mask=cmask)
        tl.store(BAD + pid, tl.sum(bad, axis=0))

    @triton.jit
    def _form_write_kernel(S, ROWMAX, COL, OUT, KEEP, m, K, stride_s, stride_o, stride_k, per_prog, lam,
                           FLOOR: tl.constexpr, KEPT: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_K: tl.constexpr):  # pragma: no cover
        """P = exp(max(lam S - row max - column max, FLOOR)) in OUT's dtype; KEEP gets lam S - row max."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_K)
        cmask = cols < K
        col = tl.load(COL + cols, mask=cmask, other=0.0)
        r0 = pid * per_prog
        r1 = tl.minimum(r0 + per_prog, m)
        for i in range(r0, r1, BLOCK_M):
            rows = i + tl.arange(0, BLOCK_M)
            rmask = rows < r1
            mask = rmask[:, None] & cmask[None, :]
            s = tl.load(S + rows[:, None] * stride_s + cols[None, :], mask=mask, other=0.0)
            x = lam * s - tl.load(ROWMAX + rows, mask=rmask, other=0.0)[:, None]
            if KEPT:
                tl.store(KEEP + rows[:, None] * stride_k + cols[None, :], x, mask=mask)
            p = tl.exp(tl.maximum(x - col[None, :], FLOOR))
            tl.store(OUT + rows[:, None] * stride_o + cols[None, :], p.to(OUT.dtype.element_ty), mask=mask)


def form_block(S: torch.Tensor, lam: float, out: torch.Tensor, keep: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`~sela_edu.labelling._kernels.forming.form_block` computes, in two launches: ``out`` (float32,
    bfloat16 or float16, shaped like the float32 scores ``S``) gets ``exp(lam S - row max - column max)``
    floored at e^-87, ``keep`` (float32, or None) ``lam S - row max``. Returns the column maxima (float32
    K-vector on the device) and the number of non-finite scores (an int32 0-d tensor on the device: reading
    it is the caller's one wait)."""
    m, k = S.shape
    block_m, block_k, warps = _block_shape(k)
    progs = _programs(S.device, -(-m // block_m))
    per_prog = -(-m // progs)
    per_prog = -(-per_prog // block_m) * block_m  # whole tiles per program
    progs = max(1, -(-m // per_prog))
    rowmax = torch.empty(m, dtype=torch.float32, device=S.device)
    partial = torch.empty(progs, k, dtype=torch.float32, device=S.device)
    bad = torch.empty(progs, dtype=torch.int32, device=S.device)
    _form_max_kernel[(progs,)](S, rowmax, partial, bad, m, k, S.stride(0), per_prog, float(lam),
                               BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps)
    col = partial.amax(dim=0)
    keep_arg = keep if keep is not None else out
    _form_write_kernel[(progs,)](S, rowmax, col, out, keep_arg, m, k, S.stride(0), out.stride(0),
                                 keep_arg.stride(0), per_prog, float(lam), FLOOR=LOG_FLOOR, KEPT=keep is not None,
                                 BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps)
    COUNTS["launches"] += 2
    return col, bad.sum()


def can_form(S: torch.Tensor, storage: torch.Tensor) -> bool:
    """Whether :func:`form_block` applies: float32 contiguous scores and storage the kernels read, on one device."""
    return (supports(storage) and S.device == storage.device and S.dtype == torch.float32 and S.dim() == 2
            and S.is_contiguous() and S.shape[1] == storage.shape[1])


def _block_shape(k: int) -> tuple[int, int, int]:
    block_k = triton.next_power_of_2(k)
    block_m = max(1, TILE_ENTRIES // block_k)
    warps = 8 if block_m * block_k >= 8192 else 4
    return block_m, block_k, warps


_TABLES: dict = {}


def _ranges_on(device: torch.device, n: int, seg_stop: np.ndarray, block_m: int) -> torch.Tensor:
    """The walk's ranges on ``device``, flattened (uploaded once per segmentation and range length)."""
    rows = block_m * TILES_PER_RANGE
    ranges, _ = walk(n, seg_stop, 1, rows)
    key = (str(device), n, rows, seg_stop.tobytes())
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) >= 16:
            _TABLES.pop(next(iter(_TABLES)))
        table = _TABLES[key] = torch.from_numpy(ranges.reshape(-1)).to(device)
        COUNTS["uploads"] += 1
    return table


def _programs(device: torch.device, n_ranges: int) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_ranges, 8 * sms))
    return max(1, min(n_ranges, 4))  # the interpreter: a few programs, so that partial sums are exercised


def _inputs(P, E, w):
    E = E.to(P.device, torch.float32).contiguous()
    w = w.to(P.device, torch.float32).contiguous()
    return E, w


def fused_pass(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`~sela_edu.labelling._kernels.passes.fused_pass` computes, in one read of ``P``: the
    cluster masses (float64 K-vector on P's device) and ``sum_i log u_i`` (a float64 0-d tensor on P's
    device, so that the pass itself never waits for the device)."""
    n, k = P.shape
    E, w = _inputs(P, E, w)
    block_m, block_k, warps = _block_shape(k)
    table = _ranges_on(P.device, n, seg_stop, block_m)
    n_ranges = table.numel() // 3
    if n_ranges == 0:
        return torch.zeros(k, dtype=torch.float64, device=P.device), torch.zeros((), dtype=torch.float64,
                                                                                   device=P.device)
    progs = _programs(P.device, n_ranges)
    per_prog = -(-n_ranges // progs)
    progs = -(-n_ranges // per_prog)
    partial = torch.empty(progs, k, dtype=torch.float32, device=P.device)
    logs = torch.empty(progs, dtype=torch.float64, device=P.device)
    _pass_kernel[(progs,)](P, E, w, table, partial, logs, n_ranges, per_prog, k, P.stride(0), E.stride(0),
                           U_FLOOR=U_MIN, BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps)
    COUNTS["launches"] += 1
    return partial.sum(dim=0, dtype=torch.float64), logs.sum()


def argmax_scaled(P: torch.Tensor, E: torch.Tensor, seg_stop: np.ndarray, w: torch.Tensor) -> torch.Tensor:
    """Row-wise first argmax of ``P_ik b_k`` (int64, on P's device), in one read of ``P``."""
    n, k = P.shape
    E, w = _inputs(P, E, w)
    block_m, block_k, warps = _block_shape(k)
    table = _ranges_on(P.device, n, seg_stop, block_m)
    n_ranges = table.numel() // 3
    out = torch.zeros(n, dtype=torch.int64, device=P.device)
    if n_ranges == 0:
        return out
    progs = _programs(P.device, n_ranges)
    per_prog = -(-n_ranges // progs)
    progs = -(-n_ranges // per_prog)
    _argmax_kernel[(progs,)](P, E, w, table, out, n_ranges, per_prog, k, P.stride(0), E.stride(0),
                             BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps)
    COUNTS["launches"] += 1
    return out
