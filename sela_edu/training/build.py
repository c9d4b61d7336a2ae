"""What a run is made of, built once from its config: the network, the data (subset, fixed labels for
a supervised run), optimiser and learning-rate schedule, the loaders, and the loop's starting state
(the two records, :class:`~sela_edu.training.state.RunSetup` and ``LoopState``, are defined in ``state``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sela_edu.settings import pick_device, seed_everything
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.config import TrainConfig
from sela_edu.training.methods import method_for
from sela_edu.training.runtime import fused_sgd
from sela_edu.training.run_loaders import plain_loader, run_loader, training_augment
from sela_edu.training.schedule import initial_labels, relabel_schedule, subset_indices
from sela_edu.training.state import LoopState, RunSetup


def resolve_arch(arch: str, image_size: int) -> str:
    """``"auto"`` becomes alexnet32 for images up to 64 px and alexnet above; anything else is kept."""
    if arch == "auto":
        return "alexnet32" if image_size <= 64 else "alexnet"
    return arch


def build_for_config(config: TrainConfig, data, num_clusters: list[int] | None = None):
    """The config's network for ``data``, freshly initialised from ``config.seed`` (on the CPU).

    Images get an image network; the feature vectors of a frozen backbone (``FeatureData``) a network of
    ``FEATURE_ARCHS`` (the "feature-mlp" arch), sized to their length.
    """
    from sela_edu.data.features import FeatureData
    from sela_edu.models import FEATURE_ARCHS, build_model

    ks = config.cluster_list() if num_clusters is None else list(num_clusters)
    if isinstance(data, FeatureData) != (config.arch in FEATURE_ARCHS):
        kind = "feature vectors" if isinstance(data, FeatureData) else "images"
        raise ValueError(f"arch {config.arch!r} does not read {kind}: the feature vectors of a frozen backbone "
                         f"(FeatureData) train an arch of {FEATURE_ARCHS} (preset 'folder-backbone'), images any "
                         "other arch")
    torch.manual_seed(config.seed)
    if isinstance(data, FeatureData):
        if config.multi_crop():
            raise ValueError("feature vectors cannot be cropped: multi-crop trains on images only")
        return build_model(config.arch, num_heads=len(ks), num_clusters=ks, in_features=data.feature_dim,
                           rotation=config.rotation, head_temperature=config.head_temperature,
                           projection_dim=config.projection_dim, projection_hidden=config.projection_hidden)
    size = config.image_size or data.image_size
    return build_model(resolve_arch(config.arch, size), num_heads=len(ks), num_clusters=ks,
                       in_channels=data.num_channels, image_size=size, rotation=config.rotation,
                       head_temperature=config.head_temperature, projection_dim=config.projection_dim,
                       projection_hidden=config.projection_hidden)


def random_init_model(config: TrainConfig, data) -> nn.Module:
    """The untrained network (the "random init" baseline of the paper's tables), in eval mode."""
    return build_for_config(config, data).eval()


def fixed_labels(config: TrainConfig, data, labels) -> torch.Tensor | None:
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


def sgd_and_scaler(config: TrainConfig, model: nn.Module, device: torch.device):
    """The run's SGD (fused on CUDA: :func:`~sela_edu.training.runtime.fused_sgd`), its GradScaler (on for
    float16 autocast only) and whether autocast is on (``amp``, on CUDA only)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, fused=fused_sgd(device))
    use_amp = bool(config.amp) and device.type == "cuda"
    return optimizer, torch.amp.GradScaler("cuda", enabled=use_amp and config.amp_dtype == "float16"), use_amp


def build_run(config: TrainConfig, data, labels) -> tuple[RunSetup, LoopState]:
    """Data, model, optimiser and loaders of a run, and its loop state at the start (before any resume)."""
    from sela_edu.data import load_dataset

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
    fixed = fixed_labels(config, data, labels)
    targets = getattr(data, "targets", None)
    if targets is not None and (len(targets) != len(data) or int(torch.as_tensor(targets).min()) < 0):
        targets = None

    seed_everything(config.seed)
    model = build_for_config(config, data).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scaler, use_amp = sgd_and_scaler(config, model, device)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.lr_milestones,
                                                         gamma=config.lr_gamma)
    # the same augmentation for training and, in "augmented" score mode, for the label step
    common = dict(device=device, distributed=world > 1, num_workers=config.num_workers,
                  augment=training_augment(config, data))
    loader = run_loader(data, config.batch_size, train=True, seed=config.seed, **common)
    if len(loader) < 1:
        raise ValueError(f"no full batch: {len(data)} images per process and batch_size {config.batch_size}; "
                         "lower batch_size")
    score_bs = config.score_batch_size or 2 * config.batch_size
    if config.score_mode == "augmented":  # the official CIFAR code scores its (augmented) training loader
        score_loader = run_loader(data, score_bs, train=True, shuffle=False, drop_last=False, seed=config.seed + 1,
                                  **common)
    else:
        score_loader = plain_loader(config, data, score_bs, device=device, seed=config.seed,
                                    distributed=world > 1)
    method = method_for(config)
    schedule = relabel_schedule(config.epochs, config.nopts if method.label_step else 0, config.nopt_schedule, len(loader))
    start = fixed if fixed is not None else initial_labels(len(data), ks, config.seed)
    setup = RunSetup(config=config, data=data, ks=ks, targets=targets, subset=subset, device=device, use_amp=use_amp,
                   rank=rank, world=world, model=model, net=model, optimizer=optimizer, scheduler=scheduler,
                   scaler=scaler, loader=loader, score_loader=score_loader, steps_per_epoch=len(loader),
                   ckpt_dir=Path(config.checkpoint_dir) if config.checkpoint_dir else None, show=False,
                   method=method)
    return setup, LoopState(labels=start.to(device), potentials=[None] * len(ks), schedule=schedule)


__all__ = ['resolve_arch', 'build_for_config', 'random_init_model', 'RunSetup', 'fixed_labels', 'sgd_and_scaler',
           'build_run']
