"""The executed course as pages to browse: each executed notebook as HTML with its figures inline, and the
run's index.html (status, time, measured numbers, verdicts, links). Fake run folders keep these fast."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from sela_edu import cli, course
from sela_edu.course.series import runner, site
# a 1x1 PNG: what a notebook's figure output holds, base64-encoded
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cf"
    "c0f01f0005000201a5b3c61d0000000049454e44ae426082")).decode()
UNSAFE = "<script>alert('x')</script> & \"quotes\""


class Tags(HTMLParser):
    """Every attribute of every tag of a page, by tag name."""

    def __init__(self, text: str):
        super().__init__()
        self.found: dict[str, list[dict]] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.found.setdefault(tag, []).append(dict(attrs))

    def attr(self, tag: str, name: str) -> list[str]:
        return [a[name] for a in self.found.get(tag, []) if name in a]


def executed(title: str, *, figure: bool, printed: str = "done", error: str | None = None,
             seconds: float = 3.0) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: a title cell, one code cell's outputs, papermill's metadata."""
    outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    if figure:
        outputs.append(nbformat.v4.new_output("display_data", data={"image/png": PIXEL, "text/plain": "<Figure>"}))
    if error:
        outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue=error, traceback=[]))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\nSome text."),
                                         nbformat.v4.new_code_cell("print('done')", outputs=outputs)])
    nb.metadata["papermill"] = {"duration": seconds, "exception": bool(error), "parameters": {"profile": "smoke"}}
    return nb


def fake_run(folder: Path, *, with_record: bool = True) -> Path:
    """A run folder: 01 with a figure, 02 without, 03 failed, 04 skipped (no notebook), results for 01 and 03."""
    nbs = folder / "notebooks"
    nbs.mkdir(parents=True)
    nbformat.write(executed("01 · Warehouses & shops", figure=True, printed=UNSAFE),
                   nbs / "01_optimal_transport_toy.ipynb")
    nbformat.write(executed("02 · The objective", figure=False), nbs / "02_self_labelling_objective.ipynb")
    nbformat.write(executed("03 · On a CPU", figure=False, error="boom <b>", seconds=5.0),
                   nbs / "03_self_labelling_on_cpu.ipynb")
    course.record_result("01_optimal_transport_toy", {"cost_gap": 0.25}, folder=folder, verdicts=[UNSAFE])
    course.record_result("03_self_labelling_on_cpu", {"knn_sela": 88.0, "cifar10_knn": 70.0}, folder=folder,
                         verdicts=["SeLa beats k-means labels on kNN accuracy by 2.0 points"])
    if with_record:
        statuses = [course.RunStatus("01_optimal_transport_toy", "ok", "", 3.0),
                    course.RunStatus("02_self_labelling_objective", "ok", "", 3.0),
                    course.RunStatus("03_self_labelling_on_cpu", "failed", "ValueError: boom <b>", 5.0),
                    course.RunStatus("04_cifar_and_svhn", "skipped", "no cifar10 data under <data>")]
        course.save_run_statuses(folder, statuses, "smoke")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = fake_run(tmp_path_factory.mktemp("run"))
    logs = []
    index = site.build_site(run, log=logs.append)
    return run, index, logs


def test_index_links_every_executed_notebook_to_a_page_that_exists(built):
    run, index, logs = built
    links = Tags(index.read_text()).attr("a", "href")
    assert sorted(links) == [f"notebooks/{n}.html" for n in
                             ("01_optimal_transport_toy", "02_self_labelling_objective", "03_self_labelling_on_cpu")]
    assert all((run / link).is_file() for link in links)
    assert logs == []


def test_index_shows_status_time_measures_and_verdicts(built):
    _, index, _ = built
    text = index.read_text()
    # the skipped notebook is listed, under its series title, with its reason, but has no page to link
    assert "CIFAR-10/100 and SVHN" in text and "no cifar10 data under &lt;data&gt;" in text
    # 03's time down the side of its error, its verdicts and its two measures
    assert "<td class='num' rowspan='4'>5 s</td>" in text
    assert "<td colspan='3' class='detail failed'>ValueError: boom &lt;b&gt;</td>" in text
    assert "SeLa beats k-means labels on kNN accuracy by 2.0 points" in text
    # the paper's figure beside the measured one where the paper reports the same key
    assert "<td>cifar10_knn</td><td class='num'>70.0</td><td class='num'>77.6</td>" in text
    assert "profile smoke" in text


def test_index_escapes_unsafe_text(built):
    _, index, _ = built
    text = index.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "boom &lt;b&gt;" in text and "boom <b>" not in text
    assert "Warehouses &amp; shops" in text


def test_pages_carry_the_title_and_their_figures_inline(built):
    run, _, _ = built
    first = (run / "notebooks" / "01_optimal_transport_toy.html").read_text()
    second = (run / "notebooks" / "02_self_labelling_objective.html").read_text()
    assert "<title>01 · Warehouses &amp; shops</title>" in first
    assert "<title>02 · The objective</title>" in second
    assert Tags(first).attr("img", "src") == [f"data:image/png;base64,{PIXEL}"]
    assert Tags(second).attr("img", "src") == []
    # what the notebook printed is shown, not run
    assert "<script>alert('x')</script>" not in first and "&lt;script&gt;alert" in first
    assert "../index.html" in Tags(first).attr("a", "href")


def test_statuses_come_from_papermill_when_the_run_left_no_record(tmp_path):
    run = fake_run(tmp_path / "run", with_record=False)
    statuses, profile = course.load_run_statuses(run)
    assert profile == "smoke"
    assert [(s.name, s.status, s.seconds) for s in statuses] == [
        ("01_optimal_transport_toy", "ok", 3.0), ("02_self_labelling_objective", "ok", 3.0),
        ("03_self_labelling_on_cpu", "failed", 5.0)]
    assert statuses[2].detail == "ValueError: boom <b>"


def test_a_broken_run_record_or_folder_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="run.json is not a run record"):
        course.load_run_statuses(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no run folder"):
        site.build_site(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no executed notebooks"):
        site.build_site(tmp_path / "empty")


def test_an_unreadable_notebook_gets_no_page_and_no_stale_link(tmp_path):
    run = fake_run(tmp_path / "run")
    broken = run / "notebooks" / "02_self_labelling_objective.ipynb"
    broken.with_suffix(".html").write_text("an earlier run's page")
    broken.write_text("{}")
    logs = []
    index = site.build_site(run, log=logs.append)
    assert any("02_self_labelling_objective.ipynb" in line and "not a readable notebook" in line for line in logs)
    assert not broken.with_suffix(".html").exists()
    assert "notebooks/02_self_labelling_objective.html" not in Tags(index.read_text()).attr("a", "href")


def test_run_series_writes_pages_and_index_as_it_goes(tmp_path, monkeypatch):
    def fake_execute(name, target, params, **kw):
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(executed(f"{name[:2]} · fake", figure=True), target)

    monkeypatch.setattr(runner, "execute_notebook", fake_execute)
    indexes = []
    real_write_index = runner.write_index
    monkeypatch.setattr(runner, "write_index", lambda *a, **k: indexes.append(real_write_index(*a, **k)))
    out = tmp_path / "out"
    statuses = course.run_series("smoke", out, only=["01", "07"], log=lambda _: None, progress=False)
    assert len(indexes) == 2                                       # once after each notebook
    links = Tags((out / "index.html").read_text()).attr("a", "href")
    assert links == ["notebooks/01_optimal_transport_toy.html", "notebooks/07_imagenet_scale.html"]
    assert json.loads((out / "run.json").read_text())["profile"] == "smoke"
    assert f"pages to read in a browser: {out / 'index.html'}" in course.series_summary(out, statuses)


def test_site_command_rebuilds_the_pages(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert cli.main(["site", str(run)]) == 0
    assert str(run / "index.html") in capsys.readouterr().out
    assert (run / "notebooks" / "01_optimal_transport_toy.html").is_file()
    assert cli.main(["site", str(tmp_path / "nowhere")]) == 2
    assert "no run folder" in capsys.readouterr().err
