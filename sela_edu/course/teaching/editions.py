"""The instructor and student editions of the notebooks, in nbgrader's format.

The committed notebooks are the *solution edition* (the tests run them). An exercise there is a stub
cell tagged ``exercise`` (containing ``# YOUR CODE HERE``) followed by a cell tagged ``solution`` that
redefines the function, then cells tagged ``check`` that call :mod:`sela_edu.course.teaching.exercises`. A cell may
also carry nbgrader's own markers directly (``### BEGIN SOLUTION`` / ``### END SOLUTION``: they are
comments, so such a cell runs as the solution).

* :func:`instructor_notebook` turns a solution-edition notebook into an nbgrader *source* notebook:
  each stub and its solution become one cell whose answer sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` (nbgrader metadata ``solution``); each cell that calls a checker becomes an
  autograded test cell (``grade``, ``points``, ``locked``; tagged ``raises-exception``, which nbgrader's
  release keeps, so "Run all" goes past an unfinished exercise) and receives the hidden tests from the
  instructor material between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``; the written
  answers to the open exercises are added as a manually graded answer cell; instructions (markdown)
  and check cells are locked (read-only). Put it in nbgrader's ``source/<assignment>/`` and
  ``nbgrader generate_assignment`` makes the release.
* :func:`student_notebook` makes the release without nbgrader, by nbgrader's rules: solution regions
  replaced by ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (``YOUR ANSWER HERE`` in
  markdown), hidden tests removed, outputs cleared; the metadata stays, so nbgrader can still
  autograde what students hand in.

The instructor material (hidden tests, written answers) lives in ``instructor/`` at the top of the
kit, outside the installed package: see ``instructor/README.md``. :func:`validate_nbgrader` checks cell
metadata against nbgrader's schema (version 3) and its rules, without needing nbgrader installed.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from sela_edu import settings

__all__ = [
    "STUB_MARKER", "BEGIN_SOLUTION", "END_SOLUTION", "BEGIN_HIDDEN_TESTS", "END_HIDDEN_TESTS", "CODE_STUB",
    "TEXT_STUB", "INSTRUCTOR_DIR", "instructor_notebook", "student_notebook", "validate_nbgrader",
    "build_instructor_edition", "build_student_edition", "solution_regions", "check_inputs", "instructor_edition",
    "write_notebooks",
]

STUB_MARKER = "# YOUR CODE HERE"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
#: what nbgrader's ClearSolutions puts in place of a solution region (python; markdown)
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
#: the instructor material: hidden_tests/<function>.py, answers/<notebook>.md
INSTRUCTOR_DIR = settings.REPO_ROOT / "instructor"
#: points of an autograded check cell, and of each open exercise answered in writing
CHECK_POINTS = 2
WRITTEN_POINTS = 1

_CHECK_CALL = re.compile(r"exercises\.check_\w+\(\s*(\w+)")
_DEF = re.compile(r"^def (\w+)\(", re.M)
_ID_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _meta(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": _ID_CHARS.sub("_", grade_id), "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def _default_notebooks_dir() -> Path:
    try:
        from sela_edu.course.series.notebooks import NOTEBOOKS_DIR
    except ImportError:  # pragma: no cover - before the course package existed
        NOTEBOOKS_DIR = settings.REPO_ROOT / "notebooks"
    return Path(NOTEBOOKS_DIR)


# --------------------------------------------------------------------------------------------------
# instructor edition


def _merge(stub: str, solution: str) -> str:
    """The stub with its ``# YOUR CODE HERE`` / ``raise NotImplementedError`` lines replaced by the
    solution's body between the solution markers (at the stub's indentation)."""
    lines = stub.split("\n")
    at = next((i for i, line in enumerate(lines) if STUB_MARKER in line), None)
    if at is None:
        raise ValueError(f"the exercise cell has no {STUB_MARKER!r} line:\n{stub}")
    indent = re.match(r"\s*", lines[at]).group(0)
    end = at + 1
    if end < len(lines) and "raise NotImplementedError" in lines[end]:
        end += 1
    prefix, suffix = lines[:at], lines[end:]
    body = solution.rstrip("\n").split("\n")
    if body[: len(prefix)] == prefix:         # the solution repeats the stub's head (the def line): keep its body
        body = body[len(prefix):]
    else:                                     # otherwise the whole solution is the answer
        prefix, indent = [], ""
    return "\n".join(prefix + [indent + BEGIN_SOLUTION] + body + [indent + END_SOLUTION] + suffix)


def _hidden_tests(function: str, material: Path) -> str | None:
    path = material / "hidden_tests" / f"{function}.py"
    return path.read_text().strip("\n") if path.exists() else None


def _written_answers(stem: str, material: Path) -> tuple[str, int] | None:
    path = material / "answers" / f"{stem}.md"
    if not path.exists():
        return None
    text = path.read_text().strip("\n")
    return text, max(1, len(re.findall(r"^\d+\.", text, re.M)))


def instructor_notebook(nb, name: str, material: str | os.PathLike | None = None):
    """The nbgrader source notebook for a solution-edition notebook ``nb`` called ``name`` (its stem)."""
    import nbformat

    material = Path(material) if material else INSTRUCTOR_DIR
    nb = copy.deepcopy(nb)
    stem = Path(name).stem
    cells, used_ids = [], set()

    def unique(grade_id: str) -> str:
        base, n = _ID_CHARS.sub("_", grade_id), 1
        while (grade_id := base if n == 1 else f"{base}_{n}") in used_ids:
            n += 1
        used_ids.add(grade_id)
        return grade_id

    pending_stub = None      # index in `cells` of an exercise stub waiting for its solution
    hidden_done = set()
    for cell in nb.cells:
        tags = _tags(cell)
        if cell.cell_type == "code" and "exercise" in tags and STUB_MARKER in cell.source:
            pending_stub = len(cells)
            cells.append(cell)
            continue
        if cell.cell_type == "code" and "solution" in tags:
            if pending_stub is None:
                raise ValueError(f"{stem}: a solution cell without an exercise stub before it "
                                 f"(tag the stub 'exercise' and put {STUB_MARKER!r} in it):\n{cell.source[:200]}")
            stub = cells[pending_stub]
            stub.source = _merge(stub.source, cell.source)
            stub.metadata["tags"] = [t for t in _tags(stub) if t != "solution"]
            pending_stub = None
            continue
        cells.append(cell)                     # (a cell with nbgrader's markers already is taken as it is)

    for i, cell in enumerate(cells):
        tags = _tags(cell)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if "nbgrader" in cell.metadata:
            used_ids.add(cell.metadata["nbgrader"].get("grade_id", ""))
            continue
        if cell.cell_type == "code" and BEGIN_SOLUTION in cell.source:
            fn = _DEF.search(cell.source)
            cell.metadata["nbgrader"] = _meta(unique(f"{stem}_{fn.group(1) if fn else i}"), solution=True)
        elif cell.cell_type == "code" and (m := _CHECK_CALL.search(cell.source)):
            function = m.group(1)
            hidden = _hidden_tests(function, material) if function not in hidden_done else None
            if hidden:
                cell.source = cell.source.rstrip("\n") + f"\n\n{BEGIN_HIDDEN_TESTS}\n{hidden}\n{END_HIDDEN_TESTS}"
                hidden_done.add(function)
            cell.metadata["nbgrader"] = _meta(unique(f"{stem}_{function}_check"), grade=True, locked=True,
                                              points=CHECK_POINTS)
            _allow_error(cell)
        elif "check" in tags or cell.cell_type == "markdown":
            cell.metadata["nbgrader"] = _meta(unique(f"{stem}_cell{i}"), locked=True)
            if cell.cell_type == "code":     # it calls the student's function too (not graded)
                _allow_error(cell)

    answers = _written_answers(stem, material)
    if answers:
        text, count = answers
        at = max((i for i, c in enumerate(cells) if c.cell_type == "markdown" and "## Exercises" in c.source),
                 default=len(cells) - 1)
        cell = nbformat.v4.new_markdown_cell(
            f"**Your answers to the exercises above** (a few sentences each)\n\n{BEGIN_SOLUTION}\n{text}\n{END_SOLUTION}")
        cell.metadata["nbgrader"] = _meta(unique(f"{stem}_written_answers"), solution=True, grade=True,
                                          points=WRITTEN_POINTS * count)
        cells.insert(at + 1, cell)

    nb.cells = cells
    nb.metadata["sela_edition"] = "instructor"
    problems = validate_nbgrader(nb)
    if problems:
        raise ValueError(f"{stem}: invalid nbgrader metadata: " + "; ".join(problems))
    nbformat.validate(nb)
    return nb


def _allow_error(cell) -> None:
    """Tag a check cell ``raises-exception``: an unfinished exercise fails its check, and with this tag
    "Run all" goes on to the next cells instead of stopping there (nbgrader's release keeps the tags)."""
    tags = _tags(cell)
    if "raises-exception" not in tags:
        cell.metadata["tags"] = tags + ["raises-exception"]


# --------------------------------------------------------------------------------------------------
# student edition


def solution_regions(source: str, begin: str = BEGIN_SOLUTION, end: str = END_SOLUTION) -> list[str]:
    """The texts between ``begin`` and ``end`` marker lines of a cell's source (markers excluded)."""
    regions, current = [], None
    for line in source.split("\n"):
        if begin in line:
            if current is not None:
                raise ValueError(f"nested {begin!r}")
            current = []
        elif end in line:
            if current is None:
                raise ValueError(f"{end!r} without {begin!r}")
            regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        raise ValueError(f"{begin!r} without {end!r}")
    return regions


def _replace_regions(source: str, begin: str, end: str, stub: str | None) -> str:
    """nbgrader's rule: the lines from ``begin`` to ``end`` (inclusive) become ``stub`` at the begin
    line's indentation (or nothing when ``stub`` is None)."""
    solution_regions(source, begin, end)  # raises on unbalanced markers
    out, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + s for s in stub.split("\n"))
        elif end in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def student_notebook(nb, name: str | None = None, material: str | os.PathLike | None = None):
    """The student edition of a notebook: from a solution-edition notebook (it goes through
    :func:`instructor_notebook` first) or from an instructor edition. Solutions become stubs, hidden
    tests vanish, outputs are cleared, check cells get the ``raises-exception`` tag (so "Run all" goes
    on past an unfinished exercise); nbgrader's metadata is kept."""
    import nbformat

    if nb.metadata.get("sela_edition") != "instructor":
        nb = instructor_notebook(nb, name or nb.metadata.get("sela_name", "notebook"), material)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
            cell.source = (_replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub)
                           if BEGIN_SOLUTION in cell.source else stub)
        if cell.cell_type == "code":
            cell.source = _replace_regions(cell.source, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS, None).rstrip("\n")
            cell.outputs, cell.execution_count = [], None
            if "check" in _tags(cell) or meta.get("grade"):
                _allow_error(cell)
    nb.metadata["sela_edition"] = "student"
    problems = validate_nbgrader(nb)
    if problems:  # pragma: no cover - the instructor edition was valid
        raise ValueError("invalid nbgrader metadata: " + "; ".join(problems))
    nbformat.validate(nb)
    return nb


# --------------------------------------------------------------------------------------------------
# nbgrader's metadata rules

#: nbgrader's cell-metadata schema, version 3 (nbgrader/nbgraderformat/v3.json, BSD-3-Clause)
NBGRADER_SCHEMA_V3 = {
    "type": "object",
    "properties": {
        "schema_version": {"type": "integer", "minimum": 3, "maximum": 3},
        "grade": {"type": "boolean"},
        "locked": {"type": "boolean"},
        "solution": {"type": "boolean"},
        "task": {"type": "boolean"},
        "grade_id": {"type": "string", "pattern": "^[a-zA-Z0-9_\\-]*$"},
        "points": {"type": "number", "minimum": 0},
        "checksum": {"type": "string", "minLength": 32, "maxLength": 32},
        "cell_type": {"type": "string", "enum": ["raw", "code", "markdown"]},
    },
    "required": ["schema_version", "grade", "locked", "solution"],
    "additionalProperties": False,
}


def validate_nbgrader(nb) -> list[str]:
    """Problems with the notebook's nbgrader cell metadata (an empty list when valid): the schema
    above, plus nbgrader's own rules (MetadataValidatorV3 and ClearSolutions): a grade_id on every
    graded, solution or locked cell, unique; points on graded cells; markdown answer cells both graded
    and solution; solution markers only in solution cells, balanced."""
    import jsonschema

    problems, ids = [], set()
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        has_region = BEGIN_SOLUTION in cell.source or END_SOLUTION in cell.source
        if meta is None:
            if has_region:
                problems.append(f"cell {i} has a solution region but no nbgrader metadata")
            continue
        try:
            jsonschema.validate(meta, NBGRADER_SCHEMA_V3)
        except jsonschema.ValidationError as exc:
            problems.append(f"cell {i}: {exc.message}")
            continue
        grade, solution, locked, task = meta["grade"], meta["solution"], meta["locked"], meta.get("task", False)
        if grade or solution or locked:
            if not meta.get("grade_id"):
                problems.append(f"cell {i} has no grade_id")
            elif meta["grade_id"] in ids:
                problems.append(f"duplicate grade_id {meta['grade_id']!r}")
            ids.add(meta.get("grade_id"))
        if grade and "points" not in meta:
            problems.append(f"graded cell {meta.get('grade_id')!r} has no points")
        if cell.cell_type == "markdown" and not task and grade != solution:
            problems.append(f"markdown cell {meta.get('grade_id')!r} must be both grade and solution, or neither")
        if task and cell.cell_type != "markdown":
            problems.append(f"task cell {meta.get('grade_id')!r} is not markdown")
        if has_region and not solution:
            problems.append(f"cell {meta.get('grade_id')!r} has a solution region but is not a solution cell")
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS)):
            try:
                solution_regions(cell.source, begin, end)
            except ValueError as exc:
                problems.append(f"cell {meta.get('grade_id')!r}: {exc}")
    return problems


# --------------------------------------------------------------------------------------------------
# building the editions


#: where the solution notebooks and the instructor material come from when the kit is pip-installed
GET_MATERIAL = ("they ship with the kit's repository (a clone or a source archive), not with the installed "
                "package")


def _notebooks(source) -> list[Path]:
    given = source is not None
    source = Path(source) if given else _default_notebooks_dir()
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        where = "" if given else f" ({GET_MATERIAL}): pass --source with the notebooks/ folder of a clone"
        raise FileNotFoundError(f"no solution notebooks (NN_name.ipynb) in {source}{where}")
    return paths


def _check_stubs(path: Path, nb) -> None:
    n_solutions = sum("solution" in _tags(c) for c in nb.cells)
    n_stubs = sum("exercise" in _tags(c) and STUB_MARKER in c.source for c in nb.cells)
    if n_solutions and n_stubs < n_solutions:
        raise ValueError(f"{path.name}: {n_solutions} solution cell(s) but only {n_stubs} exercise stub(s) "
                         f"with {STUB_MARKER!r}")


def _material(material) -> Path:
    path = Path(material) if material else INSTRUCTOR_DIR
    if not (path / "hidden_tests").is_dir():
        raise FileNotFoundError(f"no instructor material (hidden_tests/, answers/) in {path} ({GET_MATERIAL}): "
                                "pass --material with the instructor/ folder of a clone")
    return path


def check_inputs(source=None, material=None) -> tuple[list[Path], Path]:
    """The solution notebooks and the instructor material folder, or one error naming everything that is
    missing (both --source and --material when a pip install has neither)."""
    found, problems = {}, []
    for name, find, given in (("notebooks", _notebooks, source), ("material", _material, material)):
        try:
            found[name] = find(given)
        except FileNotFoundError as exc:
            problems.append(str(exc))
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return found["notebooks"], found["material"]


def instructor_edition(source=None, material=None) -> dict[str, object]:
    """The instructor edition in memory, ``{file name: notebook}``: checked whole before anything is written."""
    import nbformat

    paths, material = check_inputs(source, material)
    edition = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        _check_stubs(path, nb)
        edition[path.name] = instructor_notebook(nb, path.stem, material)
    return edition


def build_instructor_edition(output: str | os.PathLike = "instructor_edition", source: str | os.PathLike | None = None,
                             material: str | os.PathLike | None = None) -> list[Path]:
    """Write the nbgrader source version of every notebook in ``source`` (default ``notebooks/``); nothing
    is written (no empty ``output``) when a notebook or the material is missing or invalid."""
    return write_notebooks(instructor_edition(source, material), output)


def build_student_edition(output: str | os.PathLike = "student", source: str | os.PathLike | None = None,
                          material: str | os.PathLike | None = None) -> list[Path]:
    """Write the student edition of every notebook in ``source`` (default ``notebooks/``) to ``output``.

    Each exercise must have a stub cell (tagged ``exercise``, containing ``# YOUR CODE HERE``); a
    notebook with a solution cell but no stub is an error. Works without the instructor material
    (then without written-answer cells)."""
    material = Path(material) if material else INSTRUCTOR_DIR
    return _write_edition(output, source, lambda nb, stem: student_notebook(nb, stem, material))


def _write_edition(output, source, convert) -> list[Path]:
    """``convert(notebook, stem)`` for every notebook of ``source`` (stubs checked first), written to ``output``
    once all are converted (a failure leaves no folder behind)."""
    import nbformat

    edition = {}
    for path in _notebooks(source):
        nb = nbformat.read(path, as_version=4)
        _check_stubs(path, nb)
        edition[path.name] = convert(nb, path.stem)
    return write_notebooks(edition, output)


def write_notebooks(edition: dict, output: str | os.PathLike) -> list[Path]:
    """Write ``{file name: notebook}`` into ``output`` (created), returning the paths."""
    import nbformat

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in edition.items():
        nbformat.write(nb, output / name)
        written.append(output / name)
    return written
