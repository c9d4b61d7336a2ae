"""Relabelling, SeLa's step 1: :func:`relabel` scores the whole data set with the network, streaming the
scores into the solver's buffers, and solves every head (:func:`relabel_from_kept` solves on scores the
training pass kept); :func:`compute_features` gives the features k-means clusters instead.

The scoring is the evaluation package's one scoring loop, :func:`~sela_edu.evaluation.score_dataset`;
what is new here is the solve and the labels put back in data order (gathered over ranks)."""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from sela_edu.evaluation import score_dataset
from sela_edu.models import unwrap
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.config import STORAGE_DTYPE_BY_NAME
from sela_edu.training.run_loaders import kept_batches, kept_rows, scoring_loader
from sela_edu.training.runtime import sync


@torch.no_grad()
def relabel(model: nn.Module, data, *, lam: float = 10.0, batch_size: int = 512, device=None,
            storage_dtype: torch.dtype | str = torch.float32, tol: float = 1e-3, max_iter: int = 1000,
            amp: bool | torch.dtype = False, progress: bool = False, loader=None, timings: dict | None = None,
            heads: list[int] | None = None, init: list | None = None, train_mode: bool = False,
            buffers: dict | None = None, score_heads: list[int] | None = None,
            keep_scores: bool | None = None) -> list:
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
    head: a warm start, which reaches the same labels in fewer passes. ``amp``: as :func:`score_dataset`'s. ``timings``, when given, receives
    ``score_seconds``, ``solve_seconds`` and ``head_seconds`` (one per solved head).
    ``buffers``: a dict the caller keeps between calls (head -> ScoreBuffer); a head's buffer is reset and
    refilled when its shape still fits, so P's memory is not allocated (and first touched) again each time.
    ``score_heads``: the heads whose buffers are filled (default: the solved ones; it must include them),
    and ``keep_scores`` the buffers' choice (see ScoreBuffer): score mode "training" fills every head's
    buffer with its kept scores at the first optimisation, whichever heads it solves.
    """
    from sela_edu.labelling import ScoreBuffer

    net = unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if isinstance(storage_dtype, str):
        storage_dtype = STORAGE_DTYPE_BY_NAME[storage_dtype]
    if loader is None:
        loader = scoring_loader(data, batch_size, device, 0, 0)
    all_ks = [head.out_features for head in net.heads]
    heads = list(range(len(all_ks))) if heads is None else [int(h) for h in heads]
    if not heads or any(not 0 <= h < len(all_ks) for h in heads):
        raise ValueError(f"heads must name some of the model's {len(all_ks)} heads, got {heads}")
    score_heads = heads if score_heads is None else [int(h) for h in score_heads]
    if not set(heads) <= set(score_heads) or any(not 0 <= h < len(all_ks) for h in score_heads):
        raise ValueError(f"score_heads must be heads of the model that include the solved ones {heads}, "
                         f"got {score_heads}")
    init = [None] * len(heads) if init is None else list(init)
    if len(init) != len(heads):
        raise ValueError(f"init needs one potential (or None) per solved head: {len(heads)}, got {len(init)}")
    rows = kept_rows(loader)
    sync(device)
    t0 = time.perf_counter()
    kept = {} if buffers is None else buffers
    for h in score_heads:
        old = kept.get(h)
        if (old is not None and (old.num_rows, old.num_clusters, old.lam, old.storage.dtype, old.device)
                == (rows, all_ks[h], float(lam), storage_dtype, device)
                and (keep_scores is None or keep_scores == (old.log_scores is not None))):
            old.reset()
        else:
            kept[h] = ScoreBuffer(rows, all_ks[h], lam, storage_dtype=storage_dtype, device=device,
                                  keep_scores=keep_scores)
    scored = score_dataset(net, _with_index(kept_batches(loader)), outputs=(),
                           into={h: kept[h] for h in score_heads}, train_mode=train_mode, amp=amp,
                           in_order=False, device=device, progress=progress)
    sync(device)
    t1 = time.perf_counter()
    results, head_seconds = _solve_heads([kept[h] for h in heads], init, tol, max_iter, device)
    out = _in_data_order(results, scored.index, len(data))
    sync(device)
    if timings is not None:
        timings["score_seconds"] = t1 - t0
        timings["solve_seconds"] = time.perf_counter() - t1
        timings["head_seconds"] = head_seconds
    return out


@torch.no_grad()
def relabel_from_kept(buffers: list, *, tol: float = 1e-3, max_iter: int = 1000, init: list | None = None,
                      timings: dict | None = None) -> list:
    """SeLa's step 1 on scores the buffers already keep (score mode "training"), without a scoring pass.

    Each buffer keeps one score row per image, in data order (:meth:`~sela_edu.labelling.ScoreBuffer.keep_rows`);
    ``P`` is formed from them and solved. Single process only: row i is image i. Returns one
    SelfLabelResult per buffer; ``timings`` as :func:`relabel`'s (``score_seconds``: forming P).
    """
    init = [None] * len(buffers) if init is None else list(init)
    if len(init) != len(buffers):
        raise ValueError(f"init needs one potential (or None) per buffer: {len(buffers)}, got {len(init)}")
    device = buffers[0].device
    t0 = time.perf_counter()
    for buffer in buffers:
        buffer.form_from_kept()
    sync(device)
    t1 = time.perf_counter()
    results, head_seconds = _solve_heads(buffers, init, tol, max_iter, device)
    n = buffers[0].num_rows
    out = _in_data_order(results, torch.arange(n), n)
    if timings is not None:
        timings["score_seconds"] = t1 - t0
        timings["solve_seconds"] = time.perf_counter() - t1
        timings["head_seconds"] = head_seconds
    return out


def _solve_heads(buffers: list, init: list, tol: float, max_iter: int, device) -> tuple[list, list[float]]:
    """self_label on every buffer (warm-started from ``init``); the results and each head's seconds."""
    from sela_edu.labelling import self_label

    results, head_seconds = [], []
    for buffer, start in zip(buffers, init):
        t_head = time.perf_counter()
        results.append(self_label(buffer, tol=tol, max_iter=max_iter, init=start))
        sync(device)
        head_seconds.append(time.perf_counter() - t_head)
    return results, head_seconds


def _in_data_order(results: list, indices: torch.Tensor, n: int) -> list:
    """The results with labels of all ``n`` images in data order (this rank's rows sit at ``indices``;
    gathered from every rank in a distributed run)."""
    local = torch.stack([r.labels.cpu() for r in results])
    if dist_utils.get_world_size() > 1:
        full = dist_utils.all_gather_labels(local, indices, n)
    else:
        full = torch.empty_like(local)
        full[:, indices] = local
    return [dataclasses.replace(r, labels=full[i]) for i, r in enumerate(results)]


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


__all__ = ['relabel', 'relabel_from_kept', 'compute_features']
