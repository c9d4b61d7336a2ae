"""A run's two records, what it is made of (:class:`RunSetup`, fixed once built) and the loop's state between
steps (:class:`LoopState`, with the head outputs score mode "training" keeps), and how that state survives
an interruption: RNG states, the checkpoint a run writes after every epoch, and the checks and restore that
continue a run bit for bit. (Both records live here, below the modules that build, step and loop them, so
that the training modules import one another in one direction only.)"""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sela_edu.training import checkpoint as ckpt
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.runtime import fused_sgd
from sela_edu.training.config import (ADDED_FIELDS, RESUMABLE_CHANGES, STORAGE_DTYPE_BY_NAME, TrainConfig,
                                      upgrade_field_names)


@dataclass
class RunSetup:
    """What a run is made of (fixed once built): data, model, optimiser, loaders, where it runs."""

    config: TrainConfig
    data: Any
    ks: list[int]
    targets: Any
    subset: torch.Tensor | None
    device: torch.device
    use_amp: bool
    rank: int
    world: int
    model: nn.Module
    net: nn.Module  # the model, wrapped in DDP in a distributed run
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    loader: Any  # augmented, shuffled training batches
    score_loader: Any  # what the label step scores (plain, or augmented in train mode)
    steps_per_epoch: int
    ckpt_dir: Path | None
    show: bool
    method: Any = None  # the run's training method (sela_edu.training.methods.Method)


@dataclass
class LoopState:
    """The state of the training loop that a checkpoint holds besides model and optimiser."""

    labels: torch.Tensor  # heads x N, on the training device
    potentials: list  # per head: float64 K-vector of its last label optimisation (warm start), or None
    schedule: list[int]
    epoch: int = 0
    step: int = 0
    position: int = 0  # next entry of ``schedule``
    relabel_count: int = 0
    has_optimised: bool = False
    history: list[dict] = field(default_factory=list)
    last_results: list | None = None
    # head -> ScoreBuffer: reused on the CPU (not saved); in score mode "training" the kept head outputs
    # the label step solves on (saved: see kept_scores_state)
    score_buffers: dict = field(default_factory=dict)


def keeps_head_outputs(config: TrainConfig) -> bool:
    """Whether the training pass keeps its head outputs for the label step (score mode "training")."""
    return config.score_mode == "training" and config.method == "sela"


def has_kept_scores(loop: LoopState, num_heads: int) -> bool:
    """Whether every head's buffer holds a kept score row for every image (score mode "training").

    Buffers enter ``loop.score_buffers`` in that mode only full: from the first optimisation's scoring
    pass over every image (every head's, whichever heads it solves) or from a checkpoint. After that the
    training pass only rewrites rows, so no row is ever left unscored: images that an epoch's last
    partial batch leaves out keep their older row.
    """
    return all(h in loop.score_buffers and loop.score_buffers[h].log_scores is not None for h in range(num_heads))


def rng_state(loader) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(loader, "generator", None)
    if "loader" in state and isinstance(generator, torch.Generator):
        generator.set_state(state["loader"])


def check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse to resume from a checkpoint written under another config (but for ``RESUMABLE_CHANGES``),
    naming the fields that differ. A config stored under old field names is read under the new ones."""
    saved = upgrade_field_names(saved, f"checkpoint {path}", stacklevel=4)  # at the train() call
    defaults = TrainConfig().to_dict()
    saved = {**{k: defaults[k] for k in ADDED_FIELDS}, **saved}  # written before these fields existed
    current = config.to_dict()
    differing = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differing)
        raise ValueError(f"checkpoint {path} was written with a different config ({details}). Use the same "
                         "settings to resume, or another checkpoint_dir for a new run.")


def restore(s: RunSetup, loop: LoopState, path: Path) -> None:
    """Continue from the checkpoint at ``path``: model, optimiser, labels, potentials, loop position, RNG."""
    state = ckpt.load_checkpoint(path)
    check_resumable(state["config"], s.config, path)
    shape = (len(s.ks), len(s.data))
    if tuple(state["labels"].shape) != shape:
        raise ValueError(f"checkpoint {path} holds labels for {tuple(state['labels'].shape)} "
                         f"(heads x images) but this run has {shape}: a different data set?")
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    for group in s.optimizer.param_groups:  # the saved groups carry the saving device's choice
        group["fused"] = fused_sgd(s.device)
    s.scheduler.load_state_dict(state["scheduler"])
    s.scaler.load_state_dict(state["scaler"])
    loop.labels = state["labels"].clone().to(s.device)
    loop.potentials = list(state.get("potentials") or [None] * len(s.ks))
    loop.epoch, loop.step, loop.history = state["epoch"], state["step"], list(state["history"])
    loop.relabel_count, loop.has_optimised = state["relabel_count"], state["has_optimised"]
    same_steps = state.get("steps_per_epoch") == s.steps_per_epoch
    if not same_steps:
        # Another number of processes (or images): batches per epoch differ, so continue from the
        # start of the saved epoch under the new step count. Not bit-exact, but the same recipe.
        warnings.warn(f"checkpoint {path} was written with {state.get('steps_per_epoch')} batches per "
                      f"epoch (world size {state.get('world_size')}); this run has {s.steps_per_epoch} "
                      f"(world size {s.world}): the relabelling schedule is re-spaced from epoch {loop.epoch}",
                      RuntimeWarning, stacklevel=3)
        loop.step = loop.epoch * s.steps_per_epoch
    if state["config"]["epochs"] == s.config.epochs and same_steps:
        loop.schedule, loop.position = list(state["schedule"]), state["schedule_position"]
    else:  # a longer (or shorter) run: same spacing rule over the new length, from here on
        loop.position = next((i for i, step in enumerate(loop.schedule) if step >= loop.step), len(loop.schedule))
    set_rng_state(state["rng"], s.loader)
    restore_kept_scores(s, loop, state.get("kept_scores"))
    s.method.load_state_dict(state.get("method_state") or {}, s)


def kept_scores_state(s: RunSetup, loop: LoopState) -> list[torch.Tensor] | None:
    """Score mode "training": every head's kept scores (float32 N x K, CPU), for the checkpoint; else None.

    Saved because they cannot be rebuilt: each row is the image's output at its last training batch (some
    from earlier epochs, some from the first optimisation's pass), and a resumed run that rescored them
    would solve on other numbers than the uninterrupted run.
    """
    if not (keeps_head_outputs(s.config) and has_kept_scores(loop, len(s.ks))):
        return None
    return [loop.score_buffers[h].log_scores.cpu() for h in range(len(s.ks))]


def restore_kept_scores(s: RunSetup, loop: LoopState, saved: list[torch.Tensor] | None) -> None:
    """Rebuild the buffers of score mode "training" from a checkpoint's kept scores (None: nothing kept
    yet, so the next label step scores every image, as the first one does)."""
    from sela_edu.labelling import ScoreBuffer

    loop.score_buffers = {}
    if saved is None:
        return
    dtype = STORAGE_DTYPE_BY_NAME[s.config.storage_dtype]
    for h, (k, scores) in enumerate(zip(s.ks, saved)):
        if tuple(scores.shape) != (len(s.data), k):
            raise ValueError(f"the checkpoint's kept scores of head {h} are {tuple(scores.shape)}, "
                             f"this run needs {(len(s.data), k)}")
        buffer = ScoreBuffer(len(s.data), k, s.config.lam, storage_dtype=dtype, device=s.device, keep_scores=True)
        buffer.log_scores.copy_(scores)
        loop.score_buffers[h] = buffer


def save_state(s: RunSetup, loop: LoopState) -> float:
    """Write last.pt (rank 0) and wait for every rank; returns the seconds it took."""
    t0 = time.perf_counter()
    if s.rank == 0:
        ckpt.save_rotating(s.ckpt_dir, {
            "config": s.config.to_dict(), "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(), "labels": loop.labels.cpu(),
            "potentials": loop.potentials, "epoch": loop.epoch, "step": loop.step, "schedule": loop.schedule,
            "schedule_position": loop.position, "relabel_count": loop.relabel_count,
            "has_optimised": loop.has_optimised, "history": loop.history, "rng": rng_state(s.loader),
            "indices": s.subset, "world_size": s.world, "steps_per_epoch": s.steps_per_epoch,
            "kept_scores": kept_scores_state(s, loop), "method_state": s.method.state_dict(),
        })
    dist_utils.barrier()
    return time.perf_counter() - t0


__all__ = ['RunSetup', 'LoopState', 'keeps_head_outputs', 'has_kept_scores', 'rng_state', 'set_rng_state',
           'check_resumable', 'restore', 'save_state', 'kept_scores_state', 'restore_kept_scores']
