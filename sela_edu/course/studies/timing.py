"""Notebook 07's timing of the label step at growing N: random scores streamed into the solver's buffer,
the solve timed alone, and the per-pass time extrapolated to ImageNet's size."""

from __future__ import annotations

import time

import numpy as np
import torch

from sela_edu.labelling import ScoreBuffer, self_label
from sela_edu.training.runtime import sync

#: ImageNet's training images
IMAGENET_IMAGES = 1281167


def time_label_step(n: int, k: int, *, lam: float, storage_dtype, device, seed: int = 0,
                    score_scale: float = 0.3, block: int = 65536):
    """Seconds that ``self_label`` takes on an N x K buffer of seeded random scores (std ``score_scale``),
    and its result. Forming the buffer is not timed: only the solve."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    buf = ScoreBuffer(n, k, lam, storage_dtype=storage_dtype, device=device)
    for start in range(0, n, block):
        buf.add(torch.randn(min(block, n - start), k, generator=g, device=device) * score_scale)
    sync(device)
    t0 = time.perf_counter()
    res = self_label(buf)
    sync(device)
    return time.perf_counter() - t0, res


def label_step_timings(sizes, k: int, **options) -> list[dict]:
    """:func:`time_label_step` at each N of ``sizes`` after one untimed warm-up (the first call pays for
    kernel compilation and allocation): one row per N with ``n``, ``seconds``, ``passes`` (over the
    scores), ``per_pass`` (seconds) and ``converged``."""
    if not sizes:
        raise ValueError("sizes is empty: give at least one N")
    time_label_step(min(sizes), k, **options)
    rows = []
    for n in sizes:
        seconds, res = time_label_step(n, k, **options)
        passes = max(int(res.passes), 1)
        rows.append(dict(n=n, seconds=seconds, passes=passes, per_pass=seconds / passes, converged=res.converged))
    return rows


def scaling_fit(timings: list[dict], k: int, n_target: int = IMAGENET_IMAGES, k_target: int = 3000) -> dict:
    """How the per-pass time grows with N (``slope`` of log time against log N; NaN from one size), the
    time per score entry of the largest run (``per_entry``), the mean passes, and the ``extrapolated``
    seconds of a solve of ``n_target`` x ``k_target`` scores (linear in the entries, the mean passes)."""
    ns = np.array([t["n"] for t in timings], dtype=float)
    per_pass = np.array([t["per_pass"] for t in timings])
    slope = float(np.polyfit(np.log(ns), np.log(per_pass), 1)[0]) if len(ns) > 1 else float("nan")
    per_entry = per_pass[-1] / (ns[-1] * k)
    passes = int(np.mean([t["passes"] for t in timings]))
    return dict(slope=slope, per_entry=per_entry, passes=passes,
                extrapolated=per_entry * n_target * k_target * passes)


__all__ = ["IMAGENET_IMAGES", "time_label_step", "label_step_timings", "scaling_fit"]
