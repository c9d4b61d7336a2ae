"""What the SeLa authors released: the registry of their checkpoints, and the names the loaders share.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sela_edu import paper
from sela_edu.data.datasets import normalise_name

#: Where the paper's models and the stronger-augmentation ResNets live.
ASSET_URL = "http://www.robots.ox.ac.uk/~vgg/research/self-label/asset/"
ZIP_URL = ASSET_URL + "pretrained.zip"
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


def released_spec(name: str) -> ReleasedModel:
    """The registry entry of ``name`` (case, ``_`` or ``-`` as the user types it); ValueError listing the names."""
    key = normalise_name(name)
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
