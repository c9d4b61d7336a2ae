"""The course machinery: the series runner's overall progress and quiet kernels, data fallback notices,
and the official-recipe deviation table."""

import io
import os

import pytest

from sela_edu import course, settings
from sela_edu.course.series import notebooks, runner
from sela_edu.training import config_from_preset


def test_run_series_shows_one_overall_progress_bar(tmp_path, monkeypatch):
    calls = []

    def fake_execute(name, target, params, **kw):
        calls.append((name, kw.get("progress")))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")

    monkeypatch.setattr(runner, "execute_notebook", fake_execute)
    stream = io.StringIO()
    import tqdm.auto

    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: real(*a, **{**k, "file": stream}))
    logs = []
    statuses = course.run_series("smoke", tmp_path / "out", only=["01", "02"], log=logs.append)
    assert [s.status for s in statuses] == ["ok", "ok"]
    # each notebook gets its own per-cell bar below the overall one
    assert all(isinstance(p, dict) and p["position"] == 1 for _, p in calls)
    text = stream.getvalue()
    assert "series" in text and "left" in text and "100%" in text
    assert any(line.startswith("[ ok ] 01_optimal_transport_toy") for line in logs)
    summary = course.series_summary(tmp_path / "out", statuses)
    assert summary.rstrip().splitlines()[-4].startswith("executed notebooks:")
    assert "figures:" in summary


def test_run_series_records_each_notebooks_time_beside_the_notebooks(tmp_path, monkeypatch):
    import json

    def fake_execute(name, target, params, **kw):
        if name.startswith("02"):
            raise RuntimeError("a cell raised")

    monkeypatch.setattr(runner, "execute_notebook", fake_execute)
    course.run_series("smoke", tmp_path / "out", only=["01", "02"], log=lambda _: None, progress=False, pages=False)
    record = json.loads((tmp_path / "out" / notebooks.TIMES_RECORD).read_text())
    assert record["profile"] == "smoke" and record["machine"]["cores"] == os.cpu_count()
    assert {name: entry["status"] for name, entry in record["notebooks"].items()} == {
        "01_optimal_transport_toy": "ok", "02_self_labelling_objective": "failed"}
    assert record["total_seconds"] == pytest.approx(sum(e["seconds"] for e in record["notebooks"].values()), abs=0.2)
    assert len(record["date"]) == 10 and record["date"][4] == "-"


@pytest.fixture
def recorded_times_at(monkeypatch):
    """Point the runner at another docs/times.json (its reading is cached, so clear it around the test)."""
    def point(path):
        monkeypatch.setattr(notebooks, "RECORDED_TIMES", path)
        notebooks.recorded_seconds.cache_clear()
    yield point
    notebooks.recorded_seconds.cache_clear()


def test_progress_weights_come_from_the_recorded_run(tmp_path, recorded_times_at):
    import json

    one, three = course.NOTEBOOKS[0], course.NOTEBOOKS[2]
    record = {"profile": "smoke", "notebooks": {one.name: {"seconds": 12.4, "status": "ok"},
                                                three.name: {"seconds": 0.0, "status": "skipped"}}}
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"profiles": {"smoke": record}}))
    recorded_times_at(times)
    assert one.expected_seconds("smoke") == 12.4
    # a notebook that did not run, and a profile without a recorded run, weigh the default
    assert three.expected_seconds("smoke") == notebooks.DEFAULT_SECONDS
    assert one.expected_seconds("classroom") == notebooks.DEFAULT_SECONDS
    recorded_times_at(tmp_path / "absent.json")   # an installed wheel: no docs/
    assert one.expected_seconds("smoke") == notebooks.DEFAULT_SECONDS


def test_a_file_that_is_not_recorded_times_is_named(tmp_path):
    bad = tmp_path / "times.json"
    bad.write_text('{"notebooks": {}}')
    with pytest.raises(ValueError, match="times.json is not a file of recorded times"):
        notebooks.load_recorded_times(bad)


def test_kernels_get_absolute_folders_though_they_run_in_the_notebooks_folder(tmp_path, monkeypatch):
    # SELA_DATA_ROOT=../shared/data make run: the kernel's working directory is notebooks/, so a relative
    # folder handed on unchanged would name another place (and the series fell back to the digits)
    import papermill

    seen = {}

    def fake_papermill(src, out, **kw):
        seen.update({k: os.environ.get(k) for k in (settings.DATA_ROOT_ENV, settings.FIGURES_ENV,
                                                     settings.RESULTS_ENV)}, cwd=kw["cwd"])

    monkeypatch.setattr(papermill, "execute_notebook", fake_papermill)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(settings.DATA_ROOT_ENV, "../shared/data")
    course.execute_notebook("01", tmp_path / "out" / "01.ipynb", results_dir="res")
    assert seen[settings.DATA_ROOT_ENV] == str((tmp_path / "../shared/data").resolve())
    assert seen[settings.RESULTS_ENV] == str(tmp_path / "res")
    assert seen["cwd"] != str(tmp_path)


def test_run_series_falls_back_with_one_notice_at_the_top(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "execute_notebook", lambda name, target, params, **kw: kw["extra_env"])
    monkeypatch.setenv(settings.OFFLINE_ENV, "1")
    logs = []
    course.run_series("classroom", tmp_path / "out", only=["03"], data_root=tmp_path / "empty", log=logs.append,
                      progress=False)
    assert logs[0].startswith("NOTICE: Fashion-MNIST") and "03" in logs[0]
    assert "CPU notebooks' data set: digits" in logs[1]


def test_quiet_kernel_keeps_the_tcp_warning_out_of_the_terminal(tmp_path, capfd):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "k.ipynb"
    nbformat.write(nb, src)
    out = course.execute_notebook(src, tmp_path / "out" / "k.ipynb", {}, results_dir=tmp_path)
    assert out.cells[0].outputs[0]["text"].strip() == "hello"
    captured = capfd.readouterr()
    assert "IPKernelApp" not in captured.err + captured.out
    assert (tmp_path / "out" / "k.kernel.log").exists()


def test_deviation_table_marks_departures_from_the_official_code():
    rows = {name: same for name, _, _, same in course.deviations(config_from_preset("cifar-paper"))}
    assert rows["lambda"] and rows["heads x clusters"]
    assert not rows["Sinkhorn stop"]          # the kit's own stopping rule
    table = course.deviation_table(config_from_preset("smoke"))
    assert "<- differs" in table and "official code" in table.splitlines()[0]


def test_paper_figures_for_every_small_data_set():
    for name in ("cifar10", "cifar100", "svhn"):
        for metric in ("knn", "linear"):
            assert course.PAPER_RESULTS[f"{name}_{metric}"][0] > 40


def test_record_result_keeps_verdicts_for_the_summary(tmp_path):
    course.record_result("03_self_labelling_on_cpu", {"knn_sela": 88.0}, folder=tmp_path,
                         verdicts=["SeLa beats k-means labels on kNN accuracy by 2.0 points"])
    table = course.summary_table(course.load_results(tmp_path))
    assert "03: SeLa beats k-means labels on kNN accuracy by 2.0 points" in table




def test_checkpoint_folders_of_different_runs_differ():
    """Two notebook runs that differ in any field that changes what is trained never share a folder (the second
    would stop with "different config"); fields a run may resume under (epochs aside) keep the folder."""
    base = config_from_preset("smoke")
    folder = course.checkpoint_folder(base, "out")
    for change in ({"nopts": 3}, {"score_mode": "augmented"}, {"rotation": True}, {"lr": 0.01}):
        assert course.checkpoint_folder(config_from_preset("smoke", **change), "out") != folder, change
    for change in ({"device": "cpu"}, {"eval_every": 1}, {"knn_k": 10}, {"checkpoint_dir": "elsewhere"}):
        assert course.checkpoint_folder(config_from_preset("smoke", **change), "out") == folder, change


def test_command_line_starts_without_torch():
    """`sela-edu --help` answers at once: the command line imports torch only in the commands that run it."""
    import subprocess
    import sys

    code = "import sys, sela_edu.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
