"""The variants script (benchmarks/sela_variants.py): stored runs are reused, not trained again; the
confusion between clusters and classes is read off the counts."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sela_variants.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def variants():
    spec = importlib.util.spec_from_file_location("sela_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_confusion_names_split_classes_and_mixed_clusters(variants):
    # class 0 is one cluster; classes 1 and 2 share clusters 1 and 2 half and half
    targets = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    labels = torch.tensor([0] * 4 + [1, 1, 2, 2] + [1, 1, 2, 2])
    view = variants.confusion(labels, targets, ["top", "shirt", "coat"])
    assert view["class_top"].tolist() == [1.0, 0.5, 0.5]
    assert view["split"] == []            # half is not less than half
    labels = torch.tensor([0] * 4 + [1, 2, 3, 4] + [1, 2, 3, 3])
    view = variants.confusion(labels, targets, ["top", "shirt", "coat"])
    assert view["split"] == ["shirt"] and len(view["mixed"]) == 0
    view = variants.confusion(torch.zeros(12, dtype=torch.long), targets, ["top", "shirt", "coat"])
    assert view["split"] == [] and view["mixed"] == ["top 33% + shirt 33% + coat 33%"]


def test_a_variant_runs_once_and_is_read_back_after(variants, tmp_path, capsys, monkeypatch):
    out = tmp_path / "variants"
    variants.main(["--profile", "smoke", "--variants", "sela", "sela-reinit-heads", "--seeds", "0", "--out", str(out)])
    folder = out / "smoke"
    stored = json.loads((folder / "sela-reinit-heads_s0.json").read_text())
    assert stored["run"]["overrides"] == {"reinit_heads": True} and stored["config"]["reinit_heads"] is True
    assert (folder / "labels" / "sela_s0.csv").is_file()
    printed = capsys.readouterr().out
    assert "sela-reinit-heads" in printed and "Against plain SeLa" in printed and "largest cluster" in printed

    monkeypatch.setattr(variants, "run_train", lambda run, ctx: pytest.fail(f"{run.name} trained again"))
    variants.main(["--profile", "smoke", "--variants", "sela", "sela-reinit-heads", "--seeds", "0", "--out", str(out)])
    assert capsys.readouterr().out.split("mean +- std")[1] == printed.split("mean +- std")[1]


def test_runs_of_the_same_setting_are_copied_from_a_ledger_folder(variants, tmp_path, capsys, monkeypatch):
    first = tmp_path / "first"
    variants.main(["--profile", "smoke", "--variants", "sela", "--seeds", "0", "--out", str(first)])
    monkeypatch.setattr(variants, "run_train", lambda run, ctx: pytest.fail(f"{run.name} trained again"))
    variants.main(["--profile", "smoke", "--variants", "sela", "--seeds", "0", "--out", str(tmp_path / "second"),
                   "--reuse", str(first / "smoke")])
    assert (tmp_path / "second" / "smoke" / "labels" / "sela_s0.csv").is_file()
