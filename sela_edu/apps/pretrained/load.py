"""Loading a checkpoint file, or a released model by name, into a kit model (:class:`Pretrained`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sela_edu.apps.pretrained.convert import (convert_state_dict, detect_layout, model_from_state_dict,
                                              without_data_parallel)
from sela_edu.apps.pretrained.files import (download_to, fetch, is_offline, missing_file_error, read_torch_file,
                                            record_sha, verify_file)
from sela_edu.apps.pretrained.registry import (IMAGENET_MEAN, IMAGENET_STD, PretrainedError, ReleasedModel,
                                               released_spec)
from sela_edu.models import FEATURE_ARCHS, MultiHeadNet, build_model


@dataclass
class Pretrained:
    """A loaded checkpoint: the kit's model (eval mode) and what came with it."""

    model: MultiHeadNet
    labels: torch.Tensor | None      # heads x N pseudo-labels stored in the checkpoint (ImageNet train order)
    rotation_head: nn.Linear | None  # the +Rot model's 4-way head, when the file has one
    arch: str
    layout: str
    path: Path | None
    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    spec: ReleasedModel | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _labels_from(payload: Mapping[str, Any]) -> torch.Tensor | None:
    for key in ("labels", "L"):
        if key in payload and payload[key] is not None:
            labels = torch.as_tensor(payload[key])
            if labels.dim() == 1:
                labels = labels.unsqueeze(0)
            return labels.to(torch.int64).cpu()
    return None


def _state_from(payload: Any, path: Path) -> tuple[dict, torch.Tensor | None]:
    if not isinstance(payload, Mapping):
        raise PretrainedError(f"{path} holds a {type(payload).__name__}, not a state dict")
    labels = _labels_from(payload)
    for key in ("state_dict", "model"):
        if key in payload and isinstance(payload[key], Mapping):
            return dict(payload[key]), labels
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PretrainedError(f"{path} holds no weights (keys {sorted(payload)[:8]})")
    return tensors, labels


def load_checkpoint_file(path: str | os.PathLike, *, layout: str = "auto", trust: bool = False,
                         arch: str | None = None, image_size: int | None = None,
                         in_channels: int | None = None) -> Pretrained:
    """Load any checkpoint the kit understands into a kit model (eval mode).

    Reads the official layouts and torchvision's ResNets (a bare state dict, or a dict with
    ``state_dict`` and ``labels``/``L``), the SwAV repository's ResNet-50s (SwAV, DeepCluster-v2, SeLa-v2:
    ``module.``-prefixed torchvision keys with ``projection_head.*`` and ``prototypes.*``, bare or under
    ``state_dict``; the backbone is the model, the projection head and prototypes are
    ``info["projection_head"]`` and ``info["prototypes"]``), the kit's training checkpoints (``last.pt``: architecture,
    image size and channels from its config) and kit models saved by ``sela-edu label``
    (``{"build_kwargs", "state_dict"}``). A bare kit state dict (``sela-edu train``'s ``model.pt``) needs
    ``arch``, ``image_size`` and ``in_channels``. The file is read once; a kit checkpoint this kit cannot
    read (another format version) raises the checkpoint module's own error, and the files of a
    ``sela-edu label --backbone`` run (no image network) an error naming what they hold and what reads them.
    """
    path = Path(path)
    payload = _read_once(path, trust)
    _refuse_backbone_run_file(payload, path)
    build = payload.get("build_kwargs") if isinstance(payload, Mapping) else None
    state, labels = _state_from(payload, path)
    if build is None and isinstance(payload, Mapping) and isinstance(payload.get("config"), Mapping):
        build = _build_from_config(payload["config"], state)
    with _naming(path):
        is_kit = layout == "kit" or (layout == "auto" and detect_layout(without_data_parallel(state)) == "kit")
    if is_kit:
        if build is None:
            if arch is None or image_size is None or in_channels is None:
                raise PretrainedError(f"{path} is a bare kit state dict: pass arch=, image_size= and in_channels= "
                                      "(e.g. 'smallcnn', 28, 1 for the classroom preset)")
            build = dict(arch=arch, image_size=image_size, in_channels=in_channels)
        return _build_kit_model(path, payload, state, labels, build)
    with _naming(path):
        model, info = model_from_state_dict(state, layout, source=str(path))
    return Pretrained(model, labels, info.pop("rotation_head"), info["arch"], info["layout"], path, info=info)


@contextmanager
def _naming(path: Path):
    """A PretrainedError raised inside names ``path`` (prefixed when its message does not already)."""
    try:
        yield
    except PretrainedError as exc:
        if str(path) in str(exc):
            raise
        raise PretrainedError(f"{path}: {exc}") from exc


def _build_kit_model(path: Path, payload, state: dict, labels, build: Mapping[str, Any]) -> Pretrained:
    """A kit network rebuilt from ``build`` (its build_model arguments) with ``state``'s weights."""
    kit_state, info = convert_state_dict(state, "kit")
    kw = {k: build[k] for k in ("arch", "in_channels", "image_size", "small_stem", "head_temperature",
                                "projection_dim", "projection_hidden") if build.get(k) is not None}
    try:
        model = build_model(num_heads=len(info["head_sizes"]), num_clusters=info["head_sizes"], **kw)
    except ValueError as exc:
        raise PretrainedError(f"{path}: its network cannot be built ({exc})") from exc
    if "rotation_head.weight" in kit_state and hasattr(model, "add_rotation_head"):
        model.add_rotation_head()
    try:
        model.load_state_dict(kit_state)
    except RuntimeError as exc:
        raise PretrainedError(f"{path} does not fit a kit {kw}: {str(exc).splitlines()[0]}") from exc
    meta = payload.get("data") if isinstance(payload, Mapping) else None
    mean, std = _kit_normalisation(meta, payload, kw["in_channels"])
    return Pretrained(model.eval(), labels, None, kw["arch"], "kit", path, image_size=kw["image_size"],
                      mean=mean, std=std, info={"build_kwargs": kw})


def _read_once(path: Path, trust: bool):
    """What the file holds, from one ``torch.load``: a kit checkpoint (``save_checkpoint``'s format)
    unwrapped to its state (or the checkpoint module's own error, e.g. another format version), any other
    file as it is."""
    from sela_edu.training.checkpoint import FORMAT, checkpoint_state

    payload = read_torch_file(path, trust=trust)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        return checkpoint_state(payload, path)
    return payload


def _refuse_backbone_run_file(payload, path: Path) -> None:
    """A file of a ``sela-edu label --backbone`` run holds no image network: an error naming what it holds
    and what reads it instead (``sela-edu assign`` with the run's heads.pt), not a model builder's error."""
    what = _backbone_run_content(payload)
    if what is None:
        return
    if "heads" in payload and "backbone" in payload:   # heads.pt itself
        reader = f"`sela-edu assign FOLDER --model {path}`"
    elif path.parent.name == "checkpoints":   # OUT/checkpoints/last.pt: the heads are OUT/heads.pt
        reader = f"`sela-edu assign FOLDER --model {path.parent.parent / 'heads.pt'}`"
    else:
        reader = "`sela-edu assign FOLDER --model OUT/heads.pt` (OUT: that run's output folder)"
    raise PretrainedError(f"{path} holds {what}, not an image network: {reader} puts images into that run's "
                          "clusters")


def _backbone_run_content(payload) -> str | None:
    """What a file of a ``sela-edu label --backbone`` run holds (OUT/heads.pt, OUT/checkpoints/last.pt,
    prev.pt, features.pt); None for any other file."""
    if not isinstance(payload, Mapping):
        return None
    run = "`sela-edu label --backbone` run"
    if "heads" in payload and "backbone" in payload:
        return f"the heads a {run} trained on the features of the backbone {payload['backbone']}"
    if "blocks" in payload and "key" in payload:
        return f"the frozen backbone's features of a folder's images, computed by a {run}"
    if any(isinstance(payload.get(k), Mapping) and payload[k].get("arch") in FEATURE_ARCHS
           for k in ("config", "build_kwargs")):
        return f"heads trained on a frozen backbone's features (a training checkpoint of a {run})"
    return None


def _kit_normalisation(meta, payload, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the kit model was trained with: stored by ``sela-edu label``, else the training data
    set's (a training checkpoint's config), else ImageNet's (3 channels) or 0.5 / 0.25."""
    if isinstance(meta, Mapping) and "mean" in meta and "std" in meta:
        return tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"])
    config = payload.get("config") if isinstance(payload, Mapping) else None
    if isinstance(config, Mapping):
        from sela_edu.data.datasets import DATASET_INFO, canonical_name

        try:
            info = DATASET_INFO[canonical_name(config.get("dataset", ""))]
            return tuple(info["mean"]), tuple(info["std"])
        except (ValueError, KeyError):
            pass
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.25,) * channels


def _build_from_config(config: Mapping[str, Any], state: Mapping[str, Any]) -> dict | None:
    from sela_edu.data.datasets import DATASET_INFO, canonical_name
    from sela_edu.training import resolve_arch

    try:
        info = DATASET_INFO[canonical_name(config.get("dataset", ""))]
    except (ValueError, KeyError):
        return None
    size = config.get("image_size") or info["image_size"]
    return dict(arch=resolve_arch(config.get("arch", "smallcnn"), size), image_size=size,
                in_channels=info["num_channels"], head_temperature=config.get("head_temperature"),
                projection_dim=config.get("projection_dim"), projection_hidden=config.get("projection_hidden"))


def load_released(name: str, *, cache: str | os.PathLike | None = None, offline: bool | None = None,
                  progress: bool = True) -> Pretrained:
    """Download (once) and load a released checkpoint by name (see :data:`RELEASED`, :func:`list_released`).

    Returns a :class:`Pretrained`: the kit model in eval mode, ready for
    :func:`sela_edu.evaluation.score_dataset` or :func:`~sela_edu.evaluation.evaluate` on 224 px
    ImageNet-normalised images; its heads are the trained clustering heads; ``labels`` holds the ImageNet pseudo-labels stored in the file (the
    torchvision-format files), else None. The SwAV repository's models (``swav-*``, ``deepcluster-v2-*``,
    ``sela-v2-*``) are backbones: their model has a placeholder head, and their projection head and
    prototypes are in ``info`` (see :mod:`~sela_edu.apps.pretrained.convert`).
    """
    spec = released_spec(name)
    path = fetch(spec.name, cache=cache, offline=offline, progress=progress)
    digest = verify_file(path, spec.sha256)
    result = load_checkpoint_file(path, layout=spec.layout)
    if result.arch != spec.arch:
        raise PretrainedError(f"{path} holds a {result.arch}, the registry expects a {spec.arch}")
    record_sha(path, digest)
    result.spec = spec
    result.info["sha256"] = digest
    return result


_TORCH_HOME_HINT = "set $TORCH_HOME so that $TORCH_HOME/hub/checkpoints holds it"


def torchvision_backbone(arch: str, *, progress: bool = True, offline: bool | None = None) -> MultiHeadNet:
    """A kit model whose backbone holds torchvision's ImageNet-supervised weights (resnet18 or resnet50),
    downloaded into torch's hub cache; offline, an error names the URL and the path."""
    import torchvision

    if arch not in ("resnet18", "resnet50"):
        raise ValueError(f"torchvision backbones: resnet18 or resnet50, got {arch!r}")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    what = f"torchvision's {arch} weights"
    if not target.is_file():
        if is_offline(offline):
            raise missing_file_error(what, weights.url, target, "offline", _TORCH_HOME_HINT)
        try:
            download_to(weights.url, target, progress)
        except OSError as exc:
            raise missing_file_error(what, weights.url, target, str(exc), _TORCH_HOME_HINT) from exc
    state = read_torch_file(target)
    model, _ = model_from_state_dict(state, "torchvision", source=str(target))
    return model
