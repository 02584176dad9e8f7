"""The public surface of ``chalicelib``: what each module's ``__all__`` promises, and what others use.

Every module and package declares ``__all__``; every name in it exists; and every name another module
imports from a ``chalicelib`` module is in that module's ``__all__``.  Code outside tests never imports
a ``_private`` name from another module: a helper two modules share is public in one of them.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import chalicelib

ROOT = Path(__file__).resolve().parents[2]
IMPORTERS = ("app.py", "chalicelib", "runner_container", "extctl", "devstack", "bench", "tests")


def _modules() -> list[ModuleType]:
    names = [chalicelib.__name__]
    names += [info.name for info in pkgutil.walk_packages(chalicelib.__path__, prefix="chalicelib.")]
    return [importlib.import_module(name) for name in sorted(names)]


MODULES = _modules()


def _is_submodule(module: str, name: str) -> bool:
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def _sources() -> Iterator[Path]:
    for entry in IMPORTERS:
        path = ROOT / entry
        if path.is_file():
            yield path
        else:
            yield from (p for p in sorted(path.rglob("*.py")) if "fixtures" not in p.relative_to(ROOT).parts)


def _imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line, module, name)`` for every name ``path`` takes from a ``chalicelib`` module: ``from m import
    name``, and ``alias.name`` where ``alias`` is a ``chalicelib`` module imported under another name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "chalicelib":
            for alias in node.names:
                if _is_submodule(node.module, alias.name):
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                else:
                    yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "chalicelib" and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if not _is_submodule(module, node.attr):
                yield node.lineno, module, node.attr


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_every_module_declares_what_it_exports_and_all_of_it_exists(module: ModuleType) -> None:
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list | tuple), f"{module.__name__} has no __all__"
    assert len(set(exported)) == len(exported), f"{module.__name__}.__all__ lists a name twice"
    assert [name for name in exported if name.startswith("_")] == []
    assert [name for name in exported if not hasattr(module, name)] == []


def test_every_name_imported_from_chalicelib_is_in_its_modules_all() -> None:
    outside_all = []
    private = []
    for path in _sources():
        where = path.relative_to(ROOT)
        for line, module, name in _imports(path):
            if name.startswith("_"):
                if where.parts[0] != "tests" and module != where.with_suffix("").as_posix().replace("/", "."):
                    private.append(f"{where}:{line} {module}.{name}")
            elif name not in getattr(importlib.import_module(module), "__all__", ()):
                outside_all.append(f"{where}:{line} {module}.{name}")
    assert outside_all == [], "add these names to their module's __all__ (or stop importing them)"
    assert private == [], "a helper two modules share is public in one of them"
