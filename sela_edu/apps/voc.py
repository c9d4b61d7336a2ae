"""Pascal VOC 2007 classification transfer: frozen features, one linear classifier per class, mAP on test.

The standard transfer test of self-supervised representations: compute the network's features (frozen,
eval mode) for VOC 2007 ``trainval`` (5,011 images) and ``test`` (4,952), fit one binary linear
classifier per class (20 classes) on ``trainval``, and report the mean over classes of the average
precision of its scores on ``test``.

Labels follow the VOC protocol: an image is a positive for a class when it holds a non-difficult object
of that class, a negative when it holds no object of the class, and *ignored* for that class (neither
positive nor negative, in training and in AP) when its only objects of the class are marked difficult.
That is the ``1 / -1 / 0`` of the devkit's ``ImageSets/Main/<class>_<split>.txt`` files, derived here
from the annotation XML. AP per class is scikit-learn's ``average_precision_score`` (the area under the
precision-recall curve as a step function, the same as VOC's post-2010 AP; VOC 2007's official devkit
used an 11-point interpolation, which gives slightly different numbers).

Images: every image is resized to ``image_size x image_size`` (whole image, no crop, so no object is
cut away), normalised with the model's mean and std. Classifier: scikit-learn's ``LogisticRegression``
(L2, ``C``) on standardised features, per class. (The paper follows DeepCluster's protocol, which trains
the network's last layers with random crops and tests on ten crops; this frozen-feature linear variant
is cheaper and comparable between models, but its numbers are not the paper's.)

Data: torchvision's ``VOCDetection`` layout, ``<root>/VOCdevkit/VOC2007/{JPEGImages, Annotations,
ImageSets/Main}``, with ``root`` defaulting to ``<data root>/voc`` (``$SELA_DATA_ROOT``). On a machine
with internet, ``download=True`` fetches the two archives (about 900 MB) through torchvision.

The paper's own VOC table could not be read for this kit; leaderboards attribute to SeLa VOC07 detection
mAP 59.2 and VOC12 segmentation mIoU 45.7 (unverified); its VOC07 classification figure is unknown here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sela_edu import paper

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")

#: What is known of the paper's VOC figures (one home: :data:`sela_edu.paper.VOC`); None where unknown.
PAPER_VOC = paper.VOC


@dataclass
class VOCLabels:
    """Image ids, image files and the ``N x 20`` label matrix (1 positive, -1 negative, 0 difficult only)."""

    ids: list[str]
    images: list[str]
    labels: np.ndarray


@dataclass
class VOCResult:
    mAP: float                      # mean over classes of the average precision, in [0, 1]
    ap: dict[str, float]            # per class
    num_train: int
    num_test: int
    seconds: float

    def table(self) -> str:
        rows = [f"VOC 2007 classification, frozen features + linear: mAP {100 * self.mAP:.1f} % "
                f"({self.num_train} trainval / {self.num_test} test images)"]
        rows += [f"  {name:<12} {100 * ap:5.1f}" for name, ap in self.ap.items()]
        return "\n".join(rows)


def default_root() -> Path:
    from sela_edu.settings import data_root

    return data_root() / "voc"


def voc_image_labels(objects: Sequence[dict]) -> np.ndarray:
    """The 20-vector of one image from its annotation's objects (dicts with ``name`` and ``difficult``)."""
    row = -np.ones(len(VOC_CLASSES), dtype=np.int64)
    for obj in objects:
        name = obj.get("name")
        if name not in VOC_CLASSES:
            raise ValueError(f"unknown VOC class {name!r}")
        c = VOC_CLASSES.index(name)
        difficult = str(obj.get("difficult", "0")).strip() == "1"
        if not difficult:
            row[c] = 1
        elif row[c] == -1:
            row[c] = 0
    return row


def load_voc_labels(root: str | os.PathLike | None = None, split: str = "trainval", *, year: str = "2007",
                    download: bool = False) -> VOCLabels:
    """Read a VOC split with torchvision's ``VOCDetection`` (image list and annotation XML).

    Raises FileNotFoundError naming the folder expected and how to get it when the data is absent.
    """
    from xml.etree.ElementTree import parse

    from torchvision.datasets import VOCDetection

    root = Path(root) if root is not None else default_root()
    folder = root / "VOCdevkit" / f"VOC{year}"
    if not download and not (folder / "ImageSets" / "Main" / f"{split}.txt").is_file():
        raise FileNotFoundError(
            f"Pascal VOC {year} {split} not found: expected {folder}/ with JPEGImages/, Annotations/ and "
            f"ImageSets/Main/{split}.txt. On a machine with internet, `load_voc_labels(root, {split!r}, "
            f"download=True)` (or voc_classification(..., download=True)) fetches it with torchvision "
            f"(VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar, about 900 MB), or copy the extracted "
            f"VOCdevkit/ folder into {root}.")
    try:
        ds = VOCDetection(str(root), year=year, image_set=split, download=download)
    except RuntimeError as exc:
        raise FileNotFoundError(f"Pascal VOC {year} {split} under {root}: {exc}") from exc
    rows = []
    ids = []
    for image, xml in zip(ds.images, ds.annotations):
        tree = VOCDetection.parse_voc_xml(parse(xml).getroot())
        objects = tree["annotation"].get("object", [])
        if isinstance(objects, dict):
            objects = [objects]
        rows.append(voc_image_labels(objects))
        ids.append(Path(image).stem)
    labels = np.stack(rows) if rows else np.zeros((0, len(VOC_CLASSES)), dtype=np.int64)
    return VOCLabels(ids, list(ds.images), labels)


def voc_map(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str] = VOC_CLASSES) -> tuple[float, dict[str, float]]:
    """Mean average precision over classes: ``labels`` N x C in {1, 0, -1} (0 ignored), ``scores`` N x C.

    A class without any positive test image has no AP and is left out of the mean (with its name listed
    as NaN in the per-class dict)."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    ap = {}
    for c, name in enumerate(classes):
        keep = labels[:, c] != 0
        y = labels[keep, c] == 1
        ap[name] = float(average_precision_score(y, scores[keep, c])) if y.any() else float("nan")
    values = [v for v in ap.values() if not np.isnan(v)]
    if not values:
        raise ValueError("no class has a positive image: cannot compute mAP")
    return float(np.mean(values)), ap


def _decode_squash(args) -> np.ndarray:
    from PIL import Image

    path, size = args
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


@torch.no_grad()
def image_features(model: nn.Module, files: Sequence[str], *, image_size: int = 224, mean=None, std=None,
                   batch_size: int = 64, device=None, progress: bool = True, desc: str = "features") -> torch.Tensor:
    """Frozen features (``model.features``, eval mode) of image files resized to ``image_size`` squares."""
    from sela_edu.data.augment import plain_transform
    from sela_edu.apps.pretrained import IMAGENET_MEAN, IMAGENET_STD

    mean = mean or IMAGENET_MEAN
    std = std or IMAGENET_STD
    device = torch.device(device) if device is not None else next(model.parameters()).device
    fn = model.features if hasattr(model, "features") and callable(model.features) else model
    was_training = model.training
    model.eval()
    feats = []
    try:
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            for i in tqdm(range(0, len(files), batch_size), desc=desc, disable=not progress):
                chunk = list(pool.map(_decode_squash, [(f, image_size) for f in files[i:i + batch_size]]))
                x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).to(device)
                if len(mean) == 1:
                    x = x.float().mean(1, keepdim=True).round().to(torch.uint8)
                feats.append(fn(plain_transform(x, mean, std)).float().reshape(x.shape[0], -1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def fit_classifiers(train_x: np.ndarray, train_labels: np.ndarray, *, C: float = 0.1,
                    max_iter: int = 1000) -> list:
    """One logistic regression per class on standardised features (images with label 0 left out)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = []
    for c in range(train_labels.shape[1]):
        keep = train_labels[:, c] != 0
        y = train_labels[keep, c] == 1
        if y.all() or not y.any():
            models.append(None)  # one class only: no classifier (AP of such a class is left out)
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        clf.fit(train_x[keep], y)
        models.append(clf)
    return models


def voc_classification(model: nn.Module, root: str | os.PathLike | None = None, *, year: str = "2007",
                       image_size: int = 224, mean=None, std=None, C: float = 0.1, batch_size: int = 64,
                       device=None, download: bool = False, progress: bool = True) -> VOCResult:
    """The whole transfer test: features of trainval and test, per-class classifiers, mAP on test."""
    t0 = time.perf_counter()
    train = load_voc_labels(root, "trainval", year=year, download=download)
    test = load_voc_labels(root, "test", year=year, download=download)
    kw = dict(image_size=image_size, mean=mean, std=std, batch_size=batch_size, device=device, progress=progress)
    xtr = image_features(model, train.images, desc="VOC trainval features", **kw).numpy()
    xte = image_features(model, test.images, desc="VOC test features", **kw).numpy()
    classifiers = fit_classifiers(xtr, train.labels, C=C)
    scores = np.zeros(test.labels.shape, dtype=np.float64)
    for c, clf in enumerate(classifiers):
        if clf is not None:
            scores[:, c] = clf.decision_function(xte)
    mAP, ap = voc_map(test.labels, scores)
    return VOCResult(mAP, ap, len(train.ids), len(test.ids), time.perf_counter() - t0)


def paper_voc_table() -> str:
    """The paper's VOC figures as far as this kit knows them."""
    return "\n".join(f"  {k}: {'unknown' if v is None else v}" for k, v in PAPER_VOC.items())


__all__ = ["VOC_CLASSES", "PAPER_VOC", "VOCLabels", "VOCResult", "default_root", "voc_image_labels",
           "load_voc_labels", "voc_map", "image_features", "fit_classifiers", "voc_classification",
           "paper_voc_table"]
