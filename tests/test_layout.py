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
    "ot": set(),
    "models": set(),
    "labelling": set(),
    "data": {"settings"},
    "evaluation": {"settings", "data", "models", "labelling"},
    "training": {"settings", "data", "models", "labelling", "evaluation"},
    "apps": {"settings", "data", "models", "labelling", "evaluation", "training"},
    "course": {"settings", "data", "models", "labelling", "evaluation", "training", "ot"},
    "cli": {"settings", "data", "models", "labelling", "evaluation", "training", "ot", "apps", "course"},
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
    src = ("from ..training import train\nfrom sela_edu.data import load_dataset\nimport sela_edu.course.runner\n"
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
