"""benchmarks/gpu_check.sh, the one command that records the GPU figures: its dry run on the CPU runs
all four steps end to end, and without a GPU the real check refuses clearly instead of timing a CPU."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(*args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "check"
    done = _run("--dry-run", str(out), tmp_path=tmp_path)
    log = (out / "gpu_check.txt").read_text()
    assert done.returncode == 0, log[-3000:]
    for step in ("1. CUDA tests", "2. label step at ImageNet scale", "3. cifar-paper training throughput",
                 "4. the same in bfloat16, channels last"):
        assert f"== {step}: ok in" in log
    assert "4 of 4 steps passed" in log
    assert "6 passed" in log                       # the CUDA tests ran (on the CPU), none skipped
    assert (out / "bench_training.json").is_file() and (out / "bench_training_bf16.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_the_check_refuses(tmp_path):
    done = _run(str(tmp_path / "check"), tmp_path=tmp_path)
    assert done.returncode == 1
    assert "no CUDA device: run with --dry-run" in (tmp_path / "check" / "gpu_check.txt").read_text()
