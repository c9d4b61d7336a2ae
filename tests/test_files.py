"""Writing a file whole or not at all (sela_edu.files), the kit's one way to write results and checkpoints."""

import pytest

from sela_edu.files import write_whole, writing_whole


def test_write_whole_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_whole(path, "old")
    write_whole(path, b"new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_an_interrupted_write_leaves_the_old_file_as_it_was(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("complete")
    with pytest.raises(KeyboardInterrupt):
        with writing_whole(path) as tmp:
            tmp.write_text("half of a fi")
            raise KeyboardInterrupt
    assert path.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]
