"""The public surface of ``chalicelib.bundles`` and ``chalicelib.gateway`` (as httpx tests its own).

Each package lists its public modules in ``__all__``; each public module lists its public names in its own
``__all__``.  Code outside a package imports only those: the rest is free to move.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chalicelib.bundles", "chalicelib.gateway")
# Code outside the packages: what it imports is what the packages promise.  Tests are left out: unit tests
# of a package's internals may import them.
CALLERS = ("app.py", "chalicelib", "runner_container", "extctl", "bench")


def _public_modules(package: str) -> list[str]:
    names: list[str] = importlib.import_module(package).__all__
    return names


def _sources() -> Iterator[Path]:
    for caller in CALLERS:
        path = ROOT / caller
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None for a plain ``import``, line) of every import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno


def _outside_imports(package: str) -> list[tuple[str, str, str | None]]:
    """(where, module, name) of every import of ``package`` from code outside it."""
    inside = ROOT.joinpath(*package.split("."))
    found = []
    for path in _sources():
        if inside in path.parents:
            continue
        for module, name, line in _imports(path):
            if module == package or module.startswith(package + "."):
                found.append((f"{path.relative_to(ROOT)}:{line}", module, name))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_module_exists_and_lists_names_that_exist(package: str) -> None:
    for name in _public_modules(package):
        module: ModuleType = importlib.import_module(f"{package}.{name}")
        exported: list[str] = module.__all__
        assert exported, f"{module.__name__} exports nothing"
        missing = [item for item in exported if not hasattr(module, item)]
        assert not missing, f"{module.__name__}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_of_the_package_is_public_or_named_private_in_its_docstring(package: str) -> None:
    """A module missing from ``__all__`` is one nothing outside may use; the package's docstring says so."""
    folder = ROOT.joinpath(*package.split("."))
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in folder.glob("*/__init__.py")
    }
    public = set(_public_modules(package))
    assert public <= modules, f"{package}.__all__ names modules that do not exist: {sorted(public - modules)}"
    doc = importlib.import_module(package).__doc__ or ""
    unlisted = [name for name in sorted(modules - public) if f"``{name}``" not in doc]
    assert not unlisted, f"{package}: modules neither public nor described as internal: {unlisted}"


@pytest.mark.parametrize("package", PACKAGES)
def test_code_outside_the_package_imports_only_what_it_exports(package: str) -> None:
    public = set(_public_modules(package))
    wrong = []
    for where, module, name in _outside_imports(package):
        parts = module.removeprefix(package).strip(".").split(".")
        if module == package:
            ok = name in public
        elif len(parts) > 1 or parts[0] not in public:
            ok = False
        else:
            ok = name is None or name in importlib.import_module(module).__all__
        if not ok:
            wrong.append(f"{where}: {module} {name or ''}".strip())
    assert not wrong, "imports of names the package does not export:\n" + "\n".join(wrong)
