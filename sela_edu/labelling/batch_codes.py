"""SwAV's label step: soft codes for one batch by a few Sinkhorn-Knopp iterations (Caron et al., 2020).

SeLa solves the transport problem on the whole data set before it trains on the labels. SwAV solves it
on each batch (plus a queue of recent embeddings when the batch is small) and stops after three
iterations: the codes ``Q`` (B x K, rows summing to 1) are then the targets of the swapped prediction.
Three iterations do not reach the constraint: what they leave is measured by :func:`code_balance`.
"""

from __future__ import annotations

import torch

from sela_edu.labelling.allreduce import all_reduce, distributed_active

#: SwAV's defaults (main_swav.py): epsilon 0.05, three iterations.
SWAV_EPSILON = 0.05
SWAV_ITERATIONS = 3


@torch.no_grad()
def batch_codes(scores: torch.Tensor, epsilon: float = SWAV_EPSILON, iterations: int = SWAV_ITERATIONS, *,
                distributed: bool | None = None) -> torch.Tensor:
    """The codes of a batch (B x K, each row summing to 1) from its prototype scores ``scores`` (B x K,
    cosines in [-1, 1]): ``exp(scores / epsilon)`` scaled ``iterations`` times to equal cluster masses B/K,
    then to rows of mass 1 (the last scaling, so that every row is a distribution). ``iterations=0`` gives
    each row's softmax of ``scores / epsilon``: no equal-size constraint at all (what collapses).

    Under ``torch.distributed`` (``distributed=None`` follows it) the sums run over every rank's rows,
    as SwAV's ``distributed_sinkhorn``: B is then the global batch.
    """
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"scores must be a non-empty B x K matrix, got shape {tuple(scores.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    scores = scores.float()
    if not torch.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values: the network's outputs diverged")
    shared = distributed_active(distributed)
    total = lambda t: all_reduce(t, torch.distributed.ReduceOp.SUM) if shared else t  # noqa: E731
    # A shift by the global maximum keeps exp finite for small epsilon (SwAV's cosines are bounded; any
    # scores are accepted here) and cancels in the scalings.
    peak = scores.max().reshape(1)
    if shared:
        all_reduce(peak, torch.distributed.ReduceOp.MAX)
    q = torch.exp((scores - peak) / epsilon).t()  # K x B
    rows = torch.tensor(float(q.shape[1]), device=q.device)
    batch = total(rows.clone()) if shared else rows
    k = q.shape[0]
    q /= total(q.sum().reshape(1))
    for _ in range(iterations):
        q /= total(q.sum(dim=1, keepdim=True)) * k   # every cluster a mass of 1/K
        q /= q.sum(dim=0, keepdim=True) * batch      # every image a mass of 1/B
    if not iterations:  # no constraint at all: each row's softmax of scores / epsilon
        q /= q.sum(dim=0, keepdim=True) * batch
    return (q * batch).t()


def code_balance(labels: torch.Tensor, k: int) -> dict[str, float]:
    """How far hard labels (N) are from K equal clusters: the largest and smallest cluster as multiples of
    N/K, and the number of empty clusters."""
    sizes = torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=k).double()
    share = sizes.sum() / k
    return {"largest": float(sizes.max() / share), "smallest": float(sizes.min() / share),
            "empty": int((sizes == 0).sum())}


__all__ = ["batch_codes", "code_balance", "SWAV_EPSILON", "SWAV_ITERATIONS"]
