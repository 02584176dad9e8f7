"""The runner's operations, independent of how they are reached (HTTP mode or Lambda).

``execute`` is one gateway call:

1. check the payload's shape (:func:`parse_execute_payload`); the ``request`` object goes to the guest as is;
2. load the bundle by content hash (:class:`~runner_container.cache.BundleCache`: verified, signature
   checked, compiled or found compiled);
3. require the manifest's name to be the extension the gateway resolved (``BAD_REQUEST`` otherwise: the
   gateway and the registry disagree, and the call must not run someone else's code);
4. derive the call's limits (manifest requests clamped to the platform maximum) and host services
   (capabilities granted to the install **and** declared by the manifest; the manifest's egress list);
5. run the handler in a fresh store; a trap, timeout or OOM raises for this call only.

``precompile`` makes sure the store holds the compiled module (after publish); ``health`` reports the
engine fingerprint and the cache's state.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.bundles.signing import TrustBundle
from chalicelib.bundles.verify import CONTENT_HASH_RE
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, ConfigInvalid, EndpointNotFound
from chalicelib.logs import configure_logging, log_event
from chalicelib.storage.s3 import make_s3_client
from chalicelib.storage.store import S3BundleStore
from runner_container.cache import BundleCache, PrecompileResult
from runner_container.egress import EgressPolicy
from runner_container.engine import HostServices, LogLevel, LogRecord, WasmEngine, clamp_limits
from runner_container.ui import UiServer

__all__ = [
    "ExecuteCall",
    "ExecuteResponse",
    "RunnerService",
    "build_service",
    "configure_process_logging",
    "parse_execute_payload",
]

LOG_CAPABILITY = "cap:log.emit"
_PYTHON_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


@dataclass(frozen=True)
class ExecuteCall:
    """A checked execute payload."""

    content_hash: str
    extension: str
    granted_capabilities: frozenset[str]
    request: Mapping[str, Any]

    @property
    def request_id(self) -> str | None:
        value = self.request["context"].get("request_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ExecuteResponse:
    """The guest's normalized response and what the call cost."""

    status: int
    headers: Mapping[str, str]
    body_b64: str
    duration_ms: float
    logs: tuple[LogRecord, ...]
    logs_dropped: int
    fuel_consumed: int | None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{"status", "headers", "body_b64", "duration_ms", "logs", ...}``."""
        return {
            "status": self.status,
            "headers": dict(self.headers),
            "body_b64": self.body_b64,
            "duration_ms": round(self.duration_ms, 3),
            "logs": [
                {"level": record.level.name.lower(), "message": record.message, "truncated": record.truncated}
                for record in self.logs
            ],
            "logs_dropped": self.logs_dropped,
            "fuel_consumed": self.fuel_consumed,
        }


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(f"{what} must be an object")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty string")
    return value


def _content_hash(value: object) -> str:
    if not isinstance(value, str) or CONTENT_HASH_RE.fullmatch(value) is None:
        raise BadRequest("content_hash must be 'sha256:' and 64 lowercase hex digits")
    return value


def _capabilities(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest("granted_capabilities must be a list of strings")
    return frozenset(value)


def _check_http(http: Mapping[str, Any]) -> None:
    _string(http.get("method"), "request.http.method")
    if not _string(http.get("path"), "request.http.path").startswith("/"):
        raise BadRequest("request.http.path must start with '/'")
    headers = _object(http.get("headers", {}), "request.http.headers")
    if not all(isinstance(name, str) and isinstance(value, str) for name, value in headers.items()):
        raise BadRequest("request.http.headers must map strings to strings")
    _object(http.get("query", {}), "request.http.query")
    body = http.get("body_b64")
    if body is not None and not isinstance(body, str):
        raise BadRequest("request.http.body_b64 must be a string or null")


def _check_request(value: object) -> Mapping[str, Any]:
    request = _object(value, "request")
    _object(request.get("context"), "request.context")
    endpoint = request.get("endpoint")
    if endpoint is not None:
        _object(endpoint, "request.endpoint")
    _check_http(_object(request.get("http"), "request.http"))
    return request


def parse_execute_payload(payload: object) -> ExecuteCall:
    """Check the gateway's execute payload; raises ``BadRequest`` naming the first bad field.

    ``{"content_hash": "sha256:…", "extension": name, "granted_capabilities": [...],
    "request": {"context": {...}, "endpoint": {...} | null, "http": {method, path, query, headers, body_b64}}}``
    """
    document = _object(payload, "the execute payload")
    return ExecuteCall(
        content_hash=_content_hash(document.get("content_hash")),
        extension=_string(document.get("extension"), "extension"),
        granted_capabilities=_capabilities(document.get("granted_capabilities", [])),
        request=_check_request(document.get("request")),
    )


def _guest_log_sink(call: ExecuteCall) -> Callable[[LogRecord], None]:
    """Writes each guest log record to the runner's log as it happens, so a failed call keeps its logs."""

    def sink(record: LogRecord) -> None:
        log_event(
            "runner.guest_log",
            level=_PYTHON_LEVELS[record.level],
            extension=call.extension,
            content_hash=call.content_hash,
            request_id=call.request_id,
            guest_level=record.level.name.lower(),
            guest_message=record.message,
            truncated=record.truncated,
        )

    return sink


class RunnerService:
    """The runner's operations over one cache and engine; safe to share between threads."""

    def __init__(self, cache: BundleCache, engine: WasmEngine, settings: Settings, egress_policy: EgressPolicy) -> None:
        self._cache = cache
        self._engine = engine
        self._settings = settings
        self._egress = egress_policy
        self.ui = UiServer(cache)

    @property
    def settings(self) -> Settings:
        return self._settings

    def execute(self, payload: Mapping[str, Any]) -> ExecuteResponse:
        """Run one extension call; raises the ``ExtError`` of the first failure (``EXTENSION_TIMEOUT``,
        ``EXTENSION_FAILED``, ``HASH_MISMATCH``, ``SIGNATURE_*``, ``BAD_REQUEST``…)."""
        call = parse_execute_payload(payload)
        loaded = self._cache.get(call.content_hash)
        manifest = loaded.manifest
        if manifest.name != call.extension:
            raise BadRequest(f"bundle {call.content_hash} is {manifest.name!r}, not {call.extension!r}")
        if loaded.module is None:
            raise EndpointNotFound(f"{manifest.name} {manifest.version} declares no api")
        capabilities = call.granted_capabilities & frozenset(manifest.capabilities)
        # cap:log.emit is the right to write to the platform's logs; without it the
        # guest may still call ext.log, but its records go nowhere.
        may_log = LOG_CAPABILITY in capabilities
        host = HostServices(
            capabilities=capabilities,
            egress=manifest.egress,
            egress_policy=self._egress,
            log_sink=_guest_log_sink(call) if may_log else None,
        )
        limits = clamp_limits(manifest.limits, self._settings)
        result = self._engine.execute(loaded.module, call.request, limits, host)
        return ExecuteResponse(
            status=result.status,
            headers=result.headers,
            body_b64=base64.b64encode(result.body).decode("ascii"),
            duration_ms=result.duration_ms,
            logs=result.logs if may_log else (),
            logs_dropped=result.logs_dropped if may_log else result.logs_dropped + len(result.logs),
            fuel_consumed=result.fuel_consumed,
        )

    def precompile(self, content_hash: object) -> PrecompileResult:
        """Verify the bundle and store its compiled module for this engine (right after publish)."""
        return self._cache.precompile(_content_hash(content_hash))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "fingerprint": self._engine.fingerprint, "cache": self._cache.stats().to_dict()}

    def close(self) -> None:
        """Stop the engine's epoch ticker (the process is shutting down)."""
        self._engine.close()


def configure_process_logging(level: str) -> None:
    """The runner process's logs: JSON lines on stderr (:mod:`chalicelib.logs`) at ``level``.

    Raises ``ConfigInvalid`` for a level :mod:`logging` does not know.
    """
    try:
        configure_logging(level)
    except ValueError:
        raise ConfigInvalid(f"LOG_LEVEL={level!r} is not a logging level") from None


def build_service(settings: Settings) -> RunnerService:
    """The runner as ``settings`` describe it: one engine, the S3 store, the trust bundle, the egress policy.

    Raises ``ConfigInvalid`` for an unreadable trust bundle, before anything is served.
    """
    trust = TrustBundle.from_setting(settings.signing_trust_bundle)
    engine = WasmEngine.from_settings(settings)
    store = S3BundleStore.from_settings(settings, make_s3_client(settings))
    cache = BundleCache(store, engine, settings, trust)
    return RunnerService(cache, engine, settings, EgressPolicy.from_settings(settings))
