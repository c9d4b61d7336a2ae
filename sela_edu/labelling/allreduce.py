"""What the label step shares between ranks under ``torch.distributed``: K-vectors, nothing else.

Each rank holds its own rows of P; column maxima (once) and cluster masses (every pass) are all-reduced,
so every rank takes the same decisions and all ranks stop together.
"""

from __future__ import annotations

import torch


def distributed_active(distributed: bool | None) -> bool:
    """Whether to work across ranks: ``None`` follows ``torch.distributed``; ``True`` insists on it."""
    available = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and not available:
        raise ValueError("distributed=True, but torch.distributed is not initialised (call init_process_group first)")
    return available if distributed is None else bool(distributed)


def all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    """``t`` reduced in place over all ranks with ``op``, returned for chaining."""
    torch.distributed.all_reduce(t, op=op)
    return t
