"""Builders shared by the runner's integration tests: moto S3, bundles published as the platform would,
signing keys, counting store and engine wrappers, and execute payloads.

These are plain functions and context managers; ``tests/integration/runner/conftest.py`` wraps the
common ones in fixtures.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from moto import mock_aws

from chalicelib.bundles.pack import pack_project
from chalicelib.bundles.publication import PublishRecord
from chalicelib.bundles.signing import (
    PrivateKey,
    SignatureStatus,
    TrustBundle,
    generate_ed25519_keypair,
    load_private_key,
    sign_content_hash,
)
from chalicelib.bundles.verify import verify_bundle
from chalicelib.config import Settings, load_settings
from chalicelib.storage.s3 import ensure_bucket, make_s3_client
from chalicelib.storage.store import (
    BUNDLE_OBJECT,
    MANIFEST_OBJECT,
    PUBLISH_RECORD_OBJECT,
    SIGNATURE_OBJECT,
    ObjectInfo,
    PutOutcome,
    ReadableStream,
    S3BundleStore,
)
from runner_container.cache import BundleCache
from runner_container.compile_jobs import CompileJobs
from runner_container.egress import EgressPolicy
from runner_container.engine import WasmEngine
from runner_container.service import RunnerService
from tests.bundle_factory import bundle, good_files, wasm

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello"
WAT = REPO / "tests" / "fixtures" / "wat"
EXAMPLE_NAME = "com.example.hello"
BUCKET = "runner-tests"


def clear_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and no endpoint from the developer's shell that would bypass moto."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def content_hash_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@cache
def example_bundle() -> bytes:
    """``examples/hello`` packed exactly as ``extctl pack`` does."""
    with tempfile.TemporaryDirectory() as tmp:
        return pack_project(EXAMPLE, Path(tmp) / "bundle.tar.zst").output.read_bytes()


def wat_bundle(wat_file: str, **manifest: Any) -> bytes:
    """A bundle whose entry is ``tests/fixtures/wat/<wat_file>``, with manifest overrides."""
    files = good_files(**manifest)
    files["dist/main.wasm"] = wasm((WAT / wat_file).read_text())
    return bundle(files)


def ui_bundle(name: str = "com.acme.tools", extra: dict[str, bytes] | None = None, **manifest: Any) -> bytes:
    """A bundle with a UI and no api (nothing to compile)."""
    files = good_files(name=name, api=None, **manifest)
    del files["dist/main.wasm"]
    files.update(extra or {})
    return bundle(files)


# --- signing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A publisher key and a trust bundle that trusts it."""

    key: PrivateKey
    trust: TrustBundle

    def sign(self, content_hash: str) -> bytes:
        return sign_content_hash(content_hash, self.key).to_json().encode()


def make_signer(scope: str = "*") -> Signer:
    private_pem, public_pem = generate_ed25519_keypair()
    return Signer(load_private_key(private_pem), TrustBundle.parse(f"# scope: {scope}\n{public_pem.decode()}"))


def certificate_pem(key: ed25519.Ed25519PrivateKey, not_before: datetime, not_after: datetime) -> str:
    """A self-signed certificate of ``key``, valid from ``not_before`` to ``not_after``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme release")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    return builder.sign(key, None).public_bytes(serialization.Encoding.PEM).decode()


def make_certificate_signer(not_before: datetime, not_after: datetime, scope: str = "*") -> Signer:
    """A publisher key whose trust bundle entry is a certificate valid from ``not_before`` to ``not_after``."""
    key = ed25519.Ed25519PrivateKey.generate()
    return Signer(key, TrustBundle.parse(f"# scope: {scope}\n{certificate_pem(key, not_before, not_after)}"))


# --- S3 and the cache ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerEnv:
    """A moto bucket with the platform's store on it, and settings pointing the runner at it."""

    root: Path
    settings: Settings
    client: Any
    store: S3BundleStore

    def publish(self, data: bytes, *, signature: bytes | None = None, published_at: datetime | None = None) -> str:
        """Write a bundle under ``sha256/<hex>/`` the way finalize does; returns its content hash.

        ``published_at`` also writes the publish record finalize leaves beside the bundle.
        """
        content_hash = content_hash_of(data)
        verified = verify_bundle(io.BytesIO(data), expected_hash=content_hash)
        self.store.put_immutable(self.store.object_key(content_hash, BUNDLE_OBJECT), data, "application/zstd")
        manifest_key = self.store.object_key(content_hash, MANIFEST_OBJECT)
        self.store.put_immutable(manifest_key, verified.manifest_bytes, "application/json")
        if signature is not None:
            self.store.put_immutable(
                self.store.object_key(content_hash, SIGNATURE_OBJECT), signature, "application/json"
            )
        if published_at is not None:
            status = SignatureStatus.UNSIGNED if signature is None else SignatureStatus.VERIFIED
            record = PublishRecord(
                content_hash, verified.manifest.name, verified.manifest.version, published_at, status, None
            )
            key = self.store.object_key(content_hash, PUBLISH_RECORD_OBJECT)
            self.store.put_immutable(key, record.to_json(), "application/json")
        return content_hash

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace an object behind the store's back (an attacker with bucket access)."""
        self.client.put_object(Bucket=self.settings.storage_s3_bucket, Key=key, Body=data)

    def object_exists(self, key: str) -> bool:
        return self.store.head(key) is not None

    def cache(
        self,
        engine: WasmEngine,
        *,
        trust: TrustBundle | None = None,
        store: Any = None,
        cache_dir: Path | None = None,
        compile_jobs: CompileJobs | None = None,
        **settings: Any,
    ) -> BundleCache:
        changes = {"runner_cache_dir": str(cache_dir or self.root / "cache"), **settings}
        return BundleCache(
            store or self.store, engine, self.settings.replace(**changes), trust, compile_jobs=compile_jobs
        )

    def service(
        self,
        engine: WasmEngine,
        *,
        trust: TrustBundle | None = None,
        compile_jobs: CompileJobs | None = None,
        **settings: Any,
    ) -> RunnerService:
        cache_ = self.cache(engine, trust=trust, compile_jobs=compile_jobs, **settings)
        return RunnerService(
            cache_, engine, self.settings.replace(**settings), EgressPolicy.from_settings(self.settings)
        )


@contextmanager
def runner_env(root: Path, **env: str) -> Iterator[RunnerEnv]:
    """In-process moto S3 with an empty bucket, for as long as the block runs."""
    with mock_aws():
        settings = load_settings({"STORAGE_S3_BUCKET": BUCKET, "RUNNER_CACHE_DIR": str(root / "cache"), **env})
        client = make_s3_client(settings)
        ensure_bucket(client, settings.storage_s3_bucket, settings.storage_s3_region)
        yield RunnerEnv(root, settings, client, S3BundleStore.from_settings(settings, client))


class CountingStore:
    """The store, counting reads by key; ``delay_s`` holds each read open to widen race windows."""

    def __init__(self, inner: S3BundleStore, *, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.opened: Counter[str] = Counter()
        self.gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def object_key(self, content_hash: str, name: str) -> str:
        return self.inner.object_key(content_hash, name)

    def precompiled_key(self, content_hash: str, fingerprint: str) -> str:
        return self.inner.precompiled_key(content_hash, fingerprint)

    def compile_failure_key(self, content_hash: str, fingerprint: str, limits_id: str) -> str:
        return self.inner.compile_failure_key(content_hash, fingerprint, limits_id)

    def open_stream(self, key: str) -> ReadableStream:
        with self._lock:
            self.opened[key] += 1
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(10), f"gate for {key} never opened"
        time.sleep(self.delay_s)
        return self.inner.open_stream(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def put_immutable(self, key: str, body: bytes | BinaryIO, content_type: str) -> PutOutcome:
        return self.inner.put_immutable(key, body, content_type)


# --- execute payloads --------------------------------------------------------------------------


def execute_payload(
    content_hash: str,
    *,
    extension: str = EXAMPLE_NAME,
    method: str = "GET",
    path: str = "/hello",
    query: dict[str, str] | None = None,
    body: bytes | None = None,
    granted: tuple[str, ...] = ("cap:log.emit",),
) -> dict[str, Any]:
    """The gateway's execute payload for one request."""
    query = query or {}
    return {
        "content_hash": content_hash,
        "extension": extension,
        "granted_capabilities": list(granted),
        "request": {
            "context": {
                "request_id": "req-1",
                "tenant_id": "acme",
                "extension_id": extension,
                "install_id": "inst-1",
                "version": "1.0.0",
                "content_hash": content_hash,
                "config": {},
            },
            "endpoint": {"method": method, "path": path, "handler": path.strip("/")},
            "http": {
                "method": method,
                "path": path,
                "query": query,
                "headers": {},
                "body_b64": None if body is None else base64.b64encode(body).decode(),
            },
        },
    }
