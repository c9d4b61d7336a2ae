"""Pascal VOC classification transfer on a small VOC-format tree written by the tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from sela_edu.apps import voc
from sela_edu.models import build_model

CLASSES_USED = ("cat", "dog", "car")


def _write_tree(root, n_train=24, n_test=18, seed=0):
    """VOCdevkit/VOC2007 with JPEGImages, Annotations and ImageSets/Main (split lists and per-class files).

    Each image holds objects of random classes; its colour says which (red cat, green dog, blue car), so a
    network's features can tell them apart. Some objects are difficult."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    truth = {}
    splits = {"trainval": [], "test": []}
    for i in range(n_train + n_test):
        image_id = f"{i:06d}"
        split = "trainval" if i < n_train else "test"
        splits[split].append(image_id)
        chosen = [c for c in CLASSES_USED if rng.random() < 0.45] or [CLASSES_USED[i % 3]]
        objects = [(c, int(rng.random() < 0.2)) for c in chosen]
        if i % 7 == 0:  # an extra difficult-only object of another class
            other = next(c for c in CLASSES_USED if c not in chosen) if len(chosen) < 3 else None
            if other:
                objects.append((other, 1))
        pixels = np.zeros((40, 48, 3), dtype=np.uint8) + 30
        for c, _ in objects:
            pixels[..., CLASSES_USED.index(c)] = 220
        pixels = np.clip(pixels + rng.integers(0, 30, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(base / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{c}</name><difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
                      f"<xmax>10</xmax><ymax>10</ymax></bndbox></object>" for c, d in objects)
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>48</width><height>40</height>"
            f"<depth>3</depth></size>{xml}</annotation>")
        truth[image_id] = objects
    for split, ids in splits.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for name in voc.VOC_CLASSES:  # the devkit's per-class files, written from the same objects
            lines = []
            for image_id in ids:
                flags = [d for c, d in truth[image_id] if c == name]
                value = 1 if 0 in flags else (0 if flags else -1)
                lines.append(f"{image_id} {value:2d}")
            (base / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("\n".join(lines) + "\n")
    return base


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    _write_tree(root)
    return root


def test_labels_match_the_devkit_class_files(tree):
    data = voc.load_voc_labels(tree, "trainval")
    assert len(data.ids) == 24 and data.labels.shape == (24, 20)
    main = tree / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    for c, name in enumerate(voc.VOC_CLASSES):
        rows = dict(line.split() for line in (main / f"{name}_trainval.txt").read_text().splitlines())
        assert [int(rows[i]) for i in data.ids] == data.labels[:, c].tolist(), name
    assert (data.labels == 0).any(), "the tree should hold difficult-only images"


def test_image_labels_rules():
    row = voc.voc_image_labels([{"name": "cat", "difficult": "1"}, {"name": "dog", "difficult": "0"},
                                {"name": "cat", "difficult": "0"}, {"name": "car", "difficult": "1"}])
    assert row[voc.VOC_CLASSES.index("cat")] == 1
    assert row[voc.VOC_CLASSES.index("dog")] == 1
    assert row[voc.VOC_CLASSES.index("car")] == 0
    assert row[voc.VOC_CLASSES.index("bus")] == -1
    with pytest.raises(ValueError, match="unknown VOC class"):
        voc.voc_image_labels([{"name": "unicorn"}])


def test_map_matches_sklearn_and_ignores_difficult():
    rng = np.random.default_rng(1)
    labels = rng.choice([-1, 0, 1], size=(50, 20), p=[0.6, 0.1, 0.3])
    labels[0, :] = 1
    scores = rng.normal(size=(50, 20)) + labels
    mAP, ap = voc.voc_map(labels, scores)
    expected = []
    for c in range(20):
        keep = labels[:, c] != 0
        expected.append(average_precision_score(labels[keep, c] == 1, scores[keep, c]))
    assert mAP == pytest.approx(np.mean(expected))
    assert list(ap.values()) == pytest.approx(expected)
    # moving a difficult image's score changes nothing
    scores2 = scores.copy()
    scores2[labels == 0] = 1e6
    assert voc.voc_map(labels, scores2)[0] == pytest.approx(mAP)


def test_classification_on_the_small_tree(tree, one_torch_thread):
    torch.manual_seed(0)
    model = build_model("smallcnn", num_heads=1, num_clusters=2, in_channels=3, image_size=32).eval()
    result = voc.voc_classification(model, tree, image_size=32, progress=False, batch_size=16)
    assert result.num_train == 24 and result.num_test == 18
    assert set(result.ap) == set(voc.VOC_CLASSES)
    used = [result.ap[c] for c in CLASSES_USED]
    assert all(0.0 <= a <= 1.0 for a in used)
    assert all(np.isnan(result.ap[c]) for c in voc.VOC_CLASSES if c not in CLASSES_USED)
    assert result.mAP == pytest.approx(np.mean(used))
    # the same numbers by hand: features, sklearn classifiers, sklearn AP
    train = voc.load_voc_labels(tree, "trainval")
    test = voc.load_voc_labels(tree, "test")
    xtr = voc.image_features(model, train.images, image_size=32, progress=False).numpy()
    xte = voc.image_features(model, test.images, image_size=32, progress=False).numpy()
    clfs = voc.fit_classifiers(xtr, train.labels)
    for name in CLASSES_USED:
        c = voc.VOC_CLASSES.index(name)
        keep = test.labels[:, c] != 0
        ap = average_precision_score(test.labels[keep, c] == 1, clfs[c].decision_function(xte[keep]))
        assert result.ap[name] == pytest.approx(ap)
    assert "mAP" in result.table()


def test_missing_data_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2007") as err:
        voc.load_voc_labels(tmp_path, "test")
    assert "download=True" in str(err.value)


def test_paper_figures_are_labelled_unverified():
    text = voc.paper_voc_table()
    assert "59.2" in text and "45.7" in text and "unverified" in text and "unknown" in text
