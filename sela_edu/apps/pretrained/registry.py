"""What the SeLa authors (and, for SeLa-v2, DeepCluster-v2 and SwAV, the SwAV authors) released: the registry
of their checkpoints, and the names the loaders share.

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

The SwAV authors (Caron et al. 2020, repository facebookresearch/swav, README "Model Zoo") released
ResNet-50s trained with **SwAV** and with their improved versions of DeepCluster and SeLa,
**DeepCluster-v2** and **SeLa-v2** (multi-crop, MLP projection head, prototypes, stronger augmentation;
the SwAV paper's appendix), at ``https://dl.fbaipublicfiles.com/deepcluster/<name>_pretrain.pth.tar``. Each
file holds the ``state_dict`` of the official ``src/resnet50.py`` model (saved from a
``DistributedDataParallel`` model, so keys may start with ``module.``; possibly inside a dict under
``state_dict``): torchvision's ResNet-50 keys (no ``fc``) beside ``projection_head.*`` (2048 -> 2048 ->
128 MLP) and ``prototypes.*`` (``prototypes.weight``, K x 128, or ``prototypes.prototypes<i>.weight`` for
DeepCluster-v2's several sets). The official ``hubconf.py`` and ``eval_linear.py`` strip ``module.`` and
load the rest into torchvision's ``resnet50`` with ``strict=False``; the kit reads them as the ``"swav"``
layout (see :mod:`~sela_edu.apps.pretrained.convert`). Registered: the twelve ResNet-50s of the table (not
the wider RN50-w2/w4/w5), with its ImageNet linear-evaluation top-1. Heads as trained (the scripts'
``--nmb_prototypes``): SwAV 1 x 3000, DeepCluster-v2 3 x 3000; SeLa-v2 has no released script and its
count is not documented (1 x 3000 is recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sela_edu import paper
from sela_edu.data.datasets import normalise_name

#: Where the paper's models and the stronger-augmentation ResNets live.
ASSET_URL = "http://www.robots.ox.ac.uk/~vgg/research/self-label/asset/"
ZIP_URL = ASSET_URL + "pretrained.zip"
#: Where the SwAV repository's SwAV, DeepCluster-v2 and SeLa-v2 ResNet-50s live (facebookresearch/swav README).
SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The official README's figures of each released model (one home: :data:`sela_edu.paper.RELEASED_MODELS`).
README_FIGURES = paper.RELEASED_MODELS


class PretrainedError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, or not in a layout the kit knows."""


@dataclass(frozen=True)
class ReleasedModel:
    """One released checkpoint: where it is, and what network it holds."""

    name: str
    url: str                  # the file, or the archive holding it
    filename: str             # the checkpoint's file name (inside the archive when ``member`` is True)
    arch: str                 # "alexnet", "resnet50-preact", "resnet18", "resnet50"
    layout: str               # "sela-alexnet", "sela-resnetv2", "torchvision", "swav"
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


def _swav(name: str, stem: str, method: str, heads: int, training: str) -> ReleasedModel:
    """A ResNet-50 of the facebookresearch/swav Model Zoo (file ``<stem>_pretrain.pth.tar``)."""
    filename = f"{stem}_pretrain.pth.tar"
    return ReleasedModel(name, SWAV_URL + filename, filename, "resnet50", "swav", heads, 3000,
                         description=f"torchvision ResNet-50 trained with {method} ({training}), {heads} x 3000 "
                         "prototypes on a 128-d projection (the kit model's projection and cosine heads); from "
                         "facebookresearch/swav (Caron et al. 2020)", figures=README_FIGURES[name])


for _spec in (
    _swav("swav-800ep", "swav_800ep", "SwAV", 1, "800 epochs, batch 4096, 2x224 + 6x96 crops"),
    _swav("swav-400ep", "swav_400ep", "SwAV", 1, "400 epochs, batch 4096, 2x224 + 6x96 crops"),
    _swav("swav-200ep", "swav_200ep", "SwAV", 1, "200 epochs, batch 4096, 2x224 + 6x96 crops"),
    _swav("swav-100ep", "swav_100ep", "SwAV", 1, "100 epochs, batch 4096, 2x224 + 6x96 crops"),
    _swav("swav-200ep-bs256", "swav_200ep_bs256", "SwAV", 1, "200 epochs, batch 256, 2x224 + 6x96 crops"),
    _swav("swav-400ep-bs256", "swav_400ep_bs256", "SwAV", 1, "400 epochs, batch 256, 2x224 + 6x96 crops"),
    _swav("swav-400ep-2x224", "swav_400ep_2x224", "SwAV", 1, "400 epochs, batch 4096, 2x224 crops only"),
    _swav("deepcluster-v2-800ep", "deepclusterv2_800ep", "DeepCluster-v2", 3,
          "800 epochs, batch 4096, 2x224 + 6x96 crops"),
    _swav("deepcluster-v2-400ep", "deepclusterv2_400ep", "DeepCluster-v2", 3,
          "400 epochs, batch 4096, 2x160 + 4x96 crops"),
    _swav("deepcluster-v2-400ep-2x224", "deepclusterv2_400ep_2x224", "DeepCluster-v2", 3,
          "400 epochs, batch 4096, 2x224 crops only"),
    _swav("sela-v2-400ep", "selav2_400ep", "SeLa-v2", 1,
          "400 epochs, batch 4096, 2x160 + 4x96 crops; prototype count undocumented"),
    _swav("sela-v2-400ep-2x224", "selav2_400ep_2x224", "SeLa-v2", 1,
          "400 epochs, batch 4096, 2x224 crops only; prototype count undocumented"),
):
    RELEASED[_spec.name] = _spec
del _spec

#: Pseudo-labels of ImageNet's training images released as CSV (format undocumented; see labels_io).
RELEASED_LABELS = {
    "alexnet-labels": ASSET_URL + "alexnet-labels.csv",
    "resnet-labels": ASSET_URL + "resnet-labels.csv",
}


def released_spec(name: str) -> ReleasedModel:
    """The registry entry of ``name`` (case, ``_`` or ``-`` as the user types it); ValueError listing the names."""
    key = normalise_name(name)
    if key not in RELEASED:
        raise ValueError(f"unknown released model {name!r}; choose one of {', '.join(RELEASED)}")
    return RELEASED[key]


def list_released() -> str:
    """A table of the released models: name, architecture, heads, figures from the official READMEs."""
    width = max(20, *(len(name) for name in RELEASED))
    lines = [f"{'name':<{width}} {'arch':<16} {'heads x K':<10} README figures (ImageNet, %)"]
    for spec in RELEASED.values():
        figures = ", ".join(f"{k} {v}" for k, v in spec.figures.items()) or "-"
        lines.append(f"{spec.name:<{width}} {spec.arch:<16} {spec.num_heads} x {spec.num_clusters:<6} {figures}")
    return "\n".join(lines)
