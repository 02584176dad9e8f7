"""The WebAssembly execution engine of the runner: ABI ``wasm-core@1`` (DESIGN §6) on wasmtime.

It follows wasmtime's object graph: one :class:`wasmtime.Engine` per process (epoch interruption on,
fuel when configured) with a daemon thread ticking the epoch, one :class:`wasmtime.Linker` holding the
host imports, and a fresh :class:`wasmtime.Store` per call. One call of :meth:`WasmEngine.execute`:

1. prepare: check the module's ABI and link it against the host imports (once per module, cached);
2. arm a new store: memory limit, epoch deadline, fuel;
3. instantiate, ``alloc`` one block for the request and the 8-byte out slot, write, call ``handler``;
4. read ``(resp_ptr, resp_len)``, check both against the size cap and guest memory *before* copying;
5. parse and validate the response JSON;
6. map any trap: epoch interrupt → :class:`ExtensionTimeout`, everything else → :class:`ExtensionFailed`.

A failure ends that call only; the engine keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
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
from chalicelib.errors import ConfigInvalid, ExtensionFailed, ExtensionTimeout, ExtError, ManifestInvalid, WasmInvalid
from chalicelib.headers import is_header_name, is_header_value
from runner_container.egress import EgressPolicy, FetchError, FetchOutcome

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
    """

    capabilities: frozenset[str] = frozenset()
    egress: tuple[str, ...] = ()
    egress_policy: EgressPolicy = field(default_factory=EgressPolicy)
    log_sink: Callable[[LogRecord], None] | None = None


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
            raise WasmInvalid(f"module imports {where}, which {ABI} does not provide (only ext.log, ext.http_fetch)")
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
            raise ConfigInvalid("epoch_tick_ms must be at least 1")
        self.consume_fuel = consume_fuel
        self.epoch_tick_ms = epoch_tick_ms
        self._settings = {"epoch_interruption": True, "consume_fuel": consume_fuel}
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.consume_fuel = consume_fuel
        self.engine = wasmtime.Engine(config)
        self._linker = self._host_linker()
        self._prepared: weakref.WeakKeyDictionary[wasmtime.Module, wasmtime.InstancePre] = weakref.WeakKeyDictionary()
        self._prepared_lock = threading.Lock()
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
        linker.define_func(
            "ext",
            "http_fetch",
            wasmtime.FuncType([i32, i32, i32], [i32]),
            _guarded("ext.http_fetch", _host_http_fetch),
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

    def _compute_fingerprint(self) -> str:
        described = json.dumps({**self._settings, "cpu": sorted(_cpu_flags())}, sort_keys=True)
        digest = hashlib.sha256(described.encode()).hexdigest()[:12]
        machine = re.sub(r"[^a-z0-9_]", "", platform.machine().lower()) or "unknown"
        system = re.sub(r"[^a-z0-9]", "", sys.platform.lower())
        return f"wasmtime-{metadata.version('wasmtime')}-{machine}-{system}-{digest}"

    def compile(self, wasm: bytes) -> wasmtime.Module:
        """Compile a WebAssembly binary; raises :class:`WasmInvalid` when it is not valid wasm."""
        if bytes(wasm[:4]) != _WASM_MAGIC:
            raise WasmInvalid("not a WebAssembly binary (missing the \\0asm header)")
        try:
            return wasmtime.Module(self.engine, bytes(wasm))
        except wasmtime.WasmtimeError as exc:
            raise WasmInvalid(f"module does not compile: {_summary(str(exc))}") from None

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
            return wasmtime.Module.deserialize_file(self.engine, os.fspath(path))
        except wasmtime.WasmtimeError as exc:
            raise WasmInvalid(f"precompiled module {os.fspath(path)!r} is not usable: {_summary(str(exc))}") from None

    def validate_abi(self, module: wasmtime.Module) -> None:
        """Check the module implements ``wasm-core@1``; raises :class:`WasmInvalid` naming the problem.

        Required exports: ``memory``, ``alloc(i32) -> i32``, ``handler(i32, i32, i32) -> i32``; optional
        ``dealloc(i32, i32)``. Imports: only ``ext.log`` and ``ext.http_fetch`` with their ABI types.
        """
        _check_imports(module)
        _check_exports(module)

    def _prepare(self, module: wasmtime.Module) -> wasmtime.InstancePre:
        prepared = self._prepared.get(module)
        if prepared is not None:
            return prepared
        try:
            self.validate_abi(module)
        except WasmInvalid as exc:
            raise ExtensionFailed(f"module does not implement {ABI}: {exc.message}") from None
        prepared = self._linker.instantiate_pre(module)
        with self._prepared_lock:
            self._prepared[module] = prepared
        return prepared

    # --- calls ---------------------------------------------------------------------------

    def _new_store(self, limits: CallLimits) -> tuple[wasmtime.Store, int | None]:
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=_STORE_TABLE_ELEMENTS,
            instances=1,
            tables=_STORE_TABLES,
            memories=1,
        )
        store.set_epoch_deadline(max(1, math.ceil(limits.timeout_ms / self.epoch_tick_ms)))
        fuel: int | None = None
        if self.consume_fuel:
            fuel = limits.fuel if limits.fuel is not None else _UNMETERED_FUEL
            store.set_fuel(fuel)
        elif limits.fuel is not None:
            raise ConfigInvalid("a fuel limit needs an engine built with consume_fuel=True")
        return store, fuel

    def execute(
        self, module: wasmtime.Module, request: Mapping[str, Any], limits: CallLimits, host: HostServices
    ) -> ExecutionResult:
        """Run the module's ``handler`` on ``request`` under ``limits``.

        Raises :class:`ExtensionTimeout` when the deadline passes and :class:`ExtensionFailed` for a
        trap, running out of fuel or memory, a non-zero return, or a bad response.
        """
        prepared = self._prepare(module)
        payload = json.dumps(dict(request), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        store, fuel = self._new_store(limits)
        started = time.perf_counter()
        state = _CallState(host, time.monotonic() + limits.timeout_ms / 1000)
        _ACTIVE.state = state
        try:
            raw = self._call(prepared, store, payload, limits)
        except (wasmtime.Trap, wasmtime.WasmtimeError, _HostTrap) as exc:
            raise _failure(exc, state, limits) from None
        finally:
            _ACTIVE.state = None
        status, headers, body = _parse_response(raw)
        return ExecutionResult(
            status=status,
            headers=headers,
            body=body,
            logs=tuple(state.logs),
            duration_ms=(time.perf_counter() - started) * 1000,
            fuel_consumed=None if fuel is None else fuel - store.get_fuel(),
            logs_dropped=state.logs_dropped,
        )

    @staticmethod
    def _call(prepared: wasmtime.InstancePre, store: wasmtime.Store, payload: bytes, limits: CallLimits) -> bytes:
        exports = prepared.instantiate(store).exports(store)
        memory, alloc, handler = exports["memory"], exports["alloc"], exports["handler"]
        # _prepare checked these types; the asserts only narrow them for the type checker.
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func)
        assert isinstance(handler, wasmtime.Func)
        # One allocation holds the request, padding to 8 bytes and the zeroed out slot, so a guest that
        # returns without writing the slot yields an empty response rather than stale bytes.
        slot = (len(payload) + 7) & ~7
        block = payload + bytes(slot - len(payload) + 8)
        base = alloc(store, len(block)) & _U32
        size = memory.data_len(store)
        if base == 0 or base + len(block) > size:
            raise ExtensionFailed(f"guest alloc({len(block)}) returned {base}, not a usable block of its memory")
        memory.write(store, block, base)
        code = handler(store, base, len(payload), base + slot)
        if code != 0:
            raise ExtensionFailed(f"handler returned {code} (non-zero means the extension reported an error)")
        resp_ptr, resp_len = struct.unpack("<II", memory.read(store, base + slot, base + slot + 8))
        if resp_len > limits.max_response_bytes:
            raise ExtensionFailed(f"response of {resp_len} bytes exceeds the limit of {limits.max_response_bytes}")
        size = memory.data_len(store)
        if resp_ptr + resp_len > size:
            raise ExtensionFailed(
                f"response pointer {resp_ptr} with length {resp_len} lies outside guest memory of {size} bytes"
            )
        return bytes(memory.read(store, resp_ptr, resp_ptr + resp_len))
