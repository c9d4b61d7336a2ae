"""The documents state what the kit recorded: the README's course table and the notebooks' "Takes" lines
give the times of docs/times.json, and every relative link in the README and docs/ leads to a file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from sela_edu.course.series.notebooks import NOTEBOOKS, NOTEBOOKS_DIR, RECORDED_TIMES, load_recorded_times

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The README course table's time columns, in the order they appear after "notebook" and "teaches".
TABLE_PROFILES = ("smoke", "classroom")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def printed_time(entry: dict) -> str:
    """How the README and the notebooks print one notebook's recorded time: whole seconds, or the status."""
    return f"{round(entry['seconds'])} s" if entry["status"] == "ok" else entry["status"]


def course_table_rows(text: str) -> dict[str, list[str]]:
    """The README course table's cells after the notebook's name, keyed by the notebook's name."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`(\d\d_\w+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces as '-'."""
    headings = re.findall(r"^#+\s+(.*)$", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(path: Path) -> list[str]:
    """Link targets in a Markdown file that point inside the repository (no scheme, not a bare anchor)."""
    targets = [m.group(1) for m in LINK.finditer(path.read_text())]
    return [t for t in targets if not urlparse(t).scheme and not t.startswith("#")]


@pytest.fixture(scope="module")
def recorded():
    return load_recorded_times(RECORDED_TIMES)


def test_recorded_times_cover_every_notebook_at_the_tables_profiles(recorded):
    for profile in TABLE_PROFILES:
        record = recorded[profile]
        assert record["profile"] == profile
        assert set(record["notebooks"]) == {info.name for info in NOTEBOOKS}, profile
        assert record["total_seconds"] == pytest.approx(sum(n["seconds"] for n in record["notebooks"].values()),
                                                        abs=0.5)


def test_readme_course_table_states_the_recorded_times(recorded):
    text = README.read_text()
    rows = course_table_rows(text)
    assert set(rows) == {info.name for info in NOTEBOOKS}, "the course table lists every notebook once"
    for name, cells in rows.items():
        for column, profile in enumerate(TABLE_PROFILES, start=1):   # cells[0] is "teaches"
            entry = recorded[profile]["notebooks"][name]
            assert cells[column].startswith(printed_time(entry)), (name, profile, cells[column])
    for profile in TABLE_PROFILES:
        assert f"`{profile}` on {recorded[profile]['date']}" in text, f"the README dates the {profile} run"


def test_printed_time_follows_the_status():
    assert printed_time({"seconds": 523.6, "status": "ok"}) == "524 s"
    assert printed_time({"seconds": 0.0, "status": "skipped"}) == "skipped"


def test_course_table_rows_reads_the_cells_after_the_name():
    rows = course_table_rows("| `01_toy` | teaches | 3 s | 4 s | - |\n| notebook | x |\n")
    assert rows == {"01_toy": ["teaches", "3 s", "4 s", "-"]}


def _takes_sentence(name: str) -> str:
    cell = json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())["cells"][0]
    text = " ".join("".join(cell["source"]).split())
    match = re.search(r"\*\*Takes\*\*[^.]*\.", text)
    return match.group(0) if match else ""


@pytest.mark.parametrize("name", [info.name for info in NOTEBOOKS])
def test_notebook_takes_line_states_the_recorded_times(recorded, name):
    sentence = _takes_sentence(name)
    assert sentence, f"{name}'s first cell has no '**Takes** ...' sentence"
    for profile in TABLE_PROFILES:
        entry = recorded[profile]["notebooks"][name]
        if entry["status"] == "ok":
            assert f"{printed_time(entry)} at `{profile}`" in sentence, (profile, sentence)
        assert recorded[profile]["date"] in sentence, (profile, sentence)


@pytest.mark.parametrize("document", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_point_to_files_that_exist(document):
    missing = [target for target in relative_links(document)
               if not (document.parent / unquote(target.split("#", 1)[0])).exists()]
    assert not missing, f"{document.name} links to missing files: {missing}"


@pytest.mark.parametrize("document", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_links_into_markdown_sections_name_a_heading_there(document):
    broken = []
    for target in relative_links(document):
        path, _, anchor = unquote(target).partition("#")
        if anchor and path.endswith(".md") and anchor not in heading_anchors(document.parent / path):
            broken.append(target)
    assert not broken, f"{document.name} links to sections that do not exist: {broken}"


def test_heading_anchors_follow_githubs_rule(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Results: what it measured\n\n## Training speed (`benchmarks/bench_training.py`)\n")
    assert heading_anchors(page) == {"results-what-it-measured", "training-speed-benchmarksbench_trainingpy"}


def test_relative_links_finds_only_repository_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](docs/x.md#part) [b](https://example.org) [c](#top) [d](../y.txt)")
    assert relative_links(page) == ["docs/x.md#part", "../y.txt"]
