"""The sela-edu command: parameters, the torchrun helper, skipping notebooks without data, the summary
table, and one real run of a notebook through the series runner."""

import json
import os
import subprocess
import sys

import pytest

from sela_edu import cli, course, settings
from sela_edu import data
from sela_edu.course.series.notebooks import NOTEBOOKS


def test_parse_value_reads_json_or_keeps_strings():
    assert course.parse_value("3") == 3 and course.parse_value("0.5") == 0.5
    assert course.parse_value("[10, 20]") == [10, 20] and course.parse_value("null") is None
    assert course.parse_value("cifar100") == "cifar100" and course.parse_value("true") is True


def test_notebook_path_resolution():
    assert course.notebook_path("04").name == "04_cifar_and_svhn.ipynb"
    assert course.notebook_path("04_cifar_and_svhn.ipynb").name == "04_cifar_and_svhn.ipynb"
    with pytest.raises(ValueError, match="no single notebook matches 'nope'.*01_optimal_transport_toy"):
        course.notebook_path("nope")


def test_profiles_map_to_trainer_presets():
    assert course.preset_for("smoke") == "smoke" and course.preset_for("classroom") == "classroom"
    assert course.preset_for("paper", "imagenet-paper") == "imagenet-paper"
    cfg = course.resolve_config("paper", dataset="cifar100", epochs=None)
    assert cfg.dataset == "cifar100" and cfg.num_clusters == 128 and cfg.lam == 10.0
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        course.resolve_config("fast")


def test_torchrun_command():
    cmd = cli.torchrun_command(gpus=4, arch="resnet50", data_root="/data")
    assert cmd[:3] == ["torchrun", "--nproc_per_node=4", "--standalone"]
    assert cmd[cmd.index("-m") + 1:cmd.index("-m") + 3] == ["sela_edu", "train"]
    assert "imagenet-paper" in cmd and "resnet50" in cmd and "/data" in cmd
    multi = cli.torchrun_command(gpus=8, nodes=2, node_rank=1, master_addr="10.0.0.1")
    assert "--nnodes=2" in multi and "--node_rank=1" in multi and "--master_addr=10.0.0.1" in multi
    with pytest.raises(ValueError, match="gpus"):
        cli.torchrun_command(gpus=0)
    with pytest.raises(ValueError, match="node_rank"):
        cli.torchrun_command(nodes=2, node_rank=2)


def test_imagenet_command_prints_the_line(capsys):
    assert cli.main(["imagenet-command", "--gpus", "2", "-s", "epochs", "100"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("torchrun --nproc_per_node=2") and line.endswith("-s epochs 100")


def test_record_result_and_summary_table(tmp_path):
    course.record_result("04_cifar_and_svhn", {"cifar10_knn": 70.25, "cifar10_linear": 80.0, "dataset": "cifar10"},
                      folder=tmp_path, profile="paper")
    course.record_result("01_optimal_transport_toy", {"exact_cost_km": 178.8}, folder=tmp_path)
    records = course.load_results(tmp_path)
    assert records["04_cifar_and_svhn"]["values"]["cifar10_knn"] == 70.25
    table = course.summary_table(records, {"04_cifar_and_svhn": "ok", "05_imbalance": "skipped: no cifar10 data"})
    lines = table.splitlines()
    assert lines[0].split() == ["notebook", "status", "measure", "measured", "paper"]
    knn = next(line for line in lines if "cifar10_knn" in line)
    assert "70.2" in knn and "77.6" in knn                      # measured beside the paper's figure
    assert "83.4" in next(line for line in lines if "cifar10_linear" in line)
    assert "skipped: no cifar10 data" in table and "178.8" in table


@pytest.mark.parametrize("bad", [{}, {"x": object()}])
def test_record_result_rejects_bad_values(tmp_path, bad):
    with pytest.raises(ValueError):
        course.record_result("x", bad, folder=tmp_path)


def test_record_result_rejects_a_path_as_name(tmp_path):
    with pytest.raises(ValueError, match="plain file stem"):
        course.record_result("../evil", {"a": 1}, folder=tmp_path)


def test_run_skips_notebooks_without_their_data(tmp_path):
    logs = []
    statuses = course.run_series("classroom", tmp_path / "out", only=["04"], data_root=tmp_path / "empty",
                                 log=logs.append, progress=False)
    assert [(s.name, s.status) for s in statuses] == [("04_cifar_and_svhn", "skipped")]
    assert "no cifar10 data" in statuses[0].detail
    table = course.series_summary(tmp_path / "out", statuses)
    assert "skipped: no cifar10 data" in table


def test_dataset_available_follows_the_data_layout(tmp_path):
    assert data.available("digits", tmp_path)
    assert not data.available("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    assert data.available("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        data.available("mnist3d", tmp_path)


@pytest.mark.slow
@pytest.mark.notebooks
def test_run_command_end_to_end(tmp_path, capsys):
    code = cli.main(["run", "--profile", "smoke", "--output", str(tmp_path), "--only", "01"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "notebooks" / "01_optimal_transport_toy.ipynb").exists()
    assert (tmp_path / "figures" / "01_plan_eps_panel.png").exists()
    record = json.loads((tmp_path / "results" / "01_optimal_transport_toy.json").read_text())
    assert record["profile"] == "smoke"
    row = next(line for line in out.splitlines() if line.startswith("01_optimal_transport_toy"))
    assert "ok" in row and "exact_cost_km" in row and f"{record['values']['exact_cost_km']:.1f}" in row


def test_student_command(tmp_path, capsys):
    assert cli.main(["student", "--output", str(tmp_path)]) == 0
    assert f"student edition: {len(NOTEBOOKS)} notebooks" in capsys.readouterr().out


def test_errors_exit_with_a_message(capsys):
    assert cli.main(["notebook", "99_nothing"]) == 2
    assert "no single notebook matches" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "sela_edu", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "run" in proc.stdout and "student" in proc.stdout


# ---------------------------------------------------------------- instructor edition, train summary,
# outputs of a pip install, make lab

def test_instructor_command(tmp_path, capsys):
    assert cli.main(["instructor", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"instructor edition (nbgrader source): {len(NOTEBOOKS)} notebooks" in out and "nbgrader generate_assignment" in out
    assert "### BEGIN HIDDEN TESTS" in (tmp_path / "01_optimal_transport_toy.ipynb").read_text()


def test_train_summary_is_readable(tmp_path):
    from types import SimpleNamespace

    import torch

    from sela_edu.training import config_from_preset

    config = config_from_preset("smoke", dataset="digits", num_heads=2, num_clusters=[10, 20],
                                checkpoint_dir=str(tmp_path / "checkpoints"))
    history = [{"epoch": 1, "loss": 2.302585092994046, "label_change": None, "cluster_size_spread": [0.1, 0.2],
                "nmi": [0.1, 0.2]},
               {"epoch": 2, "loss": 1.8779252529144288, "label_change": [0.123456, 0.2], "images_per_second": 812.34,
                "cluster_size_spread": [0.0812345, 0.153], "nmi": [0.51234567, 0.60345678]}]
    result = SimpleNamespace(history=history, labels=torch.zeros(2, 300, dtype=torch.long),
                             timings={"seconds": 12.3456, "relabel_seconds": 1.23456})
    text = cli.train_summary(config, result, tmp_path, world=1)
    assert "1.8779252529144288" not in text and "loss 1.878" in text
    assert "300 images, 2 epoch(s), 1 process(es), 12.3 s (1.2 s in label optimisation, 10 %)" in text
    assert "labels changed by the last optimisation 12.3-20.0 %" in text and "812 images/s" in text
    assert "NMI with the true classes, per head: head 0 (K = 10) 0.512, head 1 (K = 20) 0.603" in text
    assert f"labels -> {tmp_path / 'labels.csv'}" in text and f"checkpoints -> {tmp_path / 'checkpoints'}" in text
    no_targets = SimpleNamespace(history=[{**history[1], "nmi": None}], labels=result.labels, timings={})
    assert "NMI" not in cli.train_summary(config, no_targets, tmp_path)
    # the solver's health: every label step converged, or which did not
    steps = [{"head": 0, "passes": 12, "converged": True, "error": 4e-4}, {"head": 1, "passes": 31, "converged": True,
                                                                           "error": 9e-4}]
    healthy = SimpleNamespace(history=[{**history[1], "label_steps": steps}], labels=result.labels, timings={})
    assert "label steps: 2 head solves, at most 31 passes each, all converged" in cli.train_summary(config, healthy, tmp_path)
    stuck = [*steps, {"head": 1, "passes": 1000, "converged": False, "error": 4.2e-3}]
    sick = SimpleNamespace(history=[{**history[1], "label_steps": stuck}], labels=result.labels, timings={})
    assert "1 NOT converged (largest error 4.2e-03)" in cli.train_summary(config, sick, tmp_path)


@pytest.fixture
def pip_installed(tmp_path, monkeypatch):
    """The kit as `pip install` (not -e) leaves it: the package in site-packages, no checkout around it; the
    user works in a folder of their own."""
    from sela_edu import settings

    site = tmp_path / "site-packages"
    (site / "sela_edu").mkdir(parents=True)
    monkeypatch.setattr(settings, "REPO_ROOT", site)
    for env in (settings.RESULTS_ENV, settings.FIGURES_ENV, settings.DATA_ROOT_ENV):
        monkeypatch.delenv(env, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return site, work


def test_outputs_land_in_the_working_directory_when_installed_without_e(pip_installed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sela_edu.course.views import figures
    from sela_edu import settings

    site, work = pip_installed
    assert settings.home() == work
    assert settings.results_dir() == work / "results" and settings.data_root() == work / "data"
    assert settings.figures_dir() == work / "results" / "figures"
    path = figures.save_figure(plt.figure(), "interactive")
    assert path == work / "results" / "figures" / "interactive.png" and path.exists()
    assert not any(p.is_file() for p in site.rglob("*"))               # nothing written into site-packages
    args = cli.build_parser().parse_args(["train"])
    assert args.output is None                                         # resolved at run time, under the cwd


def test_a_checkout_keeps_its_results_folder_and_interactive_figures_leave_figures_alone(monkeypatch):
    from sela_edu import settings

    for env in (settings.RESULTS_ENV, settings.FIGURES_ENV):
        monkeypatch.delenv(env, raising=False)
    assert settings.home() == settings.REPO_ROOT
    assert settings.figures_dir() == settings.REPO_ROOT / "results" / "figures"


@pytest.mark.slow
def test_train_command_ends_with_the_summary(pip_installed, capsys):
    site, work = pip_installed
    code = cli.main(["train", "--preset", "smoke", "--dataset", "digits", "-s", "epochs", "1", "-s", "max_images", "200"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "trained sela on digits: 200 images, 1 epoch(s)" in out and "NMI with the true classes, per head" in out
    assert (work / "results" / "train" / "labels.csv").exists() and (work / "results" / "train" / "model.pt").exists()
    assert f"labels -> {work / 'results' / 'train' / 'labels.csv'}" in out


@pytest.mark.slow
def test_make_lab_answers_on_localhost(tmp_path, free_port):
    """`make lab`'s own command line (from `make -n`), started headless on a free loopback port with a token:
    the server answers, serves the notebooks folder, and offers the kernel the notebooks name."""
    import json as _json
    import os
    import shlex
    import shutil
    import signal
    import time
    import urllib.request
    from pathlib import Path

    from sela_edu import settings

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port, token = free_port, "sela-test-token"
    venv = Path(sys.prefix)
    dry = subprocess.run(["make", "-n", "lab", f"VENV={venv}", f"STAMP={tmp_path / 'stamp'}",
                          f"LAB_ARGS=--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} "
                          f"--IdentityProvider.token={token} --ServerApp.port_retries=0"],
                         cwd=settings.REPO_ROOT, capture_output=True, text=True, timeout=60)
    lines = [line for line in dry.stdout.splitlines() if "jupyter" in line and " lab" in line]
    assert dry.returncode == 0 and len(lines) == 1, dry.stdout + dry.stderr
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.Popen(shlex.split(lines[0]), cwd=settings.REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        def get(path):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, _json.loads(resp.read() or b"null")

        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _ = get("/api")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, proc.stderr.read().decode() if proc.poll() is not None else "no answer in 90 s"
        _, contents = get("/api/contents")
        names = {item["name"] for item in contents["content"]}
        assert "01_optimal_transport_toy.ipynb" in names                # opened at notebooks/
        _, specs = get("/api/kernelspecs")
        kernel = _json.loads(Path(settings.REPO_ROOT / "notebooks" / "01_optimal_transport_toy.ipynb").read_text())
        assert kernel["metadata"]["kernelspec"]["name"] in specs["kernelspecs"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_refresh_writes_the_committed_figures(monkeypatch):
    # `sela-edu refresh` regenerates the figures committed in figures/ with the stored outputs
    calls = []
    monkeypatch.setattr(course, "refresh_stored_outputs", lambda name, **kw: calls.append((name, kw)) or name)
    assert cli.main(["refresh", "01"]) == 0
    assert calls == [("01", {"figures_dir": settings.REPO_ROOT / "figures", "timeout": 600})]


@pytest.mark.slow
def test_refreshed_notebook_saves_its_figures_where_asked(tmp_path):
    import shutil

    import nbformat

    copy = tmp_path / "01_optimal_transport_toy.ipynb"
    shutil.copy(course.notebook_path("01"), copy)
    course.refresh_stored_outputs(copy, figures_dir=tmp_path / "figures")
    assert sorted(p.name for p in (tmp_path / "figures").glob("01_*.png")) == [
        "01_convergence.png", "01_map.png", "01_plan_eps_panel.png", "01_plan_exact.png"]
    nb = nbformat.read(copy, as_version=4)
    unstored = [c for c in nb.cells if course.UNSTORED_TAG in c.metadata.get("tags", [])]
    assert unstored and not any(c.outputs for c in unstored)   # 01's widget cell is stored empty


def test_series_hands_the_kernels_an_absolute_data_root(tmp_path, monkeypatch):
    # the kernels run in notebooks/: a relative --data-root must reach them resolved from where it was given,
    # and by one route only, the environment (not also as a papermill parameter)
    import papermill

    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, parameters, **kw: seen.append(
        (parameters, os.environ.get(settings.DATA_ROOT_ENV))))
    monkeypatch.chdir(tmp_path)
    course.run_series("smoke", tmp_path / "run", only=["01"], data_root="rel/data", progress=False, pages=False)
    assert seen and seen[0][1] == str(tmp_path / "rel" / "data")
    assert "data_root" not in seen[0][0]
