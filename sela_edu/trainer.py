"""The self-labelling loop (SeLa) and its presets.

Training alternates two steps, as in the paper and the official code:

1. **Label optimisation.** At ``nopts`` moments spread over training (:func:`relabel_schedule`), the
   network scores the whole data set without augmentation; the scores are streamed batch by batch
   into one :class:`~sela_edu.sinkhorn.ScoreBuffer` per head, and Sinkhorn-Knopp
   (:func:`~sela_edu.sinkhorn.self_label`) turns them into equipartitioned labels for every head.
2. **Representation learning.** Between optimisations, SGD on the mean over heads of the
   cross-entropy against the current labels, on augmented images.

Labels start random and equipartitioned (a seeded permutation of ``arange(N) % K`` per head). Two
comparison methods share the loop: ``method="kmeans"`` takes labels from k-means on the current
features instead (DeepCluster-style; the heads are re-initialised after each clustering, because
k-means cluster ids carry no meaning from one clustering to the next), and ``method="supervised"``
trains on the true classes (or on any fixed labels: :func:`transfer_labels`) without relabelling.

Quick start (a notebook)::

    from sela_edu.data import load_dataset
    from sela_edu.trainer import config_from_preset, train
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
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from . import distributed as dist_utils
from .settings import pick_device, seed_everything

METHODS = ("sela", "kmeans", "supervised")
SCHEDULES = ("even", "quadratic")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Config fields that may change between a run and its resumption (they do not change the maths).
# Settings that do not change what is trained (where it runs, how it is watched), so a checkpoint
# written under other values resumes exactly.
RESUMABLE_CHANGES = ("epochs", "checkpoint_dir", "device", "num_workers", "eval_every", "knn_k")


@dataclass
class TrainConfig:
    """Every setting of a training run. Build one with :func:`config_from_preset` and override fields.

    Attributes:
        dataset: data set name for :func:`sela_edu.data.load_dataset` (used when ``train`` gets no data).
        arch: one of ``sela_edu.models.ARCHS``, or ``"auto"``: alexnet32 for images up to 64 px, else alexnet.
        num_heads, num_clusters: heads, and K for every head (an int) or per head (a list).
        lam: Sinkhorn's lambda (inverse entropic regularisation; the paper uses 10 on CIFAR, 25 on ImageNet).
        epochs, nopts, nopt_schedule: training length; number of label optimisations and their spacing
            ("even" or "quadratic", denser late, see :func:`relabel_schedule`).
        batch_size, lr, momentum, weight_decay, lr_milestones, lr_gamma: SGD, with the learning rate
            multiplied by ``lr_gamma`` at each epoch in ``lr_milestones`` (``lr_schedule="step"``) or
            decayed to zero along a cosine over the epochs (``lr_schedule="cosine"``). ``batch_size`` is
            per process.
        method: "sela", "kmeans" or "supervised".
        storage_dtype: dtype of the score buffers the solver reads ("float32", "float16" or "bfloat16").
        sinkhorn_tol, sinkhorn_max_iter: the solver's stopping rule.
        device: "auto" (GPU when there is one), "cpu", "cuda", "cuda:1", ...
        amp: mixed precision (autocast float16 + GradScaler); applied on CUDA only.
        seed: seeds model init, initial labels, shuffling and augmentation.
        checkpoint_dir: folder for last.pt / prev.pt (None: no checkpoints, no resuming).
        eval_every: with ``eval_data``, weighted-kNN accuracy every this many epochs (0: never).
        num_workers: DataLoader workers for image folders (in-memory sets need none).
        max_images: train on a seeded random subset of this many images (None: all).
        score_batch_size: batch size of the scoring passes (None: twice ``batch_size``).
        knn_k: neighbours for the kNN evaluation.
    """

    dataset: str = "digits"
    arch: str = "smallcnn"
    num_heads: int = 1
    num_clusters: int | list[int] = 10
    lam: float = 10.0
    epochs: int = 10
    nopts: int = 10
    nopt_schedule: str = "even"
    batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    lr_schedule: str = "step"
    method: str = "sela"
    storage_dtype: str = "float32"
    sinkhorn_tol: float = 1e-3
    sinkhorn_max_iter: int = 1000
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    checkpoint_dir: str | None = None
    eval_every: int = 0
    num_workers: int = 0
    max_images: int | None = None
    score_batch_size: int | None = None
    knn_k: int = 200

    def __post_init__(self) -> None:
        if isinstance(self.num_clusters, tuple):
            self.num_clusters = list(self.num_clusters)
        self.lr_milestones = [int(m) for m in self.lr_milestones]
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        for name in ("num_heads", "epochs", "batch_size", "sinkhorn_max_iter", "knn_k"):
            positive_int(name)
        for name in ("nopts", "seed", "eval_every", "num_workers"):
            positive_int(name, 0)
        for name in ("max_images", "score_batch_size"):
            if getattr(self, name) is not None:
                positive_int(name, 2 if name == "max_images" else 1)
        self.cluster_list()  # validates num_clusters against num_heads
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose 'step' or 'cosine'")
        if self.nopt_schedule not in SCHEDULES:
            raise ValueError(f"unknown nopt_schedule {self.nopt_schedule!r}; choose one of {SCHEDULES}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"unknown storage_dtype {self.storage_dtype!r}; choose one of {tuple(STORAGE_DTYPES)}")
        from .models import ARCHS

        if self.arch != "auto" and self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose 'auto' or one of {ARCHS}")
        for name in ("lam", "lr", "sinkhorn_tol", "lr_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be below 1, got {self.momentum}")
        if any(m < 1 for m in self.lr_milestones) or sorted(self.lr_milestones) != self.lr_milestones:
            raise ValueError(f"lr_milestones must be increasing epoch numbers >= 1, got {self.lr_milestones}")

    def cluster_list(self) -> list[int]:
        """K of every head, as a list."""
        if isinstance(self.num_clusters, (list, tuple)):
            ks = list(self.num_clusters)
            if len(ks) != self.num_heads:
                raise ValueError(f"num_clusters lists {len(ks)} values but num_heads is {self.num_heads}")
        else:
            ks = [self.num_clusters] * self.num_heads
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
                raise ValueError(f"every number of clusters must be an integer >= 2, got {self.num_clusters!r}")
        return [int(k) for k in ks]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Named settings. Every field can be overridden: ``config_from_preset("classroom", epochs=3)``.
PRESETS: dict[str, dict[str, Any]] = {
    # The official CIFAR-10/100 and SVHN recipe (cifar.py of yukimasano/self-label): learning rate
    # x0.1 at epochs 240 and 320 of 400. "auto" picks alexnet32 for 32 px images.
    "cifar-paper": dict(dataset="cifar10", arch="auto", num_heads=10, num_clusters=128, lam=10.0, epochs=400,
                        nopts=400, nopt_schedule="even", batch_size=128, lr=0.03, momentum=0.9,
                        weight_decay=5e-4, lr_milestones=[240, 320], lr_gamma=0.1, storage_dtype="float32"),
    # The official ImageNet recipe (main.py): 10 heads x 3000 clusters, lambda 25, 100 optimisations
    # spaced quadratically, lr 0.05, x0.1 every 150 epochs, and 0.05 x 1e-3 from epoch 350. Scores are
    # stored in bfloat16 (float32's range at half the memory; float16 underflows below 6e-8): 1.28M x
    # 3000 x 10 heads is 77 GB, to be spread over the ranks of a distributed run.
    "imagenet-paper": dict(dataset="imagenet", arch="alexnet", num_heads=10, num_clusters=3000, lam=25.0,
                           epochs=400, nopts=100, nopt_schedule="quadratic", batch_size=256, lr=0.05,
                           momentum=0.9, weight_decay=1e-5, lr_milestones=[150, 300, 350], lr_gamma=0.1,
                           storage_dtype="bfloat16", num_workers=8),
    # Minutes on a laptop CPU (benchmarks/recipe_search.py and benchmarks/fashion_study.py, README):
    # Fashion-MNIST, the small CNN (all-stride-2 convs, flattened 4 x 4 map, 256-d feature), one head of
    # 10 clusters and three over-clustering heads (they shape the features), lambda 10, cosine learning
    # rate, and 16 label optimisations spaced quadratically: dense at the start, when labels of a young
    # network change fast and early relabelling is what lifts NMI, sparse at the end.
    "classroom": dict(dataset="fashion-mnist", arch="smallcnn", num_heads=4, num_clusters=[10, 20, 50, 100],
                      lam=10.0, epochs=8, nopts=16, nopt_schedule="quadratic", batch_size=256, lr=0.05,
                      momentum=0.9, weight_decay=5e-4, lr_milestones=[], lr_schedule="cosine",
                      storage_dtype="float32"),
    # Seconds: two epochs on a few hundred digits, for tests and for checking an installation.
    "smoke": dict(dataset="digits", arch="smallcnn", num_heads=2, num_clusters=[10, 20], lam=10.0, epochs=2,
                  nopts=2, nopt_schedule="even", batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
                  lr_milestones=[], max_images=320, storage_dtype="float32"),
}


def config_from_preset(name: str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from the preset ``name`` with ``overrides`` applied.

    Raises ValueError for an unknown preset or field (listing the valid ones) and for bad values.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {tuple(PRESETS)}")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields are {fields}")
    return TrainConfig(**{**PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------------
# Small pieces (public: the notebooks use them one by one)
# --------------------------------------------------------------------------------------------------


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


def resolve_arch(arch: str, image_size: int) -> str:
    """``"auto"`` becomes alexnet32 for images up to 64 px and alexnet above; anything else is kept."""
    if arch == "auto":
        return "alexnet32" if image_size <= 64 else "alexnet"
    return arch


def build_for_config(config: TrainConfig, data, num_clusters: list[int] | None = None):
    """The config's network for ``data``, freshly initialised from ``config.seed`` (on the CPU)."""
    from .models import build_model

    ks = config.cluster_list() if num_clusters is None else list(num_clusters)
    torch.manual_seed(config.seed)
    return build_model(resolve_arch(config.arch, data.image_size), num_heads=len(ks), num_clusters=ks,
                       in_channels=data.num_channels, image_size=data.image_size)


def random_init_model(config: TrainConfig, data) -> nn.Module:
    """The untrained network (the "random init" baseline of the paper's tables), in eval mode."""
    return build_for_config(config, data).eval()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _kept_rows(loader) -> int:
    """Rows of this rank's non-augmented pass that are real images, not the shard padding.

    make_loader pads the ordered list to a multiple of world_size and deals it out round robin, so
    rank r's k-th row is global position r + k * world_size; positions >= N are padding repeats.
    Leaving them out keeps the solver's equipartition over exactly N images.
    """
    n = len(loader.data)
    if loader.world_size <= 1:
        return n
    positions = loader.rank + torch.arange(loader.num_samples) * loader.world_size
    return int((positions < n).sum())


def _plain_loader(data, batch_size: int, device: torch.device, seed: int, num_workers: int):
    from .data import make_loader

    distributed = dist_utils.get_world_size() > 1
    return make_loader(data, batch_size, train=False, shuffle=False, device=device, seed=seed,
                       distributed=distributed, num_workers=num_workers)


@torch.no_grad()
def relabel(model: nn.Module, data, *, lam: float = 10.0, batch_size: int = 512, device=None,
            storage_dtype: torch.dtype | str = torch.float32, tol: float = 1e-3, max_iter: int = 1000,
            amp: bool = False, progress: bool = False, loader=None, timings: dict | None = None) -> list:
    """Optimise labels for every head of ``model`` on ``data`` (SeLa's step 1).

    Scores every image once without augmentation (eval mode), streaming each batch into one
    :class:`~sela_edu.sinkhorn.ScoreBuffer` per head, then solves with
    :func:`~sela_edu.sinkhorn.self_label`. Returns one SelfLabelResult per head whose ``labels`` cover
    all N images in data order (gathered from every rank in a distributed run). ``timings``, when
    given, receives ``score_seconds`` and ``solve_seconds``.
    """
    from .sinkhorn import ScoreBuffer, self_label

    net = _unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if isinstance(storage_dtype, str):
        storage_dtype = STORAGE_DTYPES[storage_dtype]
    if loader is None:
        loader = _plain_loader(data, batch_size, device, 0, 0)
    ks = [head.out_features for head in net.heads]
    rows = _kept_rows(loader)
    use_amp = amp and device.type == "cuda"
    was_training = net.training
    net.eval()
    _sync(device)
    t0 = time.perf_counter()
    buffers = [ScoreBuffer(rows, k, lam, storage_dtype=storage_dtype, device=device) for k in ks]
    seen: list[torch.Tensor] = []
    filled = 0
    for x, _, index in _progress(loader, progress, "scoring"):
        take = min(index.shape[0], rows - filled)
        if take <= 0:
            break
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = net(x[:take])
        for buffer, scores in zip(buffers, outputs):
            buffer.add(scores)
        seen.append(index[:take].cpu())
        filled += take
    _sync(device)
    t1 = time.perf_counter()
    results = self_label(buffers, tol=tol, max_iter=max_iter)
    if not isinstance(results, (list, tuple)):
        results = [results]
    indices = torch.cat(seen)
    local = torch.stack([r.labels.cpu() for r in results])
    if dist_utils.get_world_size() > 1:
        full = dist_utils.all_gather_labels(local, indices, len(data))
    else:
        full = torch.empty_like(local)
        full[:, indices] = local
    out = [_with_labels(r, full[h]) for h, r in enumerate(results)]
    _sync(device)
    t2 = time.perf_counter()
    net.train(was_training)
    if timings is not None:
        timings["score_seconds"] = t1 - t0
        timings["solve_seconds"] = t2 - t1
    return out


def _with_labels(result, labels: torch.Tensor):
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, labels=labels)
    result.labels = labels
    return result


@torch.no_grad()
def compute_features(model: nn.Module, data, *, batch_size: int = 512, device=None, loader=None,
                     amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of this rank's images without augmentation, and their positions: (n x D float32 CPU, n)."""
    net = _unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if loader is None:
        loader = _plain_loader(data, batch_size, device, 0, 0)
    rows = _kept_rows(loader)
    was_training = net.training
    net.eval()
    feats, seen, filled = [], [], 0
    for x, _, index in loader:
        take = min(index.shape[0], rows - filled)
        if take <= 0:
            break
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            feats.append(net.features(x[:take]).float().cpu())
        seen.append(index[:take].cpu())
        filled += take
    net.train(was_training)
    return torch.cat(feats), torch.cat(seen)


def kmeans_relabel(model: nn.Module, data, num_clusters: list[int], *, seed: int = 0, batch_size: int = 512,
                   loader=None, timings: dict | None = None, amp: bool = False) -> torch.Tensor:
    """k-means pseudo-labels (num_heads x N) on the model's current features, DeepCluster-style.

    In a distributed run the features are gathered, rank 0 clusters, and the labels are broadcast.
    Heads with the same K get different k-means seeds, so they differ as SeLa's heads do.
    """
    from .baselines import kmeans_labels

    device = next(_unwrap(model).parameters()).device
    _sync(device)
    t0 = time.perf_counter()
    feats, indices = compute_features(model, data, batch_size=batch_size, loader=loader, amp=amp)
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


def _progress(iterable, enabled: bool, desc: str, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, **kw)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


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
    """

    model: nn.Module
    labels: torch.Tensor
    history: list[dict]
    config: TrainConfig
    timings: dict[str, float]
    indices: torch.Tensor | None = None
    last_relabel: list | None = None


def subset_indices(num_images: int, max_images: int | None, seed: int) -> torch.Tensor | None:
    """Sorted positions of the seeded random ``max_images`` subset (None when all images are used)."""
    if max_images is None or max_images >= num_images:
        return None
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return torch.randperm(num_images, generator=g)[:max_images].sort().values


def _fixed_labels(config: TrainConfig, data, labels) -> torch.Tensor | None:
    """The targets of a supervised run (num_heads x N), checked against the heads."""
    if config.method != "supervised":
        if labels is not None:
            raise ValueError("labels= is for method='supervised' (label transfer); "
                             f"this config has method={config.method!r}")
        return None
    if labels is None:
        targets = getattr(data, "targets", None)
        if targets is None or len(targets) != len(data):
            raise ValueError("method='supervised' needs data with targets, or labels=")
        labels = torch.as_tensor(targets).long().unsqueeze(0).expand(config.num_heads, -1)
    labels = torch.as_tensor(labels).long()
    if labels.dim() == 1:
        labels = labels.unsqueeze(0).expand(config.num_heads, -1)
    if labels.shape != (config.num_heads, len(data)):
        raise ValueError(f"labels must be N = {len(data)} or num_heads x N = {config.num_heads} x {len(data)}, "
                         f"got shape {tuple(labels.shape)}")
    if labels.min() < 0:
        raise ValueError("labels must be non-negative")
    ks = config.cluster_list()
    for h, k in enumerate(ks):
        top = int(labels[h].max())
        if top >= k:
            raise ValueError(f"head {h} has K = {k} outputs but its labels go up to {top}: set num_clusters "
                             f"to at least {top + 1} (transfer_labels does this for you)")
    return labels.contiguous()


def _rng_state(loader) -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any], loader) -> None:
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


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = config.to_dict()
    differing = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differing)
        raise ValueError(f"checkpoint {path} was written with a different config ({details}). Use the same "
                         "settings to resume, or another checkpoint_dir for a new run.")


def _epoch_record(epoch, step, loss, lr, changes, labels, ks, targets, timing, relabels, extra) -> dict:
    from .metrics import cluster_size_spread, nmi

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
    record.update(extra)
    return record


def _changes(previous: torch.Tensor, new: torch.Tensor) -> dict[str, list[float]]:
    from .metrics import label_change, label_change_nmi

    return {"label_change": [label_change(a, b) for a, b in zip(previous, new)],
            "label_nmi_previous": [label_change_nmi(a, b) for a, b in zip(previous, new)]}


def _evaluate(model, data, eval_data, config, device) -> dict[str, float]:
    """Weighted kNN accuracy of the current features on ``eval_data`` (train split as memory bank)."""
    from . import evaluation
    from .data import make_loader

    net = _unwrap(model)
    bs = config.score_batch_size or 2 * config.batch_size
    # Every rank evaluates on the whole of both sets (no shards): the numbers agree across ranks.
    train_feats = evaluation.extract_features(net, make_loader(data, bs, train=False, device=device))
    test_feats = evaluation.extract_features(net, make_loader(eval_data, bs, train=False, device=device))
    acc = evaluation.knn_accuracy(train_feats, data.targets, test_feats, eval_data.targets, k=config.knn_k)
    return {"knn_accuracy": float(acc)}


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
    images_per_second, and knn_accuracy on evaluation epochs.
    """
    from .data import load_dataset, make_loader

    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig (see config_from_preset), got {type(config).__name__}")
    config.validate()
    if data is None:
        data = load_dataset(config.dataset, "train")
    rank, world = dist_utils.init_from_env()
    device = dist_utils.device_for_rank(pick_device(config.device))
    use_amp = bool(config.amp) and device.type == "cuda"
    if config.eval_every and eval_data is None:
        warnings.warn("eval_every is set but no eval_data was given: no kNN evaluation", stacklevel=2)

    subset = subset_indices(len(data), config.max_images, config.seed)
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape[-1] != len(data):
            raise ValueError(f"labels cover {labels.shape[-1]} images but the data has {len(data)}")
        if subset is not None:
            labels = labels[..., subset]
    if subset is not None:
        data = data.subset(subset)
    n = len(data)
    ks = config.cluster_list()
    fixed = _fixed_labels(config, data, labels)
    targets = getattr(data, "targets", None)
    if targets is not None and (len(targets) != n or int(torch.as_tensor(targets).min()) < 0):
        targets = None

    seed_everything(config.seed)
    model = build_for_config(config, data).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.lr_milestones,
                                                         gamma=config.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loader = make_loader(data, config.batch_size, train=True, device=device, seed=config.seed,
                         distributed=world > 1, num_workers=config.num_workers)
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise ValueError(f"no full batch: {n} images per process and batch_size {config.batch_size}; "
                         "lower batch_size")
    score_bs = config.score_batch_size or 2 * config.batch_size
    plain = _plain_loader(data, score_bs, device, config.seed, config.num_workers)
    relabels_on = config.method != "supervised"
    schedule = relabel_schedule(config.epochs, config.nopts if relabels_on else 0, config.nopt_schedule,
                                steps_per_epoch)

    current = fixed if fixed is not None else initial_labels(n, ks, config.seed)
    epoch, step, position, relabel_count, history = 0, 0, 0, 0, []
    has_optimised = False
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    resume_from = ckpt.latest_checkpoint(ckpt_dir) if ckpt_dir else None
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from)
        _check_resumable(state["config"], config, resume_from)
        if tuple(state["labels"].shape) != (len(ks), n):
            raise ValueError(f"checkpoint {resume_from} holds labels for {tuple(state['labels'].shape)} "
                             f"(heads x images) but this run has {(len(ks), n)}: a different data set?")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        current = state["labels"].clone()
        epoch, step, history = state["epoch"], state["step"], list(state["history"])
        relabel_count, has_optimised = state["relabel_count"], state["has_optimised"]
        same_steps = state.get("steps_per_epoch") == steps_per_epoch
        if not same_steps:
            # Another number of processes (or images): batches per epoch differ, so continue from the
            # start of the saved epoch under the new step count. Not bit-exact, but the same recipe.
            warnings.warn(f"checkpoint {resume_from} was written with {state.get('steps_per_epoch')} batches per "
                          f"epoch (world size {state.get('world_size')}); this run has {steps_per_epoch} "
                          f"(world size {world}): the relabelling schedule is re-spaced from epoch {epoch}",
                          RuntimeWarning, stacklevel=2)
            step = epoch * steps_per_epoch
        if state["config"]["epochs"] == config.epochs and same_steps:
            schedule, position = list(state["schedule"]), state["schedule_position"]
        else:  # a longer (or shorter) run: same spacing rule over the new length, from here on
            position = next((i for i, s in enumerate(schedule) if s >= step), len(schedule))
        _set_rng_state(state["rng"], loader)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    labels_dev = current.to(device)
    show = progress and rank == 0
    last_results = None

    try:
        while epoch < config.epochs:
            loader.set_epoch(epoch)
            net.train()
            t_epoch = time.perf_counter()
            timing = {"relabel_seconds": 0.0, "score_seconds": 0.0, "solve_seconds": 0.0}
            changes, relabels_now = {"label_change": None, "label_nmi_previous": None}, 0
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            batches = 0
            bar = _progress(loader, show, f"epoch {epoch + 1}/{config.epochs}", total=steps_per_epoch)
            for x, _, index in bar:
                while position < len(schedule) and schedule[position] <= step:
                    t_relabel = time.perf_counter()
                    with torch.no_grad():
                        dist_utils.average_buffers(model)
                    part: dict[str, float] = {}
                    previous = labels_dev.cpu()
                    if config.method == "sela":
                        last_results = relabel(model, data, lam=config.lam, device=device,
                                               storage_dtype=config.storage_dtype, tol=config.sinkhorn_tol,
                                               max_iter=config.sinkhorn_max_iter, amp=use_amp, loader=plain,
                                               timings=part)
                        new = torch.stack([r.labels.cpu() for r in last_results])
                    else:  # kmeans
                        new = kmeans_relabel(model, data, ks, seed=config.seed + 1000 * relabel_count,
                                             loader=plain, timings=part, amp=use_amp)
                        _reinit_heads(model, optimizer)
                    if has_optimised:
                        changes = _changes(previous, new)
                    has_optimised = True
                    labels_dev = new.to(device)
                    position += 1
                    relabel_count += 1
                    relabels_now += 1
                    net.train()
                    timing["score_seconds"] += part.get("score_seconds", 0.0)
                    timing["solve_seconds"] += part.get("solve_seconds", 0.0)
                    timing["relabel_seconds"] += time.perf_counter() - t_relabel
                index = index.to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    outputs = net(x)
                    loss = torch.stack([F.cross_entropy(out.float(), labels_dev[h, index])
                                        for h, out in enumerate(outputs)]).mean()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach()
                batches += 1
                step += 1
                # Checked every 50 steps, not every step: reading a GPU value waits for the GPU.
                if (batches % 50 == 0 or batches == steps_per_epoch) and not torch.isfinite(loss_sum):
                    raise FloatingPointError(f"the loss became {loss_sum.item()} by step {step} (epoch {epoch + 1}); "
                                             "lower lr, or check the data")
                if show and batches % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            scheduler.step()
            epoch += 1
            with torch.no_grad():
                dist_utils.average_buffers(model)
            _sync(device)
            seconds = time.perf_counter() - t_epoch
            current = labels_dev.cpu()
            timing["seconds"] = seconds
            timing["train_seconds"] = seconds - timing["relabel_seconds"]
            timing["images_per_second"] = batches * config.batch_size * world / max(timing["train_seconds"], 1e-9)
            extra = {}
            if eval_data is not None and config.eval_every and epoch % config.eval_every == 0:
                extra.update(_evaluate(model, data, eval_data, config, device))
            record = _epoch_record(epoch, step, dist_utils.all_reduce_mean(loss_sum.item() / max(batches, 1)),
                                   optimizer.param_groups[0]["lr"], changes, current, ks,
                                   targets, timing, relabels_now, extra)
            history.append(record)
            if ckpt_dir is not None:
                t_ckpt = time.perf_counter()
                if rank == 0:
                    ckpt.save_rotating(ckpt_dir, {
                        "config": config.to_dict(), "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(), "labels": current, "epoch": epoch, "step": step,
                        "schedule": schedule, "schedule_position": position, "relabel_count": relabel_count,
                        "has_optimised": has_optimised, "history": history, "rng": _rng_state(loader),
                        "indices": subset, "world_size": world, "steps_per_epoch": steps_per_epoch,
                    })
                dist_utils.barrier()
                record["checkpoint_seconds"] = time.perf_counter() - t_ckpt
            if callback is not None:
                try:
                    callback(record)
                except StopTraining:
                    break
    finally:
        model.eval()

    return TrainResult(model=model, labels=labels_dev.cpu(), history=history, config=config,
                       timings=_totals(history), indices=subset, last_relabel=last_results)


def _reinit_heads(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fresh head weights in place (so optimiser and DDP keep their references) and no stale momentum."""
    net = _unwrap(model)
    with torch.no_grad():
        for head in net.heads:
            nn.init.normal_(head.weight, 0.0, 0.01)
            nn.init.zeros_(head.bias)
            for p in head.parameters():
                optimizer.state.pop(p, None)
                p.copy_(dist_utils.broadcast_tensor(p.detach().clone()))


def _totals(history: list[dict]) -> dict[str, float]:
    keys = ("seconds", "train_seconds", "relabel_seconds", "score_seconds", "solve_seconds")
    totals = {k: float(sum(r.get(k, 0.0) for r in history)) for k in keys}
    totals["relabels"] = int(sum(r.get("relabels", 0) for r in history))
    images = sum(r.get("images_per_second", 0.0) * r.get("train_seconds", 0.0) for r in history)
    totals["images_per_second"] = images / totals["train_seconds"] if totals["train_seconds"] else 0.0
    return totals


def transfer_labels(config: TrainConfig, data, labels, *, eval_data=None, callback=None,
                    progress: bool = True) -> TrainResult:
    """Train a fresh network supervised on given pseudo-labels (the paper's "label transfer").

    ``labels`` is num_heads x N (e.g. from :func:`sela_edu.labels_io.read_labels_csv`) or N. The network
    gets one head per label row with K = that row's largest label + 1; everything else comes from
    ``config`` (its method is set to "supervised").
    """
    labels = torch.as_tensor(labels).long()
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if labels.dim() != 2 or labels.numel() == 0:
        raise ValueError(f"labels must be num_heads x N, got shape {tuple(labels.shape)}")
    ks = [max(int(row.max()) + 1, 2) for row in labels]
    transfer = dataclasses.replace(config, method="supervised", num_heads=len(ks), num_clusters=ks)
    return train(transfer, data, eval_data=eval_data, callback=callback, progress=progress, labels=labels)


__all__ = ["TrainConfig", "TrainResult", "StopTraining", "PRESETS", "METHODS", "SCHEDULES", "config_from_preset", "train",
           "relabel", "relabel_schedule", "initial_labels", "kmeans_relabel", "compute_features",
           "random_init_model", "build_for_config", "transfer_labels", "subset_indices", "resolve_arch"]
