"""The sela-edu command: parameters, the torchrun helper, skipping notebooks without data, the summary
table, and one real run of a notebook through the series runner."""

import json
import subprocess
import sys

import pytest

from sela_edu import cli, notebook_tools as nbt


def test_parse_value_reads_json_or_keeps_strings():
    assert nbt.parse_value("3") == 3 and nbt.parse_value("0.5") == 0.5
    assert nbt.parse_value("[10, 20]") == [10, 20] and nbt.parse_value("null") is None
    assert nbt.parse_value("cifar100") == "cifar100" and nbt.parse_value("true") is True


def test_notebook_path_resolution():
    assert nbt.notebook_path("04").name == "04_cifar_and_svhn.ipynb"
    assert nbt.notebook_path("04_cifar_and_svhn.ipynb").name == "04_cifar_and_svhn.ipynb"
    with pytest.raises(ValueError, match="no single notebook matches 'nope'.*01_optimal_transport_toy"):
        nbt.notebook_path("nope")


def test_profiles_map_to_trainer_presets():
    assert nbt.preset_for("smoke") == "smoke" and nbt.preset_for("classroom") == "classroom"
    assert nbt.preset_for("paper", "imagenet-paper") == "imagenet-paper"
    cfg = nbt.resolve_config("paper", dataset="cifar100", epochs=None)
    assert cfg.dataset == "cifar100" and cfg.num_clusters == 128 and cfg.lam == 10.0
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        nbt.resolve_config("fast")


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
    nbt.record_result("04_cifar_and_svhn", {"cifar10_knn": 70.25, "cifar10_linear": 80.0, "dataset": "cifar10"},
                      folder=tmp_path, profile="paper")
    nbt.record_result("01_optimal_transport_toy", {"exact_cost_km": 178.8}, folder=tmp_path)
    records = nbt.load_results(tmp_path)
    assert records["04_cifar_and_svhn"]["values"]["cifar10_knn"] == 70.25
    table = nbt.summary_table(records, {"04_cifar_and_svhn": "ok", "05_imbalance": "skipped: no cifar10 data"})
    lines = table.splitlines()
    assert lines[0].split() == ["notebook", "status", "measure", "measured", "paper"]
    knn = next(line for line in lines if "cifar10_knn" in line)
    assert "70.2" in knn and "77.6" in knn                      # measured beside the paper's figure
    assert "83.4" in next(line for line in lines if "cifar10_linear" in line)
    assert "skipped: no cifar10 data" in table and "178.8" in table


@pytest.mark.parametrize("bad", [{}, {"x": object()}])
def test_record_result_rejects_bad_values(tmp_path, bad):
    with pytest.raises(ValueError):
        nbt.record_result("x", bad, folder=tmp_path)


def test_record_result_rejects_a_path_as_name(tmp_path):
    with pytest.raises(ValueError, match="plain file stem"):
        nbt.record_result("../evil", {"a": 1}, folder=tmp_path)


def test_run_skips_notebooks_without_their_data(tmp_path):
    logs = []
    statuses = nbt.run_series("classroom", tmp_path / "out", only=["04", "07"], data_root=tmp_path / "empty",
                              log=logs.append)
    assert [(s.name, s.status) for s in statuses] == [("04_cifar_and_svhn", "skipped"), ("07_imagenet_scale", "skipped")]
    assert "no cifar10 data" in statuses[0].detail and "no imagenet data" in statuses[1].detail
    table = nbt.series_summary(tmp_path / "out", statuses)
    assert "skipped: no cifar10 data" in table


def test_dataset_available_follows_the_data_layout(tmp_path):
    assert nbt.dataset_available("digits", tmp_path)
    assert not nbt.dataset_available("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    assert nbt.dataset_available("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        nbt.dataset_available("mnist3d", tmp_path)


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
    assert "student edition: 7 notebooks" in capsys.readouterr().out


def test_errors_exit_with_a_message(capsys):
    assert cli.main(["notebook", "99_nothing"]) == 2
    assert "no single notebook matches" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "sela_edu", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "run" in proc.stdout and "student" in proc.stdout
