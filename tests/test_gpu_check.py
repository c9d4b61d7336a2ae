"""benchmarks/gpu_check.sh, the one command that records the GPU figures: its dry run on the CPU runs every
step end to end and closes with the table of figures beside their targets; without a GPU the real check
refuses clearly instead of timing a CPU. Also its parts on their own (the official loop's torch port against
the NumPy reference, the device score generator, the closing table's verdicts) and the ledger's gpu profile."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

STEPS = ("1. CUDA tests", "2. device bandwidth", "3. label step at ImageNet scale",
         "4. official GPU loop beside the kit", "5. cifar-paper training throughput",
         "6. the same in bfloat16, channels last", "7. classroom preset, 20 epochs", "8. closing table")


def _run(*args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.slow
def test_dry_run_runs_every_step_and_closes_with_the_table(tmp_path):
    out = tmp_path / "check"
    done = _run("--dry-run", str(out), tmp_path=tmp_path)
    log = (out / "gpu_check.txt").read_text()
    assert done.returncode == 0, log[-3000:]
    for step in STEPS:
        assert f"== {step}: ok in" in log, step
    assert "8 of 8 steps passed" in log
    assert "7 passed, 2 skipped" in log  # the CUDA tests ran on the CPU; only the two sync-mode tests need CUDA
    for name in ("bandwidth", "label_step", "official", "bench_training", "bench_training_bf16", "classroom"):
        assert (out / f"{name}.json").is_file(), name
    table = log[log.index("CLOSING TABLE"):]
    for figure in ("label step", "bfloat16 not slower than float32", "labels equal to the CPU path's, float32",
                   "official GPU loop", "images/s with relabelling", "ceiling", "classroom preset, 20 epochs",
                   "the whole check"):
        assert figure in table, figure
    assert "<= 0.25 s" in table and "<= 0.5 s" in table and ">= 25,000" in table and "<= 10 s" in table
    assert " met" not in table.split("targets:")[0] and "MISSED" not in table   # a dry run judges nothing
    assert "0 met, 0 missed" in table
    label = json.loads((out / "label_step.json").read_text())
    assert set(label["storages"]) == {"float32", "bfloat16"}
    assert all(r["agreement"] >= 0.99 for r in label["storages"].values())
    official = json.loads((out / "official.json").read_text())["official"]
    assert official["stopped_by_budget"] or official["converged"]
    assert "ceiling_images_per_second" in json.loads((out / "bench_training.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_the_check_refuses(tmp_path):
    done = _run(str(tmp_path / "check"), tmp_path=tmp_path)
    assert done.returncode == 1
    assert "no CUDA device: run with --dry-run" in (tmp_path / "check" / "gpu_check.txt").read_text()


def test_the_checks_limits_fit_eight_minutes():
    text = SCRIPT.read_text()
    real = text.split("else\n    DEVICE=cuda", 1)[1]
    limits = [int(v) for v in real.split("LIMITS=(", 1)[1].split(")", 1)[0].split()]
    assert len(limits) == len(STEPS) and sum(limits) <= 450


# ---------------------------------------------------------------- the parts

def test_official_gpu_loop_is_the_reference_algorithm():
    from official_gpu_loop import official_self_label_torch

    from sela_edu.labelling import reference_self_label

    scores = torch.randn(600, 12, generator=torch.Generator().manual_seed(0)) * 2
    port = official_self_label_torch(scores, 10.0, tol=0.1)
    ref = reference_self_label(scores.numpy(), 10.0, tol=0.1)
    assert port["iterations"] == ref.iterations and port["converged"] == ref.converged
    assert port["error"] == pytest.approx(ref.error, rel=1e-9)
    assert np.array_equal(port["labels"].numpy(), ref.labels)


def test_official_gpu_loop_stops_at_its_budget_and_keeps_its_error():
    from gpu_label_step import device_synthetic_scores
    from official_gpu_loop import official_self_label_torch

    scores = device_synthetic_scores(3000, 60, device="cpu", lam=25.0)
    out = official_self_label_torch(scores, 25.0, tol=1e-12, budget=0.0)   # stops at its first error check
    assert out["stopped_by_budget"] and not out["converged"]
    assert out["iterations"] == 1 and np.isfinite(out["error"]) and out["error"] > 1e-12


def test_device_scores_follow_the_synthetic_law():
    from gpu_label_step import device_synthetic_scores

    from sela_edu.labelling import synthetic_scores

    dev = device_synthetic_scores(20000, 50, device="cpu", lam=25.0, block=3000)
    cpu = synthetic_scores(20000, 50).mul_(10 / 25)
    assert dev.shape == (20000, 50) and dev.dtype == torch.float32
    gap = lambda s: (s.topk(2, dim=1).values[:, 0] - s.topk(2, dim=1).values[:, 1]).mean()  # noqa: E731
    assert float(gap(dev)) == pytest.approx(float(gap(cpu)), rel=0.05)
    pop_dev = torch.bincount(dev.argmax(1), minlength=50).float() / 20000
    pop_cpu = torch.bincount(cpu.argmax(1), minlength=50).float() / 20000
    assert float((pop_dev - pop_cpu).abs().max()) < 0.02        # the same cluster popularity


def _write(folder, name, obj):
    (folder / name).write_text(json.dumps(obj))


def test_closing_table_marks_met_missed_and_not_measured(tmp_path):
    from gpu_check_table import table_rows

    (tmp_path / "steps.tsv").write_text("a\t1. CUDA tests\tok\t20\t50\nc\t3. label step\tok\t30\t80\n"
                                        "d\t4. official\ttimed out\t110\t110\n")
    _write(tmp_path, "bandwidth.json", {"gbps": 4300.0})
    row = dict(passes=80, error=1e-4, converged=True, ms_per_pass=2.0, read_p_ms=1.8)
    _write(tmp_path, "label_step.json", {"n": 1280000, "k": 3000, "agree_rows": 128000, "storages": {
        "float32": dict(row, seconds=0.4, agreement=0.9995), "bfloat16": dict(row, seconds=0.3, agreement=0.995)}})
    rows = {r[0].strip(): r for r in table_rows(tmp_path, dry=False)}
    assert rows["label step 1280000 x 3000, float32: s per head"][3] == "met"
    assert rows["label step 1280000 x 3000, bfloat16: s per head"][3] == "MISSED"       # 0.3 > 0.25
    assert rows["label step: bfloat16 not slower than float32"][3] == "met"
    assert rows["labels equal to the CPU path's, float32"][3] == "met"
    assert rows["official GPU loop beside the kit"][3].startswith("not measured") and "timed out" in \
        rows["official GPU loop beside the kit"][3]
    assert rows["classroom preset, 20 epochs"][3].startswith("not measured")
    assert rows["the whole check, every step inside its limit"][3] == "MISSED"           # a step timed out


# ---------------------------------------------------------------- the ledger on a GPU

def test_ledger_gpu_profile_plans_five_seeds_of_the_full_classroom_preset():
    from sela_edu.course.ledger.runs import PROFILES, base_config, plan, setting_specs

    gpu = PROFILES["gpu"]
    runs = plan(gpu)
    per_setting = {}
    for r in runs:
        per_setting.setdefault(r.setting.name, []).append(r.seed)
    assert set(per_setting) == set(setting_specs(gpu)) and len(runs) == 5 * len(per_setting)
    assert all(sorted(seeds) == [0, 1, 2, 3, 4] for seeds in per_setting.values())
    config = base_config(gpu)
    assert (config.dataset, config.epochs, config.nopts, config.max_images, config.device) == \
        ("fashion-mnist", 20, 40, None, "cuda")
    assert config.num_heads == 4 and config.cluster_list() == [10, 20, 50, 100]     # the classroom preset as it is


def test_cli_ledger_takes_the_gpu_profile():
    from sela_edu.cli import build_parser

    args = build_parser().parse_args(["ledger", "--profile", "gpu", "--only", "2"])
    assert args.profile == "gpu"
