"""runner_container's public surface: each module says what it exports, and the rest of the repo uses only that.

As httpx checks its own ``__all__``: every module (but the ``__main__`` entry point) has an ``__all__``, every
name in it exists, and every name another package (app, chalicelib, extctl, bench, infra, tests) imports from
a runner module is in that module's ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import runner_container

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".venv", "node_modules", "runner_container", "build", "dist", "examples", "sdk"}
MODULES = sorted(
    f"runner_container.{info.name}"
    for info in pkgutil.iter_modules(runner_container.__path__)
    if info.name != "__main__"
)


def _imports_from_runner() -> list[tuple[str, str, str]]:
    """(file, module, name) for every ``from runner_container.X import name`` outside the package."""
    found = []
    for path in ROOT.rglob("*.py"):
        if SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runner_container."):
                found += [(str(path.relative_to(ROOT)), str(node.module), alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_what_it_exports_and_has_it(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names {missing}, which {name} does not define"


def test_other_packages_import_only_exported_names() -> None:
    imports = _imports_from_runner()
    assert imports, "the scan found no imports of runner_container: it is looking in the wrong place"
    private = [
        f"{path}: {name} from {module}"
        for path, module, name in imports
        if name not in getattr(importlib.import_module(module), "__all__", ())
        and not isinstance(getattr(importlib.import_module(module), name, None), ModuleType)
    ]
    assert not private, "imported but not in the module's __all__:\n" + "\n".join(private)
