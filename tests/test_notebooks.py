"""The notebook series: stored outputs (nbval, 01 and 02), every notebook under papermill at the smoke
profile, HTML rendering, the student edition and its exercise checkers.

CI-equivalent nbval command (run here as a subprocess by ``test_stored_outputs_match``):

    SELA_OFFLINE=1 SELA_DATA_ROOT=<empty dir> SELA_STATIC_FIGURES=1 SELA_FIGURES_DIR=<tmp> \
        python -m pytest --nbval -p no:cacheprovider --nbval-sanitize-with tests/nbval_sanitize.cfg \
        notebooks/01_optimal_transport_toy.ipynb notebooks/02_self_labelling_objective.ipynb

The stored outputs are machine-independent by construction: the toy problem of 01 (float64, a few
numbers), printed settings, exercise checks, and rounding-insensitive forms (``error < 1e-5: True``, a
verdict's direction over a margin); 02 runs on the digits (offline, empty data root) wherever the check
runs. A cell whose numbers follow a training run is tagged ``nbval-ignore-output`` and stored empty: one
label flipped by a rounding difference changes every round after it. ``test_stored_outputs_match``
proves it under other thread counts, numba's kernels disabled, and torch's deterministic algorithms.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sela_edu import course, settings
from sela_edu.course.teaching import editions, exercises
ROOT = settings.REPO_ROOT
NB_DIR = ROOT / "notebooks"
NAMES = [info.name for info in course.NOTEBOOKS]
STORED = ("01_optimal_transport_toy", "02_self_labelling_objective")


def _read(name):
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


# ---------------------------------------------------------------- structure (fast)

@pytest.mark.parametrize("name", NAMES)
def test_notebook_structure(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # the first code cell holds the parameters, with a profile that defaults to classroom
    assert "parameters" in _tags(code[0]), "first code cell must be tagged 'parameters'"
    assert 'profile = "classroom"' in code[0].source
    # opens with what it teaches; ends with a summary and exercises
    assert nb.cells[0].cell_type == "markdown" and "teaches" in nb.cells[0].source
    assert "## Summary" in nb.cells[-1].source and "## Exercises" in nb.cells[-1].source
    # one setup cell: imports only there (the exercise cells and helpers define functions, not imports)
    importing = [c for c in code if any(line.startswith(("import ", "from ")) for line in c.source.splitlines())]
    assert importing == [code[1]], f"imports outside the setup cell in {name}"
    assert not kit_imports_beyond_public(code[1].source), \
        f"{name}'s setup cell imports {kit_imports_beyond_public(code[1].source)}: use sela_edu's public names"
    # a shortened course run is a named preset, not a config edited in a cell
    for preset in COURSE_PRESETS.get(name, ()):
        assert f'"{preset}"' in code[1].source, f"{name}'s setup cell should name the preset {preset!r}"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # 01 and 02 are committed executed (nbval), the rest without outputs
    has_outputs = any(c.get("outputs") for c in code)
    assert has_outputs == (name in STORED)
    # a cell whose output nbval does not compare (it follows a training run) is stored empty
    assert not [c for c in code if course.UNSTORED_TAG in _tags(c) and c.get("outputs")], \
        f"{name}: a cell tagged {course.UNSTORED_TAG} is stored with outputs"


#: the presets that hold a notebook's shortened course runs (sela_edu.training.PRESETS)
COURSE_PRESETS = {"03_self_labelling_on_cpu": ("classroom-short",), "05_imbalance": ("classroom-imbalance",),
                  "06_label_transfer": ("classroom-short",)}


def kit_imports_beyond_public(source):
    """The kit's modules a cell imports other than ``sela_edu`` itself (its public names, and its modules
    settings and course), ``sela_edu.course`` and ``sela_edu.ot`` (notebook 01's general solver, a module of
    one job): a notebook's setup cell should need nothing else."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        found += [m for m in modules if m.startswith("sela_edu.") and m.split(".")[1] not in ("course", "ot")]
    return found


def test_setup_import_rule_sees_private_modules():
    assert kit_imports_beyond_public("from sela_edu import train, course\nfrom sela_edu.course.studies.timing import x\n"
                                     "from sela_edu.ot import sinkhorn") == []
    assert kit_imports_beyond_public("import torch\nfrom sela_edu.training import train\nimport sela_edu.data") == \
        ["sela_edu.training", "sela_edu.data"]


# ---------------------------------------------------------------- kernel

def test_papermill_kernel_is_this_interpreter(tmp_path):
    import papermill as pm

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = tmp_path / "k.ipynb", tmp_path / "k_out.ipynb"
    nbformat.write(nb, src)
    pm.execute_notebook(str(src), str(out), kernel_name=course.kernel_name(), progress_bar=False)
    printed = nbformat.read(out, as_version=4).cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


# ---------------------------------------------------------------- stored outputs

#: Machine variations the stored outputs must survive: other thread counts (reductions split
#: differently), numba's kernels replaced by plain Python (other rounding paths), and torch restricted
#: to its deterministic algorithms (other kernels).
VARIANTS = {
    "default": {},
    "one-thread-no-numba": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                            "NUMBA_NUM_THREADS": "1", "NUMBA_DISABLE_JIT": "1"},
    "omp-one-thread": {"OMP_NUM_THREADS": "1"},
    "torch-deterministic": {settings.DETERMINISTIC_ENV: "1"},
}


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stored_outputs_match(tmp_path, variant):
    env = {**os.environ, settings.FIGURES_ENV: str(tmp_path / "figures"), settings.RESULTS_ENV: str(tmp_path),
           **course.stored_output_environment(tmp_path / "no-data"), **VARIANTS[variant]}
    cmd = [sys.executable, "-m", "pytest", "--nbval", "-p", "no:cacheprovider", "-q",
           "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"),
           *[str(NB_DIR / f"{n}.ipynb") for n in STORED]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# ---------------------------------------------------------------- papermill, smoke profile

@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_smoke_profile(name, tmp_path):
    figures, results = tmp_path / "figures", tmp_path / "results"
    nb = course.execute_notebook(name, tmp_path / f"{name}.ipynb", {"profile": "smoke", "output_dir": str(tmp_path)},
                              figures_dir=figures, results_dir=tmp_path, timeout=300)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    record = json.loads((results / f"{name}.json").read_text())
    assert record["profile"] == "smoke" and record["values"]
    if record["values"].get("status") != "stopped: data absent":
        assert list(figures.glob(f"{name[:2]}_*.png")), "the notebook saved no figure"


# ---------------------------------------------------------------- HTML

@pytest.mark.slow
def test_every_notebook_renders_to_html(tmp_path):
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir", str(tmp_path),
           *[str(NB_DIR / f"{n}.ipynb") for n in NAMES]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for n in NAMES:
        html = (tmp_path / f"{n}.html").read_text()
        assert "<html" in html and nbformat.read(NB_DIR / f"{n}.ipynb", 4).cells[0].source.splitlines()[0][2:] in html


# ---------------------------------------------------------------- student edition

CHECKERS = {name: checker for name, (checker, _) in exercises.EXERCISES.items()}


def _defined_function(source):
    namespace = {}
    exec("import numpy as np\nimport torch\n" + source, namespace)
    funcs = [v for k, v in namespace.items() if callable(v) and k in CHECKERS]
    assert len(funcs) == 1, source
    return funcs[0]


def test_student_edition(tmp_path):
    paths = editions.build_student_edition(tmp_path)
    assert [p.stem for p in paths] == NAMES
    solved = 0
    for path in paths:
        student, solution = nbformat.read(path, as_version=4), _read(path.stem)
        assert not any("solution" in _tags(c) for c in student.cells)
        assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")
        checks = [c for c in student.cells if "check" in _tags(c)]
        assert all("raises-exception" in _tags(c) for c in checks)
        stubs = [c for c in student.cells if "exercise" in _tags(c)]
        answers = [c for c in solution.cells if "solution" in _tags(c)]
        assert len(stubs) == len(answers)
        for stub, answer in zip(stubs, answers):
            assert editions.STUB_MARKER in stub.source
            stub_fn, answer_fn = _defined_function(stub.source), _defined_function(answer.source)
            assert stub_fn.__name__ == answer_fn.__name__
            checker = CHECKERS[answer_fn.__name__]
            checker(answer_fn, quiet=True)                      # the reference solution passes
            with pytest.raises(exercises.ExerciseFailure, match="YOUR CODE HERE"):
                checker(stub_fn, quiet=True)                    # the untouched stub gets the hint
            solved += 1
    assert solved == len(exercises.EXERCISES)


def test_student_edition_refuses_a_solution_without_stub(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def f(): return 1")])
    nb.cells[0].metadata["tags"] = ["solution"]
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "09_x.ipynb")
    with pytest.raises(ValueError, match="exercise stub"):
        editions.build_student_edition(tmp_path / "out", tmp_path / "src")
