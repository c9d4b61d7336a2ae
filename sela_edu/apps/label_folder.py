"""Self-label a folder of your own images: ``sela-edu label FOLDER --clusters K --output OUT``.

Every image file under ``FOLDER`` (any tree; JPEG, PNG and whatever else Pillow decodes; no class
folders needed; hidden files and folders, those whose names start with ``.``, are left out) is read
once, shrunk to a small square (``image_size``, default 32 px: the whole set then sits in memory as one
uint8 tensor) and self-labelled with SeLa. Files that are not images, or cannot be decoded, are named on
the console as they are met, get no label and are listed in ``OUT/skipped.txt``; labelling goes on.

Two ways to get the network:

* **From a random network** (the default): the kit's trainer (:func:`sela_edu.training.train`) trains
  the small CNN on the in-memory images with the paper's augmentations, ``heads`` heads of ``clusters``
  clusters, label optimisations dense early and sparse late. Checkpoints go to ``OUT/checkpoints``
  after every epoch; running the same command again resumes there (``restart=True`` starts over).
* **From a pretrained backbone** (``backbone=``): a released model (SeLa's or SwAV's kin) by name (see
  :mod:`sela_edu.apps.pretrained`), ``torchvision:resnet18`` / ``torchvision:resnet50`` (ImageNet-supervised
  weights, downloaded by torchvision), or a checkpoint file (an official one, a torchvision-format one, a
  kit training checkpoint, or the ``model.pt`` an earlier ``sela-edu label`` run wrote). The backbone is
  frozen: its features are computed once (saved block by block in ``OUT/checkpoints``, so an interrupted
  run resumes) and the kit's trainer trains new heads on them (the ``folder-backbone`` preset: a
  ``feature-mlp`` network on the features as a :class:`~sela_edu.data.features.FeatureData`, one label
  optimisation per epoch, feature noise as augmentation), with its checkpoints in ``OUT/checkpoints``
  too: running the same command again resumes there.

Outputs in ``OUT``:

* ``labels.csv``: the image's path relative to ``FOLDER`` (``/`` separators), then one column per head
  (``head0, head1, ...``), one row per labelled image; read it with
  :func:`sela_edu.training.labels_io.read_path_labels_csv`. The labels are the final equal-sized assignment
  (the label step on the trained network's scores).
* ``index.html``: a contact sheet, one section per head and one row of thumbnails per cluster (its most
  confident images first, with the cluster's size); thumbnails are embedded, so the file opens anywhere.
* ``skipped.txt``: ``path<TAB>reason`` for every file that got no label.
* ``model.pt``: the network (kit format, loadable with :func:`sela_edu.apps.pretrained.load_checkpoint_file`
  and usable as ``--backbone`` for another folder), with the final labels and ``lam``; with a backbone,
  ``heads.pt`` instead (the backbone's name and normalisation, the trained ``feature-mlp`` network in kit
  format with the features' standardisation, the final labels and ``lam``). Either one labels
  new images without training: ``sela-edu assign`` (:mod:`sela_edu.apps.assign`). And ``summary.json``
  (settings, sizes, timings).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sela_edu.apps.folder_outputs import write_contact_sheet, write_skipped
from sela_edu.data.datasets import normalise_name
from sela_edu.training import clusters_per_head


@dataclass
class LoadedImages:
    """The decoded images of a folder: ``paths[i]`` (relative, ``/`` separators) for ``images[i]``."""

    paths: list[str]
    images: torch.Tensor                   # uint8 N x C x S x S (C = 1 when every image is grey)
    skipped: list[tuple[str, str]]         # (relative path, reason)


@dataclass
class LabelFolderResult:
    """What :func:`label_folder` produced (also written to ``output``)."""

    paths: list[str]
    labels: torch.Tensor                   # LongTensor num_heads x N
    skipped: list[tuple[str, str]]
    output: Path
    seconds: float
    mode: str                              # "random" or "backbone"
    model: nn.Module | None = None
    history: list[dict] = field(default_factory=list)
    confidence: torch.Tensor | None = None  # num_heads x N, softmax probability of the assigned cluster


# --------------------------------------------------------------------------------------------------
# Reading the folder
# --------------------------------------------------------------------------------------------------


def list_files(folder: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Every regular file under ``folder`` (recursively, sorted), except hidden ones and ``exclude`` trees."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    skip = {Path(e).resolve() for e in exclude}
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip)
        for name in sorted(files):
            if not name.startswith("."):
                found.append(root_path / name)
    return found


def _decode(path: Path, size: int) -> np.ndarray:
    """RGB uint8 ``size x size x 3``: the image scaled so its short side is ``size``, centre-cropped."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (2 * size, 2 * size))  # decode JPEGs at a reduced scale: much faster for photos
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        im = ImageOps.fit(im.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _try_decode(args) -> tuple[np.ndarray | None, str | None]:
    path, size = args
    try:
        return _decode(path, size), None
    except Exception as exc:  # noqa: BLE001 - any failure means "no label", reported by name
        from PIL import UnidentifiedImageError

        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image Pillow can read"
        else:
            reason = f"unreadable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return None, reason


def _report(rel: str, reason: str, progress_bar) -> None:
    message = f"skipped {rel}: {reason}"
    if progress_bar is not None:
        progress_bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def load_folder_images(folder: str | os.PathLike, image_size: int = 32, *, channels: str | int = "auto",
                       exclude: Sequence[str | os.PathLike] = (), progress: bool = True,
                       workers: int | None = None) -> LoadedImages:
    """Decode every image under ``folder`` at ``image_size`` px (short side scaled, centre crop).

    ``channels``: 3, 1 (grey), or ``"auto"`` (1 when every image is grey, else 3). Files that cannot be
    decoded are reported by name and returned in ``skipped``. Decoding runs in ``workers`` threads
    (default: up to 4).
    """
    folder = Path(folder)
    files = list_files(folder, exclude)
    if not files:
        raise FileNotFoundError(f"no files under {folder}")
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    paths, arrays, skipped = [], [], []
    bar = tqdm(total=len(files), desc="reading images", unit="img", disable=not progress)
    with ThreadPoolExecutor(workers) as pool:
        for path, (array, reason) in zip(files, pool.map(_try_decode, [(f, image_size) for f in files])):
            rel = path.relative_to(folder).as_posix()
            if array is None:
                skipped.append((rel, reason))
                _report(rel, reason, bar if progress else None)
            else:
                paths.append(rel)
                arrays.append(array)
            bar.update(1)
    bar.close()
    if not arrays:
        raise ValueError(f"none of the {len(files)} files under {folder} is a readable image")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    grey = bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())
    if channels == "auto":
        channels = 1 if grey else 3
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or 'auto', got {channels!r}")
    if channels == 1:
        images = images[:, :1].contiguous() if grey else _to_grey(images)
    return LoadedImages(paths, images, skipped)


def _to_grey(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------------
# Labelling
# --------------------------------------------------------------------------------------------------


def default_epochs(num_images: int) -> int:
    """About 150,000 augmented images seen in all (between 10 and 200 epochs): a few minutes on 2 CPU cores."""
    return int(min(200, max(10, round(150_000 / max(num_images, 1)))))


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def resolve_backbone(backbone: str, *, progress: bool):
    """(model, image_size, mean, std, description) for a backbone name or file."""
    from sela_edu.apps import pretrained

    spec = str(backbone)
    if spec.startswith("torchvision:"):
        arch = spec.split(":", 1)[1]
        model = pretrained.torchvision_backbone(arch, progress=progress)
        return model, 224, pretrained.IMAGENET_MEAN, pretrained.IMAGENET_STD, f"torchvision {arch} (ImageNet-supervised)"
    key = normalise_name(spec)
    if key in pretrained.RELEASED:
        pre = pretrained.load_released(key, progress=progress)
        return pre.model, pre.image_size, pre.mean, pre.std, f"released model {key}"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone {spec!r} is neither a released model ({', '.join(pretrained.RELEASED)}), "
                                "'torchvision:resnet18' / 'torchvision:resnet50', nor a checkpoint file")
    pre = pretrained.load_checkpoint_file(path)
    return pre.model, pre.image_size, pre.mean, pre.std, f"checkpoint {path.name} ({pre.arch}, {pre.layout} layout)"


def score_images(model: nn.Module, images: torch.Tensor, mean, std, device, batch_size: int = 512) -> list[torch.Tensor]:
    """Every head's scores (float32 N x K on the CPU) for in-memory uint8 ``images``, without augmentation:
    :func:`~sela_edu.evaluation.score_dataset` on them as an unlabelled ImageData."""
    from sela_edu.data import ImageData
    from sela_edu.evaluation import score_dataset

    unlabelled = ImageData("folder", images, torch.full((images.shape[0],), -1, dtype=torch.long), [],
                           tuple(mean), tuple(std))
    return score_dataset(model, unlabelled, outputs=("heads",), batch_size=batch_size, device=device)["heads"]


def label_step_labels(scores: Sequence[torch.Tensor], lam: float,
                      priors: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """SeLa's label step on every head's scores: a num_heads x N LongTensor of labels.

    Clusters are equal-sized, or sized by ``priors[h]`` (head h's cluster proportions). ``label`` writes
    these as its final labels and ``assign`` computes them the same way, so both give the same labels
    for the same scores.
    """
    from sela_edu.labelling import self_label

    priors = [None] * len(scores) if priors is None else list(priors)
    if len(priors) != len(scores):
        raise ValueError(f"one prior (or None) per head: {len(scores)} heads, got {len(priors)} priors")
    return torch.stack([self_label(s, lam, prior=p).labels.cpu() for s, p in zip(scores, priors)])


def assigned_confidence(scores: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """num_heads x N: the softmax probability of each image's assigned cluster (orders the contact sheet)."""
    return torch.stack([s.softmax(1).gather(1, labels[h].unsqueeze(1)).squeeze(1) for h, s in enumerate(scores)])


def _features_resumable(model: nn.Module, folder: Path, paths: list[str], size: int, mean, std, device,
                        ckpt_path: Path, key: str, progress: bool, block: int = 256) -> torch.Tensor:
    """Frozen features of every image, decoded at ``size`` px block by block; saved after every block.

    Features of another backbone or folder (another ``key``) are computed again, and the training
    checkpoints beside them are deleted: heads trained on other features must not be resumed.
    """
    from sela_edu.data.augment import plain_transform
    from sela_edu.evaluation import score_dataset
    from sela_edu.training.checkpoint import LAST, PREV, load_checkpoint, save_checkpoint

    done: list[torch.Tensor] = []
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if state.get("key") == key:
            done = list(state["blocks"])
        else:
            for name in (LAST, LAST + ".new", PREV):
                (ckpt_path.parent / name).unlink(missing_ok=True)
    model.eval().to(device)
    start = sum(b.shape[0] for b in done)
    bar = tqdm(total=len(paths), initial=start, desc="backbone features", unit="img", disable=not progress)
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        for i in range(start, len(paths), block):
            chunk = paths[i:i + block]
            arrays = [a for a, _ in pool.map(_try_decode, [(folder / p, size) for p in chunk])]
            if any(a is None for a in arrays):
                raise RuntimeError(f"an image under {folder} changed while it was being labelled; run again")
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
            if len(mean) == 1:  # a grey backbone (e.g. a kit model trained on Fashion-MNIST)
                x = _to_grey(x)
            x = plain_transform(x.to(device), mean, std)
            done.append(score_dataset(model, x, outputs=("features",), batch_size=64, device=device)["features"])
            save_checkpoint(ckpt_path, {"key": key, "blocks": done})
            bar.update(len(chunk))
    bar.close()
    return torch.cat(done)


def label_folder(folder: str | os.PathLike, output: str | os.PathLike, *, clusters: int | Sequence[int] | str = 10,
                 heads: int | None = None, epochs: int | None = None, backbone: str | None = None,
                 image_size: int | None = None, batch_size: int | None = None, lam: float = 10.0, seed: int = 0,
                 device: str = "auto", restart: bool = False, per_cluster: int = 24, progress: bool = True,
                 callback: Callable[[dict], None] | None = None) -> LabelFolderResult:
    """Self-label every image under ``folder``; write labels.csv, index.html, skipped.txt, model.pt to ``output``.

    Args:
        clusters: K of every head (an int), or one K per head (a list, or a string "10,20,50").
        heads: number of heads (default: one per K given, else 1).
        epochs: training epochs (default: :func:`default_epochs` for a random network, about 150,000
            images seen in all; the ``folder-backbone`` preset's for a backbone).
        backbone: None (random network trained by the kit's trainer) or a pretrained backbone (module
            docstring): a released model's name, ``torchvision:resnet18``/``torchvision:resnet50``, a file.
        image_size: side the images are scaled to (default 32 px for the random network, the backbone's
            own, usually 224, otherwise).
        batch_size: default ``min(256, N // 4)`` (at least 16) for a random network, the
            ``folder-backbone`` preset's (256, at most N) for a backbone.
        lam: the label step's lambda (the paper's 10 for small data sets).
        restart: delete ``output/checkpoints`` first instead of resuming.
        per_cluster: thumbnails per cluster on the contact sheet.
        callback: called after every training epoch with the trainer's record.
    """
    from sela_edu.settings import pick_device
    from sela_edu.training import export_path_labels_csv

    t0 = time.perf_counter()
    folder, output = Path(folder), Path(output)
    ks = clusters_per_head(clusters, heads)
    ckpt_dir = output / "checkpoints"
    if restart and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    output.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)

    if backbone is None:
        size = image_size or 32
        loaded = load_folder_images(folder, size, exclude=[output], progress=progress)
        n = len(loaded.paths)
        _check_enough(n, ks)
        result_model, labels, confidence, history, extra = _label_random(
            loaded, ks, epochs=epochs, size=size, batch_size=batch_size, lam=lam, seed=seed, device=device,
            ckpt_dir=ckpt_dir, progress=progress, callback=callback, output=output)
        mode = "random"
    else:
        model, default_size, mean, std, description = resolve_backbone(backbone, progress=progress)
        size = image_size or default_size
        # Decode once at a small size only to find the readable files; features are computed at `size`.
        loaded = load_folder_images(folder, 16, channels=3, exclude=[output], progress=progress)
        n = len(loaded.paths)
        _check_enough(n, ks)
        key = json.dumps({"backbone": str(backbone), "size": size, "paths": len(loaded.paths),
                          "first": loaded.paths[:3], "last": loaded.paths[-3:]})
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        features = _features_resumable(model, folder, loaded.paths, size, mean, std, dev,
                                       ckpt_dir / "features.pt", key, progress)
        result_model, labels, confidence, history, extra = _label_features(
            features, ks, epochs=epochs, batch_size=batch_size, lam=lam, seed=seed, device=device,
            ckpt_dir=ckpt_dir, progress=progress, callback=callback,
            heads_path=output / "heads.pt",
            backbone_info={"backbone": str(backbone), "image_size": size, "mean": list(mean), "std": list(std)})
        extra = {"backbone": description, **extra}
        mode = "backbone"

    export_path_labels_csv(output / "labels.csv", loaded.paths, labels)
    write_skipped(output / "skipped.txt", loaded.skipped)
    write_contact_sheet(output / "index.html", folder, loaded.paths, labels, confidence,
                        per_cluster=per_cluster, title=f"{folder.name or folder}: {n} images, heads {ks}",
                        skipped=len(loaded.skipped))
    seconds = time.perf_counter() - t0
    summary = {"folder": str(folder), "images": n, "skipped": len(loaded.skipped), "heads": ks, "mode": mode,
               "image_size": size, "lam": lam, "seed": seed, "seconds": round(seconds, 1),
               "cluster_sizes": [torch.bincount(row, minlength=k).tolist() for row, k in zip(labels, ks)], **extra}
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    return LabelFolderResult(loaded.paths, labels, loaded.skipped, output, seconds, mode, result_model, history,
                             confidence)


def _check_enough(n: int, ks: list[int]) -> None:
    if n < max(ks):
        raise ValueError(f"{n} readable images but {max(ks)} clusters: equal-sized clusters need at least as many "
                         "images as clusters")
    if n < 4:
        raise ValueError(f"only {n} readable image(s): self-labelling needs more")


def _label_random(loaded: LoadedImages, ks, *, epochs, size, batch_size, lam, seed, device, ckpt_dir, progress,
                  callback, output):
    from sela_edu.data import ImageData
    from sela_edu.training import folder_config, train

    n = len(loaded.paths)
    mean, std = _channel_stats(loaded.images)
    data = ImageData("folder", loaded.images, torch.full((n,), -1, dtype=torch.long), [], mean, std)
    epochs = epochs or default_epochs(n)
    config = folder_config(n, ks, epochs=epochs, batch_size=batch_size, lam=float(lam), seed=seed, device=device,
                           checkpoint_dir=str(ckpt_dir))
    result = train(config, data, progress=progress, callback=callback)
    model = result.model
    dev = next(model.parameters()).device
    # one scoring pass serves both the final labels and their confidence
    scores = score_images(model, loaded.images, mean, std, dev)
    labels = label_step_labels(scores, float(lam))
    confidence = assigned_confidence(scores, labels)
    # the final labels and lam are kept so that `sela-edu assign` can size clusters as trained
    torch.save({**_kit_model(model, list(mean), list(std)), "labels": labels, "lam": float(lam)}, output / "model.pt")
    extra = {"epochs": epochs, "batch_size": config.batch_size, "relabels": config.nopts, "arch": "smallcnn",
             "train_seconds": round(float(result.timings.get("seconds", 0.0)), 1)}
    return model, labels, confidence, list(result.history), extra


def _label_features(features, ks, *, epochs, batch_size, lam, seed, device, ckpt_dir, progress, callback,
                    heads_path: Path, backbone_info: dict):
    """The kit's trainer on a frozen backbone's features (preset ``folder-backbone``), the final labels, and
    ``heads_path`` (heads.pt, with ``backbone_info``: the backbone's name, image size and normalisation)."""
    from sela_edu.data.features import FeatureData
    from sela_edu.evaluation import score_dataset
    from sela_edu.training import plain_loader, train
    from sela_edu.training.presets import folder_backbone_config

    data = FeatureData.from_features(features, name="folder-features")
    config = folder_backbone_config(len(data), ks, epochs=epochs, batch_size=batch_size, lam=float(lam), seed=seed,
                                    device=device, checkpoint_dir=str(ckpt_dir))
    result = train(config, data, progress=progress, callback=callback)
    model = result.model
    dev = next(model.parameters()).device
    scores = score_dataset(model, plain_loader(config, data, 4096, device=dev), outputs=("heads",))["heads"]
    labels = label_step_labels(scores, float(lam))
    confidence = assigned_confidence(scores, labels)
    # the heads travel with the backbone's name and normalisation and the features' standardisation, the
    # final labels and lam, so that `sela-edu assign` can score new images and size clusters as trained
    torch.save({**backbone_info, "heads": _kit_model(model, data.mean.tolist(), data.std.tolist()),
                "head_sizes": ks, "labels": labels, "lam": float(lam)}, heads_path)
    extra = {"feature_dim": data.feature_dim, "epochs": config.epochs, "batch_size": config.batch_size,
             "relabels": config.nopts, "arch": config.arch,
             "train_seconds": round(float(result.timings.get("seconds", 0.0)), 1)}
    return model, labels, confidence, list(result.history), extra


def _kit_model(model: nn.Module, mean: list[float], std: list[float]) -> dict:
    """A trained network in the kit's file format (rebuilt by ``build_model(**build_kwargs)``), with the
    normalisation of its inputs."""
    return {"build_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict(),
            "data": {"mean": mean, "std": std}}


__all__ = ["LoadedImages", "LabelFolderResult", "list_files", "load_folder_images", "label_folder",
           "default_epochs", "score_images", "label_step_labels", "assigned_confidence", "resolve_backbone"]
