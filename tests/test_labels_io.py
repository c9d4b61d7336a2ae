"""Pseudo-labels as CSV: round trip, subsets, and malformed files."""

from __future__ import annotations

import pytest
import torch

from sela_edu.training import export_labels_csv, read_labels_csv


def test_round_trip_all_heads(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, k, (500,), generator=g) for k in (10, 128, 3000)])
    path = export_labels_csv(tmp_path / "labels.csv", labels)
    lines = path.read_text().splitlines()
    assert lines[0] == "index,head0,head1,head2"
    assert lines[1] == f"0,{labels[0, 0]},{labels[1, 0]},{labels[2, 0]}"
    assert len(lines) == 501
    back = read_labels_csv(path)
    assert back.dtype == torch.int64 and torch.equal(back, labels)


def test_subset_indices_and_single_head(tmp_path):
    labels = torch.tensor([3, 1, 4, 1, 5])
    indices = torch.tensor([40, 10, 30, 20, 0])
    path = export_labels_csv(tmp_path / "sub.csv", labels, indices, head_names=["k10"])
    assert path.read_text().splitlines()[0] == "index,k10"
    back, idx = read_labels_csv(path, return_indices=True)
    assert idx.tolist() == [0, 10, 20, 30, 40]
    assert back.tolist() == [[5, 1, 1, 4, 3]]


@pytest.mark.parametrize("labels, indices, match", [
    (torch.zeros(2, 3, 4, dtype=torch.long), None, "shape"),
    (torch.rand(5), None, "integers"),
    (torch.tensor([0, -1]), None, "non-negative"),
    (torch.tensor([0, 1]), torch.tensor([0, 1, 2]), "indices has 3"),
    (torch.tensor([0, 1]), torch.tensor([4, 4]), "distinct"),
])
def test_export_rejects_bad_input(tmp_path, labels, indices, match):
    with pytest.raises(ValueError, match=match):
        export_labels_csv(tmp_path / "x.csv", labels, indices)


@pytest.mark.parametrize("text, match", [
    ("idx,head0\n0,1\n", "header"),
    ("index,head0\n0,1\n1,x\n", "integers"),
    ("index,head0,head1\n0,1\n", "integers|columns"),
    ("index,head0\n0,1\n0,2\n", "appears twice"),
    ("index,head0\n0,-3\n", "non-negative"),
])
def test_read_rejects_malformed_files(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_labels_csv(path)


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_labels_csv(tmp_path / "none.csv")


# ---------------------------------------------------------------- path-keyed labels and released files

from sela_edu.training import (  # noqa: E402
    export_path_labels_csv,
    read_any_labels_csv,
    read_path_labels_csv,
    read_released_labels_csv,
)


def test_path_labels_round_trip(tmp_path):
    paths = ["a/001.png", "b/c/002.jpg", "odd, name \"quoted\".png", "ünïcode/3.png"]
    labels = torch.tensor([[0, 1, 2, 1], [5, 4, 3, 2]])
    out = export_path_labels_csv(tmp_path / "labels.csv", paths, labels, head_names=["k3", "k6"])
    assert out.read_text(encoding="utf-8").splitlines()[0] == "path,k3,k6"
    back_paths, back, names = read_path_labels_csv(out, return_head_names=True)
    assert back_paths == paths and torch.equal(back, labels) and names == ["k3", "k6"]
    keys, again = read_any_labels_csv(out)
    assert keys == paths and torch.equal(again, labels)
    # the index format goes through the same reader
    idx_file = export_labels_csv(tmp_path / "idx.csv", labels, torch.tensor([3, 1, 0, 2]))
    keys, by_index = read_any_labels_csv(idx_file)
    assert keys == [0, 1, 2, 3] and torch.equal(by_index, labels[:, [2, 1, 3, 0]])


@pytest.mark.parametrize("paths, labels, match", [
    (["a.png", "a.png"], torch.tensor([0, 1]), "distinct"),
    (["a.png"], torch.tensor([0, 1]), "1 paths"),
    (["a\nb.png", "c.png"], torch.tensor([0, 1]), "line breaks"),
])
def test_path_export_rejects_bad_input(tmp_path, paths, labels, match):
    with pytest.raises(ValueError, match=match):
        export_path_labels_csv(tmp_path / "x.csv", paths, labels)


@pytest.mark.parametrize("text, match", [
    ("file,head0\na.png,1\n", "header"),
    ("path,head0\na.png,x\n", "integers"),
    ("path,head0\na.png,1,2\n", "fields"),
    ("path,head0\na.png,1\na.png,2\n", "twice"),
])
def test_path_reader_rejects_malformed_files(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_path_labels_csv(path)


@pytest.mark.parametrize("text, keys, rows", [
    # one row per image, image names first, no header (ImageFolder order of ImageNet train)
    ("n01440764/n01440764_10026.JPEG,17,2999\nn01440764/n01440764_10027.JPEG,3,0\nn015/x.JPEG,9,9\n",
     ["n01440764/n01440764_10026.JPEG", "n01440764/n01440764_10027.JPEG", "n015/x.JPEG"], [[17, 3, 9], [2999, 0, 9]]),
    # with a header, whitespace separated
    ("image h0 h1\na.JPEG 1 2\nb.JPEG 3 4\nc.JPEG 5 6\n", ["a.JPEG", "b.JPEG", "c.JPEG"], [[1, 3, 5], [2, 4, 6]]),
    # integers only, one row per image with an index column 0..N-1
    ("0,5,6\n1,7,8\n2,9,1\n3,2,2\n", ["0", "1", "2", "3"], [[5, 7, 9, 2], [6, 8, 1, 2]]),
    # integers only, one row per head (heads x N, as the official code holds L)
    ("1,2,3,4,5\n6,7,8,9,0\n", None, [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]),
    # a quoted name (the careful reader)
    ('"a,b.JPEG",1\n"c.JPEG",2\n"d.JPEG",3\n', ["a,b.JPEG", "c.JPEG", "d.JPEG"], [[1, 2, 3]]),
])
def test_released_layouts(tmp_path, text, keys, rows):
    path = tmp_path / "released.csv"
    path.write_text(text)
    got_keys, labels = read_released_labels_csv(path)
    assert got_keys == keys and labels.tolist() == rows
    assert labels.dtype == torch.int64


def test_released_reader_checks_heads_and_values(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,1,2\nb,3,4\nc,5,6\n")
    assert read_released_labels_csv(path, num_heads=2)[1].shape == (2, 3)
    with pytest.raises(ValueError, match="expected 10"):
        read_released_labels_csv(path, num_heads=10)
    path.write_text("a,1\nb,-2\nc,3\n")
    with pytest.raises(ValueError, match="non-negative"):
        read_released_labels_csv(path)
    path.write_text("a,1\nb,x\n")
    with pytest.raises(ValueError, match="integers"):
        read_released_labels_csv(path)
    path.write_text("a,1\nb\n")
    with pytest.raises(ValueError, match="fields"):
        read_released_labels_csv(path)
