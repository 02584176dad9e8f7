"""The pinned fast-call workaround behaves exactly like wasmtime-py's public API, and notices an upgrade."""

from __future__ import annotations

from importlib import metadata

import pytest
import wasmtime

from runner_container import wasmtime_fast
from runner_container.wasmtime_fast import I32Func, IntegerGlobal

WAT = """
(module
  (import "host" "fail" (func $fail))
  (global $g (export "g") (mut i32) (i32.const 5))
  (global $w (export "w") (mut i64) (i64.const -9000000000))
  (func (export "add") (param i32 i32 i32) (result i32)
    (i32.add (local.get 0) (i32.add (local.get 1) (local.get 2))))
  (func (export "same") (param i32) (result i32) (local.get 0))
  (func (export "boom") (param i32) (result i32) unreachable)
  (func (export "div") (param i32) (result i32) (i32.div_s (i32.const 1) (local.get 0)))
  (func (export "host") (param i32) (result i32) (call $fail) (i32.const 0)))
"""


class HostFailure(Exception):
    pass


@pytest.fixture
def guest():
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)

    def fail() -> None:
        raise HostFailure("from the host")

    linker.define_func("host", "fail", wasmtime.FuncType([], []), fail)
    exports = linker.instantiate(store, wasmtime.Module(engine, bytes(wasmtime.wat2wasm(WAT)))).exports(store)
    return store, exports


def test_the_workaround_is_written_for_the_installed_wasmtime():
    # Fails on a wasmtime-py upgrade: re-check wasmtime_fast against the new version's private API,
    # then move WRITTEN_FOR (the runner meanwhile uses the public API, slower but correct).
    assert metadata.version("wasmtime") == wasmtime_fast.WRITTEN_FOR
    assert wasmtime_fast.AVAILABLE


@pytest.mark.parametrize("values", [(1, 2, 3), (-1, 0, 1), (2**31 - 1, 1, 0), (2**32 - 1, 0, 0), (0, 0, 0)])
def test_fast_call_returns_what_the_public_call_returns(guest, values):
    store, exports = guest
    add = exports["add"]
    assert I32Func(store, add, 3, 1)(*values) == add(store, *[v - 2**32 if v >= 2**31 else v for v in values])


def test_fast_call_is_repeatable_on_the_same_object(guest):
    store, exports = guest
    same = I32Func(store, exports["same"], 1, 1)
    assert [same(n) for n in (1, 7, -3, 2**31)] == [1, 7, -3, -(2**31)]


@pytest.mark.parametrize("name", ["boom", "div"])
def test_fast_call_raises_the_trap_the_public_call_raises(guest, name):
    store, exports = guest
    with pytest.raises(wasmtime.Trap) as public:
        exports[name](store, 0)
    with pytest.raises(wasmtime.Trap) as fast:
        I32Func(store, exports[name], 1, 1)(0)
    assert fast.value.trap_code == public.value.trap_code
    assert fast.value.message == public.value.message


def test_fast_call_raises_a_host_imports_exception_as_itself(guest):
    store, exports = guest
    with pytest.raises(HostFailure, match="from the host"):
        I32Func(store, exports["host"], 1, 1)(0)
    # Nothing is left pending for the next call.
    assert I32Func(store, exports["same"], 1, 1)(4) == 4


def test_integer_globals_are_reset_to_the_value_they_had_when_snapshotted(guest):
    store, exports = guest
    narrow, wide = IntegerGlobal(store, exports["g"]), IntegerGlobal(store, exports["w"])
    exports["g"].set_value(store, 99)
    exports["w"].set_value(store, 2**62)
    narrow.reset()
    wide.reset()
    assert (exports["g"].value(store), exports["w"].value(store)) == (5, -9000000000)


def test_fast_paths_fall_back_to_the_public_api_on_another_wasmtime(guest, monkeypatch):
    monkeypatch.setattr(wasmtime_fast, "_PARTS", None)
    store, exports = guest
    assert I32Func(store, exports["add"], 3, 1)(1, 2, 3) == 6
    with pytest.raises(wasmtime.Trap):
        I32Func(store, exports["boom"], 1, 1)(0)
    narrow = IntegerGlobal(store, exports["g"])
    exports["g"].set_value(store, 1)
    narrow.reset()
    assert exports["g"].value(store) == 5
