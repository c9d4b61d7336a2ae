"""Pseudo-labels as CSV, in the spirit of the labels the SeLa authors released for ImageNet.

One row per image: the image's index in the data set, then one column per head::

    index,head0,head1,head2
    0,7,112,40
    1,3,5,97
    ...

A plain text table is the most portable way to hand labels to another framework, another network (the
paper's "label transfer") or a spreadsheet; it stays a few MB even for ImageNet's 1.28M images.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

INDEX_COLUMN = "index"


def _as_label_matrix(labels) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if labels.dim() != 2:
        raise ValueError(f"labels must be a vector (one head) or num_heads x N, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("labels must be non-negative cluster indices")
    return labels.to(torch.int64).cpu()


def export_labels_csv(path: str | os.PathLike, labels, indices=None, *, head_names=None) -> Path:
    """Write ``labels`` (num_heads x N, or N for one head) as CSV with a header ``index,head0,...``.

    ``indices`` gives each column's image index in the data set (default ``0..N-1``), e.g. the positions
    of a subset in the full set. ``head_names`` overrides the default column names ``head0, head1, ...``.
    """
    labels = _as_label_matrix(labels)
    num_heads, n = labels.shape
    if indices is None:
        indices = torch.arange(n)
    indices = torch.as_tensor(indices).to(torch.int64).cpu().reshape(-1)
    if indices.numel() != n:
        raise ValueError(f"indices has {indices.numel()} entries but labels have {n} columns")
    if torch.unique(indices).numel() != n:
        raise ValueError("indices must be distinct: each image gets one row")
    if head_names is None:
        head_names = [f"head{h}" for h in range(num_heads)]
    head_names = [str(name) for name in head_names]
    if len(head_names) != num_heads or INDEX_COLUMN in head_names or len(set(head_names)) != num_heads:
        raise ValueError(f"head_names must be {num_heads} distinct names other than {INDEX_COLUMN!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = torch.cat([indices.unsqueeze(0), labels], dim=0).T.numpy()
    # numpy writes integer tables far faster than the csv module (1.28M rows in about a second).
    np.savetxt(path, table, fmt="%d", delimiter=",", header=",".join([INDEX_COLUMN, *head_names]), comments="")
    return path


def read_labels_csv(path: str | os.PathLike, *, return_indices: bool = False):
    """Read a file written by :func:`export_labels_csv`: a LongTensor num_heads x N, rows sorted by index.

    With ``return_indices=True`` also returns the sorted image indices (useful when the file covers a
    subset). Malformed files raise ValueError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file at {path}")
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), None)
    if not header or header[0].strip() != INDEX_COLUMN or len(header) < 2:
        raise ValueError(f"{path}: expected a header 'index,head0,...' (one column per head), got {header!r}")
    num_columns = len(header)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: every row must hold {num_columns} integers ({exc})") from exc
    if table.size == 0:
        table = table.reshape(0, num_columns)
    if table.shape[1] != num_columns:
        raise ValueError(f"{path}: rows have {table.shape[1]} columns but the header names {num_columns}")
    indices, labels = table[:, 0], table[:, 1:]
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative")
    order = np.argsort(indices, kind="stable")
    indices, labels = indices[order], labels[order]
    repeated = np.flatnonzero(np.diff(indices) == 0)
    if repeated.size:
        raise ValueError(f"{path}: image index {int(indices[repeated[0]])} appears twice")
    result = torch.from_numpy(np.ascontiguousarray(labels.T))
    if return_indices:
        return result, torch.from_numpy(indices)
    return result
