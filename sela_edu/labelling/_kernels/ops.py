"""The compiled building blocks the kernels share: bit casts, a vectorisable max and exp, bfloat16 rounding,
and the split of N rows into blocks for the parallel loops."""

from __future__ import annotations

import numpy as np
import torch

try:  # numba is a dependency of the kit; the torch path keeps the solver usable without it.
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    # with NUMBA_DISABLE_JIT the kernels would run as Python loops (and the intrinsics not at all)
    HAVE_NUMBA = not numba.config.DISABLE_JIT
except ImportError:  # pragma: no cover - exercised only on installs without numba
    HAVE_NUMBA = False


# Rows per partial sum on the CPU: each block's float32 partial sums cover at most this many rows, so the
# rounding error of a column sum does not grow with N (the partials are added in float64).
_ROWS_PER_PARTIAL = 2048
# Entries of P are at least e^LOG_FLOOR (why: see buffer.LOG_FLOOR): exp never produces a denormal.
LOG_FLOOR = -87.0
# u_i is never taken below this (a row whose every scaled entry underflowed): 1/u stays finite.
U_MIN = 1e-37


if HAVE_NUMBA:

    @intrinsic
    def f32_bits(typingctx, bits):
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
    def i32_bits(typingctx, value):
        """The bit pattern of a float32 as an int32 (a register move, vectorisable)."""
        if value != types.float32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(value), codegen

    @intrinsic
    def fmax(typingctx, a, b):
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
    def exp_bits(x):  # pragma: no cover - compiled
        """The float32 bits of ``exp(max(x, -87))`` for ``x <= 0`` (about 0.1 above is fine), vectorisable.

        exp(x) = 2^n exp(f), n = round(x / ln 2), |f| <= ln2 / 2, exp(f) by its degree-6 Taylor polynomial
        (relative error 2e-7), and 2^n added to the exponent bits: x >= -87 keeps the result normal.
        """
        x = fmax(x, np.float32(LOG_FLOOR))
        ni = np.int32(x * np.float32(1.4426950408889634) - np.float32(0.5))  # truncation: x <= 0
        n = np.float32(ni)
        f = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.0) + f * (np.float32(1.0) + f * (np.float32(0.5) + f * (
            np.float32(1 / 6) + f * (np.float32(1 / 24) + f * (np.float32(1 / 120) + f * np.float32(1 / 720))))))
        return i32_bits(p) + (ni << np.int32(23))

    @njit(fastmath=True, cache=True, inline="always")
    def bf16(bits):  # pragma: no cover - compiled
        # round to nearest even: the top 16 bits of a float32, rounded on the 17th (finite, positive inputs)
        b = np.uint32(bits)
        return np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


# stand-ins for the outputs a kernel call does not write (one row, so that row 0 exists)
EMPTY32 = np.empty((1, 1), np.float32)
EMPTY16 = np.empty((1, 1), np.uint16)


def as_numpy(P: torch.Tensor) -> np.ndarray:
    if P.dtype == torch.bfloat16:
        return P.view(torch.int16).numpy().view(np.uint16)
    return P.numpy()


def num_blocks(n: int, rows_per_block: int = _ROWS_PER_PARTIAL) -> int:
    threads = numba.get_num_threads() if HAVE_NUMBA else 1
    return max(1, min(n, max(threads, -(-n // rows_per_block))))


# Below this many entries a parallel region costs more than it saves (thread wake-ups dominate), so the
# automatic choice on the CPU is torch's single-threaded small-matrix path.
NUMBA_MIN_ENTRIES = 2**22


def numba_supports(P: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels can run on this storage."""
    return HAVE_NUMBA and P.device.type == "cpu" and P.dtype in (torch.float32, torch.bfloat16) and P.is_contiguous()
