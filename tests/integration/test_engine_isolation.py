"""Every call starts from the module's post-instantiation state, on kept instances too.

Each hostile guest under ``tests/fixtures/wat/carry_*.wat`` tries to carry state from one call to the next
(memory, globals, a grown memory, a table slot, a dropped segment, a failed call's writes) and answers with a
status that tells what it saw. ``test_*_guest_carries_state_on_a_naively_reused_instance`` shows each one does
leak on a plain wasmtime instance called twice; the other tests show the engine never lets it, whatever the
order of tenants and calls, and under concurrent calls.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.errors import ExtensionFailed, ExtensionTimeout
from runner_container.engine import CallLimits, HostServices, WasmEngine

MiB = 1024 * 1024
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wat"
LIMITS = CallLimits(timeout_ms=2000, memory_bytes=16 * MiB, fuel=None, max_response_bytes=64 * 1024)
FAST_TIMEOUT = CallLimits(timeout_ms=50, memory_bytes=16 * MiB, fuel=None, max_response_bytes=64 * 1024)

# What each guest answers on a call that starts from the post-instantiation state.
PRISTINE = {"carry_memory": 200, "carry_global": 200, "carry_grow": 210, "carry_trap": 200}
FRESH_ONLY = {"carry_table": 201, "carry_segment": 207}
# Requests that make carry_trap fail after its writes (the first key's first letter picks the failure).
TRAP = {"trap": 1}
LOOP = {"loop": 1}
BAD_LOG = {"bad_log": 1}
GROW = {"grow": 1}
OK = {"ok": 1}


def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((FIXTURES / f"{name}.wat").read_text()))


def tenant(name: str) -> tuple[dict[str, Any], HostServices]:
    """A request and host services as the runner builds them for a call of ``name``'s install."""
    request = {"ok": 1, "context": {"tenant_id": name, "request_id": f"req-{name}"}}
    return request, HostServices(capabilities=frozenset({"cap:log.emit"}) if name == "acme" else frozenset())


TENANTS = [tenant(name) for name in ("acme", "globex", "initech")]


@pytest.fixture(scope="module")
def engine():
    with WasmEngine() as wasm_engine:
        yield wasm_engine


@pytest.fixture(scope="module")
def fuel_engine():
    with WasmEngine(consume_fuel=True) as wasm_engine:
        yield wasm_engine


@pytest.fixture(scope="module")
def modules(engine):
    return {name: engine.compile(wasm(name)) for name in (*PRISTINE, *FRESH_ONLY)}


def status(engine: WasmEngine, module: wasmtime.Module, request: dict[str, Any] = OK, **kwargs: Any) -> int:
    limits = kwargs.pop("limits", LIMITS)
    host = kwargs.pop("host", HostServices())
    return engine.execute(module, request, limits, host).status


def naive_statuses(name: str, calls: int = 2) -> list[int]:
    """The statuses ``name`` answers when one plain wasmtime instance serves ``calls`` calls."""
    config = wasmtime.Config()
    wasm_engine = wasmtime.Engine(config)
    linker = wasmtime.Linker(wasm_engine)
    linker.define_func("ext", "log", wasmtime.FuncType([wasmtime.ValType.i32()] * 3, []), lambda *_: None)
    store = wasmtime.Store(wasm_engine)
    exports = linker.instantiate(store, wasmtime.Module(wasm_engine, wasm(name))).exports(store)
    memory, alloc, handler = exports["memory"], exports["alloc"], exports["handler"]
    assert isinstance(memory, wasmtime.Memory)
    assert isinstance(alloc, wasmtime.Func)
    assert isinstance(handler, wasmtime.Func)
    statuses = []
    for _ in range(calls):
        request = b'{"ok":1}'
        pointer, out = alloc(store, len(request)), alloc(store, 8)
        memory.write(store, request, pointer)
        try:
            handler(store, pointer, len(request), out)
        except wasmtime.Trap:
            statuses.append(0)
            continue
        response_pointer = int.from_bytes(memory.read(store, out, out + 4), "little")
        statuses.append(int(memory.read(store, response_pointer + 10, response_pointer + 13).decode()))
    return statuses


# --- the guests do carry state when nothing restores it ----------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("carry_memory", [200, 241]),
        ("carry_global", [200, 241]),
        ("carry_grow", [210, 229]),
        ("carry_table", [201, 202]),
        ("carry_segment", [207, 0]),  # 0: the second call traps in memory.init
        ("carry_trap", [200, 211]),
    ],
)
def test_guest_carries_state_on_a_naively_reused_instance(name, expected):
    assert naive_statuses(name) == expected


# --- the engine gives every call the post-instantiation state -----------------------------------


@pytest.mark.parametrize("name", sorted(set(PRISTINE) - {"carry_grow"}))
def test_restorable_guest_runs_on_one_kept_instance_and_sees_the_initial_state_every_call(engine, modules, name):
    assert engine.keeps_instances(modules[name])
    created, reused = engine.pool_stats.created, engine.pool_stats.reused
    assert [status(engine, modules[name]) for _ in range(5)] == [PRISTINE[name]] * 5
    assert engine.pool_stats.created - created <= 1
    assert engine.pool_stats.reused - reused >= 4


@pytest.mark.parametrize("name", sorted(FRESH_ONLY))
def test_guest_that_can_change_a_table_or_drop_a_segment_gets_a_fresh_instance_every_call(engine, modules, name):
    assert [status(engine, modules[name]) for _ in range(3)] == [FRESH_ONLY[name]] * 3
    assert not engine.keeps_instances(modules[name])


def test_grown_memory_is_never_handed_to_the_next_call(engine, modules):
    before = engine.pool_stats.dropped
    assert [status(engine, modules["carry_grow"]) for _ in range(3)] == [210] * 3
    assert engine.pool_stats.dropped - before == 3


@pytest.mark.parametrize(
    ("request_", "error"),
    [(TRAP, ExtensionFailed), (BAD_LOG, ExtensionFailed), (LOOP, ExtensionTimeout)],
    ids=["trap", "host-import-trap", "timeout"],
)
def test_call_that_fails_mid_write_leaves_nothing_for_the_next_call(engine, modules, request_, error):
    module = modules["carry_trap"]
    assert status(engine, module) == 200
    before = engine.pool_stats.dropped
    with pytest.raises(error):
        status(engine, module, request_, limits=FAST_TIMEOUT)
    assert engine.pool_stats.dropped == before + 1
    assert [status(engine, module) for _ in range(3)] == [200] * 3


def test_call_that_runs_out_of_fuel_mid_write_leaves_nothing_for_the_next_call(fuel_engine):
    module = fuel_engine.compile(wasm("carry_trap"))
    metered = CallLimits(timeout_ms=5000, memory_bytes=16 * MiB, fuel=1_000_000, max_response_bytes=64 * 1024)
    first = fuel_engine.execute(module, OK, metered, HostServices())
    with pytest.raises(ExtensionFailed, match="ran out of fuel"):
        fuel_engine.execute(module, LOOP, metered, HostServices())
    again = [fuel_engine.execute(module, OK, metered, HostServices()) for _ in range(3)]
    assert [result.status for result in again] == [200] * 3
    # Fuel is per call: a kept instance's calls each cost what the first one did.
    assert {result.fuel_consumed for result in again} == {first.fuel_consumed}


def test_kept_instance_reports_the_fuel_a_fresh_instance_would(fuel_engine):
    kept = fuel_engine.compile(wasm("carry_memory"))
    fresh = wasmtime.Module(fuel_engine.engine, wasm("carry_memory"))  # not compiled by the engine: never kept
    metered = CallLimits(timeout_ms=5000, memory_bytes=16 * MiB, fuel=1_000_000, max_response_bytes=64 * 1024)
    assert fuel_engine.keeps_instances(kept)
    assert not fuel_engine.keeps_instances(fresh)
    consumed = {fuel_engine.execute(m, OK, metered, HostServices()).fuel_consumed for m in (kept, fresh, kept, kept)}
    assert len(consumed) == 1


def test_memory_cap_is_that_of_each_call_even_on_kept_instances(engine, modules):
    module = modules["carry_trap"]
    # One page of headroom lets the guest grow (250); none makes memory.grow fail (251).
    roomy = CallLimits(timeout_ms=2000, memory_bytes=2 * 65536, fuel=None, max_response_bytes=64 * 1024)
    tight = CallLimits(timeout_ms=2000, memory_bytes=65536, fuel=None, max_response_bytes=64 * 1024)
    assert status(engine, module, limits=roomy) == 200  # leaves a kept instance with the roomy cap
    assert status(engine, module, GROW, limits=tight) == 251
    assert status(engine, module, limits=tight) == 200  # leaves one with the tight cap
    assert status(engine, module, GROW, limits=roomy) == 250
    assert status(engine, module, GROW, limits=tight) == 251


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(sorted(PRISTINE)),
            st.integers(0, len(TENANTS) - 1),
            st.sampled_from(["ok", "ok", "ok", "trap", "bad_log"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_any_order_of_tenants_guests_and_failures_sees_only_initial_state(engine, modules, calls):
    for name, who, kind in calls:
        request, host = TENANTS[who]
        if kind != "ok" and name == "carry_trap":
            with pytest.raises(ExtensionFailed):
                engine.execute(modules[name], {kind: 1, **request}, LIMITS, host)
            continue
        assert engine.execute(modules[name], request, LIMITS, host).status == PRISTINE[name]


def test_concurrent_calls_never_share_an_instance_or_see_each_others_state(engine, modules):
    rng = random.Random(15)
    plan = [(rng.choice(sorted(PRISTINE)), rng.randrange(len(TENANTS)), rng.random() < 0.2) for _ in range(400)]
    before = engine.pool_stats.created
    seen: list[int] = []
    lock = threading.Lock()

    def call(item: tuple[str, int, bool]) -> None:
        name, who, fail = item
        request, host = TENANTS[who]
        if fail and name == "carry_trap":
            with pytest.raises(ExtensionFailed):
                engine.execute(modules[name], {"trap": 1, **request}, LIMITS, host)
            return
        answer = engine.execute(modules[name], request, LIMITS, host).status
        with lock:
            seen.append(answer - PRISTINE[name])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(call, plan))
    assert seen and set(seen) == {0}
    # Kept instances were reused (far fewer made than calls), so the concurrency was on shared pools.
    assert engine.pool_stats.created - before < len(plan) // 2


# --- which modules get kept instances --------------------------------------------------------


def test_precompiled_module_keeps_instances_like_the_module_it_was_compiled_from(engine, tmp_path):
    for name, kept in (("carry_memory", True), ("carry_table", False)):
        path = tmp_path / f"{name}.cwasm"
        path.write_bytes(engine.serialize(engine.compile(wasm(name))))
        loaded = engine.deserialize_file(path)
        assert engine.keeps_instances(loaded) is kept
        assert [status(engine, loaded) for _ in range(3)] == [{**PRISTINE, **FRESH_ONLY}[name]] * 3


def test_guest_cannot_forge_the_restore_marker(engine):
    from runner_container.restore_plan import RESTORABLE_MARKER

    forged = (
        (FIXTURES / "carry_segment.wat")
        .read_text()
        .replace('(memory (export "memory") 1)', f'(memory (export "memory") (export "{RESTORABLE_MARKER}") 1)')
    )
    raw = bytes(wasmtime.wat2wasm(forged))
    assert not engine.keeps_instances(engine.compile(raw))
    # A module the engine did not compile itself is never believed, marker or not.
    assert not engine.keeps_instances(wasmtime.Module(engine.engine, raw))
    assert [status(engine, engine.compile(raw)) for _ in range(3)] == [207] * 3


def test_module_with_a_large_initial_memory_gets_fresh_instances(engine):
    from runner_container.instances import RESTORE_MAX_MEMORY_BYTES

    pages = RESTORE_MAX_MEMORY_BYTES // 65536 + 1
    large = (
        (FIXTURES / "carry_memory.wat")
        .read_text()
        .replace('(memory (export "memory") 1)', f'(memory (export "memory") {pages})')
    )
    module = engine.compile(bytes(wasmtime.wat2wasm(large)))
    assert not engine.keeps_instances(module)
    assert [status(engine, module) for _ in range(2)] == [200, 200]


def test_rewrite_that_does_not_compile_falls_back_to_fresh_instances_of_the_module_as_written(engine, monkeypatch):
    import runner_container.engine as engine_module
    from runner_container.restore_plan import RestorePlan

    # Stands in for a bug in the export rewrite: bytes that are not a module, claimed restorable.
    monkeypatch.setattr(engine_module, "plan_module", lambda raw: (raw[:-1], RestorePlan(True)))
    module = engine.compile(wasm("carry_memory"))
    assert not engine.keeps_instances(module)
    assert [status(engine, module) for _ in range(2)] == [200, 200]
