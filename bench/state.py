"""Extension state against a local moto server: what the KV and secrets services add to DynamoDB.

- ``kv_get_ms_p50`` / ``kv_set_ms_p50``: one ``ext.kv`` get / set as a guest sees it, from inside a real
  guest on the runner's engine (the C test guest ``tests/fixtures/c/state-proxy``, built with clang): the
  median over calls of a call's duration divided by its 100 operations (a call's own cost, a few tens of
  microseconds, is spread over them). The set is a counter's: the same key, a value of the same size.
- ``kv_overhead_vs_get_item`` (DESIGN target ≤ 1.5): that guest get against a bare boto3 ``get_item``
  (consistent, like the service's) of the same item in the same table, measured alternately.
- ``kv_service_get_vs_get_item``: ``KvService.get`` alone against the same ``get_item``;
  ``kv_service_set_ms_p50``: the service's set with values of changing size (a transaction each).
- ``secret_get_cached_vs_get_item``: ``SecretReader.get`` of a cached secret (one GetItem, no KMS)
  against a bare ``get_item`` of its row.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from chalicelib.bundles.manifest import SecretSpec
from chalicelib.config import load_settings
from chalicelib.kv import KvService, create_kv_table, make_kv_models
from chalicelib.secrets import (
    PutSecretRequest,
    SecretReader,
    SecretsService,
    create_secrets_table,
    ensure_secrets_key,
    make_secret_model,
)
from chalicelib.tenancy import InstallScope
from extctl.build import build_project
from runner_container.engine import CallLimits, HostServices, WasmEngine
from runner_container.state import StateServices

CALLS = 300
GUEST_CALLS = 30
OPS_PER_CALL = 100
ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "tests" / "fixtures" / "c" / "state-proxy"
HELLO_SOURCES = ROOT / "examples" / "hello" / "src"


def _p50_ms(calls: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _interleaved(calls: int, first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """Median ms of each, alternating calls so both see the same machine load."""
    a, b = [], []
    for _ in range(calls):
        start = time.perf_counter()
        first()
        a.append(time.perf_counter() - start)
        start = time.perf_counter()
        second()
        b.append(time.perf_counter() - start)
    return statistics.median(a) * 1000, statistics.median(b) * 1000


def run() -> dict[str, Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {name: os.environ.get(name) for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(
        {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    )
    try:
        return _measure()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def _measure() -> dict[str, Any]:
    settings = load_settings({"KV_TABLE_NAME": "bench-kv", "SECRETS_TABLE_NAME": "bench-secrets"})
    region = settings.storage_s3_region
    dynamodb = boto3.client("dynamodb", region_name=region)
    scope = InstallScope("bench", "com.acme.bench")

    models = make_kv_models(settings)
    create_kv_table(models)
    kv = KvService(models)
    kv.set(scope, "counter", b"0" * 64)
    key = {"ns": {"S": scope.key}, "key": {"S": "counter"}}
    service_ms, bare_ms = _interleaved(
        CALLS,
        lambda: kv.get(scope, "counter"),
        lambda: dynamodb.get_item(TableName=settings.kv_table_name, Key=key, ConsistentRead=True),
    )
    counter = iter(range(10**9))

    def set_one() -> None:
        # 50 keys, values of changing size: most sets are transactions, as a real extension's would be.
        index = next(counter)
        kv.set(scope, f"k{index % 50}", b"v" * (index % 97))

    service_set_ms = _p50_ms(CALLS // 3, set_one)
    guest = _guest_kv(
        settings, kv, scope, lambda: dynamodb.get_item(TableName=settings.kv_table_name, Key=key, ConsistentRead=True)
    )

    model = make_secret_model(settings)
    create_secrets_table(model)
    kms = boto3.client("kms", region_name=region)
    alias = "alias/bench-secrets"
    ensure_secrets_key(kms, alias)
    SecretsService(model, kms, alias).put(
        scope, "API_KEY", PutSecretRequest.parse({"value": "x" * 40}), (SecretSpec("API_KEY"),)
    )
    reader = SecretReader(model, kms)
    reader.get(scope, "API_KEY")
    row = {"ns": {"S": scope.key}, "name": {"S": "API_KEY"}}
    secret_ms, secret_bare_ms = _interleaved(
        CALLS,
        lambda: reader.get(scope, "API_KEY"),
        lambda: dynamodb.get_item(TableName=settings.secrets_table_name, Key=row, ConsistentRead=True),
    )
    return {
        **guest,
        "kv_service_get_ms_p50": round(service_ms, 3),
        "kv_service_set_ms_p50": round(service_set_ms, 3),
        "get_item_ms_p50": round(bare_ms, 3),
        "kv_service_get_vs_get_item": round(service_ms / bare_ms, 3),
        "secret_get_cached_ms_p50": round(secret_ms, 3),
        "secret_get_cached_vs_get_item": round(secret_ms / secret_bare_ms, 3),
    }


def _build_proxy() -> bytes:
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        project = Path(tmp) / "state-proxy"
        shutil.copytree(PROXY, project)
        for name in ("ext", "json", "base64"):
            for suffix in (".c", ".h"):
                shutil.copy(HELLO_SOURCES / f"{name}{suffix}", project / "src")
        return build_project(project).output.read_bytes()


def _proxy_request(kv_request: dict[str, Any]) -> dict[str, Any]:
    query = {"fn": "kv", "arg": json.dumps(kv_request), "times": str(OPS_PER_CALL)}
    return {
        "context": {"request_id": "bench", "tenant_id": "bench", "extension_id": "com.acme.bench"},
        "endpoint": None,
        "http": {"method": "GET", "path": "/proxy", "query": query, "headers": {}, "body_b64": None},
    }


def _guest_kv(settings: Any, kv: KvService, scope: InstallScope, bare_get: Callable[[], object]) -> dict[str, float]:
    """Per-operation milliseconds of ``ext.kv`` get and set inside a guest, and the get against ``bare_get``."""
    reader = SecretReader(make_secret_model(settings), boto3.client("kms", region_name=settings.storage_s3_region))
    services = StateServices(kv, reader)
    limits = CallLimits(timeout_ms=60_000, memory_bytes=64 * 1024 * 1024, fuel=None, max_response_bytes=1 << 20)
    get = _proxy_request({"op": "get", "key": "counter"})
    put = _proxy_request({"op": "set", "key": "counter", "value_b64": base64.b64encode(b"1" * 64).decode()})
    with WasmEngine() as engine:
        module = engine.compile(_build_proxy())

        def per_op(request: dict[str, Any]) -> float:
            state = services.for_call(scope.tenant, scope.extension, {"cap:storage.kv"}, ())
            host = HostServices(capabilities=frozenset({"cap:storage.kv"}), kv=state.kv)
            result = engine.execute(module, request, limits, host)
            answer = json.loads(result.body)
            if answer["ok"] != OPS_PER_CALL:
                raise RuntimeError(f"the guest's KV operations failed: {answer['last']}")
            return result.duration_ms / OPS_PER_CALL

        per_op(get)
        gets, bares = [], []
        for _ in range(GUEST_CALLS):
            gets.append(per_op(get))
            start = time.perf_counter()
            for _ in range(OPS_PER_CALL):
                bare_get()
            bares.append((time.perf_counter() - start) * 1000 / OPS_PER_CALL)
        sets = [per_op(put) for _ in range(GUEST_CALLS)]
    get_ms, bare_ms, set_ms = statistics.median(gets), statistics.median(bares), statistics.median(sets)
    return {
        "kv_get_ms_p50": round(get_ms, 3),
        "kv_set_ms_p50": round(set_ms, 3),
        "kv_overhead_vs_get_item": round(get_ms / bare_ms, 3),
    }
