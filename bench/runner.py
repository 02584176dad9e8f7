"""Runner and gateway benchmarks on the local stack (moto, the Chalice app, the runner).

The hello guest's warm call (``RunnerService.execute``: every call starts from the post-instantiation
state) is measured against peers in interleaved rounds (``ROUNDS`` × ``PER_ROUND`` calls each, p50 and
p99 of all of them), each with its isolation stated in ``isolation``:

- ``execute_vs_bare``: against a bare wasmtime-py call of the same guest (encode the request, new
  Store, instantiate, alloc + write + handler, read and decode the response);
- ``execute_vs_extism_fresh``: against the Extism Python host running the same guest code as a
  plug-in with a fresh ``Plugin`` per call (:mod:`bench.extism_peer`);
- ``execute_vs_extism_reuse``: against Extism keeping one ``Plugin`` for every call (its default,
  which shares guest memory between calls).
- ``cold_cwasm_vs_compile``: compiling a ≥ 5 MB module / fetching its stored
  ``.cwasm`` from S3 and deserializing it (what a cold runner does instead).
- ``compile_job_*``: the bounded compile job (a child process under the default
  limits, ``runner_container/compiler.py``) on the same module: wall and CPU
  seconds, and the child's peak RSS.
- ``gateway_added_ms_p50``: p50 of a call through the API gateway minus p50 of the
  same call made straight to the runner's ``/v1/execute``, with the DynamoDB-backed
  limits off (the rate limit, the tenant cap); ``tenant_slot_ms_p50`` is what the
  tenant cap adds to each call when it is on (the default): taking and giving back a
  slot, two DynamoDB writes, here to moto.
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
from bench.extism_peer import build_plugin, extism_calls
from chalicelib.bundles.pack import pack_project
from chalicelib.config import Settings, load_settings
from chalicelib.storage.s3 import make_s3_client
from chalicelib.storage.store import S3BundleStore
from devstack.stack import LocalStack, StackConfig, StackUrls
from extctl.scaffold import TEMPLATE
from runner_container.cache import BundleCache
from runner_container.compiler import CompileLimits, Compiler
from runner_container.egress import EgressPolicy
from runner_container.engine import WasmEngine
from runner_container.service import RunnerService

HELLO_REQUEST: dict[str, Any] = {
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


ROUNDS = 10
PER_ROUND = 300
ISOLATION = {
    "execute": "post-instantiation state every call (kept instance restored from its snapshot)",
    "execute_unlogged": "the same, without cap:log.emit (the guest's log line is not written)",
    "bare": "fresh wasmtime instance per call",
    "extism_fresh": "fresh Extism Plugin per call",
    "extism_reuse": "one Extism Plugin for all calls: guest memory and globals carry over",
}


def _interleaved(calls: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Per-call times of each of ``calls``, measured in alternating rounds so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(50):
            call()
    for _ in range(ROUNDS):
        for name, call in calls.items():
            samples = times[name]
            for _ in range(PER_ROUND):
                start = time.perf_counter()
                call()
                samples.append(time.perf_counter() - start)
    return times


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _peers(engine: wasmtime.Engine, request: dict[str, Any]) -> tuple[dict[str, Callable[[], object]], str | None]:
    """The bare wasmtime call and, when Extism and clang are here, the two Extism calls (else why not)."""
    module = wasmtime.Module(engine, (TEMPLATE / "dist" / "main.wasm").read_bytes())
    peers: dict[str, Callable[[], object]] = {"bare": bare_call(engine, module, request)}
    try:
        extism = extism_calls(build_plugin(), request)
    except Exception as exc:  # ImportError without the package, ExtError without clang: report, don't fail
        return peers, f"{type(exc).__name__}: {exc}"
    peers.update({"extism_fresh": extism["fresh"], "extism_reuse": extism["reuse"]})
    return peers, None


def _call_figures(
    execute: Callable[[], object], unlogged: Callable[[], object], engine: wasmtime.Engine, request: dict[str, Any]
) -> dict[str, Any]:
    peers, missing = _peers(engine, request)
    times = _interleaved({"execute": execute, "execute_unlogged": unlogged, **peers})
    p50 = {name: statistics.median(samples) for name, samples in times.items()}
    figures: dict[str, Any] = {f"execute_vs_{name}": round(p50["execute"] / p50[name], 3) for name in peers}
    figures.update(
        {
            "execute_p50_us": round(p50["execute"] * 1e6, 1),
            "execute_p99_us": round(_percentile(times["execute"], 0.99) * 1e6, 1),
            **{f"{name}_p50_us": round(p50[name] * 1e6, 1) for name in peers},
            **{f"{name}_p99_us": round(_percentile(times[name], 0.99) * 1e6, 1) for name in peers},
            "log_line_us": round((p50["execute"] - p50["execute_unlogged"]) * 1e6, 1),
            "calls_per_side": ROUNDS * PER_ROUND,
            "isolation": {name: ISOLATION[name] for name in ("execute", "execute_unlogged", *peers)},
        }
    )
    if missing is not None:
        figures["extism"] = f"not measured: {missing}"
    return figures


def _p50(samples: int, func: Callable[[], object]) -> float:
    for _ in range(20):
        func()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_call(engine: wasmtime.Engine, module: wasmtime.Module, request: dict[str, Any]) -> Callable[[], object]:
    """The least any host does for one call: encode the request, a new Store, instantiate,
    alloc + write + handler, read and decode the response."""
    linker = wasmtime.Linker(engine)
    # The example also imports what its other endpoints use (ext.kv, ext.http_fetch, …); the measured
    # endpoint calls none of them but ext.log, so each is a stub answering zeros.
    for imported in module.imports:
        kind = imported.type
        if isinstance(kind, wasmtime.FuncType):
            zeros = tuple(0 for _ in kind.results)
            answer = None if not zeros else zeros[0] if len(zeros) == 1 else zeros
            linker.define_func(imported.module, str(imported.name), kind, lambda *_, answer=answer: answer)

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


def _cold_vs_compile(urls: StackUrls, settings: Settings, work: Path) -> dict[str, Any]:
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
    service, engine, store = _runner(settings.replace(runner_cache_dir=str(work / "cold-cache")))
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
        **_compile_job(engine, project / "dist" / "main.wasm", work),
    }


def _compile_job(engine: WasmEngine, wasm: Path, work: Path) -> dict[str, Any]:
    """One compile job as the compile function runs it: a child process under the default limits."""
    limits = CompileLimits.from_settings(load_settings())
    result = Compiler(engine.config_settings).run(wasm, work / "job.cwasm", limits)
    assert result is not None and result.failure is None and result.peak_rss_bytes is not None, result
    assert result.cpu_s is not None
    return {
        "compile_job_seconds": round(result.wall_s, 3),
        "compile_job_cpu_seconds": round(result.cpu_s, 3),
        "compile_job_peak_rss_mib": round(result.peak_rss_bytes / MiB, 1),
        "compile_job_limits": {"memory_mib": limits.memory_bytes // MiB, "timeout_s": limits.timeout_s},
    }


def _tenant_slot() -> None:
    """Take and give back one of a tenant's call slots, as the gateway does around each runner call."""
    import app as app_module

    default_cap = load_settings({}).ext_gateway_tenant_concurrency
    with app_module.services().concurrency.slot("bench", default_cap, 15.0):
        pass


def _timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        work = Path(tmp)
        limits_off = {"EXT_GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "EXT_GATEWAY_TENANT_CONCURRENCY": "0"}
        stack = LocalStack(StackConfig(cache_dir=work / "cache", settings=limits_off))
        urls = stack.start()
        try:
            content_hash = _publish(urls, TEMPLATE, work)
            request = {**HELLO_REQUEST, "context": {**HELLO_REQUEST["context"], "content_hash": content_hash}}
            payload = {
                "content_hash": content_hash,
                "extension": "com.example.hello",
                "granted_capabilities": ["cap:log.emit"],
                "request": request,
            }
            settings = stack.settings.replace(runner_cache_dir=str(work / "inproc-cache"))
            service, wasm_engine, _ = _runner(settings)
            service.execute(payload)  # fetches, verifies and compiles the bundle while the stack is up
            results = _gateway_figures(urls, settings, payload)
            results.update(_rate_limited_figures(urls, stack.settings, results["gateway_p50_ms"]))
            results["tenant_slot_ms_p50"] = round(_p50(200, _tenant_slot) * 1000, 2)
            results.update(_cold_vs_compile(urls, stack.settings, work))
        finally:
            stack.stop()
        # The stack's servers and pump run in this process: with them stopped they no longer compete for
        # the GIL with the calls measured below, which need nothing from them once the bundle is cached.
        unlogged = {**payload, "granted_capabilities": []}
        calls = _call_figures(
            lambda: service.execute(payload), lambda: service.execute(unlogged), wasm_engine.engine, request
        )
        wasm_engine.close()
        return {**calls, **results}


def _rate_limited_figures(urls: StackUrls, settings: Settings, success_ms: float) -> dict[str, Any]:
    """A refused call (429) through the gateway against a successful one: the limiter answers a refusal
    from memory, so it must cost less than a call that runs the extension."""
    import app as app_module

    app_module.use_settings(settings.replace(ext_gateway_rate_limit_per_minute=1))
    session = requests.Session()
    url = f"{urls.api}/api/ext/com.example.hello/hello?name=bench"
    headers = {"Authorization": f"Bearer {urls.token}"}

    def refused() -> None:
        assert session.get(url, headers=headers, timeout=30).status_code == 429

    session.get(url, headers=headers, timeout=30)  # the window's one admitted call
    refused_ms = _p50(200, refused) * 1000
    app_module.use_settings(settings)
    return {"gateway_429_p50_ms": round(refused_ms, 2), "gateway_429_vs_success": round(refused_ms / success_ms, 2)}


def _gateway_figures(urls: StackUrls, settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
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
    return {
        "gateway_added_ms_p50": round((through - direct) * 1000, 2),
        "gateway_p50_ms": round(through * 1000, 2),
        "runner_direct_p50_ms": round(direct * 1000, 2),
    }
