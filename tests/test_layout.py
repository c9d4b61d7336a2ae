"""The package's architecture, as docs/DESIGN.md draws it: which sub-package may import which, and the
public names of ``import sela_edu``."""

import ast
import re
from pathlib import Path

import pytest

import sela_edu

PACKAGE = Path(sela_edu.__file__).parent

#: what each part of the kit may import from the rest of it (besides itself); docs/DESIGN.md, "Rules"
ALLOWED = {
    "settings": set(),
    "files": set(),
    "paper": set(),
    "ot": set(),
    "models": set(),
    "labelling": set(),
    "data": {"settings"},
    "evaluation": {"settings", "data", "models", "labelling"},
    "training": {"settings", "files", "data", "models", "labelling", "evaluation"},
    "apps": {"settings", "files", "paper", "data", "models", "labelling", "evaluation", "training"},
    "course": {"settings", "files", "paper", "data", "models", "labelling", "evaluation", "training", "ot"},
    "cli": {"settings", "files", "paper", "data", "models", "labelling", "evaluation", "training", "ot", "apps",
            "course"},
    "__main__": {"cli"},
    "__init__": set(),          # the public names load lazily, by name (importlib)
}


def mapped_modules(design: str) -> set[str]:
    """The modules docs/DESIGN.md's map table names: the first cell of each row, as in
    ``labelling/solve.py``, ``checks.py`` (a bare name is in the first one's folder) or ``labelling/_kernels/``
    (a whole folder)."""
    section = design.split("## The map", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        items = re.findall(r"`([^`]+)`", row.split("|")[1])
        folder = items[0].rsplit("/", 1)[0] + "/" if "/" in items[0] else ""
        named.update(item if "/" in item else folder + item for item in items)
    return named


def unmapped_modules(design: str, package: Path = PACKAGE) -> list[str]:
    """The package's modules (not ``__init__``/``__main__``) that the map table does not name."""
    named = mapped_modules(design)
    folders = tuple(name for name in named if name.endswith("/"))
    modules = (path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py"))
    return sorted(m for m in modules if m not in named and not m.startswith(folders))


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def kit_imports(source: str, package: list[str]) -> set[str]:
    """The parts of the kit a module (source text, in ``package``) imports, relative or absolute, at the
    top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target[:1] != ["sela_edu"]:
                continue
            if len(target) > 1:
                found.add(target[1])
            else:                                   # from sela_edu import X: X is the part
                found.update(a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sela_edu."))
    return found


def _package(path: Path) -> list[str]:
    module = _module(path)
    return module if path.name == "__init__.py" else module[:-1]


def test_rule_reader_sees_relative_and_absolute_imports():
    src = ("from ..training import train\nfrom sela_edu.data import load_dataset\nimport sela_edu.course.series.runner\n"
           "def f():\n    from sela_edu import models\n    from . import _kernels\n    import numpy\n")
    assert kit_imports(src, ["sela_edu", "labelling"]) == {"training", "data", "course", "models", "labelling"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_architecture(path):
    part = _part(path)
    assert part in ALLOWED, f"{part} is not on docs/DESIGN.md's map: add it there and to ALLOWED"
    used = kit_imports(path.read_text(), _package(path)) - {part}
    assert used <= ALLOWED[part], f"{path.relative_to(PACKAGE)} imports {sorted(used - ALLOWED[part])}"


def test_public_names_resolve():
    for name in sela_edu.__all__:
        assert getattr(sela_edu, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sela_edu.nope


def test_map_reader_resolves_bare_names_and_folders(tmp_path):
    design = ("## The map\n\n| module | job | names |\n| --- | --- | --- |\n| `a/b.py`, `c.py` | x | y |\n"
              "| `k/` | x | y |\n| `top.py` | x | y |\n\n## Next\n| `not/here.py` | x | y |\n")
    assert mapped_modules(design) == {"a/b.py", "a/c.py", "k/", "top.py"}
    for name in ("a/b.py", "a/c.py", "a/d.py", "k/deep/e.py", "top.py", "a/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert unmapped_modules(design, tmp_path) == ["a/d.py"]


def test_design_map_names_every_module():
    """docs/DESIGN.md says in one line what each module holds."""
    design = (PACKAGE.parent / "docs" / "DESIGN.md").read_text()
    assert unmapped_modules(design) == [], "add a row for these to docs/DESIGN.md's map table"


#: no module much over 500 lines: past this a module is holding more than one job; split it
MAX_MODULE_LINES = 550


def modules_over(limit: int, package: Path = PACKAGE) -> list[str]:
    """The package's modules longer than ``limit`` lines, as 'path (lines)', longest first."""
    sizes = {path.relative_to(package).as_posix(): len(path.read_text().splitlines())
             for path in package.rglob("*.py")}
    return [f"{name} ({lines})" for name, lines in sorted(sizes.items(), key=lambda item: -item[1]) if lines > limit]


def test_size_rule_names_the_long_modules(tmp_path):
    (tmp_path / "part").mkdir()
    (tmp_path / "short.py").write_text("x = 1\n" * 10)
    (tmp_path / "part" / "long.py").write_text("x = 1\n" * 12)
    assert modules_over(11, tmp_path) == ["part/long.py (12)"]


def test_no_module_is_much_over_500_lines():
    assert modules_over(MAX_MODULE_LINES) == [], f"split these by job (over {MAX_MODULE_LINES} lines)"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``sela_edu/course/ledger/runs.py`` -> ``sela_edu.course.ledger.runs``; a package's ``__init__`` is the package."""
    return ".".join(_module(path) if package == PACKAGE else
                    [package.name, *path.relative_to(package).with_suffix("").parts[:-1 if path.name == "__init__.py" else None]])


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the kit's modules it imports: every import, at the top, inside functions or under TYPE_CHECKING,
    resolved to the module it names (``from pkg import mod`` is ``pkg.mod``; ``from pkg import name`` is
    ``pkg``, its ``__init__``)."""
    root = package.name
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                if target.split(".")[0] != root:
                    continue
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in paths else target)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.split(".")[0] == root)
        graph[name] = {e for e in edges if e in paths and e != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted: an import circle."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_reader_finds_circles_inside_functions_and_packages(tmp_path):
    pkg = tmp_path / "kit"
    (pkg / "sub").mkdir(parents=True)
    files = {"__init__.py": "", "a.py": "from kit import b\n", "b.py": "def f():\n    from kit.sub import c\n",
             "sub/__init__.py": "from .c import x\n", "sub/c.py": "from typing import TYPE_CHECKING\n"
             "if TYPE_CHECKING:\n    from ..a import y\nx = 1\n", "d.py": "from kit.sub import c\nimport kit.a\n"}
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["kit.b"] == {"kit.sub.c"} and graph["kit.sub"] == {"kit.sub.c"}
    assert import_cycles(graph) == [["kit.a", "kit.b", "kit.sub.c"]]
    (pkg / "sub/c.py").write_text("x = 1\n")
    assert import_cycles(import_graph(pkg)) == []


def test_no_import_circle_anywhere():
    """No module imports, however indirectly and however late, a module that imports it."""
    assert import_cycles(import_graph()) == []


#: the course's groups (docs/DESIGN.md): every course module lives in one of them
COURSE_GROUPS = {"series", "teaching", "studies", "views", "ledger"}


def test_course_modules_live_in_their_groups():
    course = PACKAGE / "course"
    loose = sorted(p.name for p in course.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"put these in one of the course's groups {sorted(COURSE_GROUPS)}"
    groups = {p.name for p in course.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert groups == COURSE_GROUPS
