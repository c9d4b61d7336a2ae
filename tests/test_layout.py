"""The package's architecture, as docs/DESIGN.md draws it: which sub-package may import which, and the
public names of ``import sela_edu``."""

import ast
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
