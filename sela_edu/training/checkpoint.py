"""Whole-or-nothing checkpoints.

A checkpoint is written whole or not at all (:mod:`sela_edu.files`): a reader sees either the old file or
the new one, never half of one. :func:`save_rotating` keeps the previous checkpoint as
``prev.pt`` next to ``last.pt``, so a ``last.pt`` damaged by something outside our control (a full disk
on another machine, a truncated copy) still leaves one good checkpoint to resume from.

Checkpoints are ordinary ``torch.save`` files (zip format) holding only tensors and plain Python values,
so :func:`load_checkpoint` reads them with ``weights_only=True`` (no arbitrary code runs on load).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sela_edu.files import fsync_dir, writing_whole

#: Marker stored in every checkpoint so that any other ``.pt`` file is recognised as foreign.
FORMAT = "sela-edu-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
PREV = "prev.pt"


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (truncated, corrupt, or not a sela-edu checkpoint)."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` whole or not at all (:func:`sela_edu.files.writing_whole`): on any failure
    ``path`` is left as it was."""
    with writing_whole(path) as tmp:
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "state": state}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and return its ``state`` dict.

    Raises FileNotFoundError when ``path`` does not exist and :class:`CheckpointError` (a ValueError)
    naming the file, the cause and what to do when it exists but cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, pickle errors... depending on the damage
        raise CheckpointError(_corrupt_message(path, f"{type(exc).__name__}: {exc}")) from exc
    return checkpoint_state(payload, path)


def checkpoint_state(payload, path: str | os.PathLike) -> dict[str, Any]:
    """The ``state`` of a file's contents already read (``payload``), checked: the kit's format marker and
    this kit's format version. Raises :class:`CheckpointError` naming ``path`` and what to do."""
    path = Path(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
        raise CheckpointError(_corrupt_message(path, "it is not a sela-edu checkpoint (format marker missing)"))
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('version')!r}; this sela-edu reads version "
            f"{FORMAT_VERSION}. Use the sela-edu version that wrote it, or start a fresh run in another folder."
        )
    return payload["state"]


def _corrupt_message(path: Path, cause: str) -> str:
    advice = "delete it (or start a fresh run in another checkpoint_dir)"
    prev = path.with_name(PREV)
    if path.name == LAST and prev.is_file():
        advice = (
            f"move it aside (e.g. `mv {path} {path}.corrupt`); train() then resumes from the previous good "
            f"checkpoint {prev}, one epoch earlier"
        )
    return f"checkpoint {path} cannot be read ({cause}). The file is truncated or corrupt: {advice}."


def save_rotating(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save ``state`` as ``folder/last.pt``, keeping the checkpoint it replaces as ``folder/prev.pt``.

    Order matters: the new file is complete on disk before the old ``last.pt`` becomes ``prev.pt``, so at
    every instant at least one complete checkpoint exists (``last.pt``, or ``prev.pt`` alone during the
    split second between the two renames; :func:`latest_checkpoint` handles that case).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged = save_checkpoint(folder / (LAST + ".new"), state)
    last = folder / LAST
    if last.exists():
        os.replace(last, folder / PREV)
    os.replace(staged, last)
    fsync_dir(folder)
    return last


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: ``last.pt``, else ``prev.pt`` (or ``last.pt.new`` after a crash
    between renames), else None when the folder holds none."""
    folder = Path(folder)
    for name in (LAST, LAST + ".new", PREV):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None
