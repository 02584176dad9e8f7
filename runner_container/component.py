"""The runner's executor for ABI ``wasm-component@1`` (DESIGN §6b): WebAssembly components on wasmtime.

It mirrors :class:`~runner_container.engine.WasmEngine` and shares its :class:`wasmtime.Engine` (so the
same epoch ticker, fuel setting and ``.cwasm`` fingerprint): one :class:`wasmtime.component.Linker` for
the process holding WASI 0.2 (``add_wasip2``: nothing granted, no preopens, environment, arguments or
network, so every socket and name lookup is refused; ``wasi:http`` never linked) and the
``ext:platform`` host functions, and a fresh store and instance per call. One call of
:meth:`ComponentEngine.execute`:

1. map the gateway's request JSON (the payload the core ABI gets) to the WIT ``context`` and ``request``
   records; a body over the component limit is ``PAYLOAD_TOO_LARGE`` before anything runs;
2. arm a new store: memory limit, epoch deadline, fuel, WASI with stdout/stderr captured (bounded) and,
   for a body sent over stdio (below), the body on stdin;
3. instantiate and call ``handle``; host functions reach the call's :class:`CallState` per thread;
4. validate the response as the core ABI does (status 100–599, header names tokens, values without
   CR/LF/NUL, the size cap) and turn the guest's stdout/stderr into log records;
5. map any failure: epoch interrupt → :class:`ExtensionTimeout`, everything else →
   :class:`ExtensionFailed`; a failure ends that call only.

Bodies: wasmtime-py moves a ``list<u8>`` through its generic value API, element by element inside
wasmtime, about 200 ms per MiB each way even with :mod:`runner_container.wasmtime_bytes`, and a list
from the guest above about 2.7 MB fails outright. So a component built by the platform's SDKs exports
``body-stdio`` (world ``extension-sdk`` in ``sdk/wit``), which lets large bodies cross through WASI
streams, wasmtime's own native code: a request body over :data:`STDIO_BODY_THRESHOLD` is offered on
stdin with the header ``x-ext-body-stdin: <length>`` and an empty ``body``, and a response may carry
``x-ext-body-stdout: <length>`` with an empty ``body``, whose body is then the last ``<length>`` bytes
the guest wrote to stdout. The SDKs hide both; components without ``body-stdio`` get every body in the
record, up to :data:`MAX_INLINE_BODY_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import wasmtime
from wasmtime.component import Component, Linker, Record, Variant

from chalicelib.bundles.component import ALLOWED_IMPORTS, COMPONENT_RUNTIME
from chalicelib.errors import (
    BadRequest,
    ExtensionFailed,
    ExtensionTimeout,
    ExtError,
    PayloadTooLarge,
    SettingsInvalid,
    WasmInvalid,
)
from runner_container import wasmtime_bytes
from runner_container.egress import FetchOutcome
from runner_container.engine import (
    HTTP_FETCH_CAPABILITY,
    LOG_MAX_MESSAGE_BYTES,
    LOG_MAX_RECORDS,
    CallLimits,
    ExecutionResult,
    HostServices,
    LogLevel,
    LogRecord,
    WasmEngine,
)
from runner_container.host_services import (
    KV_CAPABILITY,
    SECRETS_CAPABILITY,
    KvEntry,
    KvError,
    KvErrorCode,
    KvPage,
    SecretError,
    SecretErrorCode,
)
from runner_container.traps import STDERR_TAIL_BYTES, with_details

__all__ = [
    "ABI",
    "MAX_INLINE_BODY_BYTES",
    "OUTPUT_CAPTURE_BYTES",
    "STDIO_BODY_THRESHOLD",
    "ComponentEngine",
    "PreparedComponent",
    "compile_component",
]

ABI = COMPONENT_RUNTIME
MiB = 1024 * 1024
STDIO_BODY_THRESHOLD = 32 * 1024
"""Request bodies larger than this go over stdin to components that export ``body-stdio``."""
MAX_INLINE_BODY_BYTES = 2 * MiB
"""Largest request body for a component without ``body-stdio`` (``PAYLOAD_TOO_LARGE`` above it)."""
OUTPUT_CAPTURE_BYTES = 16 * 1024
"""Guest stdout and stderr kept for the logs, per stream and call; the rest is counted, not kept."""
BODY_STDIN_HEADER = "x-ext-body-stdin"
BODY_STDOUT_HEADER = "x-ext-body-stdout"
USER_CAPABILITY = "cap:user.read"
_BODY_STDIO_EXPORT = "body-stdio"
_INTERFACE_VERSION = "1.0.0"
_UNMETERED_FUEL = 2**64 - 1
_STORE_INSTANCES = 64
_STORE_TABLES = 64
_STORE_MEMORIES = 8
_STORE_TABLE_ELEMENTS = 1_000_000
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")
_WASM_MAGIC = b"\0asm"
_LOG_LEVELS = {"debug": LogLevel.DEBUG, "info": LogLevel.INFO, "warn": LogLevel.WARN, "error": LogLevel.ERROR}


@dataclass(frozen=True)
class PreparedComponent:
    """A compiled component checked against the world; ``body_stdio`` when it exports ``body-stdio``."""

    component: Component
    body_stdio: bool


# --- per-call state seen by the host functions -------------------------------------------------


class _HostTrap(Exception):
    """Raised inside a host function to trap the calling guest with ``message``."""


class _Output:
    """One captured guest stream: the first :data:`OUTPUT_CAPTURE_BYTES` for the logs and, when asked,
    a tail of ``tail_bytes`` (the response body sent over stdout); everything else is only counted."""

    def __init__(self, tail_bytes: int) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._tail_bytes = tail_bytes

    def write(self, chunk: bytes) -> int:
        room = OUTPUT_CAPTURE_BYTES - len(self.head)
        if room > 0:
            self.head += chunk[:room]
        if self._tail_bytes:
            self.tail += chunk
            if len(self.tail) > 2 * self._tail_bytes:
                del self.tail[: len(self.tail) - self._tail_bytes]
        self.total += len(chunk)
        return len(chunk)

    def logged(self, body_bytes: int) -> tuple[bytes, bool]:
        """The bytes written before the last ``body_bytes`` (capped), and whether any were cut."""
        before = self.total - body_bytes
        kept = bytes(self.head[: max(0, min(len(self.head), before))])
        return kept, before > len(kept)


class CallState:
    """What the host functions of one in-flight call read and append to."""

    __slots__ = ("deadline", "host", "logs", "logs_dropped", "timed_out", "trap_message")

    def __init__(self, host: HostServices, deadline: float) -> None:
        self.host = host
        self.deadline = deadline
        self.logs: list[LogRecord] = []
        self.logs_dropped = 0
        self.trap_message: str | None = None
        self.timed_out = False

    def log(self, record: LogRecord) -> None:
        if len(self.logs) >= LOG_MAX_RECORDS:
            self.logs_dropped += 1
            return
        self.logs.append(record)
        if self.host.log_sink is not None:
            self.host.log_sink(record)


_ACTIVE = threading.local()


def _guarded(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a host function: failures trap the guest with a message; a late return ends the call."""

    def host_function(_store: Any, *args: Any) -> Any:
        state: CallState | None = getattr(_ACTIVE, "state", None)
        if state is None:
            raise _HostTrap("host function called outside of an extension call")
        try:
            result = body(state, *args)
        except _HostTrap as exc:
            state.trap_message = f"{name}: {exc}"
            raise
        except Exception as exc:
            state.trap_message = f"{name}: host error ({type(exc).__name__})"
            raise _HostTrap(state.trap_message) from exc
        if time.monotonic() >= state.deadline:
            state.timed_out = True
            raise _HostTrap(f"{name} returned after the call's deadline")
        return result

    return host_function


def _record(**fields: Any) -> Record:
    record = Record()
    for name, value in fields.items():
        setattr(record, name.replace("_", "-"), value)
    return record


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _HostTrap(f"{what} must be a string")
    return value


# --- ext:platform/log --------------------------------------------------------------------------


def _log_emit(state: CallState, level: object, message: object) -> None:
    text = _text(message, "message")
    raw = text.encode("utf-8")
    kept = raw[:LOG_MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore")
    state.log(LogRecord(_LOG_LEVELS.get(str(level), LogLevel.INFO), kept, truncated=len(raw) > LOG_MAX_MESSAGE_BYTES))


# --- ext:platform/http -------------------------------------------------------------------------


def _http_fetch(state: CallState, request: Any) -> Any:
    host, policy = state.host, state.host.egress_policy
    if HTTP_FETCH_CAPABILITY not in host.capabilities:
        return Variant("denied", f"capability {HTTP_FETCH_CAPABILITY} is not granted")
    headers: dict[str, str] = {}
    for name, value in getattr(request, "headers", []):
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    body = getattr(request, "body", b"")
    payload = {
        "url": getattr(request, "url", ""),
        "method": getattr(request, "method", "GET"),
        "headers": headers,
        "body_b64": base64.b64encode(body).decode("ascii") if body else None,
    }
    remaining = state.deadline - time.monotonic()
    timeout_ms = getattr(request, "timeout-ms", None)
    if isinstance(timeout_ms, int):
        remaining = min(remaining, timeout_ms / 1000)
    code, answer = policy.fetch_json(json.dumps(payload).encode("utf-8"), host.egress, remaining_s=remaining)
    document = json.loads(answer)
    if code == 0:
        status = document["status"]
        return _record(
            status=status,
            headers=sorted(document.get("headers", {}).items()),
            body=base64.b64decode(document.get("body_b64") or ""),
        )
    error = document.get("error", {})
    message = str(error.get("message", "fetch failed"))
    if code == FetchOutcome.DENIED.value:
        return Variant("denied", message)
    if code == FetchOutcome.TIMEOUT.value:
        return Variant("timeout")
    if "exceeds the limit" in message:
        return Variant("too-large")
    return Variant("failed", message)


# --- ext:platform/kv and ext:platform/secrets --------------------------------------------------


def _kv_error(error: KvError) -> Variant:
    if error.code in (KvErrorCode.INVALID, KvErrorCode.QUOTA_EXCEEDED, KvErrorCode.UNAVAILABLE):
        return Variant(error.code.value, error.message)
    return Variant(error.code.value)


def _kv_call(state: CallState, operation: Callable[[Any], Any]) -> Any:
    service = state.host.kv
    if KV_CAPABILITY not in state.host.capabilities or service is None:
        return Variant("denied")
    try:
        return operation(service)
    except KvError as error:
        return _kv_error(error)


def _entry(entry: KvEntry) -> Record:
    return _record(value=bytes(entry.value), revision=int(entry.revision))


def _page(page: KvPage) -> Record:
    return _record(keys=list(page.keys), cursor=page.cursor)


def _kv_get(state: CallState, key: object) -> Any:
    return _kv_call(state, lambda kv: _entry(kv.get(_text(key, "key"))))


def _kv_set(state: CallState, key: object, value: object, if_revision: object) -> Any:
    revision = if_revision if isinstance(if_revision, int) else None
    if not isinstance(value, bytes):
        raise _HostTrap("value must be bytes")
    return _kv_call(state, lambda kv: int(kv.set(_text(key, "key"), value, revision)))


def _kv_delete(state: CallState, key: object) -> Any:
    return _kv_call(state, lambda kv: bool(kv.delete(_text(key, "key"))))


def _kv_list_keys(state: CallState, prefix: object, cursor: object, limit: object) -> Any:
    after = cursor if isinstance(cursor, str) else None
    count = limit if isinstance(limit, int) else 0
    return _kv_call(state, lambda kv: _page(kv.list_keys(_text(prefix, "prefix"), after, count)))


def _secret_get(state: CallState, name: object) -> Any:
    service = state.host.secrets
    if SECRETS_CAPABILITY not in state.host.capabilities or service is None:
        return Variant("denied")
    try:
        return str(service.get(_text(name, "name")))
    except SecretError as error:
        if error.code is SecretErrorCode.UNAVAILABLE:
            return Variant("unavailable", error.message)
        return Variant(error.code.value)


_HOST_FUNCTIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "log": {"emit": _log_emit},
    "http": {"fetch": _http_fetch},
    "kv": {"get": _kv_get, "set": _kv_set, "delete": _kv_delete, "list-keys": _kv_list_keys},
    "secrets": {"get": _secret_get},
}


# --- request and response mapping --------------------------------------------------------------


def _fields(value: object, what: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise BadRequest(f"{what} must be an object")
    return [(str(name), str(text)) for name, text in value.items()]


def _context(context: Mapping[str, Any], capabilities: frozenset[str]) -> Record:
    config = context.get("config")
    user = context.get("user")
    user_record = None
    if USER_CAPABILITY in capabilities and isinstance(user, Mapping):
        user_record = _record(sub=str(user.get("sub", "")), roles=[str(role) for role in user.get("roles", [])])
    return _record(
        request_id=str(context.get("request_id") or ""),
        tenant_id=str(context.get("tenant_id") or ""),
        extension_id=str(context.get("extension_id") or ""),
        install_id=str(context.get("install_id") or ""),
        version=str(context.get("version") or ""),
        content_hash=str(context.get("content_hash") or ""),
        config=json.dumps(config if isinstance(config, Mapping) else {}, separators=(",", ":"), ensure_ascii=False),
        user=user_record,
    )


def _query(http: Mapping[str, Any]) -> list[tuple[str, str]]:
    query_string = http.get("query_string")
    if isinstance(query_string, str):
        return parse_qsl(query_string, keep_blank_values=True)
    return _fields(http.get("query"), "request.http.query")


def _endpoint(endpoint: object) -> Record | None:
    if not isinstance(endpoint, Mapping):
        return None
    return _record(
        method=str(endpoint.get("method", "")),
        path=str(endpoint.get("path", "")),
        handler=str(endpoint.get("handler", "")),
        params=_fields(endpoint.get("params"), "request.endpoint.params"),
    )


def _body(http: Mapping[str, Any]) -> bytes:
    encoded = http.get("body_b64")
    if not encoded:
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("request.http.body_b64 is not valid base64") from None


def _check_response(response: Any, max_bytes: int) -> tuple[int, list[tuple[str, str]], bytes]:
    status = getattr(response, "status", None)
    # wasmtime-py lowers and lifts u16 without complaint, so the range is ours to check.
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ExtensionFailed(f"bad response: status must be an integer from 100 to 599, got {status!r}")
    headers = getattr(response, "headers", None)
    body = getattr(response, "body", None)
    if not isinstance(headers, list) or not isinstance(body, bytes):
        raise ExtensionFailed("bad response: not a response record")
    for name, value in headers:
        if not _TOKEN.match(name):
            raise ExtensionFailed(f"bad response: header name {name!r} is not an RFC 7230 token")
        if _BAD_VALUE_CHARS.search(value):
            raise ExtensionFailed(f"bad response: header {name!r} has a value with CR, LF or NUL")
    if len(body) > max_bytes:
        raise ExtensionFailed(f"response of {len(body)} bytes exceeds the limit of {max_bytes}")
    return status, headers, body


def _merge_headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _summary(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" in lines:
        lines = [re.sub(r"^\d+:\s*", "", line) for line in lines[lines.index("Caused by:") + 1 :]]
    return "; ".join(lines)


def _failure(exc: BaseException, state: CallState, limits: CallLimits) -> ExtError:
    text = str(exc)
    if isinstance(exc, wasmtime.Trap) and exc.trap_code is wasmtime.TrapCode.INTERRUPT:
        state.timed_out = True
    if state.timed_out or "wasm trap: interrupt" in text:
        return ExtensionTimeout(f"extension exceeded its time limit of {limits.timeout_ms} ms")
    if "all fuel consumed" in text:
        return ExtensionFailed(f"extension ran out of fuel (limit {limits.fuel})")
    if state.trap_message is not None:
        return ExtensionFailed(f"extension trapped in host function {state.trap_message}")
    if "fuel allocated for hostcalls" in text:
        return ExtensionFailed(
            "extension returned a value too large to copy out of list<u8> (send large bodies over stdio)"
        )
    return ExtensionFailed(f"extension trapped: {_summary(text)}")


def _logged_output(state: CallState, output: _Output, level: LogLevel, body_bytes: int = 0) -> None:
    kept, cut = output.logged(body_bytes)
    if not kept:
        if cut:
            state.logs_dropped += 1
        return
    lines = kept.decode("utf-8", errors="replace").splitlines()
    for index, line in enumerate(lines):
        raw = line.encode("utf-8")
        truncated = len(raw) > LOG_MAX_MESSAGE_BYTES or (cut and index == len(lines) - 1)
        state.log(LogRecord(level, raw[:LOG_MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore"), truncated))


class _BodyFile:
    """The request body as a file the guest's stdin reads: an anonymous memory file where there is one."""

    def __init__(self, body: bytes) -> None:
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("ext-body", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self._fd}"
            self._temp: str | None = None
        else:
            self._fd, self._temp = tempfile.mkstemp(prefix="ext-body-")
            self.path = self._temp
        view = memoryview(body)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        os.close(self._fd)
        if self._temp is not None:
            with suppress(OSError):
                os.unlink(self._temp)


class ComponentEngine:
    """Runs ``wasm-component@1`` components on the engine of a :class:`WasmEngine` (shared, not owned).

    Components must be compiled by, or serialized from, an engine with the same fingerprint; closing
    the :class:`WasmEngine` stops the epoch ticker both rely on.
    """

    def __init__(self, core: WasmEngine) -> None:
        wasmtime_bytes.install()
        self.engine = core.engine
        self.consume_fuel = core.consume_fuel
        self.epoch_tick_ms = core.epoch_tick_ms
        self._fingerprint = core.fingerprint
        self._linker = self._host_linker()

    @property
    def fingerprint(self) -> str:
        """The engine's fingerprint (the ``precompiled/<fingerprint>.cwasm`` key), shared with core modules."""
        return self._fingerprint

    def _host_linker(self) -> Linker:
        linker = Linker(self.engine)
        linker.add_wasip2()
        with linker.root() as root:
            for interface, functions in _HOST_FUNCTIONS.items():
                with root.add_instance(f"ext:platform/{interface}@{_INTERFACE_VERSION}") as instance:
                    for name, function in functions.items():
                        instance.add_func(name, _guarded(f"{interface}.{name}", function))
        return linker

    # --- compiled code ---------------------------------------------------------------------

    def compile(self, wasm: bytes) -> PreparedComponent:
        """Compile and check a component; :class:`WasmInvalid` when it is not one or not of the world.

        The runner never calls this on a request path: compile jobs run :func:`compile_component` in a
        bounded child process (:mod:`runner_container.compiler`) and the runner loads the result.
        """
        return self.prepare(compile_component(self.engine, wasm))

    def serialize(self, prepared: PreparedComponent) -> bytes:
        """The component's native code, for :meth:`deserialize_file` in an engine with the same fingerprint."""
        return bytes(prepared.component.serialize())

    def deserialize_file(self, path: str | os.PathLike[str]) -> PreparedComponent:
        """Load a ``.cwasm`` written by :meth:`serialize` on this platform (never a publisher's file) and check
        it against the world (:meth:`prepare`).

        It is memory-mapped: never rewrite it in place while loaded. Raises :class:`WasmInvalid` when
        this engine cannot use it or it is not of the world.
        """
        return self.prepare(self.load_file(path))

    def load_file(self, path: str | os.PathLike[str]) -> Component:
        """The component in a ``.cwasm`` written on this platform, unchecked; :class:`WasmInvalid` when this
        engine cannot use it (another wasmtime, settings or CPU)."""
        try:
            return Component.deserialize_file(self.engine, os.fspath(path))
        except wasmtime.WasmtimeError as exc:
            reason = _summary(str(exc))
            raise WasmInvalid(f"precompiled component {os.fspath(path)!r} is not usable: {reason}") from None

    def prepare(self, component: Component) -> PreparedComponent:
        """Check the component's imports and its ``handle`` export; :class:`WasmInvalid` names the problem."""
        component_type = component.type
        for name, extern in component_type.imports(self.engine).items():
            item = extern.ty
            is_instance = isinstance(item, wasmtime.component.ComponentInstanceType)
            if (is_instance and not any(p.fullmatch(name) for p in ALLOWED_IMPORTS)) or not (
                is_instance or isinstance(item, _TYPE_DEFS)
            ):
                raise WasmInvalid(f"component imports {name!r}, which {ABI} does not provide")
        exports = {name: extern.ty for name, extern in component_type.exports(self.engine).items()}
        handle = exports.get("handle")
        if not isinstance(handle, wasmtime.component.FuncType):
            raise WasmInvalid("component does not export the function `handle` of the world ext:platform/extension")
        if [name for name, _ in handle.params] != ["ctx", "req"] or handle.result is None:
            raise WasmInvalid("component's `handle` is not handle(ctx, req) -> response")
        marker = exports.get(_BODY_STDIO_EXPORT)
        body_stdio = isinstance(marker, wasmtime.component.FuncType) and not marker.params
        return PreparedComponent(component=component, body_stdio=body_stdio)

    # --- calls -----------------------------------------------------------------------------

    def _new_store(self, limits: CallLimits, wasi: wasmtime.WasiConfig) -> tuple[wasmtime.Store, int | None]:
        store = wasmtime.Store(self.engine)
        # A linker with WASI and a store without it aborts the process on the first WASI call.
        store.set_wasi(wasi)
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=_STORE_TABLE_ELEMENTS,
            instances=_STORE_INSTANCES,
            tables=_STORE_TABLES,
            memories=_STORE_MEMORIES,
        )
        store.set_epoch_deadline(max(1, math.ceil(limits.timeout_ms / self.epoch_tick_ms)))
        fuel: int | None = None
        if self.consume_fuel:
            fuel = limits.fuel if limits.fuel is not None else _UNMETERED_FUEL
            store.set_fuel(fuel)
        elif limits.fuel is not None:
            raise SettingsInvalid("a fuel limit needs an engine built with consume_fuel=True")
        return store, fuel

    def execute(
        self, prepared: PreparedComponent, request: Mapping[str, Any], limits: CallLimits, host: HostServices
    ) -> ExecutionResult:
        """Run the component's ``handle`` on ``request`` (the gateway's request JSON) under ``limits``.

        Raises :class:`PayloadTooLarge` for a body over the component limit (before running anything),
        :class:`ExtensionTimeout` when the deadline passes and :class:`ExtensionFailed` for a trap,
        running out of fuel or memory, or a bad response.
        """
        http = request.get("http") or {}
        body = _body(http)
        stdio = prepared.body_stdio and len(body) > STDIO_BODY_THRESHOLD
        if not prepared.body_stdio and len(body) > MAX_INLINE_BODY_BYTES:
            raise PayloadTooLarge(
                f"request body of {len(body)} bytes exceeds {MAX_INLINE_BODY_BYTES}, the limit for components "
                "without body-stdio (build with the platform's SDK for larger bodies)"
            )
        headers = _fields(http.get("headers"), "request.http.headers")
        if stdio:
            headers = [*headers, (BODY_STDIN_HEADER, str(len(body)))]
        ctx = _context(request.get("context") or {}, host.capabilities)
        req = _record(
            method=str(http.get("method", "")),
            path=str(http.get("path", "/")),
            query=_query(http),
            headers=headers,
            body=b"" if stdio else body,
            endpoint=_endpoint(request.get("endpoint")),
        )
        stdout = _Output(limits.max_response_bytes if prepared.body_stdio else 0)
        # The tail too: an interpreter prints the exception that ends the call last.
        stderr = _Output(STDERR_TAIL_BYTES)
        wasi = wasmtime.WasiConfig()
        wasi.stdout_custom = stdout.write
        wasi.stderr_custom = stderr.write
        body_file = _BodyFile(body) if stdio else None
        if body_file is not None:
            wasi.stdin_file = body_file.path
        started = time.perf_counter()
        state = CallState(host, time.monotonic() + limits.timeout_ms / 1000)
        store, fuel = self._new_store(limits, wasi)
        _ACTIVE.state = state
        body_bytes = 0
        try:
            try:
                instance = self._linker.instantiate(store, prepared.component)
                handle = instance.get_func(store, "handle")
                if handle is None:
                    raise ExtensionFailed("component does not export `handle`")
                response = handle(store, ctx, req)
            except (wasmtime.WasmtimeError, _HostTrap) as exc:
                raise with_details(_failure(exc, state, limits), exc, bytes(stderr.tail)) from None
            status, pairs, out_body = _check_response(response, limits.max_response_bytes)
            pairs, out_body, body_bytes = self._stdout_body(prepared, pairs, out_body, stdout, limits)
            consumed = None if fuel is None else fuel - store.get_fuel()
        finally:
            _ACTIVE.state = None
            _logged_output(state, stdout, LogLevel.INFO, body_bytes)
            _logged_output(state, stderr, LogLevel.WARN)
            store.close()
            if body_file is not None:
                body_file.close()
        return ExecutionResult(
            status=status,
            headers=_merge_headers(pairs),
            body=out_body,
            logs=tuple(state.logs),
            duration_ms=(time.perf_counter() - started) * 1000,
            fuel_consumed=consumed,
            logs_dropped=state.logs_dropped,
        )

    @staticmethod
    def _stdout_body(
        prepared: PreparedComponent, pairs: list[tuple[str, str]], body: bytes, stdout: _Output, limits: CallLimits
    ) -> tuple[list[tuple[str, str]], bytes, int]:
        """Take the response body from stdout when the guest said so (``x-ext-body-stdout``)."""
        declared = [value for name, value in pairs if name.lower() == BODY_STDOUT_HEADER]
        if not declared or not prepared.body_stdio:
            return pairs, body, 0
        kept = [(name, value) for name, value in pairs if name.lower() != BODY_STDOUT_HEADER]
        if len(declared) != 1 or not declared[0].isdigit() or body:
            raise ExtensionFailed(f"bad response: {BODY_STDOUT_HEADER} must be one length, with an empty body")
        size = int(declared[0])
        if size > limits.max_response_bytes:
            raise ExtensionFailed(f"response of {size} bytes exceeds the limit of {limits.max_response_bytes}")
        if size > stdout.total or size > len(stdout.tail):
            raise ExtensionFailed(f"bad response: {BODY_STDOUT_HEADER} is {size}, but stdout holds fewer bytes")
        return kept, bytes(stdout.tail[len(stdout.tail) - size :]), size


def compile_component(engine: wasmtime.Engine, wasm: bytes) -> Component:
    """Compile ``wasm`` as a component on ``engine``; :class:`WasmInvalid` when it is not a valid one.

    The compile job's child process calls this with an engine of the runner's settings.
    """
    if bytes(wasm[:4]) != _WASM_MAGIC:
        raise WasmInvalid("not a WebAssembly binary (missing the \\0asm header)")
    try:
        return Component(engine, bytes(wasm))
    except wasmtime.WasmtimeError as exc:
        raise WasmInvalid(f"component does not compile: {_summary(str(exc))}") from None


_TYPE_DEFS: tuple[type, ...] = tuple(
    getattr(wasmtime.component, name)
    for name in ("RecordType", "VariantType", "EnumType", "ListType", "TupleType", "OptionType", "ResultType")
)
