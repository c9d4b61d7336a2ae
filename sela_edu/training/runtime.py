"""Where a run executes: waiting for the GPU (the one device synchronisation of the kit), progress bars.
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


__all__ = ['sync', 'progress_bar']
