"""The Extism Python host (PyPI ``extism``) running the hello example, as a peer for the runner benchmark.

The plug-in is built here from ``examples/hello/src`` plus ``bench/extism_hello/shim.c`` with the same clang
flags ``extctl build`` uses, so it does the same JSON work as the runner's guest. Two modes:

- ``fresh``: a new ``Plugin`` from one ``CompiledPlugin`` per call (a fresh instance: the runner's isolation);
- ``reuse``: one ``Plugin`` for every call (Extism's default; guest memory and globals carry over).

Each call encodes the request JSON, calls ``handle`` and decodes the response JSON, as the runner does.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extctl.build import COMPILE_FLAGS, LINK_FLAGS, find_toolchain

__all__ = ["build_plugin", "extism_calls"]

ROOT = Path(__file__).resolve().parent.parent
HELLO_SOURCES = ROOT / "examples" / "hello" / "src"
SHIM = Path(__file__).resolve().parent / "extism_hello" / "shim.c"


def build_plugin() -> bytes:
    """The hello plug-in for Extism (raises ``TOOLCHAIN_MISSING`` without clang and wasm-ld)."""
    toolchain = find_toolchain()
    with tempfile.TemporaryDirectory(prefix="bench-extism-") as tmp:
        objects = []
        for source in [*sorted(HELLO_SOURCES.glob("*.c")), SHIM]:
            obj = Path(tmp) / f"{source.stem}.o"
            command = [str(toolchain.clang), *COMPILE_FLAGS, f"-I{HELLO_SOURCES}", "-c", str(source), "-o", str(obj)]
            subprocess.run(command, check=True, capture_output=True)
            objects.append(str(obj))
        output = Path(tmp) / "plugin.wasm"
        subprocess.run([str(toolchain.wasm_ld), *LINK_FLAGS, "-o", str(output), *objects], check=True)
        return output.read_bytes()


def extism_calls(wasm: bytes, request: dict[str, Any]) -> dict[str, Callable[[], object]]:
    """``{"fresh": call, "reuse": call}``: one hello call each, in the two modes above."""
    import extism
    from extism.extism import CompiledPlugin  # documented in its docstring, not re-exported by the package

    compiled = CompiledPlugin(wasm, functions=[])
    kept = extism.Plugin(compiled, functions=[])

    def fresh() -> object:
        plugin = extism.Plugin(compiled, functions=[])
        return json.loads(plugin.call("handle", json.dumps(request)))

    def reuse() -> object:
        return json.loads(kept.call("handle", json.dumps(request)))

    return {"fresh": fresh, "reuse": reuse}
