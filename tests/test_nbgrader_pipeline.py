"""nbgrader's real pipeline on a course made by ``sela-edu course init``: generate_assignment, autograde of
two submissions (the reference answers; the release handed in untouched), generate_feedback, export.

It runs nbgrader as an instructor would (``python -m nbgrader`` in the course folder, this environment's
bin/ on PATH for alembic) at the smoke profile. By default on notebooks 01 and 02 (three coded exercises,
about a minute per student); ``SELA_NBGRADER_NOTEBOOKS=all`` (or a comma-separated list of stems) runs
more, and ``-s`` prints the autograde seconds of each notebook (the figures in instructor/README.md).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from sela_edu.course.teaching import exercises
from sela_edu import settings
from sela_edu.course.teaching.nbgrader_course import RESULTS_FOLDER, init_course

pytest.importorskip("nbgrader")
pytestmark = pytest.mark.slow

ROOT = settings.REPO_ROOT
DEFAULT_NOTEBOOKS = ("01_optimal_transport_toy", "02_self_labelling_objective")
ASSIGNMENT = "sela"
STUDENTS = {"reference": "the reference answers", "untouched": "the release handed in as it came",
            "tensor_shy": "the reference answers, but a marginal_errors that refuses tensors (only a hidden test "
                          "passes one)"}
#: tensor_shy's answer to 02's marginal_errors: right on arrays, so it fails the hidden tests only
TENSOR_SHY = {"02_self_labelling_objective_marginal_errors": '''def marginal_errors(Q):
    if not isinstance(Q, np.ndarray):
        raise TypeError("this answer takes numpy arrays only")
    n, k = Q.shape
    return np.abs(Q.sum(axis=1) - 1 / n).max(), np.abs(Q.sum(axis=0) - 1 / k).max()'''}
#: the kit's hint for an exercise not written yet (exercises.checking.call_answer)
UNWRITTEN_HINT = "is not written yet: replace the `# YOUR CODE HERE` stub"


def _chosen_notebooks() -> list[str]:
    wanted = os.environ.get("SELA_NBGRADER_NOTEBOOKS", "")
    every = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if wanted == "all":
        return every
    chosen = [s.strip() for s in wanted.split(",") if s.strip()] or list(DEFAULT_NOTEBOOKS)
    unknown = sorted(set(chosen) - set(every))
    if unknown:
        raise ValueError(f"SELA_NBGRADER_NOTEBOOKS names unknown notebooks: {unknown}; choose from {every}")
    return chosen


def _nbgrader(course: Path, *args: str, timeout: float = 1200) -> list[tuple[float, str]]:
    """Run ``python -m nbgrader ARGS`` in the course folder; its log lines with the seconds they arrived at."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SELA_STATIC_FIGURES="1",
               SELA_FIGURES_DIR=str(course / "figures"), MPLBACKEND="Agg")
    start, lines = time.monotonic(), []
    with subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            if time.monotonic() - start > timeout:
                proc.kill()
        rc = proc.wait()
    assert rc == 0, f"nbgrader {' '.join(args)} failed ({rc}):\n" + "\n".join(text for _, text in lines[-40:])
    return lines


def _seconds_per_notebook(lines: list[tuple[float, str]]) -> dict[str, float]:
    """From autograde's log: the time from each 'Sanitizing NB' line to the next (or the end)."""
    marks = [(t, Path(m.group(1)).stem) for t, text in lines if (m := re.search(r"Sanitizing (\S+\.ipynb)", text))]
    ends = [t for t, _ in marks[1:]] + [lines[-1][0]]
    return {name: round(end - t, 1) for (t, name), end in zip(marks, ends)}


def _answered(release: Path, source: Path, out: Path, answers: dict[str, str] | None = None) -> None:
    """A submission with the reference answers (each solution cell of the release gets its source cell),
    except the ``answers`` given by grade id."""
    out.mkdir(parents=True)
    for path in sorted(release.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        ref = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(source / path.name, 4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution"):
                cell.source = (answers or {}).get(meta["grade_id"], ref[meta["grade_id"]])
        nbformat.write(nb, out / path.name)


def _text_of_html(path: Path) -> str:
    """What a reader sees in an HTML page: tags dropped (code is split into highlighted spans), entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    notebooks = _chosen_notebooks()
    solutions = tmp_path_factory.mktemp("solutions")
    for stem in notebooks:
        shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", solutions)
    course = tmp_path_factory.mktemp("nbgrader") / "course"
    init_course(course, assignment=ASSIGNMENT, source=solutions)
    _nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    release, source = course / "release" / ASSIGNMENT, course / "source" / ASSIGNMENT
    _answered(release, source, course / "submitted" / "reference" / ASSIGNMENT)
    shutil.copytree(release, course / "submitted" / "untouched" / ASSIGNMENT)
    _answered(release, source, course / "submitted" / "tensor_shy" / ASSIGNMENT, TENSOR_SHY)
    # a student's results/ (checkpoints) comes with the submission: it must not travel on to the feedback
    (course / "submitted" / "untouched" / ASSIGNMENT / RESULTS_FOLDER / "checkpoints").mkdir(parents=True)
    (course / "submitted" / "untouched" / ASSIGNMENT / RESULTS_FOLDER / "checkpoints" / "last.pt").write_bytes(b"0" * 1000)
    seconds = {}
    for student in STUDENTS:
        start = time.monotonic()
        lines = _nbgrader(course, "autograde", ASSIGNMENT, "--student", student, "--force")
        seconds[student] = (round(time.monotonic() - start, 1), _seconds_per_notebook(lines))
    _nbgrader(course, "generate_feedback", ASSIGNMENT, "--force")
    _nbgrader(course, "export")
    for student, (total, per_notebook) in seconds.items():
        size = _folder_bytes(course / "feedback" / student / ASSIGNMENT)
        print(f"\nautograde of {student}: {total} s; per notebook {per_notebook}; feedback folder {size} bytes")
    return {"course": course, "notebooks": notebooks, "seconds": seconds}


def _code_grades(course: Path, student: str) -> list:
    """(notebook, grade id, auto score, max score) of every autograded (code) cell of a submission."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="sela") as gb:
        submission = gb.find_submission(ASSIGNMENT, student)
        return [(nb.name, g.name, g.auto_score, g.max_score) for nb in submission.notebooks for g in nb.grades
                if g.cell_type == "code"]


def _exercise_count(notebooks) -> int:
    return sum(nb in notebooks for _, nb in exercises.EXERCISES.values())


def test_reference_answers_get_every_autograded_point(pipeline):
    grades = _code_grades(pipeline["course"], "reference")
    assert len(grades) == _exercise_count(pipeline["notebooks"]) > 0
    assert [g for g in grades if g[2] != g[3]] == []


def test_a_failed_hidden_test_costs_its_points_and_shows_its_message_only(pipeline):
    """tensor_shy passes every visible check; the hidden test of marginal_errors fails, and the feedback shows
    the error's one line (IPython's Minimal mode), not the hidden test's code around it."""
    grades = _code_grades(pipeline["course"], "tensor_shy")
    failed = [g[1] for g in grades if g[2] != g[3]]
    if "02_self_labelling_objective" not in pipeline["notebooks"]:
        pytest.skip("needs notebook 02")
    assert failed == ["02_self_labelling_objective_marginal_errors_check"]
    page = pipeline["course"] / "feedback" / "tensor_shy" / ASSIGNMENT / "02_self_labelling_objective.html"
    text = _text_of_html(page)
    assert "TypeError: this answer takes numpy arrays only" in text
    assert [line for line in _hidden_test_lines(["02_self_labelling_objective"]) if line in text] == []


def test_untouched_release_gets_zero_on_exactly_the_coded_exercises(pipeline):
    grades = _code_grades(pipeline["course"], "untouched")
    assert len(grades) == _exercise_count(pipeline["notebooks"])
    assert all(max_score > 0 and score == 0 for _, _, score, max_score in grades)
    feedback = pipeline["course"] / "feedback" / "untouched" / ASSIGNMENT
    hints = sum(_text_of_html(page).count(UNWRITTEN_HINT) for page in feedback.glob("*.html"))
    assert hints == len(grades)


def _graded_code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]


def test_no_graded_cell_writes_to_stderr(pipeline):
    """nbgrader gives 0 to a graded cell with output on stderr, even when its tests pass."""
    for student in STUDENTS:
        for path in sorted((pipeline["course"] / "autograded" / student / ASSIGNMENT).glob("*.ipynb")):
            for cell in _graded_code_cells(nbformat.read(path, as_version=4)):
                stderr = [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
                assert stderr == [], f"{student}, {path.name}: {cell.metadata['nbgrader']['grade_id']} wrote {stderr}"


def _hidden_test_lines(notebooks) -> list[str]:
    """The code lines of the hidden tests of these notebooks' exercises (long enough to be telling)."""
    functions = [f for f, (_, nb) in exercises.EXERCISES.items() if nb in notebooks]
    lines = [line.strip() for f in functions
             for line in (ROOT / "instructor" / "hidden_tests" / f"{f}.py").read_text().splitlines()]
    return [line for line in lines if len(line) > 25 and not line.startswith(("#", "import", "from"))]


def test_feedback_shows_no_hidden_test(pipeline):
    hidden = _hidden_test_lines(pipeline["notebooks"])
    assert hidden
    for student in STUDENTS:
        for page in sorted((pipeline["course"] / "feedback" / student / ASSIGNMENT).glob("*.html")):
            text = _text_of_html(page)
            assert "Correct:" in text or UNWRITTEN_HINT in text       # the visible checks are there
            assert [line for line in hidden if line in text] == [], f"{student}: {page.name} shows hidden tests"


def test_feedback_folder_has_no_results(pipeline):
    for student in STUDENTS:
        feedback = pipeline["course"] / "feedback" / student / ASSIGNMENT
        assert sorted(p.suffix for p in feedback.iterdir()) == [".html"] * len(pipeline["notebooks"])


def test_autograde_runs_at_the_course_profile(pipeline):
    """Every autograded notebook ran at the profile set once in nbgrader_config.py, not the classroom
    profile that the students' copies name."""
    for student in STUDENTS:
        for path in sorted((pipeline["course"] / "autograded" / student / ASSIGNMENT).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
            assert len(injected) == 1 and "profile = 'smoke'" in injected[0].source
            params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
            assert nb.cells[params + 1] is injected[0] and 'profile = "classroom"' in nb.cells[params].source


def test_release_lets_run_all_go_past_an_unfinished_exercise(pipeline, tmp_path, monkeypatch):
    """nbgrader's release keeps the raises-exception tag of every check cell, and with it nbclient (like
    JupyterLab's "Run all") runs the first notebook to its end although every exercise is unfinished."""
    from nbclient import NotebookClient

    release = pipeline["course"] / "release" / ASSIGNMENT
    for path in sorted(release.glob("*.ipynb")):
        checks = [c for c in nbformat.read(path, as_version=4).cells if "check" in c.metadata.get("tags", [])]
        assert checks and all("raises-exception" in c.metadata["tags"] for c in checks), path.name
    monkeypatch.setenv(settings.FIGURES_ENV, str(tmp_path / "figures"))
    monkeypatch.setenv("SELA_STATIC_FIGURES", "1")
    first = nbformat.read(sorted(release.glob("*.ipynb"))[0], as_version=4)
    first.cells[next(i for i, c in enumerate(first.cells) if "parameters" in c.metadata.get("tags", []))].source += (
        f'\nprofile = "smoke"\noutput_dir = {str(tmp_path / "results")!r}')
    # allow_errors=False: without the tag, the first failing check would raise CellExecutionError here
    NotebookClient(first, timeout=600, allow_errors=False, resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in _graded_code_cells(first) for o in c.outputs if o.output_type == "error"]
    assert len(errors) == len(_graded_code_cells(first)) > 0
