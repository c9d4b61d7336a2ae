"""The SeLa authors' released models, loaded by name into the kit's :class:`~sela_edu.models.MultiHeadNet`.

The authors released two kinds of checkpoint (official repository yukimasano/self-label, README and
``scripts/download_models.sh``):

* **The paper's models**, in one archive ``pretrained.zip``: ``alexnet-10x3k-wRot.pth`` (AlexNet, 10 heads
  of 3000 clusters, trained with the rotation task) and ``resnet-10x3k.pth`` (ResNet-50, 10 x 3000). Each
  file is a bare ``state_dict`` of the official model classes: ``models/alexnet.py`` (keys
  ``features.<i>``, ``classifier.<i>``, ``top_layer<h>``) and the pre-activation ResNet-50 of
  ``models/resnetv2.py`` (``features.0`` 7x7 conv, ``features.2``-``features.5`` the four stages of
  pre-activation bottlenecks, ``top_layer<h>``). The official README loads the ResNet into the
  pre-activation class, and ``scripts/eval-resnet.sh`` evaluates it as ``resnetv2``. The archive's full
  list of files is not documented; ``alexnet-10x3k`` (without rotation) is registered under the name
  ``alexnet-10x3k.pth`` as a guess, and a missing member is reported with the members the archive holds.
* **Torchvision-format ResNets** (20 August 2020, trained with stronger augmentation, "Aug++"):
  ``resnet18-1k_pp.pth``, ``resnet50-1k_pp.pth``, ``resnet50-10x3k_pp.pth``. Each is a dict with
  ``state_dict`` (torchvision's ResNet keys, ``fc`` the first head only: the official
  ``change_state_dict.py`` keeps ``top_layer0`` as ``fc`` and drops the other heads) and the pseudo-labels
  of ImageNet's training images (``labels``, written as ``L`` in the README's example; both are read),
  ``heads x N``.

Key mapping onto the kit (:func:`convert_state_dict`): the official AlexNet's ``features.<i>`` and
``classifier.<i>`` are the kit's ``backbone.0.<i>`` and ``backbone.2.<i>`` (same layer order: the kit's
AlexNet was written after the official file), ``top_layer<h>`` (or ``top_layer`` for one head) is
``heads.<h>``; torchvision's keys go under ``backbone.`` and ``fc`` becomes ``heads.0``. The pre-activation
ResNet-50 has no counterpart in :mod:`sela_edu.models`; :class:`PreActResNet50` here rebuilds it with the
official parameter names. ``module.`` segments (``DataParallel``) are dropped. The official
``models/resnetv1.py`` layout (``features.0`` conv, ``features.1`` BatchNorm, ``features.4``-``features.7``
stages) is mapped onto torchvision's names as ``change_state_dict.py`` does, for checkpoints trained with
the later official code.

A 4-way head (``top_layer<h>`` with 4 outputs, after the clustering heads) is the rotation head of the
``+Rot`` model; it is returned separately (:attr:`Pretrained.rotation_head`), not as a clustering head.

Downloads go to :func:`cache_dir` (``$SELA_CACHE``, default ``~/.cache/sela-edu``) with
``torch.hub.download_url_to_file`` (progress bar). Verification, as far as the release allows: the
authors publish no checksums, so the kit checks (1) that a zip archive's every member passes its CRC-32
check (``pretrained.zip``, and every checkpoint written by torch >= 1.6, which is itself a zip), (2) that
the file loads and holds the expected keys and shapes, and (3) on later loads, that the file still has
the SHA-256 recorded next to it at its first successful load (``<file>.sha256``), so a cache damaged
later is caught. Offline (``$SELA_OFFLINE=1``, ``offline=True``, or no network), a missing file is
refused with its URL and the path to put it at.

Usage::

    from sela_edu.apps.pretrained import load_released, list_released
    print(list_released())
    pre = load_released("resnet50-10x3k-pp")      # downloads about 100 MB once
    feats = pre.model.features(images_224px)      # N x 2048
    pre.labels.shape                               # heads x 1,281,167 ImageNet pseudo-labels
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sela_edu.models import MultiHeadNet, build_model

#: Where the paper's models and the stronger-augmentation ResNets live.
ASSET_URL = "http://www.robots.ox.ac.uk/~vgg/research/self-label/asset/"
ZIP_URL = ASSET_URL + "pretrained.zip"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The official README's clustering and linear-probe figures on ImageNet (%), where it gives them.
README_FIGURES = {
    "resnet50-10x3k": {"NMI": 54.2, "aNMI": 34.4, "ARI": 7.2, "linear probe top-1": 61.5},
    "resnet18-1k-pp": {"label accuracy": 26.9, "NMI": 62.7, "aNMI": 36.4, "ARI": 12.5, "linear probe top-1": 53.3},
    "resnet50-1k-pp": {"label accuracy": 30.5, "NMI": 65.7, "aNMI": 42.0, "ARI": 16.2, "linear probe top-1": 63.5},
    "resnet50-10x3k-pp": {"label accuracy": 38.1, "NMI": 75.7, "aNMI": 52.8, "ARI": 27.6, "linear probe top-1": 68.8},
}


class PretrainedError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, or not in a layout the kit knows."""


@dataclass(frozen=True)
class ReleasedModel:
    """One released checkpoint: where it is, and what network it holds."""

    name: str
    url: str                  # the file, or the archive holding it
    filename: str             # the checkpoint's file name (inside the archive when ``member`` is True)
    arch: str                 # "alexnet", "resnet50-preact", "resnet18", "resnet50"
    layout: str               # "sela-alexnet", "sela-resnetv2", "torchvision"
    num_heads: int            # clustering heads of the trained model
    num_clusters: int
    in_archive: bool = False  # inside pretrained.zip
    confirmed: bool = True    # False: the file name is a guess (the archive's listing is undocumented)
    description: str = ""
    sha256: str | None = None  # none published by the authors
    figures: Mapping[str, float] = field(default_factory=dict)


RELEASED: dict[str, ReleasedModel] = {m.name: m for m in (
    ReleasedModel("alexnet-10x3k-rot", ZIP_URL, "alexnet-10x3k-wRot.pth", "alexnet", "sela-alexnet", 10, 3000,
                  in_archive=True, description="AlexNet (BatchNorm), 10 heads x 3000 clusters, with the rotation task "
                  "(the official README's AlexNet)"),
    ReleasedModel("alexnet-10x3k", ZIP_URL, "alexnet-10x3k.pth", "alexnet", "sela-alexnet", 10, 3000,
                  in_archive=True, confirmed=False, description="AlexNet (BatchNorm), 10 heads x 3000 clusters "
                  "(member name not confirmed by the official code)"),
    ReleasedModel("resnet50-10x3k", ZIP_URL, "resnet-10x3k.pth", "resnet50-preact", "sela-resnetv2", 10, 3000,
                  in_archive=True, description="pre-activation ResNet-50, 10 heads x 3000 clusters (the paper's)",
                  figures=README_FIGURES["resnet50-10x3k"]),
    ReleasedModel("resnet18-1k-pp", ASSET_URL + "new_models/resnet18-1k_pp.pth", "resnet18-1k_pp.pth", "resnet18",
                  "torchvision", 1, 1000, description="torchvision ResNet-18, 1 head x 1000, stronger augmentation; "
                  "with ImageNet labels", figures=README_FIGURES["resnet18-1k-pp"]),
    ReleasedModel("resnet50-1k-pp", ASSET_URL + "new_models/resnet50-1k_pp.pth", "resnet50-1k_pp.pth", "resnet50",
                  "torchvision", 1, 1000, description="torchvision ResNet-50, 1 head x 1000, stronger augmentation; "
                  "with ImageNet labels", figures=README_FIGURES["resnet50-1k-pp"]),
    ReleasedModel("resnet50-10x3k-pp", ASSET_URL + "new_models/resnet50-10x3k_pp.pth", "resnet50-10x3k_pp.pth",
                  "resnet50", "torchvision", 10, 3000, description="torchvision ResNet-50, 10 x 3000 (first head kept "
                  "in the file), stronger augmentation; with ImageNet labels", figures=README_FIGURES["resnet50-10x3k-pp"]),
)}

#: Pseudo-labels of ImageNet's training images released as CSV (format undocumented; see labels_io).
RELEASED_LABELS = {
    "alexnet-labels": ASSET_URL + "alexnet-labels.csv",
    "resnet-labels": ASSET_URL + "resnet-labels.csv",
}


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


# --------------------------------------------------------------------------------------------------
# The pre-activation ResNet-50 of the official models/resnetv2.py, with its parameter names
# --------------------------------------------------------------------------------------------------


class _PreActBottleneck(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, expansion: int = 4):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, expansion * planes, 1, bias=False)
        if stride != 1 or in_planes != expansion * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, expansion * planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet50(nn.Module):
    """Pre-activation ResNet-50 as in the official code: 7x7/2 conv, max-pool, four stages of
    pre-activation bottlenecks (3, 4, 6, 3 blocks; widths 64-128-256-512, x4 out), global average pool.
    No BatchNorm after the last block (as there). Output: N x 2048. ``width`` scales the channels
    (tests use a small one)."""

    def __init__(self, width: int = 64, blocks=(3, 4, 6, 3), in_channels: int = 3):
        super().__init__()
        self.in_planes = width
        stages = []
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers = []
            for s in [1 if i == 0 else 2] + [1] * (n - 1):
                layers.append(_PreActBottleneck(self.in_planes, planes, s))
                self.in_planes = planes * 4
            stages.append(nn.Sequential(*layers))
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                                      nn.MaxPool2d(3, stride=2, padding=1), *stages, nn.AdaptiveAvgPool2d(1))
        self.out_dim = self.in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


# --------------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------------

_HEAD_RE = re.compile(r"^top_layer(\d*)\.(weight|bias)$")
_RESNETV1_STAGES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        parts = [p for p in key.split(".") if p != "module"]
        out[".".join(parts)] = value
    return out


def detect_layout(state: Mapping[str, Any]) -> str:
    """Which layout a state dict is in: "kit", "torchvision", "sela-alexnet", "sela-resnetv2",
    "sela-resnetv1". Raises PretrainedError for anything else."""
    keys = set(state)
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("heads.") for k in keys):
        return "kit"
    if "conv1.weight" in keys and any(k.startswith("layer4.") for k in keys):
        return "torchvision"
    if any(k.startswith("classifier.") for k in keys) and "features.0.weight" in keys:
        return "sela-alexnet"
    if "features.0.weight" in keys and "features.1.running_mean" in keys and any(k.startswith("features.4.") for k in keys):
        return "sela-resnetv1"
    if "features.0.weight" in keys and any(k.startswith("features.2.0.bn1.") for k in keys):
        return "sela-resnetv2"
    sample = sorted(keys)[:6]
    raise PretrainedError(f"unknown checkpoint layout (keys such as {sample}); the kit reads the official "
                          "AlexNet and ResNet layouts, torchvision's ResNets and its own models")


def _split_heads(state: dict[str, torch.Tensor], prefix_map) -> tuple[dict, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Separate ``top_layer<h>`` entries (in head order) from the rest, renaming the rest with prefix_map."""
    heads: dict[int, dict[str, torch.Tensor]] = {}
    body = {}
    for key, value in state.items():
        m = _HEAD_RE.match(key)
        if m:
            heads.setdefault(int(m.group(1) or 0), {})[m.group(2)] = value
        elif key.startswith("top_layer."):  # resnetv2 with one head: top_layer is a Sequential
            heads.setdefault(0, {})[key.rsplit(".", 1)[1]] = value
        else:
            body[prefix_map(key)] = value
    ordered = []
    for h in sorted(heads):
        if set(heads[h]) != {"weight", "bias"}:
            raise PretrainedError(f"head top_layer{h} lacks a weight or a bias")
        ordered.append((heads[h]["weight"], heads[h]["bias"]))
    return body, ordered


def _alexnet_key(key: str) -> str:
    first, _, rest = key.partition(".")
    if first == "features":
        return "backbone.0." + rest
    if first == "classifier":
        return "backbone.2." + rest
    raise PretrainedError(f"unexpected key {key!r} in an AlexNet checkpoint")


def _resnetv1_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] != "features" or len(parts) < 3 or parts[1] not in _RESNETV1_STAGES:
        raise PretrainedError(f"unexpected key {key!r} in a ResNet (official v1 layout) checkpoint")
    return "backbone." + ".".join([_RESNETV1_STAGES[parts[1]], *parts[2:]])


def convert_state_dict(state: Mapping[str, Any], layout: str = "auto") -> tuple[dict, dict]:
    """Map an official (or torchvision) state dict onto the kit's names.

    Returns ``(kit_state, info)``: ``kit_state`` has ``backbone.*`` and ``heads.<h>.*`` keys; ``info``
    holds ``layout``, ``arch`` ("alexnet", "resnet18", "resnet50", "resnet50-preact" or, for the kit's
    own files, None), ``head_sizes`` (K of every clustering head), ``rotation_head`` ((weight, bias) of
    a trailing 4-way head, or None) and ``preact_width`` (pre-activation ResNets).
    """
    state = _strip_module(state)
    if layout == "auto":
        layout = detect_layout(state)
    info: dict[str, Any] = {"layout": layout, "rotation_head": None}
    if layout == "kit":
        ks = []
        h = 0
        while f"heads.{h}.weight" in state:
            ks.append(int(state[f"heads.{h}.weight"].shape[0]))
            h += 1
        info.update(arch=None, head_sizes=ks)
        return dict(state), info
    if layout == "torchvision":
        heads = []
        body = {}
        for key, value in state.items():
            if key in ("fc.weight", "fc.bias"):
                continue
            body["backbone." + key] = value
        if "fc.weight" in state:
            heads.append((state["fc.weight"], state["fc.bias"]))
        arch = "resnet50" if "layer1.0.conv3.weight" in state else "resnet18"
    elif layout == "sela-alexnet":
        body, heads = _split_heads(state, _alexnet_key)
        arch = "alexnet"
    elif layout == "sela-resnetv1":
        body, heads = _split_heads(state, _resnetv1_key)
        arch = "resnet50" if "backbone.layer1.0.conv3.weight" in body else "resnet18"
    elif layout == "sela-resnetv2":
        body, heads = _split_heads(state, lambda k: "backbone." + k)
        arch = "resnet50-preact"
        info["preact_width"] = int(state["features.0.weight"].shape[0])
    else:
        raise PretrainedError(f"unknown layout {layout!r}")
    if len(heads) >= 2 and heads[-1][0].shape[0] == 4 and heads[0][0].shape[0] != 4:
        info["rotation_head"] = heads.pop()
    for h, (w, b) in enumerate(heads):
        body[f"heads.{h}.weight"] = w
        body[f"heads.{h}.bias"] = b
    info.update(arch=arch, head_sizes=[int(w.shape[0]) for w, _ in heads])
    return body, info


# --------------------------------------------------------------------------------------------------
# Building the kit's model for a converted state dict
# --------------------------------------------------------------------------------------------------


def build_for_state(arch: str, head_sizes, *, feature_dim: int | None = None, preact_width: int = 64,
                    image_size: int = 224, in_channels: int = 3) -> MultiHeadNet:
    """The kit's network for ``arch`` with heads of ``head_sizes`` (a network without heads gets one
    placeholder head of 2 clusters, replaced by whatever the caller needs)."""
    ks = list(head_sizes) or [2]
    if arch == "resnet50-preact":
        backbone = PreActResNet50(width=preact_width, in_channels=in_channels)
        model = MultiHeadNet(backbone, backbone.out_dim, len(ks), ks,
                             build_kwargs=dict(arch=arch, in_channels=in_channels, image_size=image_size))
        model.arch, model.in_channels, model.image_size = arch, in_channels, image_size
        return model
    return build_model(arch, num_heads=len(ks), num_clusters=ks, in_channels=in_channels, image_size=image_size,
                       small_stem=False if arch.startswith("resnet") else None)


def model_from_state_dict(state: Mapping[str, Any], layout: str = "auto", *, strict: bool = True,
                          source: str = "checkpoint") -> tuple[MultiHeadNet, dict]:
    """A kit model (eval mode) holding the weights of ``state`` (any layout :func:`detect_layout` knows
    except the kit's own, whose architecture a bare state dict does not say: use
    :func:`load_checkpoint_file`). Returns ``(model, info)``; the rotation head, if any, is ``info["rotation_head"]``
    as an ``nn.Linear``."""
    kit_state, info = convert_state_dict(state, layout)
    if info["arch"] is None:
        raise PretrainedError(f"{source}: a kit state dict without its architecture; use load_checkpoint_file()")
    # Built on the meta device: no time spent drawing random weights that the checkpoint replaces.
    with torch.device("meta"):
        model = build_for_state(info["arch"], info["head_sizes"], preact_width=info.get("preact_width", 64))
    reference = model.state_dict()
    if not info["head_sizes"]:
        kit_state = {k: v for k, v in kit_state.items() if not k.startswith("heads.")}
    expected = {k for k in reference if info["head_sizes"] or not k.startswith("heads.")}
    for key in expected - set(kit_state):
        if key.endswith("num_batches_tracked"):  # absent from checkpoints of old PyTorch versions
            kit_state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(expected - set(kit_state))
    unexpected = sorted(set(kit_state) - set(reference))
    if strict and (missing or unexpected):
        raise PretrainedError(f"{source} does not fit the kit's {info['arch']} ({info['layout']} layout): "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for key, value in kit_state.items():
        if key in reference and tuple(reference[key].shape) != tuple(value.shape):
            raise PretrainedError(f"{source}: {key} has shape {tuple(value.shape)}, the kit's {info['arch']} "
                                  f"expects {tuple(reference[key].shape)}")
    kit_state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in kit_state.items()
                 if k in reference}
    model.load_state_dict(kit_state, strict=False, assign=True)
    if not info["head_sizes"]:
        model.reset_heads(1, 2)  # a placeholder head on the CPU, for the caller to replace
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise PretrainedError(f"{source}: no weights for {leftover[:5]}")
    rot = info.get("rotation_head")
    if rot is not None:
        head = nn.Linear(rot[0].shape[1], rot[0].shape[0])
        with torch.no_grad():
            head.weight.copy_(rot[0])
            head.bias.copy_(rot[1])
        info["rotation_head"] = head.eval()
        if hasattr(model, "add_rotation_head"):  # the kit's +Rot models carry it as model.rotation_head
            model.rotation_head = info["rotation_head"]
    return model.eval(), info


# --------------------------------------------------------------------------------------------------
# Files: cache, download, verification, reading
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where downloads go: ``$SELA_CACHE``, else ``~/.cache/sela-edu``."""
    env = os.environ.get("SELA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sela-edu"


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get("SELA_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _missing(what: str, url: str, target: Path, cause: str = "",
             where: str = "set $SELA_CACHE to the folder that holds it") -> FileNotFoundError:
    why = f" ({cause})" if cause else ""
    return FileNotFoundError(
        f"{what} is not in the cache and cannot be downloaded here{why}. On a machine with internet, "
        f"download {url} and put it at {target} (or {where}).")


def _download(url: str, target: Path, progress: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=progress)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)


def check_zip(path: Path) -> None:
    """Every member of a zip archive passes its CRC-32 check; PretrainedError (naming the file) if not."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # BadZipFile, OSError, EOFError, UnicodeDecodeError... depending on the damage
        raise PretrainedError(f"{path} is not a readable zip archive ({type(exc).__name__}: {exc}): the file is truncated or "
                              "corrupt; delete it and download again") from exc
    if bad is not None:
        raise PretrainedError(f"{path}: member {bad} fails its CRC check: the file is corrupt; delete it and "
                              "download again")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str | None = None) -> str:
    """Check what can be checked: zip CRCs (torch >= 1.6 checkpoints are zips), a published SHA-256
    when there is one, else the SHA-256 recorded at the first successful load. Returns the SHA-256."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        check_zip(path)
    digest = _sha256(path)
    recorded = path.with_name(path.name + ".sha256")
    want = expected_sha256 or (recorded.read_text().split()[0] if recorded.is_file() else None)
    if want and digest != want:
        raise PretrainedError(f"{path} has SHA-256 {digest}, expected {want}: the file changed or is corrupt; "
                              "delete it (and its .sha256) and download again")
    return digest


def _record_sha(path: Path, digest: str) -> None:
    recorded = path.with_name(path.name + ".sha256")
    if not recorded.is_file():
        recorded.write_text(f"{digest}  {path.name}\n")


def read_torch_file(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """``torch.load`` on the CPU with a clear error for truncated or corrupt files.

    ``weights_only=True`` by default (tensors, dicts, numbers, strings: what the released files hold);
    ``trust=True`` allows arbitrary pickled objects, for files from a source you trust."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise PretrainedError(f"{path} is empty: an interrupted download? Delete it and download again")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # RuntimeError, EOFError, UnpicklingError... depending on the damage
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise PretrainedError(f"{path} holds Python objects beyond tensors ({text}); if you trust its source, "
                                  "pass trust=True") from exc
        raise PretrainedError(f"{path} cannot be read ({text}): the file is truncated or corrupt; delete it "
                              "and download it again") from exc


def fetch(name: str, *, cache: str | os.PathLike | None = None, offline: bool | None = None,
          progress: bool = True) -> Path:
    """The local path of released checkpoint ``name``, downloading (and unpacking) it if needed."""
    spec = _spec(name)
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / spec.filename
    if target.is_file():
        return target
    if spec.in_archive:
        archive = folder / "pretrained.zip"
        if not archive.is_file():
            if _offline(offline):
                raise _missing(f"{spec.filename} (inside pretrained.zip)", spec.url, archive, "offline")
            try:
                _download(spec.url, archive, progress)
            except OSError as exc:
                raise _missing(f"{spec.filename} (inside pretrained.zip)", spec.url, archive, str(exc)) from exc
        check_zip(archive)
        with zipfile.ZipFile(archive) as zf:
            members = {Path(m).name: m for m in zf.namelist() if not m.endswith("/")}
            if spec.filename not in members:
                raise PretrainedError(f"{archive} holds no {spec.filename} (it holds {sorted(members)}); the "
                                      "archive's contents are undocumented, so this name may not exist")
            with zf.open(members[spec.filename]) as src, open(target.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(target.with_suffix(".part"), target)
        return target
    if _offline(offline):
        raise _missing(spec.filename, spec.url, target, "offline")
    try:
        _download(spec.url, target, progress)
    except OSError as exc:
        raise _missing(spec.filename, spec.url, target, str(exc)) from exc
    return target


def _spec(name: str) -> ReleasedModel:
    key = name.strip().lower().replace("_", "-")
    if key not in RELEASED:
        raise ValueError(f"unknown released model {name!r}; choose one of {', '.join(RELEASED)}")
    return RELEASED[key]


def list_released() -> str:
    """A table of the released models: name, architecture, heads, figures from the official README."""
    lines = [f"{'name':<20} {'arch':<16} {'heads x K':<10} README figures (ImageNet, %)"]
    for spec in RELEASED.values():
        figures = ", ".join(f"{k} {v}" for k, v in spec.figures.items()) or "-"
        lines.append(f"{spec.name:<20} {spec.arch:<16} {spec.num_heads} x {spec.num_clusters:<6} {figures}")
    return "\n".join(lines)


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
    ``state_dict`` and ``labels``/``L``), the kit's training checkpoints (``last.pt``: architecture,
    image size and channels from its config) and kit models saved by ``sela-edu label``
    (``{"build_kwargs", "state_dict"}``). A bare kit state dict (``sela-edu train``'s ``model.pt``) needs
    ``arch``, ``image_size`` and ``in_channels``.
    """
    path = Path(path)
    payload = _read_kit_checkpoint(path)
    if payload is None:
        payload = read_torch_file(path, trust=trust)
    build = payload.get("build_kwargs") if isinstance(payload, Mapping) else None
    state, labels = _state_from(payload, path)
    if build is None and isinstance(payload, Mapping) and isinstance(payload.get("config"), Mapping):
        build = _build_from_config(payload["config"], state)
    if (layout == "auto" and detect_layout(_strip_module(state)) == "kit") or layout == "kit":
        if build is None:
            if arch is None or image_size is None or in_channels is None:
                raise PretrainedError(f"{path} is a bare kit state dict: pass arch=, image_size= and in_channels= "
                                      "(e.g. 'smallcnn', 28, 1 for the classroom preset)")
            build = dict(arch=arch, image_size=image_size, in_channels=in_channels)
        kit_state, info = convert_state_dict(state, "kit")
        kw = {k: build[k] for k in ("arch", "in_channels", "image_size", "small_stem", "head_temperature")
              if build.get(k) is not None}
        model = build_model(num_heads=len(info["head_sizes"]), num_clusters=info["head_sizes"], **kw)
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
    model, info = model_from_state_dict(state, layout, source=str(path))
    return Pretrained(model, labels, info.pop("rotation_head"), info["arch"], info["layout"], path, info=info)


def _read_kit_checkpoint(path: Path):
    """The state of a kit training checkpoint (``save_checkpoint`` format), else None."""
    from sela_edu.training import checkpoint as ckpt

    try:
        state = ckpt.load_checkpoint(path)
    except ckpt.CheckpointError:   # not in the kit's format (a released file, a bare state dict): read it plainly
        return None
    return state if isinstance(state, Mapping) and "model" in state else None


def _kit_normalisation(meta, payload, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the kit model was trained with: stored by ``sela-edu label``, else the training data
    set's (a training checkpoint's config), else ImageNet's (3 channels) or 0.5 / 0.25."""
    if isinstance(meta, Mapping) and "mean" in meta and "std" in meta:
        return tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"])
    config = payload.get("config") if isinstance(payload, Mapping) else None
    if isinstance(config, Mapping):
        from sela_edu.data.datasets import DATASET_INFO, _canonical_name

        try:
            info = DATASET_INFO[_canonical_name(config.get("dataset", ""))]
            return tuple(info["mean"]), tuple(info["std"])
        except (ValueError, KeyError):
            pass
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.25,) * channels


def _build_from_config(config: Mapping[str, Any], state: Mapping[str, Any]) -> dict | None:
    from sela_edu.data.datasets import DATASET_INFO, _canonical_name
    from sela_edu.training import resolve_arch

    try:
        info = DATASET_INFO[_canonical_name(config.get("dataset", ""))]
    except (ValueError, KeyError):
        return None
    size = config.get("image_size") or info["image_size"]
    return dict(arch=resolve_arch(config.get("arch", "smallcnn"), size), image_size=size,
                in_channels=info["num_channels"], head_temperature=config.get("head_temperature"))


def load_released(name: str, *, cache: str | os.PathLike | None = None, offline: bool | None = None,
                  progress: bool = True) -> Pretrained:
    """Download (once) and load a released checkpoint by name (see :data:`RELEASED`, :func:`list_released`).

    Returns a :class:`Pretrained`: the kit model in eval mode, ready for
    :func:`sela_edu.evaluation.extract_features` on 224 px ImageNet-normalised images; its heads are
    the trained clustering heads; ``labels`` holds the ImageNet pseudo-labels stored in the file (the
    torchvision-format files), else None.
    """
    spec = _spec(name)
    path = fetch(spec.name, cache=cache, offline=offline, progress=progress)
    digest = verify_file(path, spec.sha256)
    result = load_checkpoint_file(path, layout=spec.layout)
    if result.arch != spec.arch:
        raise PretrainedError(f"{path} holds a {result.arch}, the registry expects a {spec.arch}")
    _record_sha(path, digest)
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
    if not target.is_file():
        if _offline(offline):
            raise _missing(f"torchvision's {arch} weights", weights.url, target, "offline", _TORCH_HOME_HINT)
        try:
            _download(weights.url, target, progress)
        except OSError as exc:
            raise _missing(f"torchvision's {arch} weights", weights.url, target, str(exc), _TORCH_HOME_HINT) from exc
    state = read_torch_file(target)
    model, _ = model_from_state_dict(state, "torchvision", source=str(target))
    return model


__all__ = ["RELEASED", "RELEASED_LABELS", "README_FIGURES", "ReleasedModel", "Pretrained", "PretrainedError",
           "PreActResNet50", "cache_dir", "fetch", "load_released", "load_checkpoint_file", "list_released",
           "convert_state_dict", "detect_layout", "model_from_state_dict", "build_for_state", "verify_file",
           "check_zip", "read_torch_file", "torchvision_backbone"]
