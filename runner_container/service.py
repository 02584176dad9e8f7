"""The runner's operations, independent of how they are reached (HTTP mode or Lambda).

``execute`` is one gateway call:

1. check the payload's shape (:func:`parse_execute_payload`); the ``request`` object goes to the guest as is;
   take a call slot (``RUNNER_MAX_CONCURRENT_CALLS``, else ``RUNNER_BUSY``) and fix the call's deadline: what
   the gateway has left (``deadline_ms``, ``deadline_at_ms``), so the runner never outlives its caller;
2. load the bundle by content hash (:class:`~runner_container.cache.BundleCache`: verified, signature
   checked, compiled code found, or compiled within half of the time left when small;
   ``EXTENSION_NOT_READY`` while a compile job runs, ``EXTENSION_FAILED`` when one failed);
3. require the manifest's name to be the extension the gateway resolved (``BAD_REQUEST`` otherwise: the
   gateway and the registry disagree, and the call must not run someone else's code);
4. derive the call's limits (manifest requests clamped to the platform maximum and to the time left) and
   host services (capabilities granted to the install **and** declared by the manifest; the egress list;
   KV and secrets scoped to the install, the tenant of the request's context and the manifest's name,
   with a fresh KV operation budget and the manifest's declared secret names);
5. run the handler by the manifest's ``runtime``: a core module on the
   :class:`~runner_container.engine.WasmEngine`, a component on the
   :class:`~runner_container.component.ComponentEngine` (the same wasmtime engine, limits and host
   services); a trap, timeout or OOM raises for this call only;
6. log one ``runner.call`` line (extension, tenant, version, request id, outcome, duration and, for a
   failure, the trap's backtrace and stderr tail: :mod:`runner_container.traps`), which ``extctl logs`` reads.

``precompile`` is the compile job (after publish, or asked for by a call): it makes sure the store holds
the compile outcome for this engine; ``health`` reports the engine fingerprint and the cache's state.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chalicelib.bundles.digests import CONTENT_HASH_RE
from chalicelib.bundles.signing import TrustBundle
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, EndpointNotFound, ExtensionTimeout, ExtError, RunnerBusy, SettingsInvalid
from chalicelib.logs import configure_logging, log_event
from chalicelib.storage.s3 import make_s3_client
from chalicelib.storage.store import S3BundleStore
from runner_container.cache import BundleCache
from runner_container.compile_jobs import CompileJobs
from runner_container.compiled_code import Code, PrecompileResult
from runner_container.component import ComponentEngine, PreparedComponent
from runner_container.egress import EgressPolicy
from runner_container.engine import (
    CallLimits,
    ExecutionResult,
    HostServices,
    LogLevel,
    LogRecord,
    WasmEngine,
    clamp_limits,
)
from runner_container.state import StateServices
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
_MAX_DEADLINE_MS = 15 * 60 * 1000
_BUSY_RETRY_AFTER_S = 1
_SLOT_WAIT_S = 1.0
"""How long a call waits for a free call slot before ``RUNNER_BUSY``: a burst of callers queues briefly
instead of failing (at most half the call's remaining time, so the wait never costs it its deadline)."""
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
    deadline_ms: int | None = None
    deadline_at_ms: int | None = None

    @property
    def request_id(self) -> str | None:
        value = self.request["context"].get("request_id")
        return value if isinstance(value, str) else None

    @property
    def tenant(self) -> str | None:
        value = self.request["context"].get("tenant_id")
        return value if isinstance(value, str) else None

    @property
    def version(self) -> str | None:
        value = self.request["context"].get("version")
        return value if isinstance(value, str) else None

    def remaining_ms(self, default_ms: int) -> int:
        """Milliseconds the caller still waits: ``deadline_ms`` from now, and no later than ``deadline_at_ms``
        (Unix time, so time spent before the call arrived, a cold start, counts too); ``default_ms`` without."""
        remaining = self.deadline_ms if self.deadline_ms is not None else default_ms
        if self.deadline_at_ms is not None:
            remaining = min(remaining, self.deadline_at_ms - int(time.time() * 1000))
        return remaining


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


def _deadline(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"{what} must be a positive integer of milliseconds")
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
    "request": {"context": {...}, "endpoint": {...} | null, "http": {method, path, query, headers, body_b64}},
    "deadline_ms"?: int, "deadline_at_ms"?: int}``
    """
    document = _object(payload, "the execute payload")
    deadline_ms = _deadline(document.get("deadline_ms"), "deadline_ms")
    return ExecuteCall(
        content_hash=_content_hash(document.get("content_hash")),
        extension=_string(document.get("extension"), "extension"),
        granted_capabilities=_capabilities(document.get("granted_capabilities", [])),
        request=_check_request(document.get("request")),
        deadline_ms=None if deadline_ms is None else min(deadline_ms, _MAX_DEADLINE_MS),
        deadline_at_ms=_deadline(document.get("deadline_at_ms"), "deadline_at_ms"),
    )


def _guest_log_sink(call: ExecuteCall) -> Callable[[LogRecord], None]:
    """Writes each guest log record to the runner's log as it happens, so a failed call keeps its logs."""

    def sink(record: LogRecord) -> None:
        log_event(
            "runner.guest_log",
            level=_PYTHON_LEVELS[record.level],
            extension=call.extension,
            tenant=call.tenant,
            content_hash=call.content_hash,
            request_id=call.request_id,
            guest_level=record.level.name.lower(),
            guest_message=record.message,
            truncated=record.truncated,
        )

    return sink


def _failure_details(error: ExtError) -> dict[str, Any]:
    """The trap's backtrace and the guest's stderr tail (:mod:`runner_container.traps`), for the log only."""
    return {key: error.details[key] for key in ("backtrace", "stderr") if key in error.details}


def _log_call(call: ExecuteCall, started: float, level: int, **fields: Any) -> None:
    """One ``runner.call`` line per call: what ``extctl logs`` shows next to the guest's own lines."""
    log_event(
        "runner.call",
        level=level,
        extension=call.extension,
        tenant=call.tenant,
        version=call.version,
        content_hash=call.content_hash,
        request_id=call.request_id,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        **fields,
    )


class RunnerService:
    """The runner's operations over one cache and engine; safe to share between threads.

    Components run on ``components`` (default: one on ``engine``, which must be the cache's).
    ``state`` serves the installs' KV data and secrets (default: the tables and KMS key ``settings`` name).
    """

    def __init__(
        self,
        cache: BundleCache,
        engine: WasmEngine,
        settings: Settings,
        egress_policy: EgressPolicy,
        *,
        components: ComponentEngine | None = None,
        state: StateServices | None = None,
    ) -> None:
        self._cache = cache
        self._engine = engine
        self._components = components or ComponentEngine(engine)
        self._settings = settings
        self._egress = egress_policy
        self._state = state or StateServices.from_settings(settings)
        self._calls = threading.BoundedSemaphore(int(settings.runner_max_concurrent_calls))
        self.ui = UiServer(cache, int(settings.runner_ui_max_concurrency))

    @property
    def settings(self) -> Settings:
        return self._settings

    def execute(self, payload: Mapping[str, Any]) -> ExecuteResponse:
        """Run one extension call; raises the ``ExtError`` of the first failure (``EXTENSION_TIMEOUT``,
        ``EXTENSION_FAILED``, ``EXTENSION_NOT_READY``, ``RUNNER_BUSY``, ``HASH_MISMATCH``, ``SIGNATURE_*``,
        ``BAD_REQUEST``…)."""
        call = parse_execute_payload(payload)
        started = time.perf_counter()
        try:
            deadline = time.monotonic() + call.remaining_ms(int(self._settings.ext_gateway_timeout_ms)) / 1000
            with self._call_slot(deadline):
                response = self._execute(call, deadline)
        except ExtError as exc:
            _log_call(call, started, logging.WARNING, outcome=exc.code, error=exc.message, **_failure_details(exc))
            raise
        _log_call(call, started, logging.INFO, outcome="ok", status=response.status)
        return response

    @contextmanager
    def _call_slot(self, deadline: float) -> Iterator[None]:
        wait_s = max(0.0, min(_SLOT_WAIT_S, (deadline - time.monotonic()) / 2))
        if not self._calls.acquire(timeout=wait_s):
            limit = self._settings.runner_max_concurrent_calls
            raise RunnerBusy(
                f"the runner is running its limit of {limit} calls; retry in {_BUSY_RETRY_AFTER_S} s",
                retry_after=_BUSY_RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            self._calls.release()

    def _execute(self, call: ExecuteCall, deadline: float) -> ExecuteResponse:
        if deadline <= time.monotonic():
            raise ExtensionTimeout("the caller's deadline passed before the call reached the runner")
        loaded = self._cache.get(call.content_hash, budget_s=deadline - time.monotonic())
        manifest = loaded.manifest
        if manifest.name != call.extension:
            raise BadRequest(f"bundle {call.content_hash} is {manifest.name!r}, not {call.extension!r}")
        if loaded.module is None:
            raise EndpointNotFound(f"{manifest.name} {manifest.version} declares no api")
        capabilities = call.granted_capabilities & frozenset(manifest.capabilities)
        # cap:log.emit is the right to write to the platform's logs; without it the
        # guest may still call ext.log, but its records go nowhere.
        may_log = LOG_CAPABILITY in capabilities
        tenant = call.request["context"].get("tenant_id")
        state = self._state.for_call(tenant, manifest.name, capabilities, [spec.name for spec in manifest.secrets])
        host = HostServices(
            capabilities=capabilities,
            egress=manifest.egress,
            egress_policy=self._egress,
            log_sink=_guest_log_sink(call) if may_log else None,
            kv=state.kv,
            secrets=state.secrets,
        )
        limits = clamp_limits(manifest.limits, self._settings)
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms < 1:
            raise ExtensionTimeout("the caller's deadline passed while the extension's code was loaded")
        # The caller stops waiting at its deadline, so the guest stops there too.
        limits = dataclasses.replace(limits, timeout_ms=min(limits.timeout_ms, left_ms))
        result = self._run(loaded.module, call.request, limits, host)
        return ExecuteResponse(
            status=result.status,
            headers=result.headers,
            body_b64=base64.b64encode(result.body).decode("ascii"),
            duration_ms=result.duration_ms,
            logs=result.logs if may_log else (),
            logs_dropped=result.logs_dropped if may_log else result.logs_dropped + len(result.logs),
            fuel_consumed=result.fuel_consumed,
        )

    def _run(
        self,
        code: Code,
        request: Mapping[str, Any],
        limits: CallLimits,
        host: HostServices,
    ) -> ExecutionResult:
        """One call of ``code`` on the executor of its ABI (the cache loads each bundle by its runtime)."""
        if isinstance(code, PreparedComponent):
            return self._components.execute(code, request, limits, host)
        return self._engine.execute(code, request, limits, host)

    def precompile(self, content_hash: object) -> PrecompileResult:
        """The compile job: verify the bundle and record its compile outcome for this engine in the store."""
        return self._cache.precompile(_content_hash(content_hash))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "fingerprint": self._engine.fingerprint, "cache": self._cache.stats().to_dict()}

    def close(self) -> None:
        """Stop the engine's epoch ticker (the process is shutting down)."""
        self._engine.close()


def configure_process_logging(level: str) -> None:
    """The runner process's logs: JSON lines on stderr (:mod:`chalicelib.logs`) at ``level``.

    Raises ``SettingsInvalid`` for a level :mod:`logging` does not know.
    """
    try:
        configure_logging(level)
    except ValueError:
        raise SettingsInvalid(f"LOG_LEVEL={level!r} is not a logging level") from None


def build_service(settings: Settings, *, compile_jobs: CompileJobs | None = None) -> RunnerService:
    """The runner as ``settings`` describe it: one engine (core modules and, on it, components), the S3 store,
    the trust bundle, the egress policy.

    ``compile_jobs`` runs the compile jobs calls ask for (default: this process, in the background).
    Raises ``SettingsInvalid`` for an unreadable trust bundle, before anything is served.
    """
    trust = TrustBundle.from_setting(settings.signing_trust_bundle)
    engine = WasmEngine.from_settings(settings)
    components = ComponentEngine(engine)
    store = S3BundleStore.from_settings(settings, make_s3_client(settings))
    cache = BundleCache(store, engine, settings, trust, compile_jobs=compile_jobs, components=components)
    return RunnerService(cache, engine, settings, EgressPolicy.from_settings(settings), components=components)
