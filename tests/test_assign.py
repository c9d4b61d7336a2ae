"""`sela-edu assign`: a trained model's clusters for the images of a folder, without training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from test_label_folder import _write_folder

from sela_edu import cli
from sela_edu.apps.assign import assign_folder, load_trained_clusters
from sela_edu.training.checkpoint import save_checkpoint
from sela_edu.data import ImageData, make_loader
from sela_edu.apps.label_folder import label_folder, load_folder_images
from sela_edu.training import read_path_labels_csv
from sela_edu.apps.pretrained import PretrainedError

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder of 60 tiny images (plus a corrupt PNG and a text file) and a `label` run on it, 2 heads."""
    root = tmp_path_factory.mktemp("assign") / "photos"
    root.mkdir()
    _write_folder(root)
    out = root.parent / "labelled"
    result = label_folder(root, out, clusters=[3, 4], epochs=2, batch_size=16, progress=False)
    return root, out, result


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """90 random grey images. The three shapes of `trained`'s folder fall in three tight groups that no label
    step can split into clusters of other sizes; these images' scores spread."""
    root = tmp_path_factory.mktemp("varied") / "noise"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(90):
        img = (rng.random((20, 24)) * rng.uniform(40, 255)).astype(np.uint8)
        Image.fromarray(img).save(root / f"n{i:02d}.png")
    return root


def _sharpen_heads(state, factor=100.0):
    """Scale every head's weights: confident scores, as a well-trained network gives. A 2-epoch network's
    scores differ by hundredths, and the label step's hard labels then only roughly take the sizes asked for."""
    for key in [k for k in state if k.startswith("heads.")]:
        state[key] = state[key] * factor


def _labels_by_path(csv_path):
    paths, labels = read_path_labels_csv(csv_path)
    return {p: tuple(int(v) for v in labels[:, i]) for i, p in enumerate(paths)}


def test_equal_mode_gives_back_the_labels_label_wrote(trained, tmp_path):
    root, out, _ = trained
    result = assign_folder(root, out / "model.pt", tmp_path / "a", mode="equal", progress=False)
    assert _labels_by_path(tmp_path / "a" / "labels.csv") == _labels_by_path(out / "labels.csv")
    assert result.labels.shape == (2, 60)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["lam"] == 10.0 and summary["heads"] == [3, 4]  # label's lam, stored in model.pt


def test_argmax_mode_matches_the_trained_network_on_the_trainers_view(trained, tmp_path):
    """The saved model, reloaded, scores the images exactly as the trained network sees them in the trainer's
    loader (same decoding, channels, normalisation): each image's best cluster is the same."""
    root, out, labelled = trained
    result = assign_folder(root, out / "model.pt", tmp_path / "a", mode="argmax", progress=False)
    loaded = load_folder_images(root, 32, progress=False, exclude=[out])
    stats = json.loads((out / "summary.json").read_text())
    assert stats["image_size"] == 32
    saved = torch.load(out / "model.pt", weights_only=True)
    data = ImageData("folder", loaded.images, torch.full((len(loaded.paths),), -1), [], tuple(saved["data"]["mean"]),
                     tuple(saved["data"]["std"]))
    net = labelled.model.eval()
    best = torch.empty(2, len(loaded.paths), dtype=torch.long)
    with torch.no_grad():
        for x, _, index in make_loader(data, 16, train=False, shuffle=False):
            for h, scores in enumerate(net(x)):
                best[h, index] = scores.argmax(1)
    assert result.paths == loaded.paths
    assert torch.equal(result.labels, best)


def test_bad_files_are_named_and_skipped(trained, tmp_path, capsys):
    root, out, _ = trained
    result = assign_folder(root, out / "model.pt", tmp_path / "a", progress=False)
    assert {p for p, _ in result.skipped} == {"a/broken.png", "notes.txt"}
    skipped = (tmp_path / "a" / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == ["a/broken.png", "notes.txt"]
    assert not {"a/broken.png", "notes.txt"} & set(_labels_by_path(tmp_path / "a" / "labels.csv"))
    err = capsys.readouterr().err
    assert "a/broken.png" in err and "notes.txt" in err


def test_missing_or_corrupt_model_is_named(trained, tmp_path, capsys):
    root, _, _ = trained
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        assign_folder(root, missing, tmp_path / "a", progress=False)
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(PretrainedError, match=str(corrupt)):
        assign_folder(root, corrupt, tmp_path / "a", progress=False)
    not_a_model = tmp_path / "numbers.pt"
    torch.save({"numbers": [1, 2, 3]}, not_a_model)
    with pytest.raises(PretrainedError, match=str(not_a_model)):
        assign_folder(root, not_a_model, tmp_path / "a", progress=False)
    assert cli.main(["assign", str(root), "--model", str(corrupt), "--output", str(tmp_path / "a"), "--quiet"]) == 2
    assert str(corrupt) in capsys.readouterr().err


def test_prior_mode_follows_the_trained_cluster_sizes(trained, varied, tmp_path):
    _, out, _ = trained
    payload = torch.load(out / "model.pt", weights_only=True)
    # as if the model had been trained with clusters of 50 %, 30 % and 20 % (head 0), 40/30/20/10 % (head 1)
    payload["labels"] = torch.stack([torch.tensor([0] * 50 + [1] * 30 + [2] * 20),
                                     torch.tensor([0] * 40 + [1] * 30 + [2] * 20 + [3] * 10)])
    _sharpen_heads(payload["state_dict"])
    skewed = tmp_path / "skewed.pt"
    torch.save(payload, skewed)
    result = assign_folder(varied, skewed, tmp_path / "a", mode="prior", progress=False)
    for sizes, wanted in zip(result.cluster_sizes, ([45, 27, 18], [36, 27, 18, 9])):
        assert all(abs(s - w) <= 3 for s, w in zip(sizes, wanted)), (sizes, wanted)
    equal = assign_folder(varied, skewed, tmp_path / "b", mode="equal", progress=False)
    for sizes, wanted in zip(equal.cluster_sizes, ([30] * 3, [22] * 4)):
        assert all(abs(s - w) <= 3 for s, w in zip(sizes, wanted)), (sizes, wanted)
    # a model saved without its training labels cannot size clusters as trained
    del payload["labels"]
    torch.save(payload, skewed)
    with pytest.raises(ValueError, match="no training labels"):
        assign_folder(varied, skewed, tmp_path / "c", mode="prior", progress=False)


def test_kit_training_checkpoint_with_its_labels_and_lambda(trained, varied, tmp_path):
    """The trainer's checkpoint format (config, model, labels), as written for a Fashion-MNIST run."""
    _, _, labelled = trained
    state = labelled.model.state_dict()
    _sharpen_heads(state)
    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, {"config": {"dataset": "fashion-mnist", "arch": "smallcnn", "image_size": 32, "lam": 7.0},
                           "model": state, "labels": torch.tensor([[0] * 6 + [1] * 3 + [2] * 3, [0, 1, 2, 3] * 3])})
    clusters = load_trained_clusters(ckpt, progress=False)
    assert clusters.image_size == 32 and clusters.lam == 7.0 and clusters.head_sizes == [3, 4]
    result = assign_folder(varied, clusters, tmp_path / "a", mode="prior", progress=False)
    assert all(abs(s - w) <= 3 for s, w in zip(result.cluster_sizes[0], [45, 22, 22])), result.cluster_sizes
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["lam"] == 7.0


def test_released_model_file_in_the_authors_torchvision_format(varied, tmp_path):
    """A small file written as the authors' `resnet18-1k_pp.pth` (state_dict + ImageNet labels, first head as fc)."""
    root = varied
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=5).eval()
    labels = torch.stack([torch.arange(100) % 5, torch.arange(100) % 4])  # 2 heads' labels, the file keeps head 0
    labels[0, :20] = 0                                                      # head 0: cluster 0 holds 36 %
    path = tmp_path / "resnet18-1k_pp.pth"
    state = tv.state_dict()
    state["fc.weight"], state["fc.bias"] = state["fc.weight"] * 100, state["fc.bias"] * 100  # confident (see above)
    torch.save({"state_dict": state, "L": labels}, path)
    result = assign_folder(root, path, tmp_path / "a", mode="prior", progress=False, batch_size=30)
    assert result.labels.shape == (1, 90) and result.description.startswith("resnet18-1k_pp.pth")
    assert abs(result.cluster_sizes[0][0] - 0.36 * 90) <= 3, result.cluster_sizes
    x = load_folder_images(root, 224, channels=3, progress=False).images[:4].float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    argmax = assign_folder(root, path, tmp_path / "b", mode="argmax", progress=False, batch_size=30)
    with torch.no_grad():
        assert torch.equal(argmax.labels[0, :4], tv((x - mean) / std).argmax(1))  # a positive factor keeps argmax


def test_heads_of_a_backbone_run_give_back_its_labels(trained, tmp_path):
    root, out, _ = trained
    second = label_folder(root, tmp_path / "second", clusters=[3, 5], epochs=3, backbone=str(out / "model.pt"),
                          progress=False)
    assert second.mode == "backbone"
    result = assign_folder(root, tmp_path / "second" / "heads.pt", tmp_path / "a", mode="equal", progress=False)
    assert "heads on checkpoint model.pt" in result.description
    assert _labels_by_path(tmp_path / "a" / "labels.csv") == _labels_by_path(tmp_path / "second" / "labels.csv")


def test_heads_file_of_an_older_version_is_named(trained, tmp_path):
    root, out, _ = trained
    older = tmp_path / "heads.pt"  # before the heads were a trainer mode: a bare state dict of their own module
    torch.save({"backbone": str(out / "model.pt"), "image_size": 16, "mean": [0.5], "std": [0.25],
                "heads": {"mean": torch.zeros(256), "body.0.weight": torch.zeros(512, 256)}, "head_sizes": [3],
                "labels": torch.zeros(1, 60, dtype=torch.long), "lam": 10.0}, older)
    with pytest.raises(ValueError, match="older sela-edu.*label --backbone"):
        assign_folder(root, older, tmp_path / "a", progress=False)


def test_too_few_images_for_sized_clusters(trained, tmp_path):
    root, out, _ = trained
    few = tmp_path / "few"
    few.mkdir()
    for name in ("b/deeper/im000.png", "a/im001.png"):
        (few / name.split("/")[-1]).write_bytes((root / name).read_bytes())
    with pytest.raises(ValueError, match="use mode 'argmax'"):
        assign_folder(few, out / "model.pt", tmp_path / "a", mode="equal", progress=False)
    assert assign_folder(few, out / "model.pt", tmp_path / "b", mode="argmax", progress=False).labels.shape == (2, 2)


def test_assign_command_end_to_end(trained, tmp_path, capsys):
    root, out, _ = trained
    target = tmp_path / "assigned"
    code = cli.main(["assign", str(root), "--model", str(out / "model.pt"), "--output", str(target),
                     "--mode", "equal", "--quiet", "--per-cluster", "4"])
    assert code == 0
    assert (target / "labels.csv").read_text().splitlines()[0] == "path,head0,head1"
    page = (target / "index.html").read_text()
    assert "head 1" in page and "data:image/png;base64," in page and "(equal)" in page
    assert len((target / "skipped.txt").read_text().splitlines()) == 2
    printed = capsys.readouterr().out
    assert "assigned 60 images" in printed and "mode equal" in printed and "3 of 3 clusters used" in printed
