"""Where a run executes: waiting for the GPU (the one device synchronisation of the kit), the optimiser's
kernel on each device, progress bars.
(The model out of its DistributedDataParallel wrapper: :func:`sela_edu.models.unwrap`.)"""

from __future__ import annotations

import torch


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


def fused_sgd(device: torch.device) -> bool | None:
    """SGD as one fused kernel on CUDA: a float16 GradScaler then hands it the scale and the overflow flag on
    the device, where the unfused step reads the flag on the host once per step. (None elsewhere: torch's
    default, which keeps the CPU's arithmetic as it was.)"""
    return True if device.type == "cuda" else None


__all__ = ['sync', 'progress_bar', 'fused_sgd']
