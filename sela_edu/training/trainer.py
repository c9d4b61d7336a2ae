"""The self-labelling loop (SeLa) and its presets.

Training alternates two steps, as in the paper and the official code:

1. **Label optimisation.** At ``nopts`` moments spread over training (:func:`relabel_schedule`), the
   network scores the whole data set without augmentation; the scores are streamed batch by batch
   into one :class:`~sela_edu.labelling.ScoreBuffer` per head, and Sinkhorn-Knopp
   (:func:`~sela_edu.labelling.self_label`) turns them into equipartitioned labels for every head.
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

from sela_edu.training import checkpoint as ckpt
from sela_edu.training import distributed as dist_utils
from sela_edu.settings import pick_device, seed_everything

METHODS = ("sela", "kmeans", "supervised")
SCHEDULES = ("even", "quadratic")
SCORE_MODES = ("plain", "augmented")
RELABEL_HEADS = ("all", "round-robin")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Config fields that may change between a run and its resumption (they do not change the maths).
# Settings that do not change what is trained (where it runs, how it is watched), so a checkpoint
# written under other values resumes exactly.
RESUMABLE_CHANGES = ("epochs", "checkpoint_dir", "device", "num_workers", "eval_every", "knn_k", "knn_pca")


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
        knn_k, knn_pca: neighbours for the kNN evaluation, and the PCA dimension of the features before it
            (None: none; the official CIFAR code uses k = 10 after PCA to 128).
        image_size: train and label at this size (None: the data's own). The official CIFAR code upsamples
            32 px images as torchvision's Resize(256) + RandomResizedCrop(224) for training and Resize(256)
            + CenterCrop(224) for labels and features; ``image_size=224`` does the same.
        score_mode: what the label step scores: "plain" (un-augmented images, network in eval mode, the
            kit's default) or "augmented" (the training augmentation with BatchNorm in train mode, as the
            official CIFAR code, which scores its training loader).
        relabel_heads: "all" heads at every label optimisation (official ImageNet code) or "round-robin",
            one head per optimisation in turn (official CIFAR code: head ``epoch % heads``).
        warm_start: start each head's label optimisation from its cluster potentials of the previous one
            (the same labels in fewer solver passes).
        rotation: SeLa + Rot (the official retrain_with_rotnet.py): a 4-way rotation head beside the
            clustering heads; every batch is seen at 0, 90, 180 and 270 degrees, the clustering loss is
            taken on the upright views, the rotation loss on all four, and the two are added.
        head_temperature: None for the paper's linear heads; T for cosine heads (the cosine between the
            feature and each cluster's weight vector, divided by T, as SwAV's prototypes).
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
    knn_pca: int | None = None
    image_size: int | None = None
    score_mode: str = "plain"
    relabel_heads: str = "all"
    warm_start: bool = True
    rotation: bool = False
    head_temperature: float | None = None

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
        for name, minimum in (("max_images", 2), ("score_batch_size", 1), ("knn_pca", 1), ("image_size", 8)):
            if getattr(self, name) is not None:
                positive_int(name, minimum)
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"unknown score_mode {self.score_mode!r}; choose one of {SCORE_MODES}")
        if self.relabel_heads not in RELABEL_HEADS:
            raise ValueError(f"unknown relabel_heads {self.relabel_heads!r}; choose one of {RELABEL_HEADS}")
        for name in ("warm_start", "rotation", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self.cluster_list()  # validates num_clusters against num_heads
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose 'step' or 'cosine'")
        if self.nopt_schedule not in SCHEDULES:
            raise ValueError(f"unknown nopt_schedule {self.nopt_schedule!r}; choose one of {SCHEDULES}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"unknown storage_dtype {self.storage_dtype!r}; choose one of {tuple(STORAGE_DTYPES)}")
        from sela_edu.models import ARCHS, check_head_temperature

        check_head_temperature(self.head_temperature)
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
    # The official CIFAR-10/100 and SVHN recipe, as cifar.py of yukimasano/self-label runs it: CIFAR
    # upsampled to 224 px (Resize 256 + RandomResizedCrop 224; Resize 256 + CenterCrop 224 for labels
    # and features) into the ImageNet AlexNet; 10 heads x 128 clusters, lambda 10; 400 optimisations
    # evenly spaced over 400 epochs, each solving ONE head in turn (head = epoch % heads) on scores of
    # the training loader (augmented images, BatchNorm in train mode); SGD lr 0.03, x0.1 at epochs 240
    # and 320; final kNN k = 10, sigma 0.1 on the 4096-d fc features after PCA to 128. The kit's
    # departures: float32 storage of P with float64 cluster potentials instead of float64 throughout,
    # its own stopping rule (tol on the cluster masses) and warm-started solver.
    "cifar-paper": dict(dataset="cifar10", arch="alexnet", image_size=224, num_heads=10, num_clusters=128,
                        lam=10.0, epochs=400, nopts=400, nopt_schedule="even", batch_size=128, lr=0.03,
                        momentum=0.9, weight_decay=5e-4, lr_milestones=[240, 320], lr_gamma=0.1,
                        score_mode="augmented", relabel_heads="round-robin", storage_dtype="float32",
                        knn_k=10, knn_pca=128, num_workers=0),
    # The kit's 32 px variant of that recipe: CIFAR at its own size into the CIFAR AlexNet (alexnet32),
    # every head relabelled at every optimisation on plain images. About 50x cheaper per image.
    "cifar-32": dict(dataset="cifar10", arch="auto", num_heads=10, num_clusters=128, lam=10.0, epochs=400,
                     nopts=400, nopt_schedule="even", batch_size=128, lr=0.03, momentum=0.9,
                     weight_decay=5e-4, lr_milestones=[240, 320], lr_gamma=0.1, storage_dtype="float32",
                     knn_k=10),
    # The official ImageNet recipe (main.py): 10 heads x 3000 clusters, lambda 25, 100 optimisations
    # spaced quadratically, lr 0.05, x0.1 every 150 epochs, and 0.05 x 1e-3 from epoch 350. Scores are
    # stored in bfloat16 (float32's range at half the memory; float16 underflows below 6e-8): 1.28M x
    # 3000 x 10 heads is 77 GB, to be spread over the ranks of a distributed run.
    "imagenet-paper": dict(dataset="imagenet", arch="alexnet", num_heads=10, num_clusters=3000, lam=25.0,
                           epochs=400, nopts=100, nopt_schedule="quadratic", batch_size=256, lr=0.05,
                           momentum=0.9, weight_decay=1e-5, lr_milestones=[150, 300, 350], lr_gamma=0.1,
                           storage_dtype="bfloat16", num_workers=8),
    # Minutes on a laptop CPU (benchmarks/recipe_search.py, benchmarks/fashion_study.py; figures in the README):
    # Fashion-MNIST, the small CNN (all-stride-2 convs, flattened 4 x 4 map, 256-d feature), one head of
    # 10 clusters and three over-clustering heads (they shape the features), lambda 10, cosine learning
    # rate, 20 epochs and 40 label optimisations spaced quadratically: 9 in the first epoch, when the
    # labels of a young network change fast, then sparser (the recipe search found dense early
    # relabelling to be what lifts NMI; 16 epochs lifted NMI from 0.572 to 0.595 over 10, within the
    # 15-minute budget). Every label step is solved to tol, warm-started.
    "classroom": dict(dataset="fashion-mnist", arch="smallcnn", num_heads=4, num_clusters=[10, 20, 50, 100],
                      lam=10.0, epochs=20, nopts=40, nopt_schedule="quadratic", batch_size=256, lr=0.05,
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
    from sela_edu.models import build_model

    ks = config.cluster_list() if num_clusters is None else list(num_clusters)
    torch.manual_seed(config.seed)
    size = config.image_size or data.image_size
    return build_model(resolve_arch(config.arch, size), num_heads=len(ks), num_clusters=ks,
                       in_channels=data.num_channels, image_size=size, rotation=config.rotation,
                       head_temperature=config.head_temperature)


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


def _kept_batches(loader):
    """This rank's ``(x, index)`` batches in loader order, without the shard padding (see :func:`_kept_rows`)."""
    rows, filled = _kept_rows(loader), 0
    for x, _, index in loader:
        take = min(index.shape[0], rows - filled)
        if take <= 0:
            break
        yield x[:take], index[:take].cpu()
        filled += take


def _plain_loader(data, batch_size: int, device: torch.device, seed: int, num_workers: int):
    from sela_edu.data import make_loader

    distributed = dist_utils.get_world_size() > 1
    return make_loader(data, batch_size, train=False, shuffle=False, device=device, seed=seed,
                       distributed=distributed, num_workers=num_workers)


def training_augment(config: TrainConfig, data):
    """The training augmentation of ``data`` at ``config.image_size`` (None: the loader's default)."""
    from sela_edu.data import ImageData, default_augment

    if config.image_size is None or not isinstance(data, ImageData) or config.image_size == data.image_size:
        return None
    return default_augment(data.name, size=config.image_size, mean=data.mean, std=data.std)


def plain_loader(config: TrainConfig, data, batch_size: int, *, device=None, seed: int = 0,
                 distributed: bool | None = None):
    """Un-augmented batches in data order, as the config's network sees them (labels, features, kNN).

    With ``config.image_size`` set, in-memory images are upsampled as torchvision's Resize(size * 256 / 224)
    + CenterCrop(size) would (the official CIFAR code's test transform).
    """
    from sela_edu.data.augment import CenterUpsample
    from sela_edu.data import ImageData, make_loader

    distributed = dist_utils.get_world_size() > 1 if distributed is None else distributed
    device = pick_device(config.device) if device is None else torch.device(device)
    common = dict(device=device, seed=seed, distributed=distributed, num_workers=config.num_workers)
    if config.image_size is None or not isinstance(data, ImageData) or config.image_size == data.image_size:
        return make_loader(data, batch_size, train=False, shuffle=False, **common)
    # the loader applies its "augment" to every batch when train=True; here it is a fixed transform
    upsample = CenterUpsample(config.image_size, mean=data.mean, std=data.std)
    return make_loader(data, batch_size, train=True, shuffle=False, drop_last=False, augment=upsample, **common)


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

    net = _unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if isinstance(storage_dtype, str):
        storage_dtype = STORAGE_DTYPES[storage_dtype]
    if loader is None:
        loader = _plain_loader(data, batch_size, device, 0, 0)
    all_ks = [head.out_features for head in net.heads]
    heads = list(range(len(all_ks))) if heads is None else [int(h) for h in heads]
    if not heads or any(not 0 <= h < len(all_ks) for h in heads):
        raise ValueError(f"heads must name some of the model's {len(all_ks)} heads, got {heads}")
    init = [None] * len(heads) if init is None else list(init)
    if len(init) != len(heads):
        raise ValueError(f"init needs one potential (or None) per solved head: {len(heads)}, got {len(init)}")
    rows = _kept_rows(loader)
    use_amp = amp and device.type == "cuda"
    was_training = net.training
    net.train(train_mode)
    _sync(device)
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
    seen: list[torch.Tensor] = []
    for x, index in _progress(_kept_batches(loader), progress, "scoring", total=len(loader)):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = net(x)
        for buffer, h in zip(head_buffers, heads):
            buffer.add(outputs[h])
        seen.append(index)
    net.train(was_training)
    _sync(device)
    t1 = time.perf_counter()
    results, head_seconds = [], []
    for buffer, start in zip(head_buffers, init):
        t_head = time.perf_counter()
        results.append(self_label(buffer, tol=tol, max_iter=max_iter, init=start))
        _sync(device)
        head_seconds.append(time.perf_counter() - t_head)
    indices = torch.cat(seen)
    local = torch.stack([r.labels.cpu() for r in results])
    if dist_utils.get_world_size() > 1:
        full = dist_utils.all_gather_labels(local, indices, len(data))
    else:
        full = torch.empty_like(local)
        full[:, indices] = local
    out = [_with_labels(r, full[i]) for i, r in enumerate(results)]
    _sync(device)
    if timings is not None:
        timings["score_seconds"] = t1 - t0
        timings["solve_seconds"] = time.perf_counter() - t1
        timings["head_seconds"] = head_seconds
    return out


def _with_labels(result, labels: torch.Tensor):
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, labels=labels)
    result.labels = labels
    return result


def compute_features(model: nn.Module, data, *, batch_size: int = 512, device=None,
                     loader=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of this rank's images without augmentation, and their positions: (n x D float32 CPU, n).

    :func:`sela_edu.evaluation.extract_features` on this rank's shard (without the shard's padding).
    """
    from sela_edu.evaluation import extract_features

    net = _unwrap(model)
    device = next(net.parameters()).device if device is None else torch.device(device)
    if loader is None:
        loader = _plain_loader(data, batch_size, device, 0, 0)
    seen: list[torch.Tensor] = []

    def images():
        for x, index in _kept_batches(loader):
            seen.append(index)
            yield x

    feats = extract_features(net, images(), device=device)
    return feats, torch.cat(seen)


def kmeans_relabel(model: nn.Module, data, num_clusters: list[int], *, seed: int = 0, batch_size: int = 512,
                   loader=None, timings: dict | None = None) -> torch.Tensor:
    """k-means pseudo-labels (num_heads x N) on the model's current features, DeepCluster-style.

    In a distributed run the features are gathered, rank 0 clusters, and the labels are broadcast.
    Heads with the same K get different k-means seeds, so they differ as SeLa's heads do.
    """
    from sela_edu.training import kmeans_labels

    device = next(_unwrap(model).parameters()).device
    _sync(device)
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


@dataclass
class _Loop:
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
    score_buffers: dict = field(default_factory=dict)  # head -> ScoreBuffer reused on the CPU (not saved)


@dataclass
class _Setup:
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
    record.update(extra)
    return record


def _changes(previous: torch.Tensor, new: torch.Tensor) -> dict[str, list[float]]:
    from sela_edu.evaluation.metrics import label_change, label_change_nmi

    return {"label_change": [label_change(a, b) for a, b in zip(previous, new)],
            "label_nmi_previous": [label_change_nmi(a, b) for a, b in zip(previous, new)]}


def _evaluate(model, data, eval_data, config, device) -> dict[str, float]:
    """Weighted kNN accuracy of the current features on ``eval_data`` (train split as memory bank)."""
    from sela_edu.evaluation import protocol as evaluation

    net = _unwrap(model)
    bs = config.score_batch_size or 2 * config.batch_size
    # Every rank evaluates on the whole of both sets (no shards): the numbers agree across ranks.
    train_feats = evaluation.extract_features(net, plain_loader(config, data, bs, device=device, distributed=False))
    test_feats = evaluation.extract_features(net, plain_loader(config, eval_data, bs, device=device, distributed=False))
    if config.knn_pca is not None:
        train_feats, test_feats = evaluation.pca_project(train_feats, test_feats, dim=config.knn_pca)
    acc = evaluation.knn_accuracy(train_feats, data.targets, test_feats, eval_data.targets, k=config.knn_k)
    return {"knn_accuracy": float(acc)}


def _build(config: TrainConfig, data, labels) -> tuple[_Setup, _Loop]:
    """Data, model, optimiser and loaders of a run, and its loop state at the start (before any resume)."""
    from sela_edu.data import load_dataset, make_loader

    if data is None:
        data = load_dataset(config.dataset, "train")
    rank, world = dist_utils.init_from_env()
    device = dist_utils.device_for_rank(pick_device(config.device))
    subset = subset_indices(len(data), config.max_images, config.seed)
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape[-1] != len(data):
            raise ValueError(f"labels cover {labels.shape[-1]} images but the data has {len(data)}")
        if subset is not None:
            labels = labels[..., subset]
    if subset is not None:
        data = data.subset(subset)
    ks = config.cluster_list()
    fixed = _fixed_labels(config, data, labels)
    targets = getattr(data, "targets", None)
    if targets is not None and (len(targets) != len(data) or int(torch.as_tensor(targets).min()) < 0):
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
    use_amp = bool(config.amp) and device.type == "cuda"
    # the same augmentation for training and, in "augmented" score mode, for the label step
    common = dict(device=device, distributed=world > 1, num_workers=config.num_workers,
                  augment=training_augment(config, data))
    loader = make_loader(data, config.batch_size, train=True, seed=config.seed, **common)
    if len(loader) < 1:
        raise ValueError(f"no full batch: {len(data)} images per process and batch_size {config.batch_size}; "
                         "lower batch_size")
    score_bs = config.score_batch_size or 2 * config.batch_size
    if config.score_mode == "augmented":  # the official CIFAR code scores its (augmented) training loader
        score_loader = make_loader(data, score_bs, train=True, shuffle=False, drop_last=False, seed=config.seed + 1,
                                   **common)
    else:
        score_loader = plain_loader(config, data, score_bs, device=device, seed=config.seed,
                                    distributed=world > 1)
    relabels_on = config.method != "supervised"
    schedule = relabel_schedule(config.epochs, config.nopts if relabels_on else 0, config.nopt_schedule, len(loader))
    start = fixed if fixed is not None else initial_labels(len(data), ks, config.seed)
    setup = _Setup(config=config, data=data, ks=ks, targets=targets, subset=subset, device=device, use_amp=use_amp,
                   rank=rank, world=world, model=model, net=model, optimizer=optimizer, scheduler=scheduler,
                   scaler=torch.amp.GradScaler("cuda", enabled=use_amp), loader=loader,
                   score_loader=score_loader, steps_per_epoch=len(loader),
                   ckpt_dir=Path(config.checkpoint_dir) if config.checkpoint_dir else None, show=False)
    return setup, _Loop(labels=start.to(device), potentials=[None] * len(ks), schedule=schedule)


def _restore(s: _Setup, loop: _Loop, path: Path) -> None:
    """Continue from the checkpoint at ``path``: model, optimiser, labels, potentials, loop position, RNG."""
    state = ckpt.load_checkpoint(path)
    _check_resumable(state["config"], s.config, path)
    shape = (len(s.ks), len(s.data))
    if tuple(state["labels"].shape) != shape:
        raise ValueError(f"checkpoint {path} holds labels for {tuple(state['labels'].shape)} "
                         f"(heads x images) but this run has {shape}: a different data set?")
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
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
    _set_rng_state(state["rng"], s.loader)


def _save_checkpoint(s: _Setup, loop: _Loop) -> float:
    """Write last.pt (rank 0) and wait for every rank; returns the seconds it took."""
    t0 = time.perf_counter()
    if s.rank == 0:
        ckpt.save_rotating(s.ckpt_dir, {
            "config": s.config.to_dict(), "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(), "labels": loop.labels.cpu(),
            "potentials": loop.potentials, "epoch": loop.epoch, "step": loop.step, "schedule": loop.schedule,
            "schedule_position": loop.position, "relabel_count": loop.relabel_count,
            "has_optimised": loop.has_optimised, "history": loop.history, "rng": _rng_state(s.loader),
            "indices": s.subset, "world_size": s.world, "steps_per_epoch": s.steps_per_epoch,
        })
    dist_utils.barrier()
    return time.perf_counter() - t0


def _heads_to_solve(config: TrainConfig, relabel_count: int, num_heads: int) -> list[int]:
    """Every head, or (round robin, as the official CIFAR code) one head per optimisation in turn."""
    if config.relabel_heads == "round-robin":
        return [relabel_count % num_heads]
    return list(range(num_heads))


def _label_step(s: _Setup, loop: _Loop) -> tuple[dict, list[dict], dict | None]:
    """One label optimisation (SeLa's Sinkhorn-Knopp, or k-means for the baseline) into ``loop.labels``.

    Returns its timings, one health row per solved head (SeLa only) and, after the first optimisation,
    how much the labels changed.
    """
    config = s.config
    t0 = time.perf_counter()
    with torch.no_grad():
        dist_utils.average_buffers(s.model)
    part: dict[str, Any] = {}
    previous = loop.labels.cpu()
    rows: list[dict] = []
    if config.method == "sela":
        heads = _heads_to_solve(config, loop.relabel_count, len(s.ks))
        init = [loop.potentials[h] if config.warm_start else None for h in heads]
        s.score_loader.set_epoch(loop.relabel_count)  # fresh augmentations per optimisation ("augmented")
        results = relabel(s.model, s.data, lam=config.lam, device=s.device, storage_dtype=config.storage_dtype,
                          tol=config.sinkhorn_tol, max_iter=config.sinkhorn_max_iter, amp=s.use_amp,
                          loader=s.score_loader, timings=part, heads=heads, init=init,
                          train_mode=config.score_mode == "augmented",
                          buffers=loop.score_buffers if s.device.type == "cpu" else None)
        new = previous.clone()
        for h, start, result, seconds in zip(heads, init, results, part["head_seconds"]):
            new[h] = result.labels.cpu()
            loop.potentials[h] = result.cluster_potential.cpu()
            rows.append({"epoch": loop.epoch + 1, "step": loop.step, "head": h, "warm": start is not None,
                         "passes": getattr(result, "passes", result.iterations), "converged": bool(result.converged),
                         "error": float(result.error), "seconds": float(seconds)})
        loop.last_results = results
    else:  # kmeans
        new = kmeans_relabel(s.model, s.data, s.ks, seed=config.seed + 1000 * loop.relabel_count,
                             loader=s.score_loader, timings=part)
        _reinit_heads(s.model, s.optimizer)
    changes = _changes(previous, new) if loop.has_optimised else None
    loop.has_optimised = True
    loop.labels = new.to(s.device)
    loop.position += 1
    loop.relabel_count += 1
    timing = {"score_seconds": part.get("score_seconds", 0.0), "solve_seconds": part.get("solve_seconds", 0.0),
              "relabel_seconds": time.perf_counter() - t0}
    return timing, rows, changes


def _health_text(rows: list[dict]) -> str:
    """The progress bar's summary of a label step: passes per head, and whether every head converged."""
    passes = "/".join(str(r["passes"]) for r in rows)
    return f"{passes} passes" + ("" if all(r["converged"] for r in rows) else " NOT CONVERGED")


def _sgd_step(s: _Setup, labels: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of SeLa's step 2: cross-entropy against the current labels, averaged over heads (plus the
    rotation loss for SeLa + Rot). Returns the loss and the rotation head's correct guesses (0 without it)."""
    index = index.to(s.device)
    n = x.shape[0]
    with torch.autocast(s.device.type, dtype=torch.float16, enabled=s.use_amp):
        if s.config.rotation:  # the four rotations of every image; labels apply to the upright ones
            outputs = s.net(torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(4)]), rotation=True)
            turns = torch.arange(4, device=s.device).repeat_interleave(n)
            rotation_logits, outputs = outputs[-1].float(), [out[:n] for out in outputs[:-1]]
        else:
            outputs = s.net(x)
        loss = torch.stack([F.cross_entropy(out.float(), labels[h, index]) for h, out in enumerate(outputs)]).mean()
        if s.config.rotation:
            loss = loss + F.cross_entropy(rotation_logits, turns)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    correct = (rotation_logits.argmax(1) == turns).sum() if s.config.rotation else torch.zeros((), device=s.device)
    return loss.detach(), correct.detach()


def _train_epoch(s: _Setup, loop: _Loop) -> dict:
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
    bar = _progress(s.loader, s.show, f"epoch {loop.epoch + 1}/{config.epochs}", total=s.steps_per_epoch)
    for x, _, index in bar:
        while loop.position < len(loop.schedule) and loop.schedule[loop.position] <= loop.step:
            part, rows, step_changes = _label_step(s, loop)
            changes = step_changes or changes
            for key in timing:
                timing[key] += part[key]
            label_rows += rows
            relabels_now += 1
            if rows:
                health = _health_text(rows)
                if s.show and not all(r["converged"] for r in rows):
                    bar.write(f"label step at step {loop.step}: " + ", ".join(
                        f"head {r['head']} {'converged' if r['converged'] else 'NOT converged'} "
                        f"({r['passes']} passes, error {r['error']:.1e})" for r in rows))
            s.net.train()
        loss, correct = _sgd_step(s, loop.labels, x, index)
        loss_sum += loss
        rotation_correct += correct
        batches += 1
        loop.step += 1
        # Checked every 50 steps, not every step: reading a GPU value waits for the GPU.
        if (batches % 50 == 0 or batches == s.steps_per_epoch) and not torch.isfinite(loss_sum):
            raise FloatingPointError(f"the loss became {loss_sum.item()} by step {loop.step} (epoch {loop.epoch + 1}); "
                                     "lower lr, or check the data")
        if s.show and batches % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", **({"labels": health} if health else {}))
    s.scheduler.step()
    loop.epoch += 1
    with torch.no_grad():
        dist_utils.average_buffers(s.model)
    _sync(s.device)
    seconds = time.perf_counter() - t_epoch
    timing["seconds"] = seconds
    timing["train_seconds"] = seconds - timing["relabel_seconds"]
    timing["images_per_second"] = batches * config.batch_size * s.world / max(timing["train_seconds"], 1e-9)
    loss = dist_utils.all_reduce_mean(loss_sum.item() / max(batches, 1))
    record = _epoch_record(loop.epoch, loop.step, loss, s.optimizer.param_groups[0]["lr"], changes,
                           loop.labels.cpu(), s.ks, s.targets, timing, relabels_now, {})
    record["label_steps"] = label_rows
    if config.rotation:  # of this rank's views: enough to watch it learn
        record["rotation_accuracy"] = rotation_correct.item() / max(4 * batches * config.batch_size, 1)
    return record


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
    images_per_second, knn_accuracy on evaluation epochs, and ``label_steps``: one row per head solved
    in the epoch (epoch, step, head, warm, passes, converged, error, seconds) — the solver's health.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig (see config_from_preset), got {type(config).__name__}")
    config.validate()
    s, loop = _build(config, data, labels)
    s.show = progress and s.rank == 0
    if config.eval_every and eval_data is None:
        warnings.warn("eval_every is set but no eval_data was given: no kNN evaluation", stacklevel=2)
    resume_from = ckpt.latest_checkpoint(s.ckpt_dir) if s.ckpt_dir else None
    if resume_from is not None:
        _restore(s, loop, resume_from)
    if s.world > 1:
        s.net = nn.parallel.DistributedDataParallel(
            s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    loop.last_results = None
    try:
        while loop.epoch < config.epochs:
            record = _train_epoch(s, loop)
            if eval_data is not None and config.eval_every and loop.epoch % config.eval_every == 0:
                record.update(_evaluate(s.model, s.data, eval_data, config, s.device))
            loop.history.append(record)
            if s.ckpt_dir is not None:
                record["checkpoint_seconds"] = _save_checkpoint(s, loop)
            if callback is not None:
                try:
                    callback(record)
                except StopTraining:
                    break
    finally:
        s.model.eval()
    return TrainResult(model=s.model, labels=loop.labels.cpu(), history=loop.history, config=config,
                       timings=_totals(loop.history), indices=s.subset, last_relabel=loop.last_results,
                       potentials=[None if p is None else p.clone() for p in loop.potentials])


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

    ``labels`` is num_heads x N (e.g. from :func:`sela_edu.training.labels_io.read_labels_csv`) or N. The network
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
