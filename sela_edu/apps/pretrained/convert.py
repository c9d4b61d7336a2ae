"""Official key layouts mapped onto the kit's models, and the kit's model built for a converted state dict.

Key mapping onto the kit (:func:`convert_state_dict`): the official AlexNet's ``features.<i>`` and
``classifier.<i>`` are the kit's ``backbone.0.<i>`` and ``backbone.2.<i>`` (same layer order: the kit's
AlexNet was written after the official file), ``top_layer<h>`` (or ``top_layer`` for one head) is
``heads.<h>``; torchvision's keys go under ``backbone.`` and ``fc`` becomes ``heads.0``. The pre-activation
ResNet-50 has no counterpart in :mod:`sela_edu.models`; :class:`~sela_edu.apps.pretrained.preact.PreActResNet50`
rebuilds it with the official parameter names. ``module.`` segments (``DataParallel``) are dropped. The
official ``models/resnetv1.py`` layout (``features.0`` conv, ``features.1`` BatchNorm,
``features.4``-``features.7`` stages) is mapped onto torchvision's names as ``change_state_dict.py`` does,
for checkpoints trained with the later official code.

A 4-way head (``top_layer<h>`` with 4 outputs, after the clustering heads) is the rotation head of the
``+Rot`` model; it is returned separately (``info["rotation_head"]``), not as a clustering head.

The ``"swav"`` layout (the SwAV, DeepCluster-v2 and SeLa-v2 ResNet-50s of facebookresearch/swav) is
torchvision's ResNet keys beside ``projection_head.*`` and ``prototypes.*``; the backbone is read exactly
as the ``"torchvision"`` layout's (the official ``hubconf.py`` does the same: ``module.`` stripped, the
rest loaded into torchvision's ``resnet50``; the official model's extra 1-pixel pad plus a 7x7 convolution
of padding 2 equals torchvision's padding 3). The prototypes score the L2-normalised 128-d output of the
MLP projection head, not the 2048-d features: the kit model takes both, as its projection head
(:class:`~sela_edu.models.MultiHeadNet`'s ``projection``) and one cosine head per prototype set (one for SwAV
and SeLa-v2, three for DeepCluster-v2) at SwAV's temperature 0.1, so that its heads give SwAV's cluster
scores (``assign``, the heads' NMI). They are also kept as ``info["projection_head"]`` (a module, or None)
and ``info["prototypes"]`` (K x 128 weights). A file without them (or with another projection head) keeps
``fc`` as its head when it has one, else the placeholder head of a headless network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sela_edu.apps.pretrained.preact import PreActResNet50
from sela_edu.apps.pretrained.registry import PretrainedError
from sela_edu.models import MultiHeadNet, build_model


_HEAD_RE = re.compile(r"^top_layer(\d*)\.(weight|bias)$")
_RESNETV1_STAGES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def without_data_parallel(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every ``module.`` segment of its keys dropped (what ``DataParallel`` adds)."""
    out = {}
    for key, value in state.items():
        parts = [p for p in key.split(".") if p != "module"]
        out[".".join(parts)] = value
    return out


_SWAV_EXTRAS = ("projection_head.", "prototypes.")


def detect_layout(state: Mapping[str, Any]) -> str:
    """Which layout a state dict is in: "kit", "torchvision", "swav" (torchvision's keys with SwAV's
    projection head and prototypes), "sela-alexnet", "sela-resnetv2", "sela-resnetv1". Raises
    PretrainedError for anything else."""
    keys = set(state)
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("heads.") for k in keys):
        return "kit"
    if "conv1.weight" in keys and any(k.startswith("layer4.") for k in keys):
        return "swav" if any(k.startswith(_SWAV_EXTRAS) for k in keys) else "torchvision"
    if any(k.startswith("classifier.") for k in keys) and "features.0.weight" in keys:
        return "sela-alexnet"
    if "features.0.weight" in keys and "features.1.running_mean" in keys and any(k.startswith("features.4.") for k in keys):
        return "sela-resnetv1"
    if "features.0.weight" in keys and any(k.startswith("features.2.0.bn1.") for k in keys):
        return "sela-resnetv2"
    sample = sorted(keys)[:6]
    raise PretrainedError(f"unknown checkpoint layout (keys such as {sample}); the kit reads the official "
                          "AlexNet and ResNet layouts, torchvision's ResNets (also SwAV's, with projection head "
                          "and prototypes) and its own models")


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


def _split_swav(state: dict[str, Any]) -> tuple[dict, dict, list]:
    """SwAV's extras taken out of a state dict: (the rest, the projection head's entries without their
    ``projection_head.`` prefix, the prototype weights in order: ``prototypes.weight``, or
    ``prototypes.prototypes<i>.weight`` for several sets)."""
    rest, projection, sets = {}, {}, {}
    for key, value in state.items():
        if key.startswith("projection_head."):
            projection[key[len("projection_head."):]] = value
        elif key.startswith("prototypes."):
            m = re.fullmatch(r"prototypes\.(?:prototypes(\d+)\.)?weight", key)
            if m is None or not isinstance(value, torch.Tensor) or value.dim() != 2:
                raise PretrainedError(f"unexpected prototype entry {key!r} in a SwAV-layout checkpoint")
            sets[int(m.group(1) or 0)] = value
        else:
            rest[key] = value
    return rest, projection, [sets[i] for i in sorted(sets)]


def convert_state_dict(state: Mapping[str, Any], layout: str = "auto") -> tuple[dict, dict]:
    """Map an official (or torchvision, or SwAV) state dict onto the kit's names.

    Returns ``(kit_state, info)``: ``kit_state`` has ``backbone.*`` and ``heads.<h>.*`` keys; ``info``
    holds ``layout``, ``arch`` ("alexnet", "resnet18", "resnet50", "resnet50-preact" or, for the kit's
    own files, None), ``head_sizes`` (K of every clustering head), ``rotation_head`` ((weight, bias) of
    a trailing 4-way head, or None) and ``preact_width`` (pre-activation ResNets). The ``"swav"`` layout
    adds ``projection_head`` (its entries, ``0.weight``..., or None), ``prototypes`` (list of K x D
    weights) and ``prototype_sizes`` (their K); see the module docstring.
    """
    state = without_data_parallel(state)
    if layout == "auto":
        layout = detect_layout(state)
    info: dict[str, Any] = {"layout": layout, "rotation_head": None}
    if layout == "swav":
        state, projection, prototypes = _split_swav(state)
        info.update(projection_head=projection or None, prototypes=prototypes,
                    prototype_sizes=[int(p.shape[0]) for p in prototypes])
    if layout == "kit":
        ks = []
        h = 0
        while f"heads.{h}.weight" in state:
            ks.append(int(state[f"heads.{h}.weight"].shape[0]))
            h += 1
        info.update(arch=None, head_sizes=ks)
        return dict(state), info
    if layout in ("torchvision", "swav"):
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


def _projection_module(entries: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """SwAV's projection head rebuilt from its entries: ``nn.Linear`` (``weight``, ``bias``) or the MLP
    ``nn.Sequential`` of ``src/resnet50.py`` (Linear, BatchNorm1d, ReLU, Linear: a ReLU wherever an index
    has no entries), with the file's weights, in eval mode."""
    try:
        if set(entries) <= {"weight", "bias"}:
            w = entries["weight"]
            module: nn.Module = nn.Linear(w.shape[1], w.shape[0], bias="bias" in entries)
        else:
            by_index: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in entries.items():
                index, name = key.split(".", 1)
                by_index.setdefault(int(index), {})[name] = value
            layers: list[nn.Module] = []
            for i in range(max(by_index) + 1):
                sub = by_index.get(i)
                if not sub:
                    layers.append(nn.ReLU())
                elif "running_mean" in sub:
                    layers.append(nn.BatchNorm1d(sub["running_mean"].shape[0]))
                else:
                    w = sub["weight"]
                    layers.append(nn.Linear(w.shape[1], w.shape[0], bias="bias" in sub))
            module = nn.Sequential(*layers)
        entries = {k: (v.float() if v.is_floating_point() else v) for k, v in entries.items()}
        if not any(k.endswith("num_batches_tracked") for k in entries):
            entries.update({k: v for k, v in module.state_dict().items() if k.endswith("num_batches_tracked")})
        module.load_state_dict(entries)
    except (KeyError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise PretrainedError(f"{source}: its projection_head entries ({sorted(entries)[:6]}) are not the "
                              f"official Linear or MLP head ({type(exc).__name__}: {exc})") from exc
    return module.eval()


def model_from_state_dict(state: Mapping[str, Any], layout: str = "auto", *, strict: bool = True,
                          source: str = "checkpoint") -> tuple[MultiHeadNet, dict]:
    """A kit model (eval mode) holding the weights of ``state`` (any layout :func:`detect_layout` knows
    except the kit's own, whose architecture a bare state dict does not say: use
    :func:`load_checkpoint_file`). Returns ``(model, info)``; the rotation head, if any, is ``info["rotation_head"]``
    as an ``nn.Linear``; a SwAV-layout file's projection head is ``info["projection_head"]`` as a module and
    its prototypes ``info["prototypes"]`` (float32 K x D tensors), beside the model, not in it."""
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
    if info["layout"] == "swav":
        _swav_extras(info, model.feature_dim, source)
        _adopt_prototypes(model, info)
    return model.eval(), info


#: The temperature SwAV, DeepCluster-v2 and SeLa-v2 trained their prototypes at (``--temperature 0.1``).
SWAV_TEMPERATURE = 0.1


def _adopt_prototypes(model: MultiHeadNet, info: dict) -> None:
    """Where a SwAV-layout file has the MLP projection head of the kit's shape (Linear, BatchNorm, ReLU,
    Linear) and prototypes, the model becomes the network they trained: that projection head, and one cosine
    head per prototype set at SwAV's temperature (so that ``assign`` and the heads' NMI read its clusters)."""
    head, prototypes = info["projection_head"], info["prototypes"]
    kinds = [type(m) for m in head] if isinstance(head, nn.Sequential) else []
    if kinds != [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear] or not prototypes:
        return
    model.projection, model.head_dim = head, head[-1].out_features
    model.head_temperature = SWAV_TEMPERATURE
    heads = []
    for weight in prototypes:
        layer = nn.Linear(model.head_dim, weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.zero_()  # cosine heads read no bias
        layer.bias.requires_grad_(False)
        heads.append(layer)
    model.heads = nn.ModuleList(heads)
    ks = [int(w.shape[0]) for w in prototypes]
    model.build_kwargs.update(head_temperature=SWAV_TEMPERATURE, projection_dim=model.head_dim,
                              projection_hidden=head[0].out_features, num_heads=len(ks),
                              num_clusters=ks if len(set(ks)) > 1 else ks[0])
    info["head_sizes"] = ks


def _swav_extras(info: dict, feature_dim: int, source: str) -> None:
    """``info``'s SwAV projection head made a module, its prototypes float32; PretrainedError when their
    widths do not chain (features -> projection -> prototypes)."""
    width = feature_dim
    if info["projection_head"] is not None:
        head = _projection_module(info["projection_head"], source)
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if linears[0].in_features != feature_dim:
            raise PretrainedError(f"{source}: its projection head reads {linears[0].in_features}-d features, the "
                                  f"backbone gives {feature_dim}")
        info["projection_head"], width = head, linears[-1].out_features
    bad = [int(p.shape[1]) for p in info["prototypes"] if p.shape[1] != width]
    if bad:
        raise PretrainedError(f"{source}: prototypes of width {bad[0]} on {width}-d projections")
    info["prototypes"] = [p.float().contiguous() for p in info["prototypes"]]
