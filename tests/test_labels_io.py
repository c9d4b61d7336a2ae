"""Pseudo-labels as CSV: round trip, subsets, and malformed files."""

from __future__ import annotations

import pytest
import torch

from sela_edu.labels_io import export_labels_csv, read_labels_csv


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
