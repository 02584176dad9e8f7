"""Component benchmarks (``wasm-component@1``), on the Python example built by componentize-py.

- ``component_execute_vs_bare``: warm ``ComponentEngine.execute`` p50 of ``GET /hello`` / a bare
  wasmtime-py "new Store (WASI set) + instantiate + call ``handle``" of the same component (with the
  request records prebuilt). Target ≤ 1.3.
- ``component_body_1mib_ms``: p50 of a 1 MiB request body echoed back by the example through the
  executor (bodies cross over stdio, see ``runner_container/component.py``). Target ≤ 50 ms.
- size, build time, compile time and compile peak RSS of the component: reported.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime.component import Linker, Record, Variant

from bench.common import MiB, child_peak_rss_mib
from extctl.build import build_project
from runner_container.component import ComponentEngine, PreparedComponent
from runner_container.engine import CallLimits, HostServices, WasmEngine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello-python"
LIMITS = CallLimits(timeout_ms=10_000, memory_bytes=128 * MiB, fuel=None, max_response_bytes=4 * MiB)
_COMPILE = """
import json, sys, time, wasmtime
from wasmtime.component import Component
config = wasmtime.Config(); config.epoch_interruption = True
started = time.perf_counter(); Component(wasmtime.Engine(config), open(sys.argv[1], "rb").read())
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def _request(handler: str, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    return {
        "context": {"request_id": "bench", "tenant_id": "dev", "extension_id": "com.example.hello-python"},
        "endpoint": {"method": method, "path": f"/{handler}", "handler": handler, "params": {}},
        "http": {
            "method": method,
            "path": f"/{handler}",
            "query": {"name": "bench"},
            "headers": {"content-type": "application/octet-stream"},
            "body_b64": base64.b64encode(body).decode() if body else None,
        },
    }


def _p50_ms(samples: int, func: Any) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def _bare_linker(engine: ComponentEngine) -> Linker:
    """WASI plus no-op ext:platform functions: what any host of the world must link at least."""
    linker = Linker(engine.engine)
    linker.add_wasip2()
    denied = Variant("denied")
    functions: dict[str, dict[str, Any]] = {
        "log": {"emit": lambda _store, _level, _message: None},
        "http": {"fetch": lambda _store, _request: Variant("denied", "bare")},
        "kv": {
            "get": lambda *_: denied,
            "set": lambda *_: denied,
            "delete": lambda *_: denied,
            "list-keys": lambda *_: denied,
        },
        "secrets": {"get": lambda *_: denied},
    }
    with linker.root() as root:
        for interface, members in functions.items():
            with root.add_instance(f"ext:platform/{interface}@1.0.0") as instance:
                for name, function in members.items():
                    instance.add_func(name, function)
    return linker


def _record(**fields: Any) -> Record:
    """A WIT record: wasmtime-py reads its fields by their kebab-case names."""
    record = Record()
    for name, value in fields.items():
        setattr(record, name.replace("_", "-"), value)
    return record


def _bare(engine: ComponentEngine, prepared: PreparedComponent) -> Any:
    linker = _bare_linker(engine)
    ctx = _record(
        request_id="bench",
        tenant_id="dev",
        extension_id="",
        install_id="",
        version="",
        content_hash="",
        config="{}",
        user=None,
    )
    endpoint = _record(method="GET", path="/hello", handler="hello", params=[])
    req = _record(method="GET", path="/hello", query=[("name", "bench")], headers=[], body=b"", endpoint=endpoint)

    def call() -> object:
        store = wasmtime.Store(engine.engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(1000)
        instance: Any = Linker.instantiate(linker, store, prepared.component)
        result = instance.get_func(store, "handle")(store, ctx, req)
        store.close()
        return result

    return call


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-components-") as scratch:
        project = Path(scratch) / "hello-python"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("dist", "__pycache__"))
        started = time.perf_counter()
        built = build_project(project).output
        build_s = time.perf_counter() - started
        compile_rss, compiled = child_peak_rss_mib(_COMPILE, str(built))
        with WasmEngine() as core:
            engine = ComponentEngine(core)
            prepared = engine.compile(built.read_bytes())
            hello = _request("hello")
            for _ in range(5):
                engine.execute(prepared, hello, LIMITS, HostServices())
            executor_ms = _p50_ms(100, lambda: engine.execute(prepared, hello, LIMITS, HostServices()))
            bare = _bare(engine, prepared)
            for _ in range(5):
                bare()
            bare_ms = _p50_ms(100, bare)
            echo = _request("echo", "POST", os.urandom(MiB))
            body_ms = _p50_ms(20, lambda: engine.execute(prepared, echo, LIMITS, HostServices()))
        return {
            "component_execute_vs_bare": round(executor_ms / bare_ms, 3),
            "component_execute_ms_p50": round(executor_ms, 2),
            "component_bare_ms_p50": round(bare_ms, 2),
            "component_body_1mib_ms": round(body_ms, 2),
            "component_size_bytes": built.stat().st_size,
            "component_build_s": round(build_s, 1),
            "component_compile_s": round(float(str(compiled["seconds"])), 1),
            "component_compile_peak_rss_mib": round(compile_rss, 1),
        }
