"""The seeded choices of a run before any training: when labels are optimised (:func:`relabel_schedule`),
the first labels (:func:`initial_labels`, the kit's one random initial labelling) and which images are
used (:func:`subset_indices`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from sela_edu.training.config import SCHEDULES


def relabel_schedule(epochs: int, nopts: int, kind: str = "even", steps_per_epoch: int = 1) -> list[int]:
    """The global steps (batches since the start) before which labels are optimised, increasing.

    ``"even"``: step ``floor(i / nopts * T)`` for ``i = 0 .. nopts-1`` (T = epochs x steps_per_epoch),
    as the official CIFAR code. ``"quadratic"``: ``floor((i / nopts)**2 * T)``, as the official ImageNet
    code (main.py: ``linspace(0, 1, nopts)**2``, consumed from the smallest): the gaps grow linearly,
    so optimisations are dense early, while the network and its labels change fast, and sparse late.
    Both start at step 0 (the first labels come from the freshly initialised network, as in the
    official code). The official code spreads its grid over ``epochs + 1`` epochs so
    that its last optimisation falls after training; here all ``nopts`` happen during training.
    Coinciding steps (quadratic spacing early on, with few steps) are pushed one step apart.

    Raises ValueError for an unknown kind, non-positive sizes, or more optimisations than steps.
    """
    for name, value, minimum in (("epochs", epochs, 1), ("steps_per_epoch", steps_per_epoch, 1), ("nopts", nopts, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {SCHEDULES}")
    total = int(epochs) * int(steps_per_epoch)
    if nopts > total:
        raise ValueError(f"nopts = {nopts} label optimisations do not fit in {total} training steps "
                         f"({epochs} epochs x {steps_per_epoch} batches): lower nopts or the batch size, "
                         "or train longer")
    fractions = np.arange(nopts) / max(nopts, 1)
    if kind == "quadratic":
        fractions = fractions**2
    steps: list[int] = []
    for f in fractions:
        step = int(math.floor(f * total))
        if steps and step <= steps[-1]:
            step = steps[-1] + 1
        steps.append(step)
    # i/nopts <= (nopts-1)/nopts and nopts <= total keep every step below total even after pushing.
    assert not steps or steps[-1] < total
    return steps


def initial_labels(num_images: int, num_clusters: int | list[int], seed: int = 0) -> torch.Tensor:
    """Random equipartitioned labels, num_heads x N: per head a seeded permutation of ``arange(N) % K``."""
    ks = [num_clusters] if isinstance(num_clusters, (int, np.integer)) else list(num_clusters)
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    g = torch.Generator().manual_seed(int(seed))
    rows = [(torch.arange(num_images) % int(k))[torch.randperm(num_images, generator=g)] for k in ks]
    return torch.stack(rows)


def subset_indices(num_images: int, max_images: int | None, seed: int) -> torch.Tensor | None:
    """Sorted positions of the seeded random ``max_images`` subset (None when all images are used)."""
    if max_images is None or max_images >= num_images:
        return None
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return torch.randperm(num_images, generator=g)[:max_images].sort().values


__all__ = ['relabel_schedule', 'initial_labels', 'subset_indices']
