"""Where a run executes: the model inside DistributedDataParallel, waiting for the GPU, progress bars."""

from __future__ import annotations

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, out of its DistributedDataParallel wrapper when it has one."""
    return model.module if hasattr(model, "module") else model


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress_bar(iterable, enabled: bool, desc: str, **kw):
    """``iterable`` under a tqdm bar that disappears when done, or as it is when ``enabled`` is false."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, **kw)


__all__ = ['unwrap', 'sync', 'progress_bar']
