"""Whole-or-nothing checkpoints: atomic writes, rotation, and clear errors for damaged files."""

from __future__ import annotations

import os

import pytest
import torch

from sela_edu.training.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint,
                                 save_rotating)


def _state(value: float) -> dict:
    return {"weights": torch.full((64, 64), value), "epoch": int(value), "history": [{"loss": value}]}


def test_round_trip_and_no_temp_files_left(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", _state(3.0))
    state = load_checkpoint(path)
    assert torch.equal(state["weights"], torch.full((64, 64), 3.0))
    assert state["epoch"] == 3 and state["history"] == [{"loss": 3.0}]
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", _state(1.0))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"bad": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_rotation_keeps_previous(tmp_path):
    for value in (1.0, 2.0, 3.0):
        save_rotating(tmp_path, _state(value))
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    assert load_checkpoint(tmp_path / "prev.pt")["epoch"] == 2
    assert latest_checkpoint(tmp_path) == tmp_path / "last.pt"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_truncated_checkpoint_names_file_and_remedy(tmp_path):
    save_rotating(tmp_path, _state(1.0))
    save_rotating(tmp_path, _state(2.0))
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(last)
    message = str(info.value)
    assert str(last) in message and "prev.pt" in message and "mv" in message
    # The previous checkpoint is untouched; once the damaged file is moved aside it is the one to resume.
    assert load_checkpoint(tmp_path / "prev.pt")["epoch"] == 1
    os.replace(last, tmp_path / "last.pt.corrupt")
    assert latest_checkpoint(tmp_path) == tmp_path / "prev.pt"


def test_foreign_and_missing_files(tmp_path):
    torch.save({"model": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a sela-edu checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.pt")


def test_crash_between_renames_resumes_from_new_file(tmp_path):
    # Simulate a crash after last.pt became prev.pt but before last.pt.new became last.pt.
    save_rotating(tmp_path, _state(1.0))
    save_checkpoint(tmp_path / "last.pt.new", _state(2.0))
    os.replace(tmp_path / "last.pt", tmp_path / "prev.pt")
    found = latest_checkpoint(tmp_path)
    assert found == tmp_path / "last.pt.new" and load_checkpoint(found)["epoch"] == 2
