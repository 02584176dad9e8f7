"""The WebAssembly execution engine of the runner: ABI ``wasm-core@1`` (DESIGN §6) on wasmtime.

It follows wasmtime's object graph: one :class:`wasmtime.Engine` per process (epoch interruption on,
fuel when configured) with a daemon thread ticking the epoch, one :class:`wasmtime.Linker` holding the
host imports, and a store per instance. Every call starts from the state its module has right after
instantiation: on a fresh instance, or on a kept one that was restored to its snapshot after its previous
call (:mod:`runner_container.instances`, for the modules :mod:`runner_container.restore_plan` proves that
exact for). One call of :meth:`WasmEngine.execute`:

1. prepare: check the module's ABI and link it against the host imports (once per module, cached);
2. take an instance: a kept one (or a new one, snapshotted) for a restorable module, else a fresh one;
3. arm its store: epoch deadline and fuel for this call (the memory limit is the store's own);
4. ``alloc`` one block for the request and the 8-byte out slot, write, call ``handler``;
5. read ``(resp_ptr, resp_len)``, check both against the size cap and guest memory *before* copying;
6. hand a kept instance back (restored, or dropped when its memory grew); drop it on any failure;
7. parse and validate the response JSON;
8. map any trap: epoch interrupt → :class:`ExtensionTimeout`, everything else → :class:`ExtensionFailed`.

A failure ends that call only; the engine keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import json
import logging
import math
import os
import platform
import re
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from importlib import metadata
from typing import Any

import wasmtime

from chalicelib.config import Settings
from chalicelib.errors import ExtensionFailed, ExtensionTimeout, ExtError, ManifestInvalid, SettingsInvalid, WasmInvalid
from chalicelib.headers import is_header_name, is_header_value
from chalicelib.kv.abi import MAX_CORE_REQUEST_BYTES
from chalicelib.logs import log_event
from runner_container.egress import EgressPolicy, FetchError, FetchOutcome
from runner_container.host_services import (
    KV_CAPABILITY,
    MAX_SECRET_NAME_BYTES,
    SECRETS_CAPABILITY,
    KvService,
    SecretService,
    core_kv_answer,
    core_secret_answer,
)
from runner_container.instances import RESTORE_MAX_MEMORY_BYTES, Instance, InstancePool, PoolStats, memory_address
from runner_container.restore_plan import RESERVED_EXPORT_PREFIX, RESTORABLE_MARKER, plan_module
from runner_container.traps import with_details

__all__ = [
    "ABI",
    "HTTP_FETCH_CAPABILITY",
    "CallLimits",
    "ExecutionResult",
    "HostServices",
    "LogLevel",
    "LogRecord",
    "WasmEngine",
    "clamp_limits",
    "compile_module",
]

ABI = "wasm-core@1"
HTTP_FETCH_CAPABILITY = "cap:http.fetch"
MiB = 1024 * 1024
LOG_MAX_MESSAGE_BYTES = 4096
LOG_MAX_RECORDS = 100
DEFAULT_EPOCH_TICK_MS = 10
_MAX_CATCH_UP_TICKS = 100
# Per-store caps beside linear memory: one instance with one memory (the memory cap is per memory),
# and tables small enough that their host-side cost stays in the kilobytes.
_STORE_TABLE_ELEMENTS = 100_000
_STORE_TABLES = 8
_UNMETERED_FUEL = 2**64 - 1
_U32 = 0xFFFFFFFF
_WASM_MAGIC = b"\0asm"
# One encoder for every request: json.dumps with options builds a new one per call.
_REQUEST_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# Feature flags that change the machine code Cranelift emits on x86_64 (wasmtime checks them again when
# it deserializes; folding them into the fingerprint keeps hosts with different CPUs off each other's .cwasm).
_CODEGEN_CPU_FLAGS = frozenset(
    {"sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "fma", "bmi1", "bmi2", "lzcnt", "avx512f"}
    | {"avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "cmpxchg16b"}
)

_Signature = tuple[tuple[str, ...], tuple[str, ...]]
_GUEST_FUNCTIONS: dict[str, _Signature] = {
    "alloc": (("i32",), ("i32",)),
    "handler": (("i32", "i32", "i32"), ("i32",)),
    "dealloc": (("i32", "i32"), ()),
}
_REQUIRED_FUNCTIONS = ("alloc", "handler")
_HOST_FUNCTIONS: dict[tuple[str, str], _Signature] = {
    ("ext", "log"): (("i32", "i32", "i32"), ()),
    ("ext", "http_fetch"): (("i32", "i32", "i32"), ("i32",)),
    ("ext", "kv"): (("i32", "i32", "i32"), ("i32",)),
    ("ext", "secret_get"): (("i32", "i32", "i32"), ("i32",)),
}


class LogLevel(IntEnum):
    """The ``level`` argument of ``ext.log``."""

    DEBUG = 0
    INFO = 1
    WARN = 2
    ERROR = 3


@dataclass(frozen=True)
class LogRecord:
    """One message the guest logged; ``truncated`` when it was cut at 4 KiB."""

    level: LogLevel
    message: str
    truncated: bool = False


@dataclass(frozen=True)
class CallLimits:
    """The hard limits of one call."""

    timeout_ms: int
    memory_bytes: int
    fuel: int | None
    max_response_bytes: int


@dataclass(frozen=True)
class ExecutionResult:
    """A successful call: the validated response plus what the call cost.

    ``logs_dropped`` counts guest log messages past the per-call limit of 100.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    logs: tuple[LogRecord, ...]
    duration_ms: float
    fuel_consumed: int | None
    logs_dropped: int = 0


@dataclass(frozen=True)
class HostServices:
    """What the host imports may do for one call.

    ``capabilities`` are the install's granted capabilities, ``egress`` the manifest's egress patterns;
    ``log_sink`` (when set) sees every kept log record as it is written, so logs survive a failed call.
    ``kv`` and ``secrets`` are the install's services (:mod:`runner_container.host_services`); without
    one, its host functions answer ``denied``.
    """

    capabilities: frozenset[str] = frozenset()
    egress: tuple[str, ...] = ()
    egress_policy: EgressPolicy = field(default_factory=EgressPolicy)
    log_sink: Callable[[LogRecord], None] | None = None
    kv: KvService | None = None
    secrets: SecretService | None = None


def _clamp(limits: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    requested = limits.get(key)
    if requested is None:
        return min(default, maximum)
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise ManifestInvalid(f"limits.{key} must be a positive integer, got {requested!r}")
    return min(requested, maximum)


def clamp_limits(manifest_limits: Mapping[str, Any] | None, settings: Settings) -> CallLimits:
    """The limits of one call: the manifest's ``limits`` requests, clamped to the platform maximum.

    A missing request takes the platform default; fuel and the response cap come from the platform only.
    """
    requested = manifest_limits or {}
    timeout_ms = _clamp(requested, "timeout_ms", settings.runner_default_timeout_ms, settings.runner_max_timeout_ms)
    memory_mb = _clamp(requested, "memory_mb", settings.runner_default_memory_mb, settings.runner_max_memory_mb)
    return CallLimits(
        timeout_ms=timeout_ms,
        memory_bytes=memory_mb * MiB,
        fuel=settings.runner_fuel or None,
        max_response_bytes=settings.runner_max_response_bytes,
    )


# --- per-call state seen by the host imports ----------------------------------------------


class _HostTrap(Exception):
    """Raised inside a host import to trap the calling guest with ``message``."""


class _CallState:
    """What the host imports of one in-flight call read and append to."""

    __slots__ = ("deadline", "host", "logs", "logs_dropped", "nested_trap", "timed_out", "trap_message")

    def __init__(self, host: HostServices, deadline: float) -> None:
        self.host = host
        self.deadline = deadline
        self.logs: list[LogRecord] = []
        self.logs_dropped = 0
        self.trap_message: str | None = None
        self.nested_trap: wasmtime.Trap | None = None
        self.timed_out = False


# Host imports run on the thread that called the guest, so the call's state is found per thread.
_ACTIVE = threading.local()


def _active_state() -> _CallState:
    state: _CallState | None = getattr(_ACTIVE, "state", None)
    if state is None:
        raise _HostTrap("host import called outside of an extension call")
    return state


def _guarded(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a host import so every failure traps the guest with a message the call reports."""

    def host_import(caller: wasmtime.Caller, *args: int) -> Any:
        state = _active_state()
        try:
            result = body(state, caller, *args)
        except wasmtime.Trap as trap:
            # A trap inside a nested guest call (alloc) keeps its code: a timeout stays a timeout.
            state.nested_trap = trap
            raise
        except _HostTrap as exc:
            state.trap_message = f"{name}: {exc}"
            raise
        except Exception as exc:
            state.trap_message = f"{name}: host error ({type(exc).__name__})"
            raise _HostTrap(state.trap_message) from exc
        if time.monotonic() >= state.deadline:
            # The import used up the call's time (a slow fetch); end the call now rather than hoping
            # the guest reaches an epoch check before it returns.
            state.timed_out = True
            raise _HostTrap(f"{name} returned after the call's deadline")
        return result

    return host_import


def _guest_memory(caller: wasmtime.Caller) -> wasmtime.Memory:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise _HostTrap("the guest exports no memory")
    return memory


def _check_region(memory: wasmtime.Memory, store: wasmtime.Caller, ptr: int, length: int, what: str) -> None:
    size = memory.data_len(store)
    if ptr + length > size:
        raise _HostTrap(f"{what} (pointer {ptr}, length {length}) lies outside guest memory of {size} bytes")


def _host_log(state: _CallState, caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
    ptr, length = ptr & _U32, length & _U32
    memory = _guest_memory(caller)
    _check_region(memory, caller, ptr, length, "message")
    try:
        log_level = LogLevel(level)
    except ValueError:
        raise _HostTrap(f"unknown log level {level} (expected 0 debug, 1 info, 2 warn or 3 error)") from None
    if len(state.logs) >= LOG_MAX_RECORDS:
        state.logs_dropped += 1
        return
    kept = min(length, LOG_MAX_MESSAGE_BYTES)
    raw = bytes(memory.read(caller, ptr, ptr + kept))
    record = LogRecord(log_level, raw.decode("utf-8", errors="replace"), truncated=kept < length)
    state.logs.append(record)
    if state.host.log_sink is not None:
        state.host.log_sink(record)


def _host_http_fetch(state: _CallState, caller: wasmtime.Caller, req_ptr: int, req_len: int, out_ptr: int) -> int:
    req_ptr, req_len, out_ptr = req_ptr & _U32, req_len & _U32, out_ptr & _U32
    memory = _guest_memory(caller)
    _check_region(memory, caller, req_ptr, req_len, "request")
    _check_region(memory, caller, out_ptr, 8, "out slot")
    code, payload = _fetch_answer(state, caller, memory, req_ptr, req_len)
    _hand_to_guest(caller, memory, payload, out_ptr)
    return code


def _fetch_answer(
    state: _CallState, caller: wasmtime.Caller, memory: wasmtime.Memory, req_ptr: int, req_len: int
) -> tuple[int, bytes]:
    """The return code and JSON for one ``ext.http_fetch``; the request is copied only when it may be served."""
    host, policy = state.host, state.host.egress_policy
    if HTTP_FETCH_CAPABILITY not in host.capabilities:
        return FetchError(FetchOutcome.DENIED, f"capability {HTTP_FETCH_CAPABILITY} is not granted").answer()
    if req_len > policy.max_request_json_bytes:
        limit = policy.max_request_json_bytes
        return FetchError(FetchOutcome.FAILED, f"http_fetch request of {req_len} bytes exceeds {limit}").answer()
    raw = bytes(memory.read(caller, req_ptr, req_ptr + req_len))
    return policy.fetch_json(raw, host.egress, remaining_s=state.deadline - time.monotonic())


def _host_kv(state: _CallState, caller: wasmtime.Caller, req_ptr: int, req_len: int, out_ptr: int) -> int:
    """``ext.kv``: JSON in, JSON out (DESIGN §6c); 0 = done, 1 = refused (the JSON says why), never a trap."""
    req_ptr, req_len, out_ptr = req_ptr & _U32, req_len & _U32, out_ptr & _U32
    memory = _guest_memory(caller)
    _check_region(memory, caller, req_ptr, req_len, "request")
    _check_region(memory, caller, out_ptr, 8, "out slot")
    service = state.host.kv if KV_CAPABILITY in state.host.capabilities else None
    # One byte past the largest valid request is enough for the parser to refuse it: never copy more.
    kept = min(req_len, MAX_CORE_REQUEST_BYTES + 1)
    raw = b"" if service is None else bytes(memory.read(caller, req_ptr, req_ptr + kept))
    code, answer = core_kv_answer(service, raw)
    _hand_to_guest(caller, memory, answer, out_ptr)
    return code


def _host_secret_get(state: _CallState, caller: wasmtime.Caller, name_ptr: int, name_len: int, out_ptr: int) -> int:
    """``ext.secret_get``: the name's UTF-8 bytes in, ``{"value"}`` (0) or an error object (1) out."""
    name_ptr, name_len, out_ptr = name_ptr & _U32, name_len & _U32, out_ptr & _U32
    memory = _guest_memory(caller)
    _check_region(memory, caller, name_ptr, name_len, "name")
    _check_region(memory, caller, out_ptr, 8, "out slot")
    service = state.host.secrets if SECRETS_CAPABILITY in state.host.capabilities else None
    kept = min(name_len, MAX_SECRET_NAME_BYTES + 1)
    raw = b"" if service is None else bytes(memory.read(caller, name_ptr, name_ptr + kept))
    code, answer = core_secret_answer(service, raw)
    _hand_to_guest(caller, memory, answer, out_ptr)
    return code


def _hand_to_guest(caller: wasmtime.Caller, memory: wasmtime.Memory, payload: bytes, out_ptr: int) -> None:
    """Copy ``payload`` into memory the guest allocates and store ``(ptr, len)`` at ``out_ptr``."""
    alloc = caller.get("alloc")
    if not isinstance(alloc, wasmtime.Func):
        raise _HostTrap("the guest exports no alloc")
    ptr = alloc(caller, len(payload)) & _U32
    if ptr == 0:
        raise _HostTrap(f"guest alloc({len(payload)}) failed")
    _check_region(memory, caller, ptr, len(payload), "alloc result")
    memory.write(caller, payload, ptr)
    memory.write(caller, struct.pack("<II", ptr, len(payload)), out_ptr)


# --- ABI checks and response validation -----------------------------------------------------


def _signature(func_type: wasmtime.FuncType) -> _Signature:
    return tuple(str(p) for p in func_type.params), tuple(str(r) for r in func_type.results)


def _describe(signature: _Signature) -> str:
    params, results = signature
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _check_imports(module: wasmtime.Module) -> None:
    for imported in module.imports:
        key = (imported.module, imported.name or "")
        expected = _HOST_FUNCTIONS.get(key)
        where = f"{imported.module}.{imported.name}"
        if expected is None:
            provided = ", ".join(f"{module}.{name}" for module, name in _HOST_FUNCTIONS)
            raise WasmInvalid(f"module imports {where}, which {ABI} does not provide (only {provided})")
        kind = imported.type
        if not isinstance(kind, wasmtime.FuncType) or _signature(kind) != expected:
            raise WasmInvalid(f"import {where} must be a function {_describe(expected)}")


def _check_exports(module: wasmtime.Module) -> None:
    exports = {exported.name: exported.type for exported in module.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise WasmInvalid(f"module must export a memory named 'memory' ({ABI})")
    if memory.is_64 or memory.is_shared:
        raise WasmInvalid("exported memory must be a plain 32-bit, unshared memory")
    for name, expected in _GUEST_FUNCTIONS.items():
        kind = exports.get(name)
        if kind is None:
            if name in _REQUIRED_FUNCTIONS:
                raise WasmInvalid(f"module must export a function {name!r} ({ABI})")
            continue
        if not isinstance(kind, wasmtime.FuncType) or _signature(kind) != expected:
            raise WasmInvalid(f"export {name!r} must be a function {_describe(expected)}")


def _parse_status(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 599:
        raise ExtensionFailed(f"bad response: status must be an integer from 100 to 599, got {value!r}")
    return value


def _parse_headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExtensionFailed("bad response: headers must be an object")
    for name, text in value.items():
        if not is_header_name(name):
            raise ExtensionFailed(f"bad response: header name {name!r} is not an RFC 7230 token")
        if not isinstance(text, str):
            raise ExtensionFailed(f"bad response: header {name!r} must have a string value")
        if not is_header_value(text):
            raise ExtensionFailed(f"bad response: header {name!r} has a value with CR, LF or NUL")
    return value


def _parse_body(value: object) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ExtensionFailed("bad response: body_b64 must be a string or null")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ExtensionFailed("bad response: body_b64 is not valid base64") from None


def _parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExtensionFailed(f"bad response: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ExtensionFailed("bad response: must be a JSON object")
    if "status" not in obj:
        raise ExtensionFailed("bad response: missing 'status'")
    return _parse_status(obj["status"]), _parse_headers(obj.get("headers")), _parse_body(obj.get("body_b64"))


def _summary(text: str) -> str:
    """wasmtime's multi-line error text cut to its causes, on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" in lines:
        lines = [re.sub(r"^\d+:\s*", "", line) for line in lines[lines.index("Caused by:") + 1 :]]
    return "; ".join(lines)


def _failure(exc: Exception, state: _CallState, limits: CallLimits) -> ExtError:
    trap = state.nested_trap or (exc if isinstance(exc, wasmtime.Trap) else None)
    if state.timed_out or (trap is not None and trap.trap_code is wasmtime.TrapCode.INTERRUPT):
        return ExtensionTimeout(f"extension exceeded its time limit of {limits.timeout_ms} ms")
    if trap is not None and trap.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
        return ExtensionFailed(f"extension ran out of fuel (limit {limits.fuel})")
    if state.trap_message is not None:
        return ExtensionFailed(f"extension trapped in host import {state.trap_message}")
    if trap is not None:
        return ExtensionFailed(f"extension trapped: {_summary(trap.message)}")
    return ExtensionFailed(f"extension failed: {_summary(str(exc))}")


# --- the engine ---------------------------------------------------------------------------


class _EpochTicker:
    """Daemon thread that advances the engine's epoch every ``interval_s``."""

    def __init__(self, engine: wasmtime.Engine, interval_s: float) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasm-epoch-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Count ticks from the clock rather than from wake-ups, so a late wake-up (GIL contention)
        # catches up and deadlines stay close to wall-clock time. A long gap (a frozen Lambda) is
        # skipped rather than replayed: deadlines are relative, so only the catch-up during a call matters.
        started = time.monotonic()
        ticks = 0
        while not self._stop.wait(self._interval_s):
            due = int((time.monotonic() - started) / self._interval_s)
            for _ in range(min(due - ticks, _MAX_CATCH_UP_TICKS)):
                self._engine.increment_epoch()
            ticks = due

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split()) & _CODEGEN_CPU_FLAGS
    except OSError:
        pass
    return frozenset()


class WasmEngine:
    """One wasmtime engine for the process, with its epoch ticker and host-import linker.

    ``consume_fuel`` turns fuel metering on (then every call is metered; ``CallLimits.fuel`` of ``None``
    means unlimited). Modules must be compiled by, or serialized from, an engine with the same settings.
    ``engine`` is the underlying :class:`wasmtime.Engine` (benchmarks compare against it bare).
    """

    def __init__(self, *, consume_fuel: bool = False, epoch_tick_ms: int = DEFAULT_EPOCH_TICK_MS) -> None:
        if epoch_tick_ms < 1:
            raise SettingsInvalid("epoch_tick_ms must be at least 1")
        self.consume_fuel = consume_fuel
        self.epoch_tick_ms = epoch_tick_ms
        # The restore plan's marker version is part of the fingerprint: compiled code carries its rewrite.
        self._settings = {"epoch_interruption": True, "consume_fuel": consume_fuel}
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.consume_fuel = consume_fuel
        self.engine = wasmtime.Engine(config)
        self._linker = self._host_linker()
        self._prepared: weakref.WeakKeyDictionary[wasmtime.Module, _Prepared] = weakref.WeakKeyDictionary()
        self._prepared_lock = threading.Lock()
        # Modules this engine compiled or deserialized itself: only their restore marker is believed.
        self._own_modules: weakref.WeakSet[wasmtime.Module] = weakref.WeakSet()
        self._pool = InstancePool()
        self._fingerprint = self._compute_fingerprint()
        self._ticker = _EpochTicker(self.engine, epoch_tick_ms / 1000)

    @classmethod
    def from_settings(cls, settings: Settings) -> WasmEngine:
        """The engine the runner's settings call for: fuel metering on when ``RUNNER_FUEL`` > 0."""
        return cls(consume_fuel=settings.runner_fuel > 0)

    def close(self) -> None:
        """Stop the epoch ticker; calls made afterwards can no longer time out."""
        self._ticker.stop()

    def __enter__(self) -> WasmEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_linker(self) -> wasmtime.Linker:
        linker = wasmtime.Linker(self.engine)
        i32 = wasmtime.ValType.i32()
        linker.define_func(
            "ext", "log", wasmtime.FuncType([i32, i32, i32], []), _guarded("ext.log", _host_log), access_caller=True
        )
        for name, body in (("http_fetch", _host_http_fetch), ("kv", _host_kv), ("secret_get", _host_secret_get)):
            linker.define_func(
                "ext",
                name,
                wasmtime.FuncType([i32, i32, i32], [i32]),
                _guarded(f"ext.{name}", body),
                access_caller=True,
            )
        return linker

    # --- compiled code -------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """Names what compiled code this engine accepts: wasmtime version, target and engine settings.

        Stable across processes on the same kind of host and safe as an S3 key segment, e.g.
        ``wasmtime-50.0.1-x86_64-linux-3f2a9c1d0b7e``.
        """
        return self._fingerprint

    @property
    def config_settings(self) -> dict[str, bool]:
        """The :class:`wasmtime.Config` attributes this engine sets: a compile job in another process sets
        the same ones, so the code it produces loads here."""
        return dict(self._settings)

    def _compute_fingerprint(self) -> str:
        # The restore plan's version is part of what compiled code carries (its export rewrite).
        described = json.dumps(
            {**self._settings, "restore_plan": RESTORABLE_MARKER, "cpu": sorted(_cpu_flags())}, sort_keys=True
        )
        digest = hashlib.sha256(described.encode()).hexdigest()[:12]
        machine = re.sub(r"[^a-z0-9_]", "", platform.machine().lower()) or "unknown"
        system = re.sub(r"[^a-z0-9]", "", sys.platform.lower())
        return f"wasmtime-{metadata.version('wasmtime')}-{machine}-{system}-{digest}"

    def compile(self, wasm: bytes) -> wasmtime.Module:
        """Compile a WebAssembly binary; raises :class:`WasmInvalid` when it is not valid wasm.

        What is compiled is the binary as :func:`~runner_container.restore_plan.plan_module` rewrites it
        (exports only: the guest's code and behaviour are unchanged), so a restorable module's instances can
        be kept between calls. Exports named ``ext-runner:…`` are reserved for that rewrite.
        """
        module = compile_module(self.engine, wasm)
        self._own_modules.add(module)
        return module

    def serialize(self, module: wasmtime.Module) -> bytes:
        """The module's native code, for :meth:`deserialize_file` in an engine with the same fingerprint."""
        return bytes(module.serialize())

    def deserialize_file(self, path: str | os.PathLike[str]) -> wasmtime.Module:
        """Load a ``.cwasm`` written by :meth:`serialize` on this platform.

        The bytes are native code: pass only files the platform compiled itself, never anything a
        publisher supplied. The file is memory-mapped, so it must never be rewritten in place while
        loaded (write a new file and ``os.replace`` it). Raises :class:`WasmInvalid` when the file is
        not an artifact this engine accepts (another wasmtime, settings or CPU).
        """
        try:
            module = wasmtime.Module.deserialize_file(self.engine, os.fspath(path))
        except wasmtime.WasmtimeError as exc:
            raise WasmInvalid(f"precompiled module {os.fspath(path)!r} is not usable: {_summary(str(exc))}") from None
        # Precompiled code is this platform's own output of compile(), so its restore marker is believed.
        self._own_modules.add(module)
        return module

    def validate_abi(self, module: wasmtime.Module) -> None:
        """Check the module implements ``wasm-core@1``; raises :class:`WasmInvalid` naming the problem.

        Required exports: ``memory``, ``alloc(i32) -> i32``, ``handler(i32, i32, i32) -> i32``; optional
        ``dealloc(i32, i32)``. Imports: only ``ext.log``, ``ext.http_fetch``, ``ext.kv`` and ``ext.secret_get``
        with their ABI types.
        """
        _check_imports(module)
        _check_exports(module)

    def _prepare(self, module: wasmtime.Module) -> _Prepared:
        prepared = self._prepared.get(module)
        if prepared is not None:
            return prepared
        try:
            self.validate_abi(module)
        except WasmInvalid as exc:
            raise ExtensionFailed(f"module does not implement {ABI}: {exc.message}") from None
        restorable = (
            module in self._own_modules and _is_marked(module) and _initial_memory(module) <= RESTORE_MAX_MEMORY_BYTES
        )
        prepared = _Prepared(self._linker.instantiate_pre(module), restorable)
        with self._prepared_lock:
            self._prepared[module] = prepared
        return prepared

    def keeps_instances(self, module: wasmtime.Module) -> bool:
        """Whether calls of ``module`` run on kept instances restored between calls (else fresh ones)."""
        return self._prepare(module).restorable

    @property
    def pool_stats(self) -> PoolStats:
        """What the pool of kept instances has done since the engine started."""
        return self._pool.stats

    # --- calls ---------------------------------------------------------------------------

    def _deadline_ticks(self, limits: CallLimits) -> int:
        return max(1, math.ceil(limits.timeout_ms / self.epoch_tick_ms))

    def _fuel(self, limits: CallLimits) -> int | None:
        """The fuel one call gets: None on an engine without metering."""
        if self.consume_fuel:
            return limits.fuel if limits.fuel is not None else _UNMETERED_FUEL
        if limits.fuel is not None:
            raise SettingsInvalid("a fuel limit needs an engine built with consume_fuel=True")
        return None

    def _new_store(self, limits: CallLimits) -> wasmtime.Store:
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=_STORE_TABLE_ELEMENTS,
            instances=1,
            tables=_STORE_TABLES,
            memories=1,
        )
        return store

    def _arm(self, store: wasmtime.Store, fuel: int | None, limits: CallLimits) -> None:
        """Give ``store`` this call's epoch deadline (relative to now) and fuel."""
        store.set_epoch_deadline(self._deadline_ticks(limits))
        if fuel is not None:
            store.set_fuel(fuel)

    def execute(
        self, module: wasmtime.Module, request: Mapping[str, Any], limits: CallLimits, host: HostServices
    ) -> ExecutionResult:
        """Run the module's ``handler`` on ``request`` under ``limits``, from its post-instantiation state.

        Raises :class:`ExtensionTimeout` when the deadline passes and :class:`ExtensionFailed` for a
        trap, running out of fuel or memory, a non-zero return, or a bad response.
        """
        prepared = self._prepare(module)
        fuel = self._fuel(limits)
        payload = _REQUEST_ENCODER.encode(dict(request)).encode("utf-8")
        started = time.perf_counter()
        state = _CallState(host, time.monotonic() + limits.timeout_ms / 1000)
        _ACTIVE.state = state
        try:
            if prepared.restorable:
                raw, fuel_left = self._call_kept(module, prepared.pre, payload, fuel, limits)
            else:
                raw, fuel_left = self._call_fresh(prepared.pre, payload, fuel, limits)
        except (wasmtime.Trap, wasmtime.WasmtimeError, _HostTrap) as exc:
            raise with_details(_failure(exc, state, limits), state.nested_trap or exc) from None
        finally:
            _ACTIVE.state = None
        status, headers, body = _parse_response(raw)
        return ExecutionResult(
            status=status,
            headers=headers,
            body=body,
            logs=tuple(state.logs),
            duration_ms=(time.perf_counter() - started) * 1000,
            fuel_consumed=None if fuel is None or fuel_left is None else fuel - fuel_left,
            logs_dropped=state.logs_dropped,
        )

    def _call_fresh(
        self, prepared: wasmtime.InstancePre, payload: bytes, fuel: int | None, limits: CallLimits
    ) -> tuple[bytes, int | None]:
        store = self._new_store(limits)
        try:
            # Armed before instantiation: a start function runs under this call's deadline and fuel.
            self._arm(store, fuel, limits)
            raw = _exchange(Instance.start(prepared, store), payload, limits)
            return raw, None if fuel is None else store.get_fuel()
        finally:
            store.close()

    def _call_kept(
        self,
        module: wasmtime.Module,
        prepared: wasmtime.InstancePre,
        payload: bytes,
        fuel: int | None,
        limits: CallLimits,
    ) -> tuple[bytes, int | None]:
        kept = self._pool.lend(module, prepared, limits.memory_bytes, lambda: self._new_store(limits))
        returned = False
        try:
            store = kept.instance.store
            self._arm(store, fuel, limits)
            raw = _exchange(kept.instance, payload, limits)
            fuel_left = None if fuel is None else store.get_fuel()
            returned = True
        finally:
            if returned:
                self._pool.give_back(module, kept)
            else:
                self._pool.drop(kept)
        return raw, fuel_left


@dataclass(frozen=True)
class _Prepared:
    """A module linked against the host imports, and whether its instances may be kept and restored."""

    pre: wasmtime.InstancePre
    restorable: bool


_WASM_PAGE = 65536


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    """Compile ``wasm`` as :meth:`WasmEngine.compile` does, on any engine with the runner's settings.

    The compile job's child process calls this too, so code compiled there carries the same restore plan.
    """
    original = bytes(wasm)
    if original[:4] != _WASM_MAGIC:
        raise WasmInvalid("not a WebAssembly binary (missing the \\0asm header)")
    rewritten, plan = plan_module(original)
    try:
        module = _compile_bytes(engine, rewritten)
    except WasmInvalid as exc:
        if rewritten is original:
            raise
        # The rewrite touches exports only, so this is a bug in it: run the module fresh, as written.
        log_event("runner.restore_plan_rewrite_failed", level=logging.WARNING, reason=exc.message)
        module, restorable = _compile_bytes(engine, original), False
    else:
        restorable = plan.restorable
    if _is_marked(module) != restorable or (not restorable and _has_reserved_exports(module)):
        raise WasmInvalid(f"export names starting with {RESERVED_EXPORT_PREFIX!r} are reserved for the runner")
    return module


def _compile_bytes(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise WasmInvalid(f"module does not compile: {_summary(str(exc))}") from None


def _is_marked(module: wasmtime.Module) -> bool:
    return any(exported.name == RESTORABLE_MARKER for exported in module.exports)


def _has_reserved_exports(module: wasmtime.Module) -> bool:
    return any((exported.name or "").startswith(RESERVED_EXPORT_PREFIX) for exported in module.exports)


def _initial_memory(module: wasmtime.Module) -> int:
    for exported in module.exports:
        if exported.name == "memory" and isinstance(exported.type, wasmtime.MemoryType):
            return int(exported.type.limits.min) * _WASM_PAGE
    return 0


def _exchange(instance: Instance, payload: bytes, limits: CallLimits) -> bytes:
    """Write ``payload`` into the guest, call ``handler``, and copy out its checked response."""
    store, memory = instance.store, instance.memory
    # One allocation holds the request, padding to 8 bytes and the zeroed out slot, so a guest that
    # returns without writing the slot yields an empty response rather than stale bytes.
    slot = (len(payload) + 7) & ~7
    total = slot + 8
    base = (instance.alloc(total) or 0) & _U32
    size = memory.data_len(store)
    if base == 0 or base + total > size:
        raise ExtensionFailed(f"guest alloc({total}) returned {base}, not a usable block of its memory")
    address = memory_address(memory, store)
    ctypes.memmove(address + base, payload, len(payload))
    ctypes.memset(address + base + len(payload), 0, total - len(payload))
    code = instance.handler(base, len(payload), base + slot)
    if code != 0:
        raise ExtensionFailed(f"handler returned {code} (non-zero means the extension reported an error)")
    # The handler may have grown memory, which can move it: look its address and size up again.
    address = memory_address(memory, store)
    resp_ptr, resp_len = struct.unpack("<II", ctypes.string_at(address + base + slot, 8))
    if resp_len > limits.max_response_bytes:
        raise ExtensionFailed(f"response of {resp_len} bytes exceeds the limit of {limits.max_response_bytes}")
    size = memory.data_len(store)
    if resp_ptr + resp_len > size:
        raise ExtensionFailed(
            f"response pointer {resp_ptr} with length {resp_len} lies outside guest memory of {size} bytes"
        )
    return ctypes.string_at(address + resp_ptr, resp_len)
