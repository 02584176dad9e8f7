"""Component benchmarks (``wasm-component@1``), on the Python example built by componentize-py.

- ``component_execute_vs_bare``: warm ``ComponentEngine.execute`` p50 of ``GET /hello`` / a bare
  wasmtime-py "new Store (WASI set) + instantiate + call ``handle``" of the same component (with the
  request records prebuilt). Target ≤ 1.3.
- ``component_body_1mib_ms``: p50 of a 1 MiB request body echoed back by the example through the
  executor (bodies cross over stdio, see ``runner_container/component.py``). Target ≤ 50 ms.
- ``component_cold_ms``: a fresh runner process (``build_service`` from the settings, as Lambda's first
  event does), its first ``execute`` of ``GET /hello`` with the bundle and the compile job's ``.cwasm`` in
  S3 (moto over HTTP): fetch + verify + download + deserialize + instantiate + call. Target ≤ 1,000 ms.
  ``component_cold_cached_ms``: the same with both already in the runner's disk cache (another fresh
  process on the cache dir the first left). Target ≤ 150 ms. Median of three processes each.
- size, build time, compile time (the runner's compile job: a child process under the default limits)
  and its peak RSS: reported.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import wasmtime
from moto.server import ThreadedMotoServer
from wasmtime.component import Linker, Record, Variant

from bench.common import MiB
from chalicelib.bundles.pack import pack_project
from chalicelib.bundles.verify import verify_bundle
from chalicelib.config import load_settings
from chalicelib.storage.s3 import ensure_bucket
from chalicelib.storage.store import BUNDLE_OBJECT, MANIFEST_OBJECT, S3BundleStore
from extctl.build import build_project
from runner_container.compiled_code import CWASM_CONTENT_TYPE
from runner_container.compiler import ArtifactKind, CompileLimits, Compiler
from runner_container.component import ComponentEngine, PreparedComponent
from runner_container.engine import CallLimits, HostServices, WasmEngine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello-python"
LIMITS = CallLimits(timeout_ms=10_000, memory_bytes=128 * MiB, fuel=None, max_response_bytes=4 * MiB)
BUCKET = "bench-components"
COLD_PROCESSES = 3
_FIRST_CALL = """
import json, sys, time
from chalicelib.config import load_settings
from runner_container.service import build_service
service = build_service(load_settings())
started = time.perf_counter()
answer = service.execute(json.loads(sys.argv[1]))
elapsed_ms = (time.perf_counter() - started) * 1000
assert answer.status == 200, answer
print(json.dumps({"ms": elapsed_ms}))
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


def _first_call_ms(env: dict[str, str], payload: dict[str, Any]) -> float:
    """The first ``execute`` of a fresh runner process with ``env``, in milliseconds."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL, json.dumps(payload)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the runner process failed:\n{done.stderr[-4000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["ms"])


def _cold_figures(project: Path, cwasm: Path, scratch: Path) -> dict[str, Any]:
    """``component_cold_ms`` and ``component_cold_cached_ms``: see the module docstring."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "STORAGE_S3_ENDPOINT": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "STORAGE_S3_BUCKET": BUCKET,
            "SIGNING_TRUST_BUNDLE": "",
        }
        settings = load_settings(env)
        # This process's environment stays as it is: the credentials go to this client only.
        client = boto3.client(
            "s3",
            endpoint_url=settings.storage_s3_endpoint,
            region_name=settings.storage_s3_region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        ensure_bucket(client, BUCKET, settings.storage_s3_region)
        store = S3BundleStore.from_settings(settings, client)
        data = pack_project(project, scratch / "bundle.tar.zst").output.read_bytes()
        verified = verify_bundle(io.BytesIO(data))
        content_hash = verified.content_hash
        store.put_immutable(store.object_key(content_hash, BUNDLE_OBJECT), data, "application/zstd")
        store.put_immutable(
            store.object_key(content_hash, MANIFEST_OBJECT), verified.manifest_bytes, "application/json"
        )
        with WasmEngine.from_settings(settings) as engine:
            fingerprint = engine.fingerprint
        with cwasm.open("rb") as body:
            store.put_immutable(store.precompiled_key(content_hash, fingerprint), body, CWASM_CONTENT_TYPE)
        payload = {
            "content_hash": content_hash,
            "extension": verified.manifest.name,
            "granted_capabilities": ["cap:log.emit"],
            "request": _request("hello"),
        }
        cold, cached = [], []
        for index in range(COLD_PROCESSES):
            cache_env = {**env, "RUNNER_CACHE_DIR": str(scratch / f"runner-cache-{index}")}
            cold.append(_first_call_ms(cache_env, payload))
            cached.append(_first_call_ms(cache_env, payload))
        return {
            "component_cold_ms": round(statistics.median(cold), 1),
            "component_cold_cached_ms": round(statistics.median(cached), 1),
            "component_bundle_bytes": len(data),
            "component_cwasm_bytes": cwasm.stat().st_size,
        }
    finally:
        server.stop()


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-components-") as tmp:
        scratch = Path(tmp)
        project = scratch / "hello-python"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("dist", "__pycache__"))
        started = time.perf_counter()
        built = build_project(project).output
        build_s = time.perf_counter() - started
        with WasmEngine() as core:
            # The compile job as the compile function runs it: a child process under the default limits.
            limits = CompileLimits.from_settings(load_settings({}))
            job = Compiler(core.config_settings).run(built, scratch / "job.cwasm", limits, kind=ArtifactKind.COMPONENT)
            assert job is not None and job.artifact is not None and job.peak_rss_bytes is not None, job
            engine = ComponentEngine(core)
            prepared = engine.deserialize_file(job.artifact)
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
        cold = _cold_figures(project, job.artifact, scratch)
        return {
            "component_execute_vs_bare": round(executor_ms / bare_ms, 3),
            "component_execute_ms_p50": round(executor_ms, 2),
            "component_bare_ms_p50": round(bare_ms, 2),
            "component_body_1mib_ms": round(body_ms, 2),
            "component_size_bytes": built.stat().st_size,
            "component_build_s": round(build_s, 1),
            "component_compile_s": round(job.wall_s, 1),
            "component_compile_peak_rss_mib": round(job.peak_rss_bytes / MiB, 1),
            **cold,
        }
