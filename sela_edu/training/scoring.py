"""Training's passes that score a whole data set with the network: :func:`relabel` (scores streamed into
the solver's buffers, SeLa's step 1) and :func:`compute_features` (the features k-means clusters).

Both run the evaluation package's one scoring function, :func:`~sela_edu.evaluation.score_dataset`."""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from sela_edu.evaluation import score_dataset
from sela_edu.training import distributed as dist_utils
from sela_edu.training.config import STORAGE_DTYPES
from sela_edu.training.loaders import kept_batches, kept_rows, scoring_loader
from sela_edu.training.runtime import sync, unwrap


@torch.no_grad()
def relabel(model: nn.Module, data, *, lam: float = 10.0, batch_size: int = 512, device=None,
            storage_dtype: torch.dtype | str = torch.float32, tol: float = 1e-3, max_iter: int = 1000,
            amp: bool = False, progress: bool = False, loader=None, timings: dict | None = None,
            heads: list[int] | None = None, init: list | None = None, train_mode: bool = False,
            buffers: dict | None = None) -> list:
    """Optimise labels for the heads of ``model`` on ``data`` (SeLa's step 1).

    Scores every image once, streaming each batch into one :class:`~sela_edu.labelling.ScoreBuffer` per
    head, then solves each head with :func:`~sela_edu.labelling.self_label`. Returns one SelfLabelResult
    per solved head whose ``labels`` cover all N images in data order (gathered from every rank in a
    distributed run).

    By default the images are plain (no augmentation) and the network is in eval mode. The official
    CIFAR code instead scores its training loader: pass that ``loader`` (augmented, unshuffled) and
    ``train_mode=True`` (BatchNorm uses batch statistics, as there).

    ``heads``: which heads to solve (default all; the official CIFAR code solves one per optimisation).
    ``init``: one cluster potential (or None) per solved head, from an earlier optimisation of the same
    head: a warm start, which reaches the same labels in fewer passes. ``timings``, when given, receives
    ``score_seconds``, ``solve_seconds`` and ``head_seconds`` (one per solved head).
    ``buffers``: a dict the caller keeps between calls (head -> ScoreBuffer); a head's buffer is reset and
    refilled when its shape still fits, so P's memory is not allocated (and first touched) again each time.
    """
    from sela_edu.labelling import ScoreBuffer, self_label

    net = unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if isinstance(storage_dtype, str):
        storage_dtype = STORAGE_DTYPES[storage_dtype]
    if loader is None:
        loader = scoring_loader(data, batch_size, device, 0, 0)
    all_ks = [head.out_features for head in net.heads]
    heads = list(range(len(all_ks))) if heads is None else [int(h) for h in heads]
    if not heads or any(not 0 <= h < len(all_ks) for h in heads):
        raise ValueError(f"heads must name some of the model's {len(all_ks)} heads, got {heads}")
    init = [None] * len(heads) if init is None else list(init)
    if len(init) != len(heads):
        raise ValueError(f"init needs one potential (or None) per solved head: {len(heads)}, got {len(init)}")
    rows = kept_rows(loader)
    sync(device)
    t0 = time.perf_counter()
    kept = {} if buffers is None else buffers
    for h in heads:
        old = kept.get(h)
        if (old is not None and (old.num_rows, old.num_clusters, old.lam, old.storage.dtype, old.device)
                == (rows, all_ks[h], float(lam), storage_dtype, device)):
            old.reset()
        else:
            kept[h] = ScoreBuffer(rows, all_ks[h], lam, storage_dtype=storage_dtype, device=device)
    head_buffers = [kept[h] for h in heads]
    scored = score_dataset(net, _with_index(kept_batches(loader)), outputs=(), into=dict(zip(heads, head_buffers)),
                           train_mode=train_mode, amp=amp, in_order=False, device=device, progress=progress)
    sync(device)
    t1 = time.perf_counter()
    results, head_seconds = [], []
    for buffer, start in zip(head_buffers, init):
        t_head = time.perf_counter()
        results.append(self_label(buffer, tol=tol, max_iter=max_iter, init=start))
        sync(device)
        head_seconds.append(time.perf_counter() - t_head)
    indices = scored.index
    local = torch.stack([r.labels.cpu() for r in results])
    if dist_utils.get_world_size() > 1:
        full = dist_utils.all_gather_labels(local, indices, len(data))
    else:
        full = torch.empty_like(local)
        full[:, indices] = local
    out = [dataclasses.replace(r, labels=full[i]) for i, r in enumerate(results)]
    sync(device)
    if timings is not None:
        timings["score_seconds"] = t1 - t0
        timings["solve_seconds"] = time.perf_counter() - t1
        timings["head_seconds"] = head_seconds
    return out


def compute_features(model: nn.Module, data, *, batch_size: int = 512, device=None,
                     loader=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of this rank's images without augmentation, and their positions: (n x D float32 CPU, n).

    :func:`sela_edu.evaluation.score_dataset` on this rank's shard (without the shard's padding).
    """
    net = unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if loader is None:
        loader = scoring_loader(data, batch_size, device, 0, 0)
    scored = score_dataset(net, _with_index(kept_batches(loader)), outputs=("features",), in_order=False,
                           device=device)
    return scored["features"], scored.index


def _with_index(batches):
    """``(x, index)`` batches as score_dataset reads them: ``(x, targets, index)``, no targets."""
    for x, index in batches:
        yield x, None, index


__all__ = ['relabel', 'compute_features']
