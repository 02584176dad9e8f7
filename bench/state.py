"""Extension state against a local moto server: what the KV and secrets services add to DynamoDB.

- ``kv_service_get_vs_get_item``: ``KvService.get`` against a bare boto3 ``get_item`` (consistent, like
  the service's) of the same item in the same table; the guest-level ``kv_overhead_vs_get_item`` (DESIGN
  target ≤ 1.5) adds the host call on top, once the runner exposes ``ext.kv``.
- ``kv_get_ms_p50`` / ``kv_set_ms_p50``: the service's own latencies (a set is a read plus a write, a
  transaction when the value's size changes).
- ``secret_get_cached_vs_get_item``: ``SecretReader.get`` of a cached secret (one GetItem, no KMS)
  against a bare ``get_item`` of its row.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
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

CALLS = 300


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

    set_ms = _p50_ms(CALLS // 3, set_one)

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
        "kv_get_ms_p50": round(service_ms, 3),
        "kv_set_ms_p50": round(set_ms, 3),
        "get_item_ms_p50": round(bare_ms, 3),
        "kv_service_get_vs_get_item": round(service_ms / bare_ms, 3),
        "secret_get_cached_ms_p50": round(secret_ms, 3),
        "secret_get_cached_vs_get_item": round(secret_ms / secret_bare_ms, 3),
    }
