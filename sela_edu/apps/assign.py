"""Put the images of a folder into the clusters of a trained model, without training: ``sela-edu assign``.

``sela-edu label FOLDER ...`` trains a network on a folder and labels it; ``sela-edu assign NEW --model M
--output OUT`` labels the images of another folder with that network's clusters, as they are. ``M`` is:

* the ``model.pt`` (or, after ``label --backbone``, the ``heads.pt``) that ``sela-edu label`` wrote;
* a kit training checkpoint (``last.pt`` of :func:`sela_edu.training.train`);
* a released model (SeLa's, or SwAV's, DeepCluster-v2's and SeLa-v2's), by name (see :mod:`sela_edu.apps.pretrained`, downloaded once) or as a file in the
  authors' format (their clustering heads: 3000 clusters each for the paper's ImageNet models).

Images are read and decoded as ``label`` reads them (same files, same skipping of bad files, same size
and channels as the model was trained with) and scored once, without augmentation. Then, per head:

* ``mode="argmax"``: each image goes to its highest-scoring cluster (cluster sizes come out as they fall);
* ``mode="equal"``: SeLa's label step (optimal transport, :func:`sela_edu.labelling.self_label`) with
  equal-sized clusters: what ``label`` writes as final labels, so on the training folder itself this
  gives back ``label``'s labels;
* ``mode="prior"``: the label step with the cluster sizes the model was trained with (the labels stored
  with it: ``label``'s final labels, a training checkpoint's last labels, a released file's ImageNet
  labels) as proportions. SeLa trains with equal-sized clusters, so this differs from ``"equal"`` only
  for models trained with other labels (e.g. k-means or transferred labels).

The label step needs at least as many images as clusters; ``argmax`` does not. ``lam`` (the label step's
lambda) defaults to the one the model was trained with when its file says so, else 10 (the paper's CIFAR
value; the released ImageNet models were trained with 25).

Outputs in ``OUT``, as ``label``'s: ``labels.csv``, ``index.html`` (contact sheet), ``skipped.txt`` and
``summary.json`` (model, mode, sizes). Images are held in memory at the model's size (224 px for the
ImageNet models: about 150 kB an image).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sela_edu.apps.folder_outputs import write_contact_sheet, write_skipped
from sela_edu.apps.label_folder import assigned_confidence, label_step_labels, load_folder_images, score_images
from sela_edu.data.datasets import normalise_name

MODES = ("argmax", "equal", "prior")
DEFAULT_LAM = 10.0


@dataclass
class TrainedClusters:
    """A trained model ready to score images: one score tensor per clustering head."""

    model: nn.Module
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    head_sizes: list[int]
    trained_labels: torch.Tensor | None  # the labels the model was trained with (heads x N), if stored
    lam: float | None                    # the label step's lambda it was trained with, if stored
    description: str


@dataclass
class AssignResult:
    """What :func:`assign_folder` produced (also written to ``output``)."""

    paths: list[str]
    labels: torch.Tensor               # LongTensor num_heads x N
    skipped: list[tuple[str, str]]
    output: Path
    seconds: float
    mode: str
    confidence: torch.Tensor           # num_heads x N, softmax probability of the assigned cluster
    priors: list[torch.Tensor] | None  # the cluster proportions used by mode="prior"
    description: str
    cluster_sizes: list[list[int]]     # per head, images in each of its clusters


# --------------------------------------------------------------------------------------------------
# Loading the model
# --------------------------------------------------------------------------------------------------


class _BackboneWithHeads(nn.Module):
    """A frozen backbone's features, standardised as in training, fed to the ``feature-mlp`` network that
    ``label --backbone`` trained on them: scores images like a kit model."""

    def __init__(self, backbone: nn.Module, heads: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.backbone, self.heads = backbone, heads
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.heads((self.backbone.features(x) - self.mean) / self.std)


def load_trained_clusters(model: str | os.PathLike, *, progress: bool = True) -> TrainedClusters:
    """The model named by ``model``: a released model's name, or a file (see the module docstring).

    Raises FileNotFoundError naming the path for a missing file, and
    :class:`~sela_edu.apps.pretrained.PretrainedError` (a ValueError) naming it for a file that is not a model.
    """
    from sela_edu.apps import pretrained

    spec = str(model)
    key = normalise_name(spec)
    if key in pretrained.RELEASED:
        pre = pretrained.load_released(key, progress=progress)
        return _from_pretrained(pre, f"released model {key}", lam=None)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path} (and {spec!r} is not a released model: "
                                f"{', '.join(pretrained.RELEASED)})")
    try:
        pre = pretrained.load_checkpoint_file(path)
    except pretrained.PretrainedError:
        heads = _read_heads_file(path, progress=progress)  # label --backbone's heads.pt is no network file
        if heads is None:
            raise
        return heads
    lam = _stored_lam(path) if pre.layout == "kit" else None
    return _from_pretrained(pre, f"{path.name} ({pre.arch}, {pre.layout} layout)", lam=lam)


def _from_pretrained(pre, description: str, *, lam: float | None) -> TrainedClusters:
    return TrainedClusters(pre.model.eval(), int(pre.image_size), tuple(pre.mean), tuple(pre.std),
                           [int(k) for k in pre.model.num_clusters], pre.labels, lam, description)


def _stored_lam(path: Path) -> float | None:
    """The lambda a kit file was trained with: a training checkpoint's config, or ``label``'s model.pt."""
    from sela_edu.training.checkpoint import load_checkpoint
    from sela_edu.apps.pretrained import read_torch_file

    try:
        config = load_checkpoint(path).get("config") or {}
        lam = config.get("lam")
    except (ValueError, FileNotFoundError):  # not a training checkpoint: label's model.pt
        payload = read_torch_file(path)
        lam = payload.get("lam") if isinstance(payload, Mapping) else None
    return None if lam is None else float(lam)


def _read_heads_file(path: Path, *, progress: bool) -> TrainedClusters | None:
    """The backbone and heads of a ``heads.pt`` written by ``label --backbone``; None for any other file.

    Its ``heads`` entry is a kit model file of the ``feature-mlp`` network (``build_kwargs``, ``state_dict``)
    with the standardisation of the features it was trained on (``data``: per-dimension mean and std).
    """
    from sela_edu.apps.label_folder import resolve_backbone
    from sela_edu.apps.pretrained import PretrainedError, read_torch_file
    from sela_edu.models import build_model

    payload = read_torch_file(path)
    if not (isinstance(payload, Mapping) and "heads" in payload and "backbone" in payload):
        return None
    saved, ks = payload["heads"], [int(k) for k in payload["head_sizes"]]
    if not (isinstance(saved, Mapping) and {"build_kwargs", "state_dict", "data"} <= set(saved)):
        raise PretrainedError(f"{path} holds heads in the format of an older sela-edu (before the heads became a "
                              "mode of the trainer): run `sela-edu label --backbone` again to write a current one")
    heads = build_model(**saved["build_kwargs"])
    heads.load_state_dict(saved["state_dict"])
    mean, std = (torch.as_tensor(saved["data"][key], dtype=torch.float32) for key in ("mean", "std"))
    backbone, _, _, _, description = resolve_backbone(payload["backbone"], progress=progress)
    lam = payload.get("lam")
    return TrainedClusters(_BackboneWithHeads(backbone, heads, mean, std).eval(), int(payload["image_size"]),
                           tuple(payload["mean"]), tuple(payload["std"]), ks, payload.get("labels"),
                           None if lam is None else float(lam), f"{path.name} (heads on {description})")


# --------------------------------------------------------------------------------------------------
# Assigning
# --------------------------------------------------------------------------------------------------


def trained_priors(clusters: TrainedClusters) -> list[torch.Tensor]:
    """Per head, the proportions of its clusters among the labels the model was trained with."""
    labels = clusters.trained_labels
    if labels is None:
        raise ValueError(f"{clusters.description} stores no training labels, so its cluster sizes are unknown: "
                         "use mode 'equal' or 'argmax'")
    labels = torch.as_tensor(labels)
    if labels.dim() != 2 or labels.shape[0] < len(clusters.head_sizes):
        raise ValueError(f"{clusters.description} stores labels of shape {tuple(labels.shape)}, not one row per "
                         f"head of its {len(clusters.head_sizes)} heads")
    priors = []
    for h, k in enumerate(clusters.head_sizes):
        # heads come first in the stored rows (released files keep only the first of their heads' weights)
        if int(labels[h].min()) < 0 or int(labels[h].max()) >= k:
            raise ValueError(f"{clusters.description}: stored labels of head {h} fall outside its {k} clusters")
        counts = torch.bincount(labels[h], minlength=k).double()
        priors.append(counts / counts.sum())
    return priors


def assign_labels(scores: list[torch.Tensor], mode: str, lam: float,
                  priors: list[torch.Tensor] | None = None) -> torch.Tensor:
    """num_heads x N labels from every head's scores: argmax, or the label step with equal or prior sizes."""
    if mode == "argmax":
        return torch.stack([s.argmax(1) for s in scores])
    if mode == "equal":
        return label_step_labels(scores, lam)
    if mode == "prior":
        if priors is None:
            raise ValueError("mode 'prior' needs the trained clusters' proportions (priors)")
        return label_step_labels(scores, lam, priors)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def assign_folder(folder: str | os.PathLike, model: str | os.PathLike | TrainedClusters,
                  output: str | os.PathLike, *, mode: str = "argmax", lam: float | None = None,
                  batch_size: int | None = None, device: str = "auto", per_cluster: int = 24,
                  progress: bool = True) -> AssignResult:
    """Assign every image under ``folder`` to the clusters of ``model``; write labels.csv, index.html,
    skipped.txt and summary.json to ``output``.

    Args:
        model: a released model's name, a model file (module docstring), or a loaded :class:`TrainedClusters`.
        mode: ``"argmax"``, ``"equal"`` or ``"prior"`` (module docstring).
        lam: the label step's lambda (default: the model's own, else 10).
        batch_size: images scored at once (default 512 up to 64 px, 32 above).
        per_cluster: thumbnails per cluster on the contact sheet.
    """
    from sela_edu.training import export_path_labels_csv
    from sela_edu.settings import pick_device

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    t0 = time.perf_counter()
    folder, output = Path(folder), Path(output)
    clusters = model if isinstance(model, TrainedClusters) else load_trained_clusters(model, progress=progress)
    priors = trained_priors(clusters) if mode == "prior" else None  # refuse before the work of reading images
    lam = float(lam if lam is not None else clusters.lam if clusters.lam is not None else DEFAULT_LAM)
    loaded = load_folder_images(folder, clusters.image_size, channels=len(clusters.mean), exclude=[output],
                                progress=progress)
    _check_enough(len(loaded.paths), clusters.head_sizes, mode)
    dev = pick_device(device)
    batch = batch_size or (512 if clusters.image_size <= 64 else 32)
    scores = score_images(clusters.model.to(dev), loaded.images, clusters.mean, clusters.std, dev, batch)
    labels = assign_labels(scores, mode, lam, priors)
    confidence = assigned_confidence(scores, labels)

    output.mkdir(parents=True, exist_ok=True)
    export_path_labels_csv(output / "labels.csv", loaded.paths, labels)
    write_skipped(output / "skipped.txt", loaded.skipped)
    n = len(loaded.paths)
    write_contact_sheet(output / "index.html", folder, loaded.paths, labels, confidence, per_cluster=per_cluster,
                        title=f"{folder.name or folder}: {n} images assigned to {clusters.description} ({mode})",
                        skipped=len(loaded.skipped))
    seconds = time.perf_counter() - t0
    sizes = [torch.bincount(row, minlength=k).tolist() for row, k in zip(labels, clusters.head_sizes)]
    summary = {"folder": str(folder), "model": clusters.description, "mode": mode, "images": n,
               "skipped": len(loaded.skipped), "heads": clusters.head_sizes, "image_size": clusters.image_size,
               "lam": lam if mode != "argmax" else None, "seconds": round(seconds, 1), "cluster_sizes": sizes}
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    return AssignResult(loaded.paths, labels, loaded.skipped, output, seconds, mode, confidence, priors,
                        clusters.description, sizes)


def _check_enough(n: int, head_sizes: list[int], mode: str) -> None:
    if mode != "argmax" and n < max(head_sizes):
        raise ValueError(f"{n} readable images but {max(head_sizes)} clusters: mode {mode!r} sizes the clusters, "
                         "which needs at least as many images as clusters; use mode 'argmax'")


__all__ = ["MODES", "TrainedClusters", "AssignResult", "load_trained_clusters", "trained_priors", "assign_labels",
           "assign_folder"]
