"""Build a ``wasm-component@1`` guest from Python or JavaScript/TypeScript (``extctl build``).

The language follows the sources: ``src/app.py`` is Python, ``src/main.ts`` or ``src/main.js`` is
JavaScript. Stages, each raising a typed error:

1. find the toolchain (``TOOLCHAIN_MISSING`` naming the install command): componentize-py for Python
   (PyPI); componentize-js and esbuild for JavaScript (npm: the project's ``node_modules``, else the
   platform checkout's ``sdk/js/node_modules``), both pinned and offline once installed;
2. find the WIT world and the SDK: the project's own copies (``wit/``, ``sdk/``, which ``extctl init``
   writes) or else the platform checkout's ``sdk/`` (the examples);
3. build into a temp file (``BUILD_FAILED`` with the tool's own messages): componentize-py against the
   world ``extension-sdk``; for JavaScript, esbuild first bundles ``src/main.*`` with the SDK into one
   ES module (stripping TypeScript types), then componentize-js builds it against the world
   ``extension`` with ``wasi:http`` and the fetch-event handler disabled (so the component does not
   import ``wasi:http``, which the platform refuses);
4. check the component as publishing will (``WASM_INVALID``), then move it into place atomically.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chalicelib.bundles.component import EntryInspector, check_entry
from chalicelib.bundles.manifest import Manifest
from chalicelib.errors import BuildFailed, ToolchainMissing

__all__ = [
    "COMPONENTIZE_JS_VERSION",
    "COMPONENTIZE_PY_VERSION",
    "ESBUILD_VERSION",
    "SDK_DIR",
    "ComponentBuild",
    "build_component",
    "component_language",
]

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
COMPONENTIZE_PY_VERSION = "0.25.1"
COMPONENTIZE_JS_VERSION = "0.23.0"
ESBUILD_VERSION = "0.28.2"
PY_INSTALL_HINT = f"install it with `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`"
JS_INSTALL_HINT = (
    "run `npm install` in the project (its package.json pins "
    f"@bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION} and esbuild@{ESBUILD_VERSION}; "
    "Node.js 18 or newer)"
)
_TIMEOUT_SECONDS = 600
_OUTPUT_MODE = 0o644


@dataclass(frozen=True)
class ComponentBuild:
    """What a component build wrote and with what."""

    output: Path
    language: str
    toolchain: str


def component_language(project_dir: Path) -> str:
    """``python`` or ``js`` from the project's sources; ``BUILD_FAILED`` when there are neither."""
    if (project_dir / "src" / "app.py").is_file():
        return "python"
    if any((project_dir / "src" / name).is_file() for name in ("main.ts", "main.js")):
        return "js"
    raise BuildFailed(
        f"no component sources in {project_dir / 'src'}: Python projects have src/app.py, "
        "JavaScript projects src/main.ts or src/main.js"
    )


def _wit_dir(project_dir: Path) -> Path:
    own = project_dir / "wit"
    return own if own.is_dir() else SDK_DIR / "wit"


def _find_componentize_py() -> Path:
    beside = Path(sys.executable).parent / "componentize-py"
    found = shutil.which("componentize-py") or (str(beside) if beside.is_file() else None)
    if found is None:
        raise ToolchainMissing(f"componentize-py not found; {PY_INSTALL_HINT}", missing=["componentize-py"])
    return Path(found)


def _node_tool(project_dir: Path, name: str) -> Path | None:
    for root in (project_dir, SDK_DIR / "js"):
        candidate = root / "node_modules" / ".bin" / name
        if candidate.is_file():
            return candidate
    return None


def _find_js_tools(project_dir: Path) -> tuple[Path, Path]:
    node = shutil.which("node")
    componentize = _node_tool(project_dir, "componentize-js")
    esbuild = _node_tool(project_dir, "esbuild")
    missing = [n for n, f in (("node", node), ("componentize-js", componentize), ("esbuild", esbuild)) if f is None]
    if componentize is None or esbuild is None or node is None:
        raise ToolchainMissing(f"{' and '.join(missing)} not found; {JS_INSTALL_HINT}", missing=missing)
    return componentize, esbuild


def _run(command: list[str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"{what} took longer than {_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        raise BuildFailed(f"{what} could not start `{command[0]}`: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        raise BuildFailed(f"{what} failed (exit {done.returncode}):\n{output}", compiler_output=output)


def _build_python(project_dir: Path, output: Path) -> str:
    tool = _find_componentize_py()
    sdk = project_dir / "sdk" if (project_dir / "sdk" / "ext_platform").is_dir() else SDK_DIR / "python"
    command = [str(tool), "-d", str(_wit_dir(project_dir)), "-w", "extension-sdk", "componentize"]
    command += ["-p", str(project_dir / "src"), "-p", str(sdk), "app", "-o", str(output)]
    _run(command, project_dir, "componentize-py")
    return f"componentize-py {COMPONENTIZE_PY_VERSION}"


def _build_js(project_dir: Path, output: Path, scratch: Path) -> str:
    componentize, esbuild = _find_js_tools(project_dir)
    source = next(project_dir / "src" / n for n in ("main.ts", "main.js") if (project_dir / "src" / n).is_file())
    sdk = project_dir / "sdk" / "index.js"
    if not sdk.is_file():
        sdk = SDK_DIR / "js" / "index.js"
    bundle = scratch / "app.js"
    _run(
        [
            str(esbuild),
            str(source),
            "--bundle",
            "--format=esm",
            "--platform=neutral",
            "--target=es2022",
            "--log-level=warning",
            "--external:ext:platform/*",
            f"--alias:@ext-platform/sdk={sdk}",
            f"--outfile={bundle}",
        ],
        project_dir,
        "esbuild",
    )
    command = [str(componentize), str(bundle), "-w", str(_wit_dir(project_dir)), "-n", "extension"]
    command += ["-d", "http", "fetch-event", "-o", str(output)]
    _run(command, project_dir, "componentize-js")
    return f"componentize-js {COMPONENTIZE_JS_VERSION}, esbuild {ESBUILD_VERSION}"


def build_component(project_dir: Path, manifest: Manifest) -> ComponentBuild:
    """Build ``project_dir``'s component into the manifest's entry; the old entry stays on any failure."""
    language = component_language(project_dir)
    output = project_dir / manifest.entry
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="extctl-build-") as scratch:
        built = Path(scratch) / "component.wasm"
        if language == "python":
            toolchain = _build_python(project_dir, built)
        else:
            toolchain = _build_js(project_dir, built, Path(scratch))
        _check(built, manifest)
        temp = output.with_name(f".{output.name}.tmp")
        shutil.copyfile(built, temp)
        os.chmod(temp, _OUTPUT_MODE)
        temp.replace(output)
    return ComponentBuild(output=output, language=language, toolchain=toolchain)


def _check(path: Path, manifest: Manifest) -> None:
    """Refuse a component that publishing would refuse, before it replaces the old entry."""
    inspector = EntryInspector()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            inspector.feed(chunk)
    check_entry(inspector.finish(), manifest.runtime, manifest.entry)
