"""The loop's label step: SeLa's optimal-transport labels (:func:`~sela_edu.labelling.self_label`) on every
head (or one head in turn), or k-means pseudo-labels for the DeepCluster baseline; how much the labels
changed; the progress bar's health line."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from sela_edu.models import init_head, unwrap
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.baselines import kmeans_labels
from sela_edu.training.config import TrainConfig
from sela_edu.training.runtime import sync
from sela_edu.training.relabelling import compute_features, relabel
from sela_edu.training.state import LoopState, RunSetup, keeps_head_outputs


def kmeans_relabel(model: nn.Module, data, num_clusters: list[int], *, seed: int = 0, batch_size: int = 512,
                   loader=None, timings: dict | None = None) -> torch.Tensor:
    """k-means pseudo-labels (num_heads x N) on the model's current features, DeepCluster-style.

    In a distributed run the features are gathered, rank 0 clusters, and the labels are broadcast.
    Heads with the same K get different k-means seeds, so they differ as SeLa's heads do.
    """
    device = next(unwrap(model).parameters()).device
    sync(device)
    t0 = time.perf_counter()
    feats, indices = compute_features(model, data, batch_size=batch_size, loader=loader)
    if dist_utils.get_world_size() > 1:
        table = torch.cat([indices.unsqueeze(1).to(torch.float64), feats.to(torch.float64)], dim=1)
        merged = torch.cat([b.cpu() for b in dist_utils.all_gather_rows(table)])
        full = torch.empty(len(data), feats.shape[1], dtype=torch.float32)
        full[merged[:, 0].long()] = merged[:, 1:].float()
    else:
        full = torch.empty(len(data), feats.shape[1], dtype=torch.float32)
        full[indices] = feats
    t1 = time.perf_counter()
    labels = torch.zeros(len(num_clusters), len(data), dtype=torch.int64)
    if dist_utils.is_main_process():
        for h, k in enumerate(num_clusters):
            labels[h] = torch.as_tensor(kmeans_labels(full, k, seed=seed + h)).long().cpu()
    labels = dist_utils.broadcast_tensor(labels)
    if timings is not None:
        timings["score_seconds"] = t1 - t0
        timings["solve_seconds"] = time.perf_counter() - t1
    return labels


def heads_to_solve(config: TrainConfig, relabel_count: int, num_heads: int) -> list[int]:
    """Every head, or (round robin, as the official CIFAR code) one head per optimisation in turn."""
    if config.relabel_heads == "round-robin":
        return [relabel_count % num_heads]
    return list(range(num_heads))


def label_step(s: RunSetup, loop: LoopState) -> tuple[dict, list[dict], dict | None]:
    """One label optimisation (the method's :meth:`~sela_edu.training.methods.Method.new_labels`) into
    ``loop.labels``.

    Returns its timings, one health row per solved head (SeLa's) and, after the first optimisation,
    how much the labels changed.
    """
    config = s.config
    t0 = time.perf_counter()
    with torch.no_grad():
        dist_utils.average_buffers(s.model)
    part: dict[str, Any] = {}
    previous = loop.labels.cpu()
    new, rows = s.method.new_labels(s, loop, previous, part)
    if config.reinits_heads():
        reinit_heads(s.model, s.optimizer)
    changes = label_changes(previous, new) if loop.has_optimised else None
    loop.has_optimised = True
    loop.labels = new.to(s.device)
    loop.position += 1
    loop.relabel_count += 1
    timing = {"score_seconds": part.get("score_seconds", 0.0), "solve_seconds": part.get("solve_seconds", 0.0),
              "relabel_seconds": time.perf_counter() - t0}
    return timing, rows, changes


def matched_ids(previous: torch.Tensor, new: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """``new`` labels (num_heads x N) with each head's cluster ids renamed to agree most with ``previous``
    (the Hungarian matching on the clusters' overlap): k-means numbers its clusters anew every time."""
    from scipy.optimize import linear_sum_assignment

    out = new.clone()
    for h, k in enumerate(ks):
        overlap = torch.zeros(k, k, dtype=torch.int64)
        overlap.index_put_((new[h].cpu(), previous[h].cpu()), torch.ones_like(new[h].cpu()), accumulate=True)
        rows, cols = linear_sum_assignment(overlap.numpy(), maximize=True)
        rename = torch.empty(k, dtype=torch.int64)
        rename[torch.as_tensor(rows)] = torch.as_tensor(cols)
        out[h] = rename[new[h].cpu()].to(new.device)
    return out


def scoring_pass(s: RunSetup, loop: LoopState, heads: list[int], init: list, part: dict) -> list:
    """SeLa's step 1 with a pass over the whole training set: every optimisation in score modes "plain"
    and "augmented", the first one in "training" (before any training batch, nothing is kept: solving on
    the buffers' unwritten memory would give garbage labels), which then fills every head's buffer."""
    config = s.config
    training = keeps_head_outputs(config)
    s.score_loader.set_epoch(loop.relabel_count)  # fresh augmentations per optimisation ("augmented")
    # the CPU reuses P's memory from one optimisation to the next; "training" keeps the buffers anywhere
    keep_buffers = s.device.type == "cpu" or training
    return relabel(s.model, s.data, lam=config.lam, device=s.device, storage_dtype=config.storage_dtype,
                   tol=config.label_tol, max_iter=config.label_max_iter, amp=getattr(torch, config.amp_dtype) if s.use_amp else False,
                   loader=s.score_loader, timings=part, heads=heads, init=init,
                   train_mode=config.score_mode == "augmented", buffers=loop.score_buffers if keep_buffers else None,
                   score_heads=list(range(len(s.ks))) if training else None, keep_scores=True if training else None)


def keep_head_outputs(buffers: dict, index: torch.Tensor, outputs: list[torch.Tensor]) -> None:
    """Each head's outputs of a training batch into its buffer at the images' rows (score mode "training")."""
    for h, out in enumerate(outputs):
        buffers[h].keep_rows(index, out.detach())


def label_changes(previous: torch.Tensor, new: torch.Tensor) -> dict[str, list[float]]:
    from sela_edu.evaluation.metrics import label_change, label_change_nmi

    return {"label_change": [label_change(a, b) for a, b in zip(previous, new)],
            "label_nmi_previous": [label_change_nmi(a, b) for a, b in zip(previous, new)]}


def health_text(rows: list[dict]) -> str:
    """The progress bar's summary of a label step: passes per head, and whether every head converged."""
    passes = "/".join(str(r["passes"]) for r in rows)
    return f"{passes} passes" + ("" if all(r["converged"] for r in rows) else " NOT CONVERGED")


def reinit_heads(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fresh head weights in place (so optimiser and DDP keep their references) and no stale momentum."""
    net = unwrap(model)
    with torch.no_grad():
        for head in net.heads:
            init_head(head)
            for p in head.parameters():
                optimizer.state.pop(p, None)
                p.copy_(dist_utils.broadcast_tensor(p.detach().clone()))


__all__ = ['kmeans_relabel', 'heads_to_solve', 'label_step', 'scoring_pass', 'keep_head_outputs', 'label_changes',
           'health_text', 'reinit_heads', 'matched_ids']
