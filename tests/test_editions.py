"""The instructor and student editions: nbgrader metadata, hidden tests and answers where they belong, and
every exercise's graded cell passing on the solution and failing with the hint on the stub."""

import re
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from sela_edu.course.teaching import editions, exercises
from sela_edu.course.series.notebooks import NOTEBOOKS
from sela_edu import settings

ROOT = settings.REPO_ROOT
MATERIAL = ROOT / "instructor"
PACKAGE = Path(editions.__file__).parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Both editions of the committed notebooks."""
    tmp = tmp_path_factory.mktemp("editions")
    inst = editions.build_instructor_edition(tmp / "instructor", None, MATERIAL)
    stud = editions.build_student_edition(tmp / "student", None, MATERIAL)
    return {"committed": [(nbformat.read(i, as_version=4), nbformat.read(s, as_version=4)) for i, s in zip(inst, stud)]}


def _all(built):
    return built["committed"]


def _graded(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def _solutions(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]


def test_instructor_edition_has_nbgrader_metadata(built):
    assert len(built["committed"]) == len(NOTEBOOKS)
    regions = 0
    for inst, stud in _all(built):
        assert editions.validate_nbgrader(inst) == [] and editions.validate_nbgrader(stud) == []
        for cell in inst.cells:
            meta = cell.metadata.get("nbgrader")
            if cell.cell_type == "markdown":
                assert meta and (meta["locked"] or (meta["solution"] and meta["grade"]))
            if meta and meta["grade"] and cell.cell_type == "code":
                assert meta["locked"] and meta["points"] > 0 and "exercises.check_" in cell.source
        for cell in _solutions(inst):
            if cell.cell_type == "code":
                assert editions.BEGIN_SOLUTION in cell.source and "exercise" in cell.metadata["tags"]
                regions += 1
        ids = [c.metadata["nbgrader"]["grade_id"] for c in inst.cells if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids))
    assert regions == len(exercises.EXERCISES)        # every exercise of the kit, once


def test_validator_catches_what_nbgrader_refuses():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"),
                                         nbformat.v4.new_markdown_cell("answer"), nbformat.v4.new_code_cell("t")])
    assert "no nbgrader metadata" in editions.validate_nbgrader(nb)[0]
    nb.cells[0].metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "schema_version": 3,
                                        "grade_id": "a b"}
    nb.cells[1].metadata["nbgrader"] = {"grade": True, "solution": False, "locked": False, "schema_version": 3,
                                        "grade_id": "x", "points": 1}
    nb.cells[2].metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "schema_version": 3,
                                        "grade_id": "x"}
    problems = " | ".join(editions.validate_nbgrader(nb))
    assert "does not match" in problems and "both grade and solution" in problems
    assert "duplicate grade_id 'x'" in problems and "has no points" in problems


def test_hidden_tests_and_answers_only_in_the_instructor_edition(built):
    hidden_seen = 0
    for inst, stud in _all(built):
        inst_text = "\n".join(c.source for c in inst.cells)
        stud_text = "\n".join(c.source for c in stud.cells)
        assert "BEGIN HIDDEN TESTS" not in stud_text and "BEGIN SOLUTION" not in stud_text
        for cell in _graded(inst):
            for region in editions.solution_regions(cell.source, editions.BEGIN_HIDDEN_TESTS,
                                                    editions.END_HIDDEN_TESTS):
                hidden_seen += 1
                for line in region.splitlines():
                    if len(line.strip()) > 20:
                        assert line.strip() not in stud_text
        for cell in _solutions(inst):
            for region in editions.solution_regions(cell.source):
                for line in region.splitlines():
                    if len(line.strip()) > 20 and not line.strip().startswith(('"""', "#")):
                        assert line.strip() not in stud_text, line
        if editions.BEGIN_SOLUTION in inst_text and any(c.cell_type == "markdown" for c in _solutions(inst)):
            assert editions.TEXT_STUB in stud_text
        assert not any(c.get("outputs") for c in stud.cells if c.cell_type == "code")
    assert hidden_seen == len(exercises.EXERCISES)
    written = [c for inst, _ in built["committed"] for c in _solutions(inst) if c.cell_type == "markdown"]
    assert len(written) == len(list((MATERIAL / "answers").glob("*.md"))) == len(NOTEBOOKS)


def _distinctive(lines):
    return {line for line in (line.strip() for line in lines)
            if len(line) > 25 and not line.startswith(('"""', "#", "import ", "from "))}


def _solution_lines():
    """Lines of every reference answer to a coded exercise (the notebooks' solution cells)."""
    lines = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        lines += [line for c in nb.cells if "solution" in c.metadata.get("tags", []) for line in c.source.splitlines()[1:]]
    return _distinctive(lines)


def _material_lines():
    return _distinctive(line for path in sorted(MATERIAL.rglob("*.py")) + sorted(MATERIAL.rglob("*.md"))
                        for line in path.read_text().splitlines())


def _lines_of(paths):
    return {line.strip() for path in paths for line in path.read_text().splitlines()}


def test_answers_are_absent_from_the_package():
    """The modules students import to check their work hold no reference answer, and no file of the package
    holds the instructor material. (The kit's public functions that an exercise re-derives, such as
    metrics.cluster_accuracy for 06, are part of the course, not an answer key.)"""
    checkers = sorted((PACKAGE / "exercises").glob("*.py"))      # the exercises package, every module
    assert checkers
    checking = _lines_of([*checkers, PACKAGE / "editions.py"])
    assert sorted(_solution_lines() & checking) == []
    assert sorted(_material_lines() & _lines_of(PACKAGE.rglob("*.py"))) == []
    assert not (PACKAGE / "instructor").exists() and not list(PACKAGE.rglob("hidden_tests"))


def _run(source, namespace):
    exec(compile(source, "<cell>", "exec"), namespace)


def test_solutions_pass_every_check_and_stubs_fail_with_the_hint(built, one_torch_thread):
    """Run each exercise's solution cell, then its graded cell with the hidden tests (instructor edition);
    then the student's stub, then the student's graded cell."""
    checked = 0
    for inst, stud in built["committed"]:
        for solution, graded in zip(_solutions(inst), _graded(inst)):
            if solution.cell_type != "code":
                continue
            ns = {"np": np, "torch": torch, "exercises": exercises, "print": lambda *a, **k: None}
            _run(solution.source, ns)
            assert editions.BEGIN_HIDDEN_TESTS in graded.source
            with warnings.catch_warnings():   # a warning goes to stderr, and nbgrader scores such a cell 0
                warnings.simplefilter("error")
                _run(graded.source, ns)                                    # visible check + hidden tests pass
            checked += 1
        stubs = [c for c in stud.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
        for stub, graded in zip(stubs, _graded(stud)):
            assert editions.CODE_STUB.splitlines()[1] in stub.source
            ns = {"np": np, "torch": torch, "exercises": exercises}
            _run(stub.source, ns)
            with pytest.raises(exercises.ExerciseFailure, match="not written yet.*YOUR CODE HERE"):
                _run(graded.source, ns)
    assert checked == len(exercises.EXERCISES)


def test_student_stub_keeps_the_signature(built):
    inst, stud = built["committed"][0]
    stub = next(c for c in stud.cells if c.metadata.get("nbgrader", {}).get("solution"))
    assert re.match(r"def sinkhorn_step\(Q, a, b\):\n    # YOUR CODE HERE\n    raise NotImplementedError\(\)$",
                    stub.source)


def test_with_nbgrader_itself(built, tmp_path):
    """Where nbgrader is installed (the optional `instructor` extra): its own preprocessors make the same
    student edition from our instructor edition, and its validator accepts both."""
    pytest.importorskip("nbgrader")
    from nbgrader.nbgraderformat import MetadataValidator
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    for inst, stud in _all(built):
        MetadataValidator().validate_nb(inst)
        MetadataValidator().validate_nb(stud)
        theirs, _ = ClearSolutions().preprocess(nbformat.from_dict(inst), {})
        theirs, _ = ClearHiddenTests().preprocess(theirs, {})
        assert [c.source.rstrip("\n") for c in theirs.cells] == [c.source for c in stud.cells]


def test_instructor_material_is_needed_for_the_instructor_edition(tmp_path):
    with pytest.raises(FileNotFoundError, match="instructor material"):
        editions.build_instructor_edition(tmp_path / "out", None, tmp_path / "nothing")


def test_check_cells_let_run_all_go_on_in_both_editions(built):
    """An unfinished exercise fails its check; the raises-exception tag lets "Run all" go past it (nbgrader's
    generate_assignment keeps the tag, so its release behaves like the student edition)."""
    for inst, stud in _all(built):
        for nb in (inst, stud):
            checks = [c for c in nb.cells if c.cell_type == "code" and ("check" in c.metadata.get("tags", [])
                                                                       or c in _graded(nb))]
            assert checks and all("raises-exception" in c.metadata.get("tags", []) for c in checks)


def _kit_answers():
    import test_exercises

    return test_exercises.KIT_ANSWERS


@pytest.mark.parametrize("name", ["sinkhorn_step", "size_spread", "matched_agreement", "my_batch_codes"])
def test_hidden_tests_fail_an_answer_that_only_calls_the_kit(name):
    hidden = (MATERIAL / "hidden_tests" / f"{name}.py").read_text()
    with pytest.raises(exercises.ExerciseFailure, match=f"{name} calls the kit's sela_edu"):
        _run(hidden, {name: _kit_answers()[name]})


def test_a_pip_install_is_told_what_the_instructor_edition_needs(tmp_path, monkeypatch):
    """Without notebooks/ and instructor/ (a pip install), one error names both options and where to get
    them, and no output folder is left behind."""
    monkeypatch.setattr(editions, "INSTRUCTOR_DIR", tmp_path / "site-packages" / "instructor")
    monkeypatch.setattr(editions, "_default_notebooks_dir", lambda: tmp_path / "site-packages" / "notebooks")
    with pytest.raises(FileNotFoundError) as info:
        editions.build_instructor_edition(tmp_path / "out")
    assert "--source" in str(info.value) and "--material" in str(info.value) and "repository" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_an_invalid_notebook_leaves_no_output_folder(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def f():\n    return 1")])
    nb.cells[0].metadata["tags"] = ["solution"]           # a solution without its exercise stub
    nbformat.write(nb, source / "01_broken.ipynb")
    with pytest.raises(ValueError, match="solution cell"):
        editions.build_instructor_edition(tmp_path / "out", source, MATERIAL)
    assert not (tmp_path / "out").exists()
