"""Pseudo-labels as CSV, in the spirit of the labels the SeLa authors released for ImageNet.

One row per image: the image's index in the data set, then one column per head::

    index,head0,head1,head2
    0,7,112,40
    1,3,5,97
    ...

A plain text table is the most portable way to hand labels to another framework, another network (the
paper's "label transfer") or a spreadsheet; it stays a few MB even for ImageNet's 1.28M images.

Labels of image files (what ``sela-edu label`` writes) use the image's path instead of an index: the
path relative to the labelled folder, with ``/`` separators, then one column per head::

    path,head0,head1
    shoes/0001.png,7,112
    shoes/0002.png,3,5

(:func:`export_path_labels_csv` / :func:`read_path_labels_csv`; paths are quoted by the CSV rules
when they hold commas or quotes.)

The labels the SeLa authors released for ImageNet (``alexnet-labels.csv``, ``resnet-labels.csv``) come
without a documented format. What the official code reveals: its labels are a ``heads x N`` integer
table ``L`` (10 x 1,281,167 for the 10 x 3000 models) whose column ``i`` belongs to image ``i`` of
torchvision's ``ImageFolder`` over ``train/`` (classes and files in sorted order). The code that wrote
the CSV files is not in the repository, so :func:`read_released_labels_csv` accepts every plausible
layout: with or without a header line, with or without a first column naming the image (a path, a
file name or an index), one row per image (``N x heads``) or one row per head (``heads x N``).
:func:`read_any_labels_csv` reads all three kinds of file.
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


def _head_names(head_names, num_heads: int, first_column: str) -> list[str]:
    """The label columns' names (default ``head0, head1, ...``): as many as heads, distinct, none equal to
    the first column's name."""
    if head_names is None:
        head_names = [f"head{h}" for h in range(num_heads)]
    head_names = [str(name) for name in head_names]
    if len(head_names) != num_heads or first_column in head_names or len(set(head_names)) != num_heads:
        raise ValueError(f"head_names must be {num_heads} distinct names other than {first_column!r}")
    return head_names


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
    head_names = _head_names(head_names, num_heads, INDEX_COLUMN)
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


# --------------------------------------------------------------------------------------------------
# Labels of image files: path,head0,head1,...
# --------------------------------------------------------------------------------------------------

PATH_COLUMN = "path"


def export_path_labels_csv(path: str | os.PathLike, paths, labels, *, head_names=None) -> Path:
    """Write one row per image file: its path (relative to the labelled folder, ``/`` separators), then
    one label per head. ``labels`` is num_heads x N (or N for one head), column ``i`` for ``paths[i]``.
    """
    labels = _as_label_matrix(labels)
    num_heads, n = labels.shape
    paths = [str(p).replace(os.sep, "/") for p in paths]
    if len(paths) != n:
        raise ValueError(f"{len(paths)} paths but labels have {n} columns")
    if len(set(paths)) != n:
        raise ValueError("paths must be distinct: each image gets one row")
    if any(p == "" or "\n" in p or "\r" in p for p in paths):
        raise ValueError("paths must be non-empty and hold no line breaks")
    head_names = _head_names(head_names, num_heads, PATH_COLUMN)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = labels.T.tolist()
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([PATH_COLUMN, *head_names])
        for p, row in zip(paths, rows):
            writer.writerow([p, *row])
    return out


def read_path_labels_csv(path: str | os.PathLike, *, return_head_names: bool = False):
    """Read a file written by :func:`export_path_labels_csv`: ``(paths, labels num_heads x N)``, in file order.

    Malformed files raise ValueError naming the file, the line and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file at {path}")
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[0].strip() != PATH_COLUMN or len(header) < 2:
            raise ValueError(f"{path}: expected a header 'path,head0,...' (one column per head), got {header!r}")
        width = len(header)
        paths, rows = [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != width:
                raise ValueError(f"{path}, line {line}: {len(row)} fields, the header names {width}")
            try:
                values = [int(v) for v in row[1:]]
            except ValueError:
                raise ValueError(f"{path}, line {line}: labels must be integers, got {row[1:]!r}") from None
            if any(v < 0 for v in values):
                raise ValueError(f"{path}, line {line}: labels must be non-negative")
            paths.append(row[0])
            rows.append(values)
    if len(set(paths)) != len(paths):
        seen = set()
        dup = next(p for p in paths if p in seen or seen.add(p))
        raise ValueError(f"{path}: image {dup!r} appears twice")
    labels = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), width - 1).T.contiguous()
    if return_head_names:
        return paths, labels, [h.strip() for h in header[1:]]
    return paths, labels


# --------------------------------------------------------------------------------------------------
# The authors' released label files
# --------------------------------------------------------------------------------------------------


def _is_int(text: str) -> bool:
    text = text.strip()
    if text[:1] in "+-":
        text = text[1:]
    return text.isdigit()


def read_released_labels_csv(path: str | os.PathLike, *, num_heads: int | None = None):
    """Read a label file in the layout of the authors' released ImageNet labels (see the module docstring).

    Returns ``(keys, labels)``: ``labels`` a LongTensor ``num_heads x N`` (column ``i`` for image ``i``),
    ``keys`` the first column's image names when the file has one (else None). Layouts recognised, with
    ``,`` or whitespace as the separator: an optional header line (any line with a non-integer field
    outside the first column); an optional first column that names the image (non-integer), and
    integer labels otherwise; one row per image, or one row per head (taken when the file has fewer
    rows than columns, or exactly ``num_heads`` rows). An integer first column is taken as a label
    column unless it equals ``0..N-1`` and other columns follow (an index column, as the kit writes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file at {path}")
    with open(path, newline="") as handle:
        sample = handle.read(4096)
    delimiter = "," if "," in sample else None
    if '"' not in sample:
        fast = _read_released_fast(path, delimiter, num_heads)
        if fast is not None:
            return fast
    rows: list[list[str]] = []
    with open(path, newline="") as handle:
        if delimiter:
            reader = csv.reader(handle, delimiter=delimiter)
        else:
            reader = (line.split() for line in handle)
        for row in reader:
            row = [v.strip() for v in row]
            if row and any(row):
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the file holds no labels")
    header = None
    if any(not _is_int(v) for v in rows[0][1:]) or (len(rows[0]) == 1 and not _is_int(rows[0][0])):
        header, rows = rows[0], rows[1:]
    if not rows:
        raise ValueError(f"{path}: only a header line ({header!r}), no labels")
    width = len(rows[0])
    for line, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise ValueError(f"{path}, line {line}: {len(row)} fields where the first row has {width}")
    keys = None
    if not all(_is_int(r[0]) for r in rows):
        keys = [r[0] for r in rows]
        rows = [r[1:] for r in rows]
        width -= 1
        if width == 0:
            raise ValueError(f"{path}: a column of names but no label columns")
    try:
        table = np.array([[int(v) for v in r] for r in rows], dtype=np.int64)
    except ValueError:
        bad = next(r for r in rows if not all(_is_int(v) for v in r))
        raise ValueError(f"{path}: labels must be integers, got a row {bad[:6]!r}") from None
    wide = (num_heads is not None and table.shape[0] == num_heads and table.shape[1] != num_heads) or (
        num_heads is None and keys is None and table.shape[0] < table.shape[1])
    if wide:
        if keys is not None:
            raise ValueError(f"{path}: one row per head, but the rows are named {keys[:3]!r}")
        labels = table
    else:
        if keys is None:
            keys, table = _leading_index_as_keys(table)
        labels = table.T
    return _checked_released(path, keys, labels, num_heads)


def _leading_index_as_keys(table: np.ndarray):
    """A first column counting 0, 1, 2, ... is the images' index, not a head: ``(keys or None, rest)``."""
    if table.shape[1] >= 2 and np.array_equal(table[:, 0], np.arange(table.shape[0])):
        return [str(i) for i in range(table.shape[0])], table[:, 1:]
    return None, table


def _checked_released(path: Path, keys, labels: np.ndarray, num_heads: int | None):
    """``(keys, labels)`` of a released file, heads x N, after checking the heads' count and the signs."""
    if num_heads is not None and labels.shape[0] != num_heads:
        raise ValueError(f"{path}: found {labels.shape[0]} head(s) of {labels.shape[1]} labels, expected {num_heads}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative")
    return keys, torch.from_numpy(np.ascontiguousarray(labels))


def _read_released_fast(path: Path, delimiter: str | None, num_heads: int | None):
    """numpy's reader for large, simple files (one row per image, no quoting); None to fall back."""
    with open(path, newline="") as handle:
        head = [line.split(delimiter) for _, line in zip(range(3), handle)]
    head = [[v.strip() for v in row] for row in head if row and any(v.strip() for v in row)]
    if len(head) < 2:
        return None
    has_header = any(not _is_int(v) for v in head[0][1:])
    body = head[1:] if has_header else head
    width = len(body[0])
    named = not _is_int(body[0][0])
    if width < 1 + named or any(len(r) != width for r in body):
        return None
    try:
        table = np.loadtxt(path, delimiter=delimiter, skiprows=int(has_header), dtype=np.int64, ndmin=2,
                           usecols=range(int(named), width))
    except ValueError:
        return None  # the careful reader names the bad row
    if table.shape[0] < table.shape[1] or (num_heads is not None and table.shape[0] == num_heads):
        return None  # one row per head: the careful reader decides
    keys = None
    if named:
        keys = np.loadtxt(path, delimiter=delimiter, skiprows=int(has_header), dtype=str, usecols=0,
                          ndmin=1).tolist()
    else:
        keys, table = _leading_index_as_keys(table)
    labels = table.T
    return _checked_released(path, keys, labels, num_heads)


def read_any_labels_csv(path: str | os.PathLike):
    """Read the kit's index format, the kit's path format or a released file: ``(keys, labels)``.

    ``keys`` is a list of image indices (kit index format), of paths (path format), of the released file's
    names, or None; ``labels`` is a LongTensor num_heads x N.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file at {path}")
    with open(path, newline="") as handle:
        first = next(csv.reader(handle), [])
    name = first[0].strip() if first else ""
    if name == INDEX_COLUMN:
        labels, indices = read_labels_csv(path, return_indices=True)
        return indices.tolist(), labels
    if name == PATH_COLUMN:
        return read_path_labels_csv(path)
    return read_released_labels_csv(path)
