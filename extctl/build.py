"""Build a guest's WebAssembly entry from its C sources (``extctl build``).

Projects of ``runtime: "wasm-component@1"`` (Python or JavaScript) are built by
:mod:`extctl.component_build`; everything below is about C guests.

Stages, each raising a typed error:

1. read ``manifest.json`` (``MANIFEST_MISSING`` / ``MANIFEST_INVALID``) for the entry path;
2. list ``src/*.c`` (``BUILD_FAILED`` when there are none);
3. find clang and wasm-ld (``TOOLCHAIN_MISSING``, with how to install them);
4. compile each source to an object, then link them with wasm-ld (``BUILD_FAILED``, with
   the compiler's own messages);
5. check the module against the runtime's ABI, as publishing will (``WASM_INVALID``);
6. move it into place atomically, so a failed build never leaves a broken entry behind.

Guests are freestanding C: no libc, nothing imported but the host's ``ext`` functions.
The build is reproducible: commands run in the project directory with relative source
paths, in sorted order, and the output carries no paths or debug info (only the function names
a trap's backtrace shows), so the same sources and compiler version give the same bytes on any machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from chalicelib.bundles.component import COMPONENT_RUNTIME
from chalicelib.bundles.manifest import Manifest
from chalicelib.bundles.wasm import WasmInspector, check_abi
from chalicelib.errors import BuildFailed, ManifestMissing, ToolchainMissing
from extctl.component_build import build_component

__all__ = [
    "COMPILE_FLAGS",
    "INSTALL_HINT",
    "LINK_FLAGS",
    "BuildResult",
    "Toolchain",
    "build_project",
    "compile_command",
    "find_toolchain",
    "link_command",
]

_SUPPORTED_VERSIONS = range(19, 13, -1)
CLANG_NAMES = ("clang", *(f"clang-{v}" for v in _SUPPORTED_VERSIONS))
WASM_LD_NAMES = ("wasm-ld", *(f"wasm-ld-{v}" for v in _SUPPORTED_VERSIONS))

INSTALL_HINT = (
    "install clang and lld (which provides wasm-ld): `apt-get install clang lld` on Debian/Ubuntu, "
    "`brew install llvm lld` on macOS, then make sure both are on PATH "
    '(Homebrew: `export PATH="$(brew --prefix llvm)/bin:$(brew --prefix lld)/bin:$PATH"`)'
)

COMPILE_FLAGS = (
    "--target=wasm32",
    "-std=c17",
    "-O2",
    # No hosted C library; this also implies -fno-builtin, so the compiler does not
    # assume libc functions exist.  (wasm-ld links no libraries unless told to.)
    "-ffreestanding",
    # memcpy/memset that the compiler itself emits become memory.copy/memory.fill
    # instructions instead of calls to a libc that is not there.
    "-mbulk-memory",
    "-Wall",
    "-Werror",
)
LINK_FLAGS = (
    "--no-entry",  # a library for the host to call, not a program with a main
    # No debug info (paths, machine-specific), but the `name` section stays: a trap's backtrace in the
    # logs then names the guest's functions, for a few hundred bytes.
    "--strip-debug",
    "--stack-first",  # a stack overflow traps instead of silently overwriting static data
)
_TIMEOUT_SECONDS = 120
_OUTPUT_MODE = 0o644


@dataclass(frozen=True)
class Toolchain:
    """The compiler and linker a build uses."""

    clang: Path
    wasm_ld: Path
    version: str
    """First line of ``clang --version``, e.g. ``Debian clang version 14.0.6``."""


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote."""

    output: Path
    size: int
    sha256: str
    """Lowercase hex digest of the output bytes."""
    compiler_version: str
    duration_seconds: float


def find_toolchain() -> Toolchain:
    """Locate clang (with a wasm32 backend) and wasm-ld on PATH, or raise ``TOOLCHAIN_MISSING``."""
    clang = _which_first(CLANG_NAMES)
    wasm_ld = _which_first(WASM_LD_NAMES)
    missing = [name for name, found in (("clang", clang), ("wasm-ld", wasm_ld)) if found is None]
    if clang is None or wasm_ld is None:
        raise ToolchainMissing(f"{' and '.join(missing)} not found on PATH; {INSTALL_HINT}", missing=missing)
    version = _run_tool([str(clang), "--version"]).splitlines()[0].strip()
    if "wasm32" not in _run_tool([str(clang), "-print-targets"]):
        raise ToolchainMissing(
            f"{clang} ({version}) cannot compile to WebAssembly (it has no wasm32 target; "
            f"Apple's clang does not); {INSTALL_HINT}",
            missing=["clang with a wasm32 target"],
        )
    return Toolchain(clang=clang, wasm_ld=wasm_ld, version=version)


def compile_command(toolchain: Toolchain, source: str, obj: str) -> list[str]:
    """The clang command that compiles one ``source`` (relative to the project) to ``obj``."""
    return [str(toolchain.clang), *COMPILE_FLAGS, "-c", source, "-o", obj]


def link_command(toolchain: Toolchain, objects: Sequence[str], output: str) -> list[str]:
    """The wasm-ld command that links ``objects`` (in this order) into ``output``."""
    return [str(toolchain.wasm_ld), *LINK_FLAGS, "-o", output, *objects]


def build_project(project_dir: Path) -> BuildResult:
    """Compile ``project_dir/src/*.c`` into the manifest's entry and return what was written.

    Raises ``MANIFEST_MISSING``/``MANIFEST_INVALID``, ``BUILD_FAILED``, ``TOOLCHAIN_MISSING`` or
    ``WASM_INVALID``; whatever fails, the previous entry file is left as it was.
    """
    started = time.perf_counter()
    project_dir = project_dir.resolve()
    manifest = _read_manifest(project_dir)
    if manifest.runtime == COMPONENT_RUNTIME:
        return _build_component(project_dir, manifest, started)
    sources = _sources(project_dir)
    toolchain = find_toolchain()
    output = project_dir / PurePosixPath(manifest.entry)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    temp = Path(temp_name)
    try:
        _compile_and_link(toolchain, project_dir, sources, temp)
        wasm = temp.read_bytes()
        _check_abi(wasm, manifest.runtime, manifest.entry)
        temp.chmod(_OUTPUT_MODE)
        temp.replace(output)
    finally:
        temp.unlink(missing_ok=True)
    return BuildResult(
        output=output,
        size=len(wasm),
        sha256=hashlib.sha256(wasm).hexdigest(),
        compiler_version=toolchain.version,
        duration_seconds=time.perf_counter() - started,
    )


def _build_component(project_dir: Path, manifest: Manifest, started: float) -> BuildResult:
    built = build_component(project_dir, manifest)
    wasm = built.output.read_bytes()
    return BuildResult(
        output=built.output,
        size=len(wasm),
        sha256=hashlib.sha256(wasm).hexdigest(),
        compiler_version=built.toolchain,
        duration_seconds=time.perf_counter() - started,
    )


def _which_first(names: Sequence[str]) -> Path | None:
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


def _run_tool(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainMissing(f"could not run `{' '.join(command)}`: {exc}; {INSTALL_HINT}") from None
    return done.stdout


def _read_manifest(project_dir: Path) -> Manifest:
    path = project_dir / "manifest.json"
    if not path.is_file():
        raise ManifestMissing(f"{path} not found: a project keeps its manifest.json at its root")
    return Manifest.parse(path.read_bytes())


def _sources(project_dir: Path) -> list[str]:
    sources = sorted(p.relative_to(project_dir).as_posix() for p in (project_dir / "src").glob("*.c"))
    if not sources:
        raise BuildFailed(f"no C sources in {project_dir / 'src'}: the guest's code lives in src/*.c")
    return sources


def _compile_and_link(toolchain: Toolchain, project_dir: Path, sources: list[str], output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="extctl-build-") as objects_dir:
        objects = [str(Path(objects_dir) / f"{PurePosixPath(s).stem}.o") for s in sources]
        for source, obj in zip(sources, objects, strict=True):
            _run_step(compile_command(toolchain, source, obj), project_dir, f"compiling {source}")
        relative_output = output.relative_to(project_dir).as_posix()
        _run_step(link_command(toolchain, objects, relative_output), project_dir, "linking")


def _run_step(command: list[str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"{what} took longer than {_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        raise BuildFailed(f"{what} could not start `{command[0]}`: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        raise BuildFailed(f"{what} failed (exit {done.returncode}):\n{output}", compiler_output=output)


def _check_abi(wasm: bytes, runtime: str, entry: str) -> None:
    """Refuse a module that publishing would refuse, before it replaces the old entry."""
    inspector = WasmInspector()
    inspector.feed(wasm)
    check_abi(inspector.finish(), runtime, entry)
