"""Every setting of a training run (:class:`TrainConfig`), the names it accepts (and the old names it
still takes, :data:`RENAMED_FIELDS`); the kit's one rule for "K per head" is :func:`clusters_per_head`
(home :mod:`sela_edu.models`, re-exported here for the trainer, the CLI and label-a-folder)."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sela_edu.labelling.buffer import STORAGE_TORCH_DTYPES
from sela_edu.models import ARCHS, check_head_temperature, clusters_per_head

METHODS = ("sela", "kmeans", "supervised", "sela-v2", "deepcluster-v2", "swav")
#: The methods of SwAV's paper (Caron et al., 2020), which score with normalised prototypes (cosine heads).
PROTOTYPE_METHODS = ("sela-v2", "deepcluster-v2", "swav")
SCHEDULES = ("even", "quadratic")
SCORE_MODES = ("plain", "augmented", "training")
RELABEL_HEADS = ("all", "round-robin")
#: ``storage_dtype``'s names for the dtypes the label step's buffers store P in ("float32" -> torch.float32).
STORAGE_DTYPE_BY_NAME = {str(dtype).removeprefix("torch."): dtype for dtype in STORAGE_TORCH_DTYPES}
#: Config fields that may change between a run and its resumption: they do not change what is trained
#: (where it runs, how it is watched), so a checkpoint written under other values resumes exactly.
RESUMABLE_CHANGES = ("epochs", "checkpoint_dir", "device", "num_workers", "eval_every", "knn_k", "knn_pca",
                     "channels_last", "compile")
#: Fields added after checkpoints were first written, each with the value a config without it meant (its
#: default): a stored config that lacks one resumes, and a run that keeps it there keeps its folder name.
ADDED_FIELDS = ("large_crops", "small_crops", "small_crop_size", "small_crop_scale", "large_crop_scale",
                "projection_dim", "projection_hidden", "swav_epsilon", "swav_iterations", "queue_length",
                "queue_start_epoch", "freeze_prototypes_steps", "kmeans_iters")
#: ``compile``'s mode names (:func:`torch.compile`'s ``mode``); True is torch's default mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AMP_DTYPES = ("float16", "bfloat16")
#: Old field name -> new. The label step's options were named after Sinkhorn-Knopp, which it runs only with
#: ``method="sinkhorn"`` (by default L-BFGS, then Newton): the old names are accepted, with a
#: DeprecationWarning, for one more release, in keywords and in stored configs (checkpoints).
RENAMED_FIELDS = {"sinkhorn_tol": "label_tol", "sinkhorn_max_iter": "label_max_iter"}


def upgrade_field_names(fields: Mapping[str, Any], source: str, stacklevel: int = 2) -> dict[str, Any]:
    """``fields`` (config fields by name: keywords, or a stored ``config.to_dict()``) with the old names of
    :data:`RENAMED_FIELDS` replaced by the new ones, a DeprecationWarning naming ``source`` for each.
    Raises ValueError when a field is given under both names."""
    out = dict(fields)
    for old, new in RENAMED_FIELDS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{source} gives both {old!r} and its new name {new!r}: keep only {new!r}")
        warnings.warn(f"{source}: the config field {old!r} is now {new!r} (the label step runs Sinkhorn-Knopp "
                      f"only with method='sinkhorn'); the old name will stop working in the next release",
                      DeprecationWarning, stacklevel=stacklevel + 1)
        out[new] = out.pop(old)
    return out


def _accepts_old_field_names(cls):
    """The dataclass ``cls`` whose ``__init__`` also takes the old names of :data:`RENAMED_FIELDS`, and
    whose instances answer to them as attributes, each time with a DeprecationWarning."""
    fields_init = cls.__init__

    @functools.wraps(fields_init)
    def __init__(self, *args, **fields):
        fields_init(self, *args, **upgrade_field_names(fields, cls.__name__, stacklevel=2))

    cls.__init__ = __init__
    for old, new in RENAMED_FIELDS.items():
        setattr(cls, old, _renamed_attribute(f"{cls.__name__}.{old}", new))
    return cls


def _renamed_attribute(old: str, new: str) -> property:
    """An attribute under its old name that reads and writes the field ``new``, with a DeprecationWarning."""
    def warn() -> None:
        warnings.warn(f"{old} is now {new}", DeprecationWarning, stacklevel=3)

    def get(config):
        warn()
        return getattr(config, new)

    def set_(config, value) -> None:
        warn()
        setattr(config, new, value)

    return property(get, set_)


@_accepts_old_field_names
@dataclass
class TrainConfig:
    """Every setting of a training run. Build one with :func:`config_from_preset` and override fields.

    Attributes:
        dataset: data set name for :func:`sela_edu.data.load_dataset` (used when ``train`` gets no data).
        arch: one of ``sela_edu.models.ARCHS``, or ``"auto"``: alexnet32 for images up to 64 px, else alexnet.
        num_heads, num_clusters: heads, and K for every head (an int) or per head (a list).
        lam: the label step's lambda (inverse entropic regularisation; the paper uses 10 on CIFAR, 25 on
            ImageNet).
        epochs, nopts, nopt_schedule: training length; number of label optimisations and their spacing
            ("even" or "quadratic": dense early, sparse late, see :func:`relabel_schedule`).
        batch_size, lr, momentum, weight_decay, lr_milestones, lr_gamma: SGD, with the learning rate
            multiplied by ``lr_gamma`` at each epoch in ``lr_milestones`` (``lr_schedule="step"``) or
            decayed to zero along a cosine over the epochs (``lr_schedule="cosine"``). ``batch_size`` is
            per process.
        method: "sela", "kmeans" (DeepCluster's k-means labels) or "supervised"; or one of SwAV's paper
            (:data:`PROTOTYPE_METHODS`, cosine heads: set ``head_temperature``): "sela-v2" (SeLa's label
            step), "deepcluster-v2" (spherical k-means on a memory bank of the training pass's embeddings,
            prototypes set to the centroids), "swav" (codes per batch, swapped prediction; no label step).
            Their modules: :mod:`sela_edu.training.methods`.
        storage_dtype: dtype of the score buffers the solver reads ("float32", "float16" or "bfloat16").
        label_tol, label_max_iter: the label step's stopping rule (``tol`` and ``max_iter`` of
            :func:`~sela_edu.labelling.self_label`): every cluster's mass within ``label_tol`` of its target,
            or at most ``label_max_iter`` passes over P. Formerly ``sinkhorn_tol``, ``sinkhorn_max_iter``.
        device: "auto" (GPU when there is one), "cpu", "cuda", "cuda:1", ...
        amp: mixed precision on CUDA (ignored elsewhere): autocast in ``amp_dtype``, with a GradScaler for
            float16 (bfloat16 has float32's range and needs none).
        amp_dtype: "float16" or "bfloat16", the autocast dtype of ``amp``.
        channels_last: the network's weights and batches in channels-last memory format (NHWC), which
            tensor cores prefer; the same arithmetic, so a run may resume with it switched.
        compile: train through :func:`torch.compile` (False by default): True, or a mode of
            ``COMPILE_MODES`` ("reduce-overhead" also captures CUDA graphs, for small networks whose steps
            are bound by kernel launches). It pays on a GPU; the first steps wait for the compiler. Fused
            kernels round differently, so a run may resume with it switched, as the same recipe but not
            bit for bit.
        seed: seeds model init, initial labels, shuffling and augmentation.
        checkpoint_dir: folder for last.pt / prev.pt (None: no checkpoints, no resuming).
        eval_every: with ``eval_data``, weighted-kNN accuracy every this many epochs (0: never).
        num_workers: DataLoader workers for image folders (in-memory sets need none).
        max_images: train on a seeded random subset of this many images (None: all).
        score_batch_size: batch size of the scoring passes (None: twice ``batch_size``).
        knn_k, knn_pca: neighbours of the kNN the loop measures while it trains (``eval_every``; recorded
            beside it as ``knn_k``), and the PCA dimension of the features before it (None: none). The
            default k = 200 is Wu et al.'s (2018) kNN; the final evaluation
            (:func:`~sela_edu.evaluation.evaluate`) and the official CIFAR code use k = 10 (after PCA to 128).
        image_size: train and label at this size (None: the data's own). The official CIFAR code upsamples
            32 px images as torchvision's Resize(256) + RandomResizedCrop(224) for training and Resize(256)
            + CenterCrop(224) for labels and features; ``image_size=224`` does the same.
        score_mode: what the label step scores: "plain" (un-augmented images, network in eval mode, the
            kit's default) or "augmented" (the training augmentation with BatchNorm in train mode, as the
            official CIFAR code, which scores its training loader), both a separate scoring pass over the
            training set at every label optimisation; or "training": no pass after the first, the label
            step solves on the head outputs the training pass already computed (each image's latest, of
            its augmented view with BatchNorm in train mode; upright views only with ``rotation``), kept
            per image in the solver's buffers (which then also go into the checkpoint). The first
            optimisation scores every image in eval mode, as "plain". Rows are as old as the image's
            last training batch: up to an epoch, more for the few images an epoch's last partial
            batch leaves out. Single process only; "plain" and "augmented" under torchrun. Methods
            other than "sela" have no head scores to keep and score as "plain".
        relabel_heads: "all" heads at every label optimisation (official ImageNet code) or "round-robin",
            one head per optimisation in turn (official CIFAR code: head ``epoch % heads``).
        warm_start: start each head's label optimisation from its cluster potentials of the previous one
            (the same labels in fewer solver passes).
        rotation: SeLa + Rot (the official retrain_with_rotnet.py): a 4-way rotation head beside the
            clustering heads; every batch is seen at 0, 90, 180 and 270 degrees, the clustering loss is
            taken on the upright views, the rotation loss on all four, and the two are added.
        head_temperature: None for the paper's linear heads; T for cosine heads (the cosine between the
            feature and each cluster's weight vector, divided by T, as SwAV's prototypes).
        reinit_heads: fresh head weights after every label optimisation. None: the method's own (k-means
            re-initialises, as DeepCluster, whose cluster ids mean nothing from one optimisation to the
            next; SeLa keeps its heads, whose scores made the labels). k-means with kept heads renames each
            clustering's ids to match the previous labels, so that every head keeps its cluster's id.
        large_crops, small_crops, small_crop_size, small_crop_scale, large_crop_scale: multi-crop
            (:class:`~sela_edu.data.multicrop.MultiCrop`): every image as ``large_crops`` crops of the training
            augmentation (at ``large_crop_scale`` of the area; None: the data set's range) and ``small_crops``
            of ``small_crop_size`` px at ``small_crop_scale`` (SwAV: 2 x 224 + 6 x 96 px, areas 14-100 % and
            5-14 %). 1 and 0: one view, as the paper. Every view is trained on its image's label.
        projection_dim, projection_hidden: an MLP projection head of this output (and hidden) width between
            the features and the cosine heads (SwAV: 128 and 2048; None: the heads read the features).
        swav_epsilon, swav_iterations: SwAV's batch codes (:func:`~sela_edu.labelling.batch_codes`): 0.05 and 3.
        queue_length, queue_start_epoch: SwAV's queue of the large crops' recent embeddings, scored beside
            the batch for its codes from epoch ``queue_start_epoch`` (0-based) once full (0: no queue).
        freeze_prototypes_steps: the heads (prototypes) stay as initialised for the first this many steps
            (SwAV 313, DeepCluster-v2 300,000: there the prototypes are the k-means centroids throughout).
        kmeans_iters: the spherical k-means iterations of "deepcluster-v2" (10, as its code).
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
    label_tol: float = 1e-3
    label_max_iter: int = 1000
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "float16"
    channels_last: bool = False
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
    reinit_heads: bool | None = None
    compile: bool | str = False
    large_crops: int = 1
    small_crops: int = 0
    small_crop_size: int | None = None
    small_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
    large_crop_scale: list[float] | None = None
    projection_dim: int | None = None
    projection_hidden: int | None = None
    swav_epsilon: float = 0.05
    swav_iterations: int = 3
    queue_length: int = 0
    queue_start_epoch: int = 15
    freeze_prototypes_steps: int = 0
    kmeans_iters: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.num_clusters, tuple):
            self.num_clusters = list(self.num_clusters)
        self.lr_milestones = [int(m) for m in self.lr_milestones]
        for name in ("small_crop_scale", "large_crop_scale"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, [float(v) for v in getattr(self, name)])
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        for name in ("num_heads", "epochs", "batch_size", "label_max_iter", "knn_k"):
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
        for name in ("warm_start", "rotation", "amp", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"unknown amp_dtype {self.amp_dtype!r}; choose one of {AMP_DTYPES}")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be True, False or a mode of {COMPILE_MODES}, got {self.compile!r}")
        if self.reinit_heads is not None and not isinstance(self.reinit_heads, bool):
            raise ValueError(f"reinit_heads must be None, True or False, got {self.reinit_heads!r}")
        self.cluster_list()  # validates num_clusters against num_heads
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose 'step' or 'cosine'")
        if self.nopt_schedule not in SCHEDULES:
            raise ValueError(f"unknown nopt_schedule {self.nopt_schedule!r}; choose one of {SCHEDULES}")
        if self.storage_dtype not in STORAGE_DTYPE_BY_NAME:
            raise ValueError(f"unknown storage_dtype {self.storage_dtype!r}; choose one of {tuple(STORAGE_DTYPE_BY_NAME)}")
        check_head_temperature(self.head_temperature)
        if self.arch != "auto" and self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose 'auto' or one of {ARCHS}")
        for name in ("lam", "lr", "label_tol", "lr_gamma"):
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
        self.validate_successors()

    def validate_successors(self) -> None:
        """The fields of multi-crop and of SwAV's methods (:data:`PROTOTYPE_METHODS`)."""
        def positive_int(name, minimum):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        for name, minimum in (("large_crops", 1), ("small_crops", 0), ("swav_iterations", 0), ("queue_length", 0),
                              ("queue_start_epoch", 0), ("freeze_prototypes_steps", 0), ("kmeans_iters", 1)):
            positive_int(name, minimum)
        for name in ("small_crop_size", "projection_dim", "projection_hidden"):
            if getattr(self, name) is not None:
                positive_int(name, 1)
        for name in ("small_crop_scale", "large_crop_scale"):
            pair = getattr(self, name)
            if pair is None and name == "large_crop_scale":
                continue
            if not (isinstance(pair, list) and len(pair) == 2 and 0 < pair[0] <= pair[1] <= 1):
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high <= 1 (fractions of the area), "
                                 f"got {pair!r}")
        if self.small_crops and self.small_crop_size is None:
            raise ValueError("small_crops needs small_crop_size (the small crops' side in pixels)")
        if not (isinstance(self.swav_epsilon, (int, float)) and not isinstance(self.swav_epsilon, bool)
                and math.isfinite(self.swav_epsilon) and self.swav_epsilon > 0):
            raise ValueError(f"swav_epsilon must be a positive number, got {self.swav_epsilon!r}")
        if self.multi_crop() and (self.rotation or self.score_mode != "plain"):
            raise ValueError("multi-crop (large_crops > 1 or small_crops > 0) trains without rotation and scores "
                             "plain images (score_mode='plain'): switch those off")
        if self.method in PROTOTYPE_METHODS and self.head_temperature is None:
            raise ValueError(f"method {self.method!r} scores with normalised prototypes: set head_temperature "
                             "(SwAV's temperature is 0.1)")
        if self.projection_dim is not None and self.head_temperature is None:
            raise ValueError("projection_dim feeds cosine heads: set head_temperature too")
        if self.method == "swav":
            if self.large_crops < 2:
                raise ValueError("swav predicts one large crop's code from the other views: large_crops must be >= 2")
            if self.rotation:
                raise ValueError("swav has no rotation task: set rotation=False")
            if self.queue_length % self.batch_size:
                raise ValueError(f"queue_length ({self.queue_length}) must be a multiple of batch_size "
                                 f"({self.batch_size}): the queue moves by whole batches")

    def multi_crop(self) -> bool:
        """Whether every image is seen as more than one crop per step."""
        return self.large_crops > 1 or self.small_crops > 0

    def cluster_list(self) -> list[int]:
        """K of every head, as a list (the kit's one rule: :func:`clusters_per_head`)."""
        return clusters_per_head(self.num_clusters, self.num_heads)

    def reinits_heads(self) -> bool:
        """Whether the heads start afresh after each label optimisation (``reinit_heads``, or the method's own)."""
        return self.method == "kmeans" if self.reinit_heads is None else self.reinit_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ["TrainConfig", "clusters_per_head", "AMP_DTYPES", "METHODS", "PROTOTYPE_METHODS", "ADDED_FIELDS", "SCHEDULES", "SCORE_MODES", "RELABEL_HEADS",
           "STORAGE_DTYPE_BY_NAME", "RESUMABLE_CHANGES", "COMPILE_MODES", "RENAMED_FIELDS", "upgrade_field_names"]
