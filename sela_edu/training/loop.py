"""SeLa's training loop: epochs of SGD on the current labels, with the label steps the schedule puts
in them, a checkpoint after every epoch, and what :func:`train` returns.

Training alternates two steps, as in the paper and the official code:

1. **Label optimisation.** At ``nopts`` moments spread over training (:func:`relabel_schedule`), the
   network scores the whole data set without augmentation; the scores are streamed batch by batch
   into one :class:`~sela_edu.labelling.ScoreBuffer` per head, and the label step
   (:func:`~sela_edu.labelling.self_label`: the optimal transport problem solved by L-BFGS, then Newton's
   method, by default) turns them into equipartitioned labels for every head.
   With ``score_mode="training"`` only the first optimisation scores the data set: the training pass
   keeps every image's latest head outputs in those buffers, and later label steps solve on them.
2. **Representation learning.** Between optimisations, SGD on the mean over heads of the
   cross-entropy against the current labels, on augmented images.

Labels start random and equipartitioned (a seeded permutation of ``arange(N) % K`` per head). Two
comparison methods share the loop: ``method="kmeans"`` takes labels from k-means on the current
features instead (DeepCluster-style; the heads are re-initialised after each clustering, because
k-means cluster ids carry no meaning from one clustering to the next), and ``method="supervised"``
trains on the true classes (or on any fixed labels: :func:`transfer_labels`) without relabelling.

Quick start (a notebook)::

    from sela_edu.data import load_dataset
    from sela_edu.training import config_from_preset, train
    config = config_from_preset("classroom", epochs=5)
    result = train(config, load_dataset("fashion-mnist"), callback=lambda rec: print(rec["nmi"]))

Checkpoints: with ``checkpoint_dir`` set, a checkpoint is written after every epoch (``last.pt``, the
one before kept as ``prev.pt``), holding everything needed to continue bit for bit: calling
:func:`train` again with the same config continues where the last one stopped, e.g. after a
KeyboardInterrupt, and ends in the state an uninterrupted run reaches.

Several GPUs or machines: run the script under torchrun; :func:`train` joins the process group from
the environment (nccl on CUDA, gloo on CPU), wraps the model in DistributedDataParallel, gives each
rank its own shard of the data, and solves for labels jointly (each rank streams its own rows into
its ScoreBuffer; the solver all-reduces the K-vector sums; the labels are then gathered so every
rank holds all N)::

    torchrun --standalone --nproc_per_node=4 train_script.py     # one machine, 4 processes
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=R --rdzv_backend=c10d \
             --rdzv_endpoint=HOST:29500 train_script.py            # two machines (R = 0, 1)

``batch_size`` is per process, as with DistributedDataParallel in general. Only rank 0 writes
checkpoints and shows progress bars; the callback runs on every rank.

On a GPU the SGD step never makes the host wait for the device: in-memory images live there as uint8 and
are gathered, augmented and normalised there (:class:`~sela_edu.data.loaders.TensorLoader`); the loss sum
stays there and is read once per epoch (which is also when a non-finite loss is caught, naming the
epoch); the progress bar shows the latest loss that has already reached the host. SGD is one fused kernel
there, which takes a float16 GradScaler's scale and overflow flag on the device.
``compile=True`` (or a mode name) trains through :func:`torch.compile`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from sela_edu.training import checkpoint as ckpt
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.build import build_run
from sela_edu.training.config import TrainConfig
from sela_edu.training.labelstep import health_text, keep_head_outputs, label_step
from sela_edu.training.monitor import knn_during_training
from sela_edu.training.runtime import progress_bar, sync
from sela_edu.training.state import LoopState, RunSetup, has_kept_scores, keeps_head_outputs, restore, save_state


class StopTraining(Exception):
    """Raise from a ``train`` callback to end training after the current epoch and get its result.

    The epoch's checkpoint is already written, so a later ``train`` call with more patience continues
    from there. (A KeyboardInterrupt also stops training, but propagates: no result is returned.)
    """


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained :class:`~sela_edu.models.MultiHeadNet` (unwrapped from DDP), in eval mode.
        labels: LongTensor num_heads x N, the current pseudo-labels (the targets for "supervised").
        history: one dict per epoch (see :func:`train`).
        config: the config used.
        timings: totals over all epochs (including those of resumed runs): seconds, train_seconds,
            relabel_seconds, score_seconds, solve_seconds, images_per_second, relabels.
        indices: positions in the given data of the images trained on (``max_images`` subset) or None.
        last_relabel: the SelfLabelResults of the last label optimisation of this call (or None).
        potentials: per head, the cluster potentials of its last label optimisation (or None).
    """

    model: nn.Module
    labels: torch.Tensor
    history: list[dict]
    config: TrainConfig
    timings: dict[str, float]
    indices: torch.Tensor | None = None
    last_relabel: list | None = None
    potentials: list | None = None

    def label_steps(self) -> list[dict]:
        """Every label optimisation's health record (see :func:`train`), in order, over all epochs."""
        return [row for record in self.history for row in record.get("label_steps", [])]


def train(config: TrainConfig, data=None, *, eval_data=None, callback: Callable[[dict], Any] | None = None,
          progress: bool = True, labels: torch.Tensor | None = None) -> TrainResult:
    """Train ``config.method`` on ``data`` (default: ``load_dataset(config.dataset)``); return a TrainResult.

    With ``config.checkpoint_dir`` set, resumes from its last checkpoint when there is one (config
    fields other than ``RESUMABLE_CHANGES`` must match), and writes one after every epoch.
    ``callback(record)`` is called after each epoch (after its checkpoint is written, so interrupting
    from the callback loses nothing); it may raise :class:`StopTraining` to end training early (a time
    budget, a plateau) and still get the result. ``labels`` (num_heads x N, or N) replaces the true
    targets of a ``method="supervised"`` run (label transfer; see :func:`transfer_labels`).

    Each history record holds: epoch (1-based), step, loss (mean over batches and heads), lr, relabels
    (optimisations during the epoch); per head: label_change (fraction of labels changed by the epoch's
    last optimisation), label_nmi_previous (NMI between the labels before and after it),
    cluster_size_spread (std of cluster size / (N/K)), nmi (against the true targets); then seconds,
    train_seconds, relabel_seconds (split into score_seconds and solve_seconds), checkpoint_seconds,
    images_per_second, knn_accuracy and knn_k on evaluation epochs (the weighted kNN with ``config.knn_k``
    neighbours, 200 by default; the final evaluation's k is 10), and ``label_steps``: one row per head solved
    in the epoch (epoch, step, head, warm, passes, converged, error, seconds) — the solver's health.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig (see config_from_preset), got {type(config).__name__}")
    config.validate()
    s, loop = build_run(config, data, labels)
    check_single_process(s)
    s.show = progress and s.rank == 0
    if config.eval_every and eval_data is None:
        warnings.warn("eval_every is set but no eval_data was given: no kNN evaluation", stacklevel=2)
    resume_from = ckpt.latest_checkpoint(s.ckpt_dir) if s.ckpt_dir else None
    if resume_from is not None:
        restore(s, loop, resume_from)
    if s.world > 1:
        s.net = nn.parallel.DistributedDataParallel(
            s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    s.net = compiled(s.net, config.compile)
    loop.last_results = None
    try:
        while loop.epoch < config.epochs:
            record = train_epoch(s, loop)
            if eval_data is not None and config.eval_every and loop.epoch % config.eval_every == 0:
                record.update(knn_during_training(s.model, s.data, eval_data, config, s.device))
            loop.history.append(record)
            if s.ckpt_dir is not None:
                record["checkpoint_seconds"] = save_state(s, loop)
            if callback is not None:
                try:
                    callback(record)
                except StopTraining:
                    break
    finally:
        s.model.eval()
    return TrainResult(model=s.model, labels=loop.labels.cpu(), history=loop.history, config=config,
                       timings=totals(loop.history), indices=s.subset, last_relabel=loop.last_results,
                       potentials=[None if p is None else p.clone() for p in loop.potentials])


def check_single_process(s: RunSetup) -> None:
    """Score mode "training" keeps rows by image index in one process's buffers; under torchrun each rank's
    shard changes every epoch, so its rows would be other images': refuse it there, naming the way out."""
    if s.world > 1 and keeps_head_outputs(s.config):
        raise ValueError(f"score_mode='training' runs in a single process only (this run has {s.world}): "
                         "use score_mode='plain' (or 'augmented') under torchrun")
    if s.world > 1 and s.config.method == "deepcluster-v2":
        raise ValueError(f"deepcluster-v2 keeps its memory bank by image in one process (this run has {s.world}): "
                         "run it in a single process")


def train_epoch(s: RunSetup, loop: LoopState) -> dict:
    """One epoch of SGD, with the label optimisations the schedule puts in it; returns its history record."""
    config = s.config
    s.loader.set_epoch(loop.epoch)
    s.net.train()
    t_epoch = time.perf_counter()
    timing = {"relabel_seconds": 0.0, "score_seconds": 0.0, "solve_seconds": 0.0}
    changes: dict = {"label_change": None, "label_nmi_previous": None}
    label_rows: list[dict] = []
    relabels_now, batches, health = 0, 0, None
    loss_sum = torch.zeros((), dtype=torch.float64, device=s.device)
    rotation_correct = torch.zeros((), dtype=torch.float64, device=s.device)
    bar = progress_bar(s.loader, s.show, f"epoch {loop.epoch + 1}/{config.epochs}", total=s.steps_per_epoch)
    shown_loss = HostValue(s.device)
    for x, _, index in bar:
        while loop.position < len(loop.schedule) and loop.schedule[loop.position] <= loop.step:
            part, rows, step_changes = label_step(s, loop)
            changes = step_changes or changes
            for key in timing:
                timing[key] += part[key]
            label_rows += rows
            relabels_now += 1
            if rows:
                health = health_text(rows)
                if s.show and not all(r["converged"] for r in rows):
                    bar.write(f"label step at step {loop.step}: " + ", ".join(
                        f"head {r['head']} {'converged' if r['converged'] else 'NOT converged'} "
                        f"({r['passes']} passes, error {r['error']:.1e})" for r in rows))
            s.net.train()
        loss, correct = sgd_step(s, loop, x, index, keep=kept_buffers(s, loop))
        loss_sum += loss
        rotation_correct += correct
        batches += 1
        loop.step += 1
        if s.show and batches % 10 == 0:  # the latest loss that has reached the host: the bar never waits
            shown = shown_loss.update(loss)
            bar.set_postfix(**({"loss": f"{shown:.3f}"} if shown is not None else {}),
                            **({"labels": health} if health else {}))
    # The epoch's one read of its losses: nothing inside the step waits for the GPU (a non-finite loss
    # is therefore caught here, at the end of its epoch, not at its step).
    loss_total = loss_sum.item()
    if not math.isfinite(loss_total):
        raise FloatingPointError(f"the loss became {loss_total} in epoch {loop.epoch + 1} (steps "
                                 f"{loop.step - batches + 1} to {loop.step}); lower lr, or check the data")
    s.method.end_epoch(s, loop)
    s.scheduler.step()
    loop.epoch += 1
    with torch.no_grad():
        dist_utils.average_buffers(s.model)
    sync(s.device)
    seconds = time.perf_counter() - t_epoch
    timing["seconds"] = seconds
    timing["train_seconds"] = seconds - timing["relabel_seconds"]
    timing["images_per_second"] = batches * config.batch_size * s.world / max(timing["train_seconds"], 1e-9)
    loss = dist_utils.all_reduce_mean(loss_total / max(batches, 1))
    record = epoch_record(loop.epoch, loop.step, loss, s.optimizer.param_groups[0]["lr"], changes,
                           loop.labels.cpu(), s.ks, s.targets, timing, relabels_now)
    record["label_steps"] = label_rows
    if config.rotation:  # of this rank's views: enough to watch it learn
        record["rotation_accuracy"] = rotation_correct.item() / max(4 * batches * config.batch_size, 1)
    return record


class HostValue:
    """A scalar of the device read on the host without waiting for the device (the progress bar's loss).

    On CUDA, :meth:`update` starts a non-blocking copy into pinned memory and returns the value of the
    last copy that has landed (None before the first); elsewhere it returns the value at once."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.value: float | None = None
        self._host = torch.zeros((), dtype=torch.float32, pin_memory=True) if self.cuda else None
        self._copied = None  # the CUDA event after the copy in flight

    def update(self, value: torch.Tensor) -> float | None:
        if not self.cuda:
            self.value = float(value)
            return self.value
        if self._copied is not None:
            if not self._copied.query():
                return self.value
            self.value = float(self._host)  # landed: a host tensor, read without the device
        self._host.copy_(value.detach().float(), non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return self.value


def compiled(net: nn.Module, how: bool | str) -> nn.Module:
    """``net`` under :func:`torch.compile` (``how``: True, or the name of a compile mode such as
    "reduce-overhead", which also captures CUDA graphs); ``net`` itself, with a warning, where torch has
    no compiler. Only the training step runs the compiled module: the scoring passes, the checkpoints and
    the result read the plain model (:func:`sela_edu.models.unwrap` looks through the wrapper)."""
    if not how:
        return net
    if not hasattr(torch, "compile"):
        warnings.warn("compile=True needs torch.compile (torch >= 2.0): training uncompiled", RuntimeWarning,
                      stacklevel=3)
        return net
    return torch.compile(net, **({} if how is True else {"mode": how}))


def kept_buffers(s: RunSetup, loop: LoopState) -> dict | None:
    """The buffers the training pass keeps its head outputs in (score mode "training", once they exist)."""
    if keeps_head_outputs(s.config) and has_kept_scores(loop, len(s.ks)):
        return loop.score_buffers
    return None


def sgd_step(s: RunSetup, loop: LoopState, x, index: torch.Tensor,
             keep: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch ``x`` (a tensor, or a list of crops under multi-crop) of the images ``index``
    with the method's loss (:mod:`sela_edu.training.methods`; SeLa's: cross-entropy against the current
    ``loop.labels``, averaged over heads, plus the rotation loss for SeLa + Rot). Returns the loss and the
    rotation head's correct guesses (0 without it).

    ``keep`` (head -> ScoreBuffer, score mode "training"): the heads' outputs of the upright views are kept
    there at the images' rows, in float32 (the buffer's), for the next label step."""
    index = index.to(s.device, non_blocking=True)  # the loaders' index is pinned on CUDA: no wait
    views = list(x) if isinstance(x, (list, tuple)) else [x]
    if s.config.channels_last and views[0].ndim == 4:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with torch.autocast(s.device.type, dtype=getattr(torch, s.config.amp_dtype), enabled=s.use_amp):
        loss, outputs, correct = s.method.loss(s, loop, views, index)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.method.before_update(s, loop)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    if keep is not None:
        keep_head_outputs(keep, index, outputs)
    return loss.detach(), correct.detach()


def epoch_record(epoch, step, loss, lr, changes, labels, ks, targets, timing, relabels) -> dict:
    """An epoch's history record (see :func:`train`): loss, label changes, cluster sizes, NMI, timings."""
    from sela_edu.evaluation.metrics import cluster_size_spread, nmi

    record = {
        "epoch": epoch,
        "step": step,
        "loss": loss,
        "lr": lr,
        "relabels": relabels,
        # Fraction of labels changed by the last optimisation in this epoch, per head (None: no
        # optimisation this epoch, or the first one, which replaces the random initial labels), and
        # the NMI between the labels before and after it (the paper's measure; blind to renamed ids,
        # which is what matters for k-means labels).
        **changes,
        "cluster_size_spread": [cluster_size_spread(labels[h], k)["std"] for h, k in enumerate(ks)],
        "nmi": None if targets is None else [nmi(targets, labels[h]) for h in range(len(ks))],
    }
    record.update(timing)
    return record


def totals(history: list[dict]) -> dict[str, float]:
    """Seconds, label optimisations and throughput summed over every epoch of ``history``."""
    keys = ("seconds", "train_seconds", "relabel_seconds", "score_seconds", "solve_seconds")
    totals = {k: float(sum(r.get(k, 0.0) for r in history)) for k in keys}
    totals["relabels"] = int(sum(r.get("relabels", 0) for r in history))
    images = sum(r.get("images_per_second", 0.0) * r.get("train_seconds", 0.0) for r in history)
    totals["images_per_second"] = images / totals["train_seconds"] if totals["train_seconds"] else 0.0
    return totals


__all__ = ['StopTraining', 'TrainResult', 'train']
