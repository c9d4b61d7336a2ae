"""`sela-edu label` on a small folder: labels, contact sheet, skipped files, resume, backbones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sela_edu import cli
from sela_edu.apps.label_folder import label_folder, list_files, load_folder_images
from sela_edu.training import read_path_labels_csv
from sela_edu.apps.pretrained import PretrainedError, load_checkpoint_file

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def _write_folder(root, n=60):
    """n tiny PNGs in a tree (no class folders; the hidden class is the shape), one corrupt PNG, one text file."""
    rng = np.random.default_rng(0)
    classes = {}
    for i in range(n):
        cls = i % 3
        img = rng.integers(0, 40, (20, 24), dtype=np.uint8)
        if cls == 0:
            img[5:15, 6:18] = 230             # a block
        elif cls == 1:
            img[:, 10:14] = 230               # a vertical bar
        else:
            img[8:12, :] = 230                # a horizontal bar
        sub = root / ("a" if i % 2 else "b/deeper")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"im{i:03d}.png")
        classes[(sub / f"im{i:03d}.png").relative_to(root).as_posix()] = cls
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")  # hidden files are left out
    return classes


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    classes = _write_folder(root)
    return root, classes


def test_load_folder_reports_bad_files_by_name(folder, capsys):
    root, classes = folder
    files = list_files(root)
    assert ".hidden.png" not in {f.name for f in files}
    loaded = load_folder_images(root, 16, progress=False)
    assert sorted(loaded.paths) == sorted(classes)
    assert loaded.images.shape == (60, 1, 16, 16) and loaded.images.dtype == torch.uint8  # grey detected
    skipped = dict(loaded.skipped)
    assert set(skipped) == {"a/broken.png", "notes.txt"}
    err = capsys.readouterr().err
    assert "a/broken.png" in err and "notes.txt" in err


def test_label_command_writes_labels_sheet_and_skipped(folder, tmp_path, capsys):
    root, classes = folder
    out = tmp_path / "out"
    code = cli.main(["label", str(root), "--clusters", "3", "--heads", "2", "--epochs", "2", "--output", str(out),
                     "--quiet", "--batch-size", "16"])
    assert code == 0
    paths, labels = read_path_labels_csv(out / "labels.csv")
    assert sorted(paths) == sorted(classes) and labels.shape == (2, 60)
    assert int(labels.min()) >= 0 and int(labels.max()) <= 2
    header = (out / "labels.csv").read_text().splitlines()[0]
    assert header == "path,head0,head1"
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert sorted(s.split("\t")[0] for s in skipped) == ["a/broken.png", "notes.txt"]
    page = (out / "index.html").read_text()
    assert page.count("cluster ") >= 3 and "data:image/png;base64," in page and "head 1" in page
    assert "title='b/deeper/im000.png'" in page or "title='a/im001.png'" in page or "title='" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 60 and summary["skipped"] == 2 and summary["heads"] == [3, 3]
    printed = capsys.readouterr()
    assert "labelled 60 images" in printed.out and "broken.png" in printed.err
    # the saved network loads as a kit checkpoint and can serve as a backbone
    pre = load_checkpoint_file(out / "model.pt")
    assert pre.layout == "kit" and pre.arch == "smallcnn" and pre.model.num_clusters == [3, 3]
    # it keeps the final labels (in labels.csv's order) and lambda: `sela-edu assign` sizes clusters from them
    assert torch.equal(pre.labels, labels)
    assert torch.load(out / "model.pt", weights_only=True)["lam"] == 10.0


def test_resume_after_interruption(folder, tmp_path):
    root, _ = folder
    out = tmp_path / "out"

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        label_folder(root, out, clusters=3, epochs=4, batch_size=16, progress=False, callback=interrupt)
    assert (out / "checkpoints" / "last.pt").is_file() and not (out / "labels.csv").exists()
    seen = []
    result = label_folder(root, out, clusters=3, epochs=4, batch_size=16, progress=False,
                          callback=lambda r: seen.append(r["epoch"]))
    assert seen == [3, 4], "the second run continues after the two epochs the first one finished"
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert (out / "labels.csv").is_file()
    # restart=True starts over
    seen.clear()
    label_folder(root, out, clusters=3, epochs=1, batch_size=16, progress=False, restart=True,
                 callback=lambda r: seen.append(r["epoch"]))
    assert seen == [1]


def test_backbone_from_a_checkpoint_file(folder, tmp_path):
    root, classes = folder
    first = label_folder(root, tmp_path / "first", clusters=3, epochs=1, batch_size=16, progress=False)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    backbone = dict(clusters=[3, 4], epochs=3, backbone=str(first.output / "model.pt"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        label_folder(root, tmp_path / "second", callback=interrupt, **backbone)
    seen = []
    result = label_folder(root, tmp_path / "second", callback=lambda r: seen.append(r["epoch"]), **backbone)
    assert seen == [2, 3], "the heads train in the trainer, so a backbone run resumes after its first epoch"
    assert result.mode == "backbone" and result.labels.shape == (2, 60)
    assert sorted(result.paths) == sorted(classes)
    assert (tmp_path / "second" / "checkpoints" / "features.pt").is_file()
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["heads"] == [3, 4] and "checkpoint model.pt" in summary["backbone"]
    assert (summary["arch"], summary["feature_dim"], summary["relabels"]) == ("feature-mlp", 256, 3)
    heads = torch.load(tmp_path / "second" / "heads.pt", weights_only=True)
    assert torch.equal(heads["labels"], result.labels) and heads["head_sizes"] == [3, 4]
    assert heads["heads"]["build_kwargs"]["arch"] == "feature-mlp" and len(heads["heads"]["data"]["mean"]) == 256
    # none of the run's files is an image network: each is named, with what reads it instead
    out = tmp_path / "second"
    reader = f"sela-edu assign FOLDER --model {out / 'heads.pt'}"
    for name, holds in (("checkpoints/last.pt", "heads trained on a frozen backbone's features"),
                        ("checkpoints/features.pt", "the frozen backbone's features"),
                        ("heads.pt", "the heads a `sela-edu label --backbone` run trained")):
        with pytest.raises(PretrainedError) as err:
            load_checkpoint_file(out / name)
        assert str(err.value).startswith(f"{out / name} holds {holds}") and reader in str(err.value)
    # another backbone in the same output: new features, and heads trained from the start on them
    seen.clear()
    other = tmp_path / "other.pt"
    other.write_bytes((first.output / "model.pt").read_bytes())
    backbone["backbone"] = str(other)
    label_folder(root, tmp_path / "second", callback=lambda r: seen.append(r["epoch"]), **backbone)
    assert seen == [1, 2, 3]


def test_errors_are_clear(tmp_path, folder):
    root, _ = folder
    assert cli.main(["label", str(tmp_path / "nowhere"), "--clusters", "3", "--output", str(tmp_path / "o")]) == 2
    with pytest.raises(ValueError, match="at least as many"):
        label_folder(root, tmp_path / "o", clusters=100, epochs=1, progress=False)
    with pytest.raises(FileNotFoundError, match="released model"):
        label_folder(root, tmp_path / "o", clusters=3, backbone="no-such-model", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="readable image"):
        label_folder(empty, tmp_path / "o", clusters=3, progress=False)


def _script(name):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backbone_heads_train_as_the_deleted_loop_did():
    """The trainer that `label --backbone` now runs is the arithmetic of the loop it replaced: fed the
    trainer's own random draws (initial weights, batches, noise, dropout masks) and its warm start, the
    deleted loop (kept in benchmarks/backbone_heads.py) gives the trainer's labels bit for bit, so the two
    differ only by their random draws and the warm start (measured there over seeds)."""
    bench = _script("backbone_heads")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 3
    features = (centres.repeat_interleave(40, 0) + torch.randn(120, 16, generator=g)).relu()
    for seed in (0, 1):
        trainer = bench.trainer_labels(features, [3, 4], seed=seed, epochs=3, batch_size=32)
        same_draws = bench.deleted_loop(features, [3, 4], seed=seed, epochs=3, batch_size=32, warm_start=True,
                                        draws=bench.trainer_draws(features, [3, 4], seed, batch_size=32))
        assert torch.equal(same_draws, trainer)
