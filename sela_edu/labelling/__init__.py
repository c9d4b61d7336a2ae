"""The label step of SeLa: optimal transport from N images to K equal-sized (or prior-sized) clusters,
solved on streamed scores.

* :mod:`.solver`: the score buffer (P = exp(lambda * scores), streamed, shifted, in float32 or bfloat16), the
  optimisers on the K-dimensional semi-dual (Sinkhorn, L-BFGS, Newton) and :func:`self_label`;
* :mod:`._kernels`: the numba kernels that read and write the buffer at memory speed;
* :func:`reference_self_label`: the official code's algorithm in NumPy, to cross-check against.

This package imports nothing else of the kit (a test holds the rule).
"""

from .solver import (
    SelfLabelResult,
    ScoreBuffer,
    self_label,
    ReferenceResult,
    reference_self_label,
    marginal_error,
    synthetic_scores,
)

__all__ = ["SelfLabelResult", "ScoreBuffer", "self_label", "ReferenceResult", "reference_self_label", "marginal_error", "synthetic_scores"]
