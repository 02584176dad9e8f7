"""Runner and gateway benchmarks on the local stack (moto, the Chalice app, the runner).

- ``execute_vs_bare``: warm ``RunnerService.execute`` p50 / a bare wasmtime-py call of
  the same guest (encode the request, new Store, instantiate, alloc + write + handler,
  read and decode the response).
- ``cold_cwasm_vs_compile``: compiling a ≥ 5 MB module / fetching its stored
  ``.cwasm`` from S3 and deserializing it (what a cold runner does instead).
- ``gateway_added_ms_p50``: p50 of a call through the API gateway minus p50 of the
  same call made straight to the runner's ``/v1/execute``.
"""

from __future__ import annotations

import json
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import requests
import wasmtime

from bench.common import MiB
from chalicelib.bundles.pack import pack_project
from chalicelib.config import Settings, load_settings
from chalicelib.storage.s3 import make_s3_client
from chalicelib.storage.store import S3BundleStore
from extctl.localstack import LocalStack, StackUrls
from extctl.scaffold import TEMPLATE
from runner_container.cache import BundleCache
from runner_container.egress import EgressPolicy
from runner_container.engine import WasmEngine
from runner_container.service import RunnerService

_REQUEST: dict[str, Any] = {
    "context": {
        "request_id": "bench",
        "tenant_id": "dev",
        "extension_id": "com.example.hello",
        "install_id": "i",
        "version": "1.0.0",
        "content_hash": "",
        "config": {},
    },
    "endpoint": {"method": "GET", "path": "/hello", "handler": "hello", "params": {}},
    "http": {
        "method": "GET",
        "path": "/hello",
        "query": {"name": "bench"},
        "query_string": "name=bench",
        "headers": {},
        "body_b64": None,
    },
}


def _runner(settings: Settings) -> tuple[RunnerService, WasmEngine, S3BundleStore]:
    engine = WasmEngine.from_settings(settings)
    store = S3BundleStore.from_settings(settings, make_s3_client(settings))
    service = RunnerService(
        BundleCache(store, engine, settings, None), engine, settings, EgressPolicy.from_settings(settings)
    )
    return service, engine, store


def _p50(samples: int, func: Callable[[], object]) -> float:
    for _ in range(20):
        func()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bare_call(engine: wasmtime.Engine, module: wasmtime.Module, request: dict[str, Any]) -> Callable[[], object]:
    """The least any host does for one call: encode the request, a new Store, instantiate,
    alloc + write + handler, read and decode the response."""
    linker = wasmtime.Linker(engine)
    linker.define_func("ext", "log", wasmtime.FuncType([wasmtime.ValType.i32()] * 3, []), lambda *_: None)

    def call() -> object:
        encoded = json.dumps(request).encode()
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1_000_000)
        instance = linker.instantiate(store, module)
        exports = instance.exports(store)
        memory = cast(wasmtime.Memory, exports["memory"])
        alloc, handler = cast(wasmtime.Func, exports["alloc"]), cast(wasmtime.Func, exports["handler"])
        pointer = alloc(store, len(encoded))
        memory.write(store, encoded, pointer)
        out = alloc(store, 8)
        handler(store, pointer, len(encoded), out)
        response_pointer, length = struct.unpack("<ii", memory.read(store, out, out + 8))
        return json.loads(bytes(memory.read(store, response_pointer, response_pointer + length)))

    return call


def _big_module(functions: int = 15000) -> bytes:
    body = " ".join("(i32.add (local.get 0) (i32.const {n}))".replace("{n}", str(k)) for k in range(60))
    funcs = "\n".join(
        f"(func $f{i} (param i32) (result i32) (local.set 0 (i32.mul (local.get 0) (i32.const {i + 3}))) "
        f"{body} " + "(drop) " * 59 + ")"
        for i in range(functions)
    )
    wat = f"""(module (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) i32.const 1024)
      (func (export "handler") (param i32 i32 i32) (result i32) i32.const 1)
      {funcs})"""
    return bytes(wasmtime.wat2wasm(wat))


def _publish(urls: StackUrls, project: Path, work: Path) -> str:
    from extctl.api import ApiClient
    from extctl.publish import publish_bundle

    bundle = pack_project(project, work / f"{project.name}.tar.zst").output
    api = ApiClient(urls.api, urls.token)
    result = publish_bundle(api, bundle).result
    api.post("/installs", {"extension": result["extension"], "version": result["version"]})
    return str(result["content_hash"])


def _cold_vs_compile(urls: StackUrls, work: Path) -> dict[str, Any]:
    module_bytes = _big_module()
    project = work / "big"
    (project / "dist").mkdir(parents=True)
    (project / "dist" / "main.wasm").write_bytes(module_bytes)
    manifest = {
        "name": "com.bench.big",
        "publisher": "Bench",
        "version": "1.0.0",
        "runtime": "wasm-core@1",
        "api": {"endpoints": [{"method": "GET", "path": "/x", "handler": "x"}]},
    }
    (project / "manifest.json").write_text(json.dumps(manifest))
    content_hash = _publish(urls, project, work)
    service, engine, store = _runner(load_settings().replace(runner_cache_dir=str(work / "cold-cache")))
    start = time.perf_counter()
    engine.compile(module_bytes)
    compile_s = time.perf_counter() - start
    service.precompile(content_hash)
    key = store.precompiled_key(content_hash, engine.fingerprint)
    target = work / "fetched.cwasm"

    def cold() -> None:
        stream = store.open_stream(key)
        with target.open("wb") as out:
            while chunk := stream.read(MiB):
                out.write(chunk)
        stream.close()
        engine.deserialize_file(target)

    cold_s = min(_timed(cold) for _ in range(3))
    return {
        "cold_cwasm_vs_compile": round(compile_s / cold_s, 1),
        "compile_seconds": round(compile_s, 3),
        "cold_cwasm_seconds": round(cold_s, 4),
        "module_mib": round(len(module_bytes) / MiB, 2),
    }


def _timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        work = Path(tmp)
        stack = LocalStack(port=0, cache_dir=work / "cache", extra_env={"EXT_GATEWAY_RATE_LIMIT_PER_MINUTE": "0"})
        urls = stack.start()
        try:
            content_hash = _publish(urls, TEMPLATE, work)
            request = {**_REQUEST, "context": {**_REQUEST["context"], "content_hash": content_hash}}
            payload = {
                "content_hash": content_hash,
                "extension": "com.example.hello",
                "granted_capabilities": ["cap:log.emit"],
                "request": request,
            }
            settings = load_settings().replace(runner_cache_dir=str(work / "inproc-cache"))
            service, wasm_engine, _ = _runner(settings)
            warm = _p50(300, lambda: service.execute(payload))
            engine = wasm_engine.engine
            module = wasmtime.Module(engine, (TEMPLATE / "dist" / "main.wasm").read_bytes())
            bare = _p50(300, _bare_call(engine, module, request))

            session = requests.Session()
            runner_headers = {"Authorization": f"Bearer {settings.runner_auth_token}"}
            gateway_headers = {"Authorization": f"Bearer {urls.token}"}
            direct = _p50(
                200,
                lambda: session.post(
                    f"{urls.runner}/v1/execute", json=payload, headers=runner_headers, timeout=30
                ).raise_for_status(),
            )
            through = _p50(
                200,
                lambda: session.get(
                    f"{urls.api}/api/ext/com.example.hello/hello?name=bench", headers=gateway_headers, timeout=30
                ).raise_for_status(),
            )
            results = {
                "execute_vs_bare": round(warm / bare, 3),
                "execute_p50_us": round(warm * 1e6, 1),
                "bare_p50_us": round(bare * 1e6, 1),
                "gateway_added_ms_p50": round((through - direct) * 1000, 2),
                "gateway_p50_ms": round(through * 1000, 2),
                "runner_direct_p50_ms": round(direct * 1000, 2),
            }
            results.update(_cold_vs_compile(urls, work))
            return results
        finally:
            stack.stop()
