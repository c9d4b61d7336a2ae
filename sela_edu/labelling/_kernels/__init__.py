"""The hot loops of SeLa's label step, written for speed: forming ``P``, one pass over it, the argmax.

**One pass.** For cluster scalings ``b`` the solver needs, per image i and cluster k,

    u_i = sum_k P_ik b_k              (row sums)
    mass_k = sum_i b_k P_ik / u_i      (how much of each row's unit mass cluster k receives)
    sum_i log u_i                     (the semi-dual objective, see :mod:`sela_edu.labelling.semidual`)

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

On a GPU, where triton is importable (it ships with torch's CUDA builds), forming ``P``, the passes and the
argmax are Triton kernels (:mod:`.triton_passes`) that read every entry of ``P`` once, in its storage dtype
(float32, bfloat16 or float16), accumulating in float32. On a GPU without triton, and on the CPU for bfloat16 with an
odd K or float16, the same quantities are computed with torch matrix-vector products (block by block for
half-precision storage, so the float32 copy of a block stays small).
"""

from sela_edu.labelling._kernels.forming import can_form, form_block, reform_block
from sela_edu.labelling._kernels.ops import HAVE_NUMBA, LOG_FLOOR, NUMBA_MIN_ENTRIES, numba_supports
from sela_edu.labelling._kernels.passes import (argmax_scaled, fused_pass, hessian_pass, triton_forms,
                                                 triton_kernels, triton_supports)

__all__ = ["HAVE_NUMBA", "LOG_FLOOR", "NUMBA_MIN_ENTRIES", "can_form", "form_block", "reform_block", "numba_supports",
           "fused_pass", "hessian_pass", "argmax_scaled", "triton_kernels", "triton_supports", "triton_forms"]
