"""Score mode "training": the training pass keeps every image's head outputs in the solver's buffers and
the label step solves on them, with one scoring pass (the first optimisation's) in the whole run."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sela_edu.data import load_dataset
from sela_edu.labelling import ScoreBuffer, self_label
from sela_edu.training import config_from_preset, train
from sela_edu.training import torchrun as dist_utils
from sela_edu.training import labelstep, loop
from sela_edu.training.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIME_KEYS = {"seconds", "train_seconds", "relabel_seconds", "score_seconds", "solve_seconds",
             "checkpoint_seconds", "images_per_second"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _small(**overrides):
    # 250 images in batches of 32: each epoch's last 26 images fall out of training (drop_last)
    base = dict(device="cpu", epochs=3, nopts=4, max_images=250, batch_size=32, score_mode="training")
    return config_from_preset("smoke", **{**base, **overrides})


def _same_state(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa) and torch.equal(a.labels, b.labels)


def _untimed(history):
    return [{k: v for k, v in record.items() if k not in TIME_KEYS and k != "label_steps"} for record in history]


def _count_scoring_passes(monkeypatch) -> list:
    calls = []
    original = labelstep.relabel

    def counted(*args, **kwargs):
        calls.append(kwargs.get("heads"))
        return original(*args, **kwargs)

    monkeypatch.setattr(labelstep, "relabel", counted)
    return calls


# ------------------------------------------------------------------------------------ the kept rows


def _expected_rows(monkeypatch, lam: float) -> dict:
    """Wrap the loop's SGD step: before each step, the outputs an identical copy of the network gives the
    batch (train mode, upright views), as the buffer should keep them; the latest per image."""
    expected: dict[int, list[torch.Tensor]] = {}
    original = loop.sgd_step

    def recording(s, state, x, index, keep=None):
        if keep is not None:
            twin = copy.deepcopy(s.net).train()
            with torch.no_grad():
                outs = twin(torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(4)]), rotation=True)[:-1] \
                    if s.config.rotation else twin(x)
            for h, out in enumerate(outs):
                z = out[: x.shape[0]].float() * lam
                z = z - z.amax(dim=1, keepdim=True)
                for row, i in zip(z, index.tolist()):
                    expected.setdefault(i, [None] * len(outs))[h] = row
        return original(s, state, x, index, keep)

    monkeypatch.setattr(loop, "sgd_step", recording)
    return expected


@pytest.mark.parametrize("rotation", [False, True])
def test_buffer_rows_are_the_outputs_of_each_images_last_training_batch(digits, tmp_path, monkeypatch, rotation):
    config = _small(checkpoint_dir=str(tmp_path), rotation=rotation, epochs=1, nopts=2)
    expected = _expected_rows(monkeypatch, config.lam)
    train(config, digits, progress=False)
    kept = load_checkpoint(tmp_path / "last.pt")["kept_scores"]
    assert [tuple(k.shape) for k in kept] == [(250, 10), (250, 20)]
    assert len(expected) == 7 * 32  # the epoch's 7 full batches; the other 26 images were not trained on
    for i, rows in expected.items():
        for h, row in enumerate(rows):
            torch.testing.assert_close(kept[h][i], row, rtol=0, atol=1e-5)
    for h in range(2):  # every row holds a score (the first pass's, where training never reached it)
        assert torch.isfinite(kept[h]).all() and torch.allclose(kept[h].amax(dim=1), torch.zeros(250))


def test_no_scoring_pass_after_the_first_optimisation(digits, monkeypatch):
    calls = _count_scoring_passes(monkeypatch)
    result = train(_small(epochs=2, nopts=4), digits, progress=False)
    assert result.timings["relabels"] == 4 and len(calls) == 1
    assert len(result.label_steps()) == 4 * 2 and all(r["converged"] for r in result.label_steps())
    calls.clear()
    train(_small(epochs=2, nopts=4, score_mode="plain"), digits, progress=False)
    assert len(calls) == 4  # the separate pass is still there


def test_round_robin_fills_every_heads_buffer_at_the_first_pass(digits, monkeypatch):
    calls = _count_scoring_passes(monkeypatch)
    result = train(_small(epochs=2, nopts=4, relabel_heads="round-robin"), digits, progress=False)
    assert len(calls) == 1 and [r["head"] for r in result.label_steps()] == [0, 1, 0, 1]


def test_training_mode_changes_nothing_before_its_first_kept_batch(digits):
    """Step 0 scores every image as "plain" does: the same first labels."""
    first = {}
    for mode in ("plain", "training"):
        first[mode] = train(_small(epochs=1, nopts=1, score_mode=mode), digits, progress=False)
    assert _same_state(first["plain"], first["training"])


def test_kmeans_in_training_mode_scores_as_plain(digits):
    plain = train(_small(method="kmeans", score_mode="plain", epochs=2, nopts=2), digits, progress=False)
    kept = train(_small(method="kmeans", epochs=2, nopts=2), digits, progress=False)
    assert _same_state(plain, kept)


# ------------------------------------------------------------------------------------ resuming


def _interrupt_after(epoch):
    def callback(record):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return callback


def test_interrupted_training_mode_run_resumes_bit_for_bit(digits, tmp_path):
    straight = train(_small(epochs=2, nopts=5), digits, progress=False)
    config = _small(epochs=2, nopts=5, checkpoint_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        train(config, digits, progress=False, callback=_interrupt_after(1))
    resumed = train(config, digits, progress=False)
    assert _same_state(straight, resumed)
    assert _untimed(resumed.history) == _untimed(straight.history)
    passes = [(r["head"], r["passes"]) for r in resumed.label_steps()]
    assert passes == [(r["head"], r["passes"]) for r in straight.label_steps()]


def test_a_checkpoint_without_kept_scores_resumes_with_a_fresh_pass(digits, tmp_path, monkeypatch):
    """A checkpoint of a version that kept nothing: the resumed run scores every image again, once."""
    config = _small(nopts=2, epochs=2, checkpoint_dir=str(tmp_path), nopt_schedule="even")
    with pytest.raises(KeyboardInterrupt):
        train(config, digits, progress=False, callback=_interrupt_after(1))
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["kept_scores"] is not None
    state["kept_scores"] = None  # as a checkpoint of an older version
    save_checkpoint(tmp_path / "last.pt", state)
    calls = _count_scoring_passes(monkeypatch)
    train(config, digits, progress=False)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------ refused


def test_bad_score_modes_are_refused():
    with pytest.raises(ValueError, match="score_mode"):
        config_from_preset("smoke", score_mode="train")
    with pytest.raises(ValueError, match="score_mode"):
        config_from_preset("smoke", score_mode=None)


def test_keep_rows_needs_kept_scores_and_matching_shapes():
    with pytest.raises(ValueError, match="keep_scores=True"):
        ScoreBuffer(8, 3, 10.0, keep_scores=False).keep_rows(torch.arange(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="keep_scores=True"):
        ScoreBuffer(8, 3, 10.0, keep_scores=False).form_from_kept()
    buffer = ScoreBuffer(8, 3, 10.0, keep_scores=True)
    with pytest.raises(ValueError, match="2 x 3 matrix"):
        buffer.keep_rows(torch.arange(2), torch.zeros(2, 4))
    buffer.keep_rows(torch.arange(8), torch.zeros(8, 3))
    buffer.keep_rows(torch.tensor([5]), torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="NaN|inf"):
        buffer.form_from_kept()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_kept_out_of_order_solve_as_the_same_scores_streamed(dtype):
    torch.manual_seed(0)
    scores = torch.randn(3000, 12)
    streamed = ScoreBuffer(3000, 12, 10.0, storage_dtype=dtype, keep_scores=True)
    for block in scores.split(700):
        streamed.add(block)
    kept = ScoreBuffer(3000, 12, 10.0, storage_dtype=dtype, keep_scores=True)
    kept.keep_rows(torch.arange(3000), torch.randn(3000, 12))  # stale rows, all rewritten below
    order = torch.randperm(3000)
    for rows in order.split(256):
        kept.keep_rows(rows, scores[rows])
    for _ in range(2):  # forming again from the kept rows gives the same labels
        kept.form_from_kept()
        a, b = self_label(streamed), self_label(kept)
        assert torch.equal(a.labels, b.labels)
        streamed.reset()
        for block in scores.split(700):
            streamed.add(block)


def test_a_run_of_several_processes_is_refused_naming_the_alternative():
    setup = type("Setup", (), {"world": 2, "config": _small()})()
    with pytest.raises(ValueError, match="score_mode='training'.*single process.*score_mode='plain'"):
        loop.check_single_process(setup)
    setup.world = 1
    loop.check_single_process(setup)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(_small(epochs=1, nopts=1), load_dataset("digits"), progress=False)
    except ValueError as error:
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as handle:
            handle.write(str(error))
    finally:
        dist_utils.cleanup()


@pytest.mark.slow
def test_two_gloo_ranks_refuse_training_mode(tmp_path, free_port):
    mp.spawn(_worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert "score_mode='plain'" in (tmp_path / f"rank{rank}.txt").read_text()


def test_the_study_merges_the_preset_value_as_the_method_itself(monkeypatch):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "fashion_study.py"
    spec = importlib.util.spec_from_file_location("fashion_study", path)
    study = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, study)  # dataclasses look their module up there
    spec.loader.exec_module(study)
    row = {"method": "sela", "seed": 0}
    plain = study.merged_rows({"settings": {"set": ["score_mode=plain"]}, "rows": [row]})
    kept = study.merged_rows({"settings": {"set": ["score_mode=training", "epochs=20"]}, "rows": [row]})
    assert [r["method"] for r in plain + kept] == ["sela", "sela score_mode=training"]
