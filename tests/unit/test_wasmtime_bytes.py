"""The pinned list<u8> conversion: correct on the pinned wasmtime, and a loud failure on any other."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
import wasmtime
from wasmtime.component import Component, Linker

from runner_container import wasmtime_bytes
from tests.components import run_wasm_tools

TINY_WIT = "package probe:tiny@0.1.0;\nworld tiny {\n  export handle: func(req: list<u8>) -> list<u8>;\n}\n"
# An echo in the canonical ABI, no libc: cabi_realloc is a bump allocator, handle returns (ptr, len).
TINY_WAT = """
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get 3)))
    (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))))))
    (local.get $ptr))
  (func (export "handle") (param i32 i32) (result i32)
    (i32.store (i32.const 0) (local.get 0))
    (i32.store (i32.const 4) (local.get 1))
    (i32.const 0)))
"""


def test_this_wasmtime_is_the_one_the_conversion_was_written_for():
    # Fails on a wasmtime upgrade: check runner_container/wasmtime_bytes.py against the new
    # wasmtime-py (component/_types.py ListType and the C val layout), then move the pin.
    assert metadata.version("wasmtime") == wasmtime_bytes.PINNED_WASMTIME
    assert wasmtime_bytes.install()
    assert wasmtime_bytes.installed()


@pytest.mark.parametrize("size", [0, 1, 255, 70_000])
def test_byte_lists_cross_both_ways_unchanged(tmp_path: Path, size: int):
    wasmtime_bytes.install()
    (tmp_path / "tiny.wit").write_text(TINY_WIT)
    (tmp_path / "core.wasm").write_bytes(wasmtime.wat2wasm(TINY_WAT))
    run_wasm_tools(
        "component",
        "embed",
        str(tmp_path / "tiny.wit"),
        "--world",
        "tiny",
        str(tmp_path / "core.wasm"),
        "-o",
        str(tmp_path / "embedded.wasm"),
    )
    run_wasm_tools("component", "new", str(tmp_path / "embedded.wasm"), "-o", str(tmp_path / "tiny.wasm"))
    engine = wasmtime.Engine()
    component = Component(engine, (tmp_path / "tiny.wasm").read_bytes())
    store = wasmtime.Store(engine)
    handle = Linker(engine).instantiate(store, component).get_func(store, "handle")
    assert handle is not None
    payload = os.urandom(size)
    assert handle(store, payload) == payload


def test_a_non_bytes_value_for_a_byte_list_is_refused(tmp_path: Path):
    wasmtime_bytes.install()
    (tmp_path / "tiny.wit").write_text(TINY_WIT)
    (tmp_path / "core.wasm").write_bytes(wasmtime.wat2wasm(TINY_WAT))
    run_wasm_tools(
        "component",
        "embed",
        str(tmp_path / "tiny.wit"),
        "--world",
        "tiny",
        str(tmp_path / "core.wasm"),
        "-o",
        str(tmp_path / "embedded.wasm"),
    )
    run_wasm_tools("component", "new", str(tmp_path / "embedded.wasm"), "-o", str(tmp_path / "tiny.wasm"))
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    handle = (
        Linker(engine)
        .instantiate(store, Component(engine, (tmp_path / "tiny.wasm").read_bytes()))
        .get_func(store, "handle")
    )
    assert handle is not None
    with pytest.raises(TypeError, match="expected bytes"):
        handle(store, [1, 2, 3])
