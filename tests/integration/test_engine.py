"""The wasm-core@1 engine against real wasmtime: ABI round trips, every limit, and hostile guests."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import pytest
import wasmtime

from chalicelib.config import load_settings
from chalicelib.errors import (
    ExtensionFailed,
    ExtensionTimeout,
    ExtError,
    ManifestInvalid,
    SettingsInvalid,
    WasmInvalid,
)
from runner_container.engine import (
    CallLimits,
    HostServices,
    LogLevel,
    LogRecord,
    WasmEngine,
    clamp_limits,
)

MiB = 1024 * 1024
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wat"
LIMITS = CallLimits(timeout_ms=2000, memory_bytes=16 * MiB, fuel=None, max_response_bytes=64 * 1024)
NO_HOST = HostServices()
REQUEST = {
    "context": {
        "request_id": "req-1",
        "tenant_id": "acme",
        "extension_id": "com.example.echo",
        "install_id": "inst-1",
        "version": "1.0.0",
        "content_hash": "sha256:" + "ab" * 32,
        "config": {"greeting": "hé"},
    },
    "endpoint": {"method": "POST", "path": "/items/:id", "handler": "items", "params": {"id": "42"}},
    "http": {
        "method": "POST",
        "path": "/items/42",
        "query": {"q": "1"},
        "query_string": "q=1&q=2",
        "headers": {"content-type": "application/json"},
        "body_b64": base64.b64encode(b'{"n": 1}').decode(),
    },
}

BUMP_ALLOC = """
  (global $heap (mut i32) (i32.const 4096))
  (func (export "alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.add (local.get $size) (i32.const 8))))
    (local.get $ptr))
"""


def fixture(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((FIXTURES / f"{name}.wat").read_text()))


def wat_string(raw: bytes) -> str:
    return "".join(f"\\{byte:02x}" for byte in raw)


def guest(handler_body: str, *, data: bytes = b"", imports: str = "", alloc: str = BUMP_ALLOC) -> bytes:
    """A wasm-core@1 module whose handler runs ``handler_body``; ``data`` sits at address 1024."""
    return bytes(
        wasmtime.wat2wasm(
            f"""(module {imports}
              (memory (export "memory") 1)
              (data (i32.const 1024) "{wat_string(data)}")
              {alloc}
              (func (export "handler") (param $req i32) (param $len i32) (param $out i32) (result i32)
                {handler_body}))"""
        )
    )


def out_slot(ptr: int, length: int) -> str:
    return f"(i32.store (local.get $out) (i32.const {ptr})) (i32.store offset=4 (local.get $out) (i32.const {length}))"


def responding_with(raw: bytes) -> bytes:
    """A guest that answers ``raw`` verbatim as its response JSON."""
    return guest(f"{out_slot(1024, len(raw))} (i32.const 0)", data=raw)


def logging(level: int, ptr: int, length: int) -> bytes:
    """A guest that makes one ``ext.log`` call, then answers 200."""
    ok = b'{"status":200}'
    call = f"(call $log (i32.const {level}) (i32.const {ptr}) (i32.const {length}))"
    return guest(
        f"{call} {out_slot(1024, len(ok))} (i32.const 0)",
        data=ok,
        imports='(import "ext" "log" (func $log (param i32 i32 i32)))',
    )


@pytest.fixture(scope="module")
def engine():
    with WasmEngine() as wasm_engine:
        yield wasm_engine


@pytest.fixture(scope="module")
def fuel_engine():
    with WasmEngine(consume_fuel=True) as wasm_engine:
        yield wasm_engine


def run(engine: WasmEngine, wasm: bytes, limits: CallLimits = LIMITS, host: HostServices = NO_HOST, request=REQUEST):
    return engine.execute(engine.compile(wasm), request, limits, host)


# --- ABI round trip -------------------------------------------------------------------------


def test_echo_guest_sees_exactly_the_request_json_the_host_sent(engine):
    result = run(engine, fixture("echo"))

    assert result.status == 200
    assert result.headers == {"content-type": "application/json"}
    assert json.loads(result.body) == REQUEST
    assert result.logs == ()
    assert result.fuel_consumed is None
    assert result.duration_ms > 0


@pytest.mark.parametrize("padding", ["", "x", "xy", "xyz" * 1000])
def test_echo_round_trips_requests_of_every_length(engine, padding):
    request = {**REQUEST, "padding": padding}

    assert json.loads(run(engine, fixture("echo"), request=request).body) == request


def test_fixed_response_gives_status_headers_and_decoded_body_and_ignores_unknown_fields(engine):
    raw = b'{"status":201,"headers":{"X-Fixed":"yes"},"body_b64":"aGVsbG8=","extra":[1]}'

    result = run(engine, responding_with(raw))

    assert (result.status, result.headers, result.body) == (201, {"X-Fixed": "yes"}, b"hello")


def test_response_without_headers_or_body_means_none(engine):
    result = run(engine, responding_with(b'{"status":204,"body_b64":null}'))

    assert (result.status, result.headers, result.body) == (204, {}, b"")


# --- bad responses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "bad response: not valid JSON"),
        (b"", "bad response: not valid JSON"),
        (b"\xff\xfe{", "bad response: not valid JSON"),
        (b"[200]", "bad response: must be a JSON object"),
        (b'{"headers":{}}', "bad response: missing 'status'"),
        (b'{"status":700}', "status must be an integer from 100 to 599, got 700"),
        (b'{"status":99}', "got 99"),
        (b'{"status":"200"}', "got '200'"),
        (b'{"status":true}', "got True"),
        (b'{"status":200.0}', "got 200.0"),
        (b'{"status":200,"headers":[]}', "headers must be an object"),
        (b'{"status":200,"headers":{"x-a":"1\\r\\nSet-Cookie: a=b"}}', "header 'x-a' has a value with CR, LF or NUL"),
        (b'{"status":200,"headers":{"x-a":"1\\u0000"}}', "header 'x-a' has a value with CR, LF or NUL"),
        (b'{"status":200,"headers":{"bad name":"x"}}', "header name 'bad name' is not an RFC 7230 token"),
        (b'{"status":200,"headers":{"x\\nb":"x"}}', "is not an RFC 7230 token"),
        (b'{"status":200,"headers":{"x-a\\n":"x"}}', "header name 'x-a\\n' is not an RFC 7230 token"),
        (b'{"status":200,"headers":{"x-n":5}}', "header 'x-n' must have a string value"),
        (b'{"status":200,"body_b64":"!!!"}', "body_b64 is not valid base64"),
        (b'{"status":200,"body_b64":5}', "body_b64 must be a string or null"),
    ],
)
def test_bad_response_fails_the_call_with_a_precise_message(engine, raw, message):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, responding_with(raw))

    assert message in caught.value.message


def test_response_pointer_outside_memory_fails_before_anything_is_copied(engine):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, fixture("bad_pointer"))

    assert caught.value.message == (
        f"response pointer {0x7FFF0000} with length 16 lies outside guest memory of 65536 bytes"
    )


def test_response_running_past_the_end_of_memory_is_refused_not_truncated(engine):
    # Memory.read would silently clamp this range; the host must check it first.
    limits = CallLimits(timeout_ms=2000, memory_bytes=16 * MiB, fuel=None, max_response_bytes=MiB)

    with pytest.raises(ExtensionFailed, match="outside guest memory of 65536 bytes"):
        run(engine, guest(f"{out_slot(1024, 65_000)} (i32.const 0)"), limits)


def test_response_length_over_the_maximum_fails_before_copying(engine):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, guest(f"{out_slot(1024, 70_000)} (i32.const 0)"))

    assert caught.value.message == "response of 70000 bytes exceeds the limit of 65536"


def test_negative_pointer_and_length_are_read_as_unsigned_and_refused(engine):
    with pytest.raises(ExtensionFailed, match=f"response of {2**32 - 1} bytes exceeds the limit"):
        run(engine, guest(f"{out_slot(-1, -1)} (i32.const 0)"))


def test_non_zero_handler_return_is_an_application_error(engine):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, guest("(i32.const 7)"))

    assert caught.value.message == "handler returned 7 (non-zero means the extension reported an error)"
    assert caught.value.http_status == 502


def test_trap_in_the_handler_fails_with_the_trap_message(engine):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, guest("(unreachable)"))

    assert caught.value.message == "extension trapped: wasm trap: wasm `unreachable` instruction executed"


def test_a_trap_carries_its_backtrace_with_function_names_for_the_logs_not_the_client(engine):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, fixture("named_trap"))

    assert caught.value.message == "extension trapped: wasm trap: wasm `unreachable` instruction executed"
    frames = [frame.split(" @ ")[0] for frame in caught.value.details["backtrace"]]
    assert frames == ["validate", "parse_order", "handler"]
    assert "backtrace" not in json.dumps(caught.value.to_client_dict("req-1"))


def test_out_of_bounds_access_in_the_handler_fails_with_the_memory_fault(engine):
    with pytest.raises(ExtensionFailed, match="out of bounds memory access"):
        run(engine, guest("(i32.load (i32.const 0x7fffffff))"))


def test_alloc_returning_zero_fails_before_the_handler_runs(engine):
    failing_alloc = '(func (export "alloc") (param i32) (result i32) (i32.const 0))'

    with pytest.raises(ExtensionFailed, match=r"guest alloc\(\d+\) returned 0"):
        run(engine, guest("(unreachable)", alloc=failing_alloc))


# --- limits ---------------------------------------------------------------------------------


def test_infinite_loop_times_out_close_to_its_deadline(engine):
    limits = CallLimits(timeout_ms=100, memory_bytes=16 * MiB, fuel=None, max_response_bytes=MiB)
    module = engine.compile(fixture("infinite_loop"))

    started = time.monotonic()
    with pytest.raises(ExtensionTimeout) as caught:
        engine.execute(module, REQUEST, limits, NO_HOST)
    elapsed = time.monotonic() - started

    assert caught.value.message == "extension exceeded its time limit of 100 ms"
    assert caught.value.http_status == 504
    assert 0.05 < elapsed < 1.0


def test_infinite_loop_runs_out_of_fuel_long_before_its_deadline(fuel_engine):
    limits = CallLimits(timeout_ms=10_000, memory_bytes=16 * MiB, fuel=200_000, max_response_bytes=MiB)

    started = time.monotonic()
    with pytest.raises(ExtensionFailed) as caught:
        run(fuel_engine, fixture("infinite_loop"), limits)

    assert caught.value.message == "extension ran out of fuel (limit 200000)"
    assert time.monotonic() - started < 2.0


def test_fuel_engine_reports_the_fuel_a_call_consumed(fuel_engine):
    limits = CallLimits(timeout_ms=2000, memory_bytes=16 * MiB, fuel=10_000_000, max_response_bytes=MiB)

    result = run(fuel_engine, fixture("echo"), limits)

    assert result.status == 200
    assert result.fuel_consumed is not None
    assert 0 < result.fuel_consumed < 10_000_000


def test_fuel_engine_without_a_fuel_limit_runs_unmetered(fuel_engine):
    assert run(fuel_engine, fixture("echo")).fuel_consumed


def test_fuel_limit_on_an_engine_without_fuel_is_a_configuration_error(engine):
    limits = CallLimits(timeout_ms=2000, memory_bytes=16 * MiB, fuel=1000, max_response_bytes=MiB)

    with pytest.raises(SettingsInvalid, match="consume_fuel"):
        run(engine, fixture("echo"), limits)


def test_memory_growth_within_the_cap_succeeds(engine):
    limits = CallLimits(timeout_ms=2000, memory_bytes=64 * MiB, fuel=None, max_response_bytes=MiB)

    assert run(engine, fixture("grow_memory"), limits).status == 200


def test_memory_growth_beyond_the_cap_is_refused_to_the_guest(engine):
    limits = CallLimits(timeout_ms=2000, memory_bytes=8 * MiB, fuel=None, max_response_bytes=MiB)

    with pytest.raises(ExtensionFailed, match="handler returned 1"):
        run(engine, fixture("grow_memory"), limits)


def test_module_whose_initial_memory_exceeds_the_cap_cannot_start(engine):
    big = wasmtime.wat2wasm(
        (FIXTURES / "echo.wat").read_text().replace('(memory (export "memory") 1)', '(memory (export "memory") 100)')
    )
    limits = CallLimits(timeout_ms=2000, memory_bytes=MiB, fuel=None, max_response_bytes=MiB)

    with pytest.raises(ExtensionFailed, match="memory"):
        run(engine, bytes(big), limits)


def test_engine_keeps_serving_after_a_hundred_hostile_calls(engine):
    quick = CallLimits(timeout_ms=20, memory_bytes=4 * MiB, fuel=None, max_response_bytes=MiB)
    hostile = [
        engine.compile(fixture("infinite_loop")),
        engine.compile(fixture("bad_pointer")),
        engine.compile(fixture("grow_memory")),
        engine.compile(guest("(unreachable)")),
        engine.compile(responding_with(b"{not json")),
        engine.compile(logging(1, 0x7FFFFFF0, 100)),
    ]

    failures = 0
    for i in range(100):
        with pytest.raises(ExtError):
            engine.execute(hostile[i % len(hostile)], REQUEST, quick, NO_HOST)
        failures += 1

    assert failures == 100
    assert json.loads(run(engine, fixture("echo")).body) == REQUEST


def test_concurrent_calls_keep_their_own_limits_and_logs(engine):
    looping = engine.compile(fixture("infinite_loop"))
    chatty = engine.compile(fixture("log_flood"))
    slow = CallLimits(timeout_ms=300, memory_bytes=16 * MiB, fuel=None, max_response_bytes=MiB)
    outcomes: dict[str, object] = {}

    def loop() -> None:
        try:
            engine.execute(looping, REQUEST, slow, NO_HOST)
        except ExtError as exc:
            outcomes["loop"] = exc

    thread = threading.Thread(target=loop)
    thread.start()
    logged = [engine.execute(chatty, REQUEST, LIMITS, NO_HOST) for _ in range(5)]
    thread.join()

    assert isinstance(outcomes["loop"], ExtensionTimeout)
    assert all(len(result.logs) == 100 and result.status == 204 for result in logged)


# --- host import ext.log --------------------------------------------------------------------


def test_log_import_collects_records_caps_their_size_and_count_and_feeds_the_sink(engine):
    seen: list[LogRecord] = []

    result = run(engine, fixture("log_flood"), host=HostServices(log_sink=seen.append))

    assert result.status == 204
    assert result.logs[:2] == (LogRecord(LogLevel.INFO, "hello"), LogRecord(LogLevel.ERROR, "boom"))
    assert result.logs[2] == LogRecord(LogLevel.DEBUG, "x" * 4096, truncated=True)
    assert result.logs[3] == LogRecord(LogLevel.WARN, "spam")
    assert len(result.logs) == 100
    assert result.logs_dropped == 153 - 100
    assert tuple(seen) == result.logs


def test_log_with_a_pointer_outside_memory_traps_the_call(engine):
    with pytest.raises(ExtensionFailed) as caught:
        run(engine, logging(1, 65_530, 10))

    assert caught.value.message == (
        "extension trapped in host import ext.log: message (pointer 65530, length 10) "
        "lies outside guest memory of 65536 bytes"
    )


def test_log_with_an_unknown_level_traps_the_call(engine):
    with pytest.raises(ExtensionFailed, match=r"ext\.log: unknown log level 9"):
        run(engine, logging(9, 1024, 2))


def test_failing_log_sink_fails_the_call_without_leaking_its_exception(engine):
    def broken_sink(record: LogRecord) -> None:
        raise RuntimeError("sink is down")

    with pytest.raises(ExtensionFailed) as caught:
        run(engine, logging(1, 1024, 2), host=HostServices(log_sink=broken_sink))

    assert caught.value.message == "extension trapped in host import ext.log: host error (RuntimeError)"


# --- compile, ABI checks, serialization -----------------------------------------------------


def test_compile_rejects_bytes_that_are_not_a_wasm_binary(engine):
    with pytest.raises(WasmInvalid, match="not a WebAssembly binary"):
        engine.compile(b"(module)")


def test_compile_rejects_a_corrupt_binary(engine):
    with pytest.raises(WasmInvalid, match="module does not compile"):
        engine.compile(b"\0asm\x01\0\0\0\xff\xff")


@pytest.mark.parametrize("name", ["echo", "log_flood", "http_fetch_proxy", "infinite_loop"])
def test_validate_abi_accepts_the_abi_guests(engine, name):
    engine.validate_abi(engine.compile(fixture(name)))


def test_validate_abi_accepts_an_optional_dealloc(engine):
    dealloc = BUMP_ALLOC + '(func (export "dealloc") (param i32 i32))'

    engine.validate_abi(engine.compile(guest("(i32.const 0)", alloc=dealloc)))


HANDLER = '(func (export "handler") (param i32 i32 i32) (result i32) (i32.const 0))'
ALLOC = '(func (export "alloc") (param i32) (result i32) (i32.const 8))'
MEMORY = '(memory (export "memory") 1)'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{ALLOC} {HANDLER}", "module must export a memory named 'memory'"),
        (f'(memory (export "memory") i64 1) {ALLOC} {HANDLER}', "plain 32-bit, unshared memory"),
        (f"{MEMORY} {HANDLER}", "module must export a function 'alloc'"),
        (f"{MEMORY} {ALLOC}", "module must export a function 'handler'"),
        (
            f'{MEMORY} {ALLOC} (func (export "handler") (param i32 i32) (result i32) (i32.const 0))',
            "export 'handler' must be a function (i32, i32, i32) -> (i32)",
        ),
        (f'{MEMORY} (global (export "alloc") i32 (i32.const 0)) {HANDLER}', "export 'alloc' must be a function"),
        (
            f'{MEMORY} {ALLOC} {HANDLER} (func (export "dealloc") (param i32) (result i32) (i32.const 0))',
            "export 'dealloc' must be a function (i32, i32) -> ()",
        ),
        (
            f'(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {MEMORY} '
            f"{ALLOC} {HANDLER}",
            "module imports wasi_snapshot_preview1.fd_write, which wasm-core@1 does not provide",
        ),
        (f'(import "ext" "secrets_get" (func)) {MEMORY} {ALLOC} {HANDLER}', "module imports ext.secrets_get"),
        (
            f'(import "ext" "log" (func (param i32 i32))) {MEMORY} {ALLOC} {HANDLER}',
            "import ext.log must be a function (i32, i32, i32) -> ()",
        ),
        (
            f'(import "ext" "http_fetch" (func (param i32 i32 i32))) {MEMORY} {ALLOC} {HANDLER}',
            "import ext.http_fetch must be a function (i32, i32, i32) -> (i32)",
        ),
        (f'(import "ext" "log" (memory 1)) {ALLOC} {HANDLER}', "import ext.log must be a function"),
    ],
)
def test_validate_abi_rejects_missing_exports_wrong_types_and_unknown_imports(engine, body, message):
    module = engine.compile(bytes(wasmtime.wat2wasm(f"(module {body})")))

    with pytest.raises(WasmInvalid) as caught:
        engine.validate_abi(module)

    assert caught.value.code == "WASM_INVALID"
    assert message in caught.value.message


def test_execute_refuses_a_module_without_the_abi_as_a_failed_extension(engine):
    module = engine.compile(bytes(wasmtime.wat2wasm(f"(module {MEMORY} {ALLOC})")))

    with pytest.raises(ExtensionFailed, match=r"module does not implement wasm-core@1: .*'handler'"):
        engine.execute(module, REQUEST, LIMITS, NO_HOST)


def test_serialized_module_reloaded_from_a_file_behaves_the_same(engine, tmp_path):
    path = tmp_path / f"{engine.fingerprint}.cwasm"
    path.write_bytes(engine.serialize(engine.compile(fixture("echo"))))
    loop_path = tmp_path / "loop.cwasm"
    loop_path.write_bytes(engine.serialize(engine.compile(fixture("infinite_loop"))))
    quick = CallLimits(timeout_ms=50, memory_bytes=16 * MiB, fuel=None, max_response_bytes=MiB)

    reloaded = engine.deserialize_file(path)

    assert json.loads(engine.execute(reloaded, REQUEST, LIMITS, NO_HOST).body) == REQUEST
    with pytest.raises(ExtensionTimeout):
        engine.execute(engine.deserialize_file(loop_path), REQUEST, quick, NO_HOST)


def test_deserialize_file_rejects_garbage(engine, tmp_path):
    path = tmp_path / "garbage.cwasm"
    path.write_bytes(b"\x7fELF not really")

    with pytest.raises(WasmInvalid, match="is not usable"):
        engine.deserialize_file(path)


def test_artifacts_of_an_engine_without_fuel_do_not_load_into_a_fuel_engine(engine, fuel_engine, tmp_path):
    path = tmp_path / "echo.cwasm"
    path.write_bytes(engine.serialize(engine.compile(fixture("echo"))))

    with pytest.raises(WasmInvalid, match="fuel"):
        fuel_engine.deserialize_file(path)


def test_fingerprint_names_version_target_and_config_and_is_a_safe_key_segment(engine, fuel_engine):
    assert re.fullmatch(r"wasmtime-50\.0\.1-[a-z0-9_]+-linux-[0-9a-f]{12}", engine.fingerprint)
    assert engine.fingerprint != fuel_engine.fingerprint
    with WasmEngine() as twin:
        assert twin.fingerprint == engine.fingerprint


# --- limits from the manifest ---------------------------------------------------------------


def test_clamp_limits_uses_platform_defaults_when_the_manifest_asks_for_none():
    settings = load_settings({})

    assert clamp_limits(None, settings) == CallLimits(
        timeout_ms=5000, memory_bytes=128 * MiB, fuel=None, max_response_bytes=4 * MiB
    )


def test_clamp_limits_honours_requests_below_the_maximum_and_clamps_those_above():
    settings = load_settings({"RUNNER_FUEL": "1000000", "RUNNER_MAX_TIMEOUT_MS": "8000"})

    assert clamp_limits({"timeout_ms": 250, "memory_mb": 16}, settings) == CallLimits(
        timeout_ms=250, memory_bytes=16 * MiB, fuel=1_000_000, max_response_bytes=4 * MiB
    )
    assert clamp_limits({"timeout_ms": 60_000, "memory_mb": 4096}, settings) == CallLimits(
        timeout_ms=8000, memory_bytes=512 * MiB, fuel=1_000_000, max_response_bytes=4 * MiB
    )


def test_clamp_limits_never_exceeds_the_maximum_even_for_the_default():
    settings = load_settings({"RUNNER_DEFAULT_TIMEOUT_MS": "9000", "RUNNER_MAX_TIMEOUT_MS": "1000"})

    assert clamp_limits({}, settings).timeout_ms == 1000


@pytest.mark.parametrize("value", [0, -5, "100", True, 1.5])
def test_clamp_limits_rejects_requests_that_are_not_positive_integers(value):
    with pytest.raises(ManifestInvalid, match=r"limits\.timeout_ms must be a positive integer"):
        clamp_limits({"timeout_ms": value}, load_settings({}))


def test_engine_from_settings_meters_fuel_only_when_runner_fuel_is_set():
    with WasmEngine.from_settings(load_settings({"RUNNER_FUEL": "5"})) as metered:
        assert metered.consume_fuel
    with WasmEngine.from_settings(load_settings({})) as unmetered:
        assert not unmetered.consume_fuel
