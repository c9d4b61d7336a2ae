"""Named settings of training runs, as data, in one place: every setting a user, a notebook or a benchmark
runs is a preset here (:data:`PRESETS`, one line each in :data:`SUMMARIES`; ``sela-edu presets`` lists
them). Build a config with :func:`config_from_preset` and override single fields."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from sela_edu.training.config import TrainConfig, clusters_per_head, upgrade_field_names

# The kit's own recipe for a laptop CPU (benchmarks/recipe_search.py found it; benchmarks/fashion_study.py
# measures it, figures in the README): Fashion-MNIST, the small CNN (all-stride-2 convs, flattened 4 x 4
# map, 256-d feature), one head of 10 clusters and three over-clustering heads (they shape the features),
# lambda 10, cosine learning rate, 20 epochs and 40 label optimisations spaced quadratically: 9 in the
# first epoch, when the labels of a young network change fast, then sparser. The recipe search found dense
# early relabelling to be what lifts NMI, and training longer than 10 epochs to lift every figure a little
# (docs/results.md); 20 epochs is as long as fits the 15-minute budget on a 2-core CPU (11-14 minutes
# there). Every label step is solved to tol, warm-started.
_CLASSROOM: dict[str, Any] = dict(
    dataset="fashion-mnist", arch="smallcnn", num_heads=4, num_clusters=[10, 20, 50, 100], lam=10.0, epochs=20,
    nopts=40, nopt_schedule="quadratic", batch_size=256, lr=0.05, momentum=0.9, weight_decay=5e-4,
    lr_milestones=[], lr_schedule="cosine", storage_dtype="float32")

# SwAV's improvements at the classroom scale, shared by its three methods: a projection head (256 -> 256 -> 128,
# SwAV's 2048 -> 2048 -> 128 scaled to the small CNN), cosine heads with temperature 0.1, multi-crop with two
# 28 px crops of the usual augmentation and four 16 px crops of 10-40 % of the area (SwAV's 5-14 % leaves a
# few pixels of a 28 px image), prototypes frozen for the first 78 steps (one epoch of classroom-short;
# SwAV: 313, one epoch of ImageNet at 4096). The classroom's SGD, heads, epochs and label steps otherwise.
_SUCCESSOR_PARTS: dict[str, Any] = dict(head_temperature=0.1, projection_dim=128, projection_hidden=256, large_crops=2,
                                        small_crops=4, small_crop_size=16, small_crop_scale=[0.1, 0.4],
                                        freeze_prototypes_steps=78)
# SwAV's ImageNet recipes, as facebookresearch/swav's scripts set them (as data): ResNet-50, 128-d
# projection behind a 2048-wide hidden layer, temperature 0.1, crops of 14-100 % at 224 px and 5-14 % at
# 96 px, weight decay 1e-6, cosine learning rate, 400 epochs. The kit's departures: plain SGD (the scripts
# wrap it in LARC), no warm-up, no synchronised BatchNorm, cosine decay to 0 instead of to lr / 1000.
_SWAV_IMAGENET: dict[str, Any] = dict(
    dataset="imagenet", arch="resnet50", image_size=224, num_heads=1, num_clusters=3000, head_temperature=0.1,
    projection_dim=128, projection_hidden=2048, large_crops=2, small_crops=6, small_crop_size=96,
    large_crop_scale=[0.14, 1.0], small_crop_scale=[0.05, 0.14], epochs=400, batch_size=64, momentum=0.9,
    weight_decay=1e-6, lr_milestones=[], lr_schedule="cosine", storage_dtype="bfloat16", num_workers=8)

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
    "classroom": _CLASSROOM,
    # The course's runs of it, shortened so that the whole series fits in about 20 minutes on 2 cores:
    # notebooks 03 and 06 train 10 epochs on a seeded third of Fashion-MNIST (06 reuses 03's run) ...
    "classroom-short": dict(_CLASSROOM, epochs=10, max_images=20_000),
    # ... and notebook 05 trains nine networks (three methods on three imbalance settings), each 6 epochs
    # with 12 label optimisations on 8,000 images.
    "classroom-imbalance": dict(_CLASSROOM, epochs=6, nopts=12, max_images=8_000),
    # `sela-edu label FOLDER` (sela_edu.apps.label_folder): the classroom recipe on any folder of
    # images, one head of 10 clusters by default; :func:`folder_config` sizes epochs, batch and
    # optimisations to the folder.
    "folder": dict(_CLASSROOM, dataset="folder", num_heads=1, num_clusters=10, epochs=50, nopts=25, eval_every=0),
    # `sela-edu label FOLDER --backbone B`: new heads on a frozen backbone's features (FeatureData), one
    # hidden layer and the heads ("feature-mlp"), trained with feature noise and dropout as augmentation.
    # The classroom's SGD; a label step at the start of every epoch, every head solved (features are
    # cheap to score: N x 512 numbers); :func:`folder_backbone_config` sizes it to the folder.
    "folder-backbone": dict(_CLASSROOM, dataset="folder", arch="feature-mlp", num_heads=1, num_clusters=10,
                            epochs=50, nopts=50, nopt_schedule="even", eval_every=0),
    # SeLa's successors of SwAV's paper (Caron et al., 2020) at the classroom scale, on the classroom's
    # schedule (notebook 09 and the ledger's claims 10-14 run them at classroom-short's 10 epochs):
    "sela-v2-classroom": dict(_CLASSROOM, method="sela-v2", **_SUCCESSOR_PARTS),
    # DeepCluster-v2's prototypes are its centroids throughout (its scripts freeze them for 300,000 steps).
    "deepcluster-v2-classroom": dict(_CLASSROOM, method="deepcluster-v2",
                                     **dict(_SUCCESSOR_PARTS, freeze_prototypes_steps=300_000)),
    # SwAV: no label step (nopts unused); no queue, a batch of 256 spreads over at most 100 prototypes.
    "swav-classroom": dict(_CLASSROOM, method="swav", **_SUCCESSOR_PARTS),
    # facebookresearch/swav scripts/swav_400ep_bs256_pretrain.sh: 3000 prototypes, epsilon 0.05, 3 iterations,
    # 2 x 224 + 6 x 96 crops, batch 64 per GPU on 4 GPUs, lr 0.6, a queue of 3840 embeddings from epoch 15,
    # prototypes frozen for 5005 steps, mixed precision.
    "swav-imagenet": dict(_SWAV_IMAGENET, method="swav", lr=0.6, queue_length=3840, queue_start_epoch=15,
                          freeze_prototypes_steps=5005, swav_epsilon=0.05, swav_iterations=3, amp_dtype="bfloat16"),
    # scripts/deepclusterv2_400ep_pretrain.sh: 3 heads of 3000 prototypes (the centroids: frozen for 300,000
    # steps), 2 x 160 + 4 x 96 crops of 8-100 % and 5-14 %, batch 64 per GPU on 64 GPUs, lr 4.8 (LARC's),
    # a k-means of 10 iterations per label step; the kit clusters at nopts moments (the script: every epoch).
    "deepcluster-v2-imagenet": dict(_SWAV_IMAGENET, method="deepcluster-v2", image_size=160, num_heads=3,
                                    large_crops=2, small_crops=4, large_crop_scale=[0.08, 1.0], lr=4.8,
                                    freeze_prototypes_steps=300_000, kmeans_iters=10, nopts=400, nopt_schedule="even"),
    # SeLa-v2 (SwAV's appendix; its authors released weights but no script): DeepCluster-v2's recipe with
    # SeLa's label step (lambda 25, as SeLa on ImageNet) in place of k-means.
    "sela-v2-imagenet": dict(_SWAV_IMAGENET, method="sela-v2", image_size=160, large_crops=2, small_crops=4,
                             large_crop_scale=[0.08, 1.0], lr=4.8, lam=25.0, nopts=400, nopt_schedule="even"),
    # Seconds: two epochs on a few hundred digits, for tests and for checking an installation.
    "smoke": dict(dataset="digits", arch="smallcnn", num_heads=2, num_clusters=[10, 20], lam=10.0, epochs=2,
                  nopts=2, nopt_schedule="even", batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
                  lr_milestones=[], max_images=320, storage_dtype="float32"),
}


#: One line per preset, what ``sela-edu presets`` prints.
SUMMARIES: dict[str, str] = {
    "cifar-paper": "the official CIFAR-10/100 and SVHN recipe (cifar.py): 224 px AlexNet, 10 x 128 clusters, 400 epochs",
    "cifar-32": "the kit's 32 px variant of cifar-paper (CIFAR AlexNet, every head at every optimisation)",
    "imagenet-paper": "the official ImageNet recipe (main.py): AlexNet, 10 x 3000 clusters, lambda 25, 400 epochs",
    "classroom": "Fashion-MNIST, small CNN, 4 heads (10, 20, 50, 100 clusters), 20 epochs: minutes on a laptop CPU",
    "classroom-short": "classroom for notebooks 03 and 06: 10 epochs on 20,000 images",
    "classroom-imbalance": "classroom for notebook 05's nine trainings: 6 epochs, 12 optimisations, 8,000 images",
    "folder": "sela-edu label FOLDER: the classroom recipe on a folder of images, sized to it by folder_config",
    "folder-backbone": "sela-edu label FOLDER --backbone: heads (feature-mlp) on a frozen backbone's features, 50 epochs",
    "sela-v2-classroom": "SeLa-v2 on the classroom recipe: projection head, prototypes at temperature 0.1, 2 x 28 + 4 x 16 px crops",
    "deepcluster-v2-classroom": "DeepCluster-v2 on the classroom recipe: spherical k-means on a memory bank, prototypes = centroids",
    "swav-classroom": "SwAV on the classroom recipe: codes per batch by 3 Sinkhorn-Knopp iterations, swapped prediction",
    "swav-imagenet": "SwAV's ImageNet recipe (swav_400ep_bs256_pretrain.sh): ResNet-50, 3000 prototypes, 2 x 224 + 6 x 96 crops",
    "deepcluster-v2-imagenet": "DeepCluster-v2's ImageNet recipe (deepclusterv2_400ep_pretrain.sh): 3 x 3000, 2 x 160 + 4 x 96",
    "sela-v2-imagenet": "SeLa-v2: DeepCluster-v2's ImageNet recipe with SeLa's label step (lambda 25)",
    "smoke": "seconds: two epochs on 320 digits, for tests and for checking an installation",
}


def config_from_preset(name: str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from the preset ``name`` with ``overrides`` applied.

    Raises ValueError for an unknown preset or field (listing the valid ones) and for bad values. The old
    names of renamed fields (:data:`~sela_edu.training.config.RENAMED_FIELDS`) still work, with a
    DeprecationWarning.
    """
    overrides = upgrade_field_names(overrides, "config_from_preset", stacklevel=2)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {tuple(PRESETS)}")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields are {fields}")
    # a copy: a config's lists (num_clusters, lr_milestones) must not be the preset's own
    return TrainConfig(**{**copy.deepcopy(PRESETS[name]), **overrides})


def list_presets() -> list[str]:
    """One line per preset: its name and what it is for (``sela-edu presets``)."""
    width = max(len(name) for name in PRESETS)
    return [f"{name:<{width}}  {SUMMARIES[name]}" for name in PRESETS]


def folder_batch_size(num_images: int, batch_size: int | None = None) -> int:
    """``batch_size``, by default N / 4 between 16 and 256, never above N (a folder may be small)."""
    return min(batch_size or max(16, min(256, num_images // 4)), num_images)


def folder_config(num_images: int, clusters, heads: int | None = None, *, epochs: int,
                  batch_size: int | None = None, **overrides) -> TrainConfig:
    """The "folder" preset sized to a folder of ``num_images`` images: K per head by
    :func:`clusters_per_head`, the batch by :func:`folder_batch_size`, and half as many label
    optimisations as epochs (at least 4, at most one per step)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"num_images must be an integer >= 2, got {num_images!r}")
    ks = clusters_per_head(clusters, heads)
    bs = folder_batch_size(num_images, batch_size)
    steps = epochs * (num_images // bs)
    nopts = max(1, min(steps, max(4, epochs // 2)))
    return config_from_preset("folder", num_heads=len(ks), num_clusters=ks if len(set(ks)) > 1 else ks[0],
                              epochs=epochs, nopts=nopts, batch_size=bs, **overrides)


def folder_backbone_config(num_images: int, clusters, heads: int | None = None, *, epochs: int | None = None,
                           batch_size: int | None = None, **overrides) -> TrainConfig:
    """The "folder-backbone" preset sized to ``num_images`` feature vectors: K per head by
    :func:`clusters_per_head`, the preset's batch (or ``batch_size``) but never above N, and one label
    optimisation per epoch (the preset's epochs, or ``epochs``)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"num_images must be an integer >= 2, got {num_images!r}")
    ks = clusters_per_head(clusters, heads)
    preset = PRESETS["folder-backbone"]
    epochs = preset["epochs"] if epochs is None else epochs
    return config_from_preset("folder-backbone", num_heads=len(ks), num_clusters=ks if len(set(ks)) > 1 else ks[0],
                              epochs=epochs, nopts=epochs, batch_size=min(batch_size or preset["batch_size"], num_images),
                              **overrides)


__all__ = ["PRESETS", "SUMMARIES", "config_from_preset", "list_presets", "folder_config", "folder_batch_size",
           "folder_backbone_config"]
