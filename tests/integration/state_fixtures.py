"""What tests of guests with KV and secrets share: moto tables and KMS key, and an upstream to fetch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from moto import mock_aws

from chalicelib.bundles.manifest import SecretSpec
from chalicelib.config import Settings, load_settings
from chalicelib.kv import KvLimits, KvService, create_kv_table, make_kv_models
from chalicelib.secrets import (
    PutSecretRequest,
    SecretReader,
    SecretsService,
    SecretValue,
    create_secrets_table,
    ensure_secrets_key,
    make_secret_model,
)
from chalicelib.tenancy import InstallScope
from runner_container.state import StateServices

__all__ = ["StateBackend", "Upstream", "provision_state", "recording_upstream", "state_backend", "upstream_server"]


class _Upstream(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_GET(self) -> None:
        self.server.seen.append(self.headers.get("x-api-key"))
        body = json.dumps({"x-api-key": self.headers.get("x-api-key"), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RecordingServer(ThreadingHTTPServer):
    seen: list[str | None]


@dataclass
class Upstream:
    """A running upstream: ``address`` is ``127.0.0.1:<port>`` (the egress entry that allows it), ``seen``
    the ``x-api-key`` header of each request it got, in order (``None`` where there was none)."""

    address: str
    seen: list[str | None]


@contextmanager
def recording_upstream() -> Iterator[Upstream]:
    """A local server answering every GET with ``{"x-api-key": <the header it got>, "path"}`` and recording
    the header it got, for as long as the block runs."""
    server = _RecordingServer(("127.0.0.1", 0), _Upstream)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Upstream(f"127.0.0.1:{server.server_address[1]}", server.seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def upstream_server() -> Iterator[str]:
    """:func:`recording_upstream` for callers that need only its address, ``127.0.0.1:<port>``."""
    with recording_upstream() as upstream:
        yield upstream.address


@dataclass
class StateBackend:
    """The KV and secrets tables and the KMS key in moto, with the admin's side to set secrets."""

    settings: Settings
    kms: Any
    admin: SecretsService

    def services(self, limits: KvLimits | None = None) -> StateServices:
        """The runner's state services on these tables (KV with ``limits``, the platform's by default)."""
        kv = KvService(make_kv_models(self.settings), limits=limits)
        return StateServices(kv, SecretReader(make_secret_model(self.settings), self.kms))

    def kv(self) -> KvService:
        return KvService(make_kv_models(self.settings))

    def set_secret(self, tenant: str, extension: str, name: str, value: str) -> None:
        """Set ``name`` as an admin does (the route's service), declaring just that name."""
        declared = [SecretSpec(name, None, required=False)]
        self.admin.put(InstallScope(tenant, extension), name, PutSecretRequest(SecretValue(value)), declared)


def provision_state(settings: Settings) -> StateBackend:
    """Create the tables and key ``settings`` name, in whatever AWS the process reaches (moto)."""
    create_kv_table(make_kv_models(settings))
    create_secrets_table(make_secret_model(settings))
    kms = boto3.client("kms", region_name=settings.storage_s3_region)
    key = ensure_secrets_key(kms, settings.secrets_kms_key_id)
    return StateBackend(settings, kms, SecretsService(make_secret_model(settings), kms, key))


@contextmanager
def state_backend(**env: str) -> Iterator[StateBackend]:
    """In-process moto with the state tables and key, for as long as the block runs (credentials are the
    caller's: the runner tests' fixtures set fake ones)."""
    with mock_aws():
        yield provision_state(load_settings(env))
