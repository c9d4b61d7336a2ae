"""Imbalanced subsets: seeded removal of a fraction of each class's images (the paper's light and heavy settings)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch


def imbalanced_indices(targets, removed_fractions: Sequence[float] | Mapping[int, float], seed: int = 0) -> torch.Tensor:
    """Sorted positions kept after removing ``removed_fractions[c]`` of class ``c``'s images at random.

    Class ``c`` with ``n_c`` images loses ``floor(f_c * n_c + 1/2)`` of them, chosen by a generator
    seeded with ``seed``: the same subset every time. ``removed_fractions`` is a sequence (one value
    per class, at least as many as the largest target + 1) or a mapping ``{class: fraction}`` (classes
    not named lose nothing).
    """
    t = torch.as_tensor(targets).long().flatten()
    if t.numel() and t.min() < 0:
        raise ValueError("targets must be non-negative class numbers")
    num_classes = int(t.max()) + 1 if t.numel() else 0
    if isinstance(removed_fractions, Mapping):
        fractions = [0.0] * num_classes
        for c, f in removed_fractions.items():
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"class {c} in removed_fractions does not occur in targets (0..{num_classes - 1})")
            fractions[int(c)] = f
    else:
        fractions = list(removed_fractions)
        if len(fractions) < num_classes:
            raise ValueError(f"removed_fractions has {len(fractions)} values, targets have {num_classes} classes")
    for c, f in enumerate(fractions):
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= float(f) <= 1.0:
            raise ValueError(f"removed fraction for class {c} must be in [0, 1], got {f!r}")
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(t.numel(), dtype=torch.bool)
    for c in range(num_classes):
        members = (t == c).nonzero().flatten()
        n_remove = int(math.floor(float(fractions[c]) * members.numel() + 0.5))
        # Always draw the permutation so one class's fraction does not change another class's subset.
        perm = torch.randperm(members.numel(), generator=g)
        keep[members[perm[:n_remove]]] = False
    return keep.nonzero().flatten()


def light_imbalance(targets, seed: int = 0, cls: int = -1) -> torch.Tensor:
    """Half of one class removed (default the last: CIFAR-10's truck, as in the paper); kept positions."""
    t = torch.as_tensor(targets).long()
    num_classes = int(t.max()) + 1
    if not -num_classes <= cls < num_classes:
        raise ValueError(f"cls must be a class in [0, {num_classes}) (or negative from the end), got {cls}")
    fractions = [0.0] * num_classes
    fractions[cls] = 0.5
    return imbalanced_indices(t, fractions, seed)


def heavy_imbalance(targets, seed: int = 0, step: float = 0.1, max_fraction: float = 1.0) -> torch.Tensor:
    """Class ``c`` loses ``step * (c + 1)`` of its images (capped at ``max_fraction``); kept positions.

    The paper's words: "10 % of the first class removed, 20 % of the second, and so on". Read
    literally with 10 classes and ``step = 0.1``, the last class (CIFAR-10's truck) loses 100 % and
    disappears; that literal reading is the default. ``max_fraction=0.9`` keeps a tenth of the last
    class instead (the "capped below 100 %" reading).
    """
    if not 0.0 <= step <= 1.0:
        raise ValueError(f"step must be in [0, 1], got {step}")
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
    t = torch.as_tensor(targets).long()
    num_classes = int(t.max()) + 1
    fractions = [min(step * (c + 1), max_fraction) for c in range(num_classes)]
    return imbalanced_indices(t, fractions, seed)
