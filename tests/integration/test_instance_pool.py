"""The pool of kept instances: one borrower at a time, bounded idle instances, nothing kept for dead modules."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import wasmtime

from runner_container.instances import InstancePool, Snapshot, memory_address
from runner_container.restore_plan import plan_module

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wat"
PAGE = 65536


def prepared(
    engine: wasmtime.Engine, name: str = "carry_memory", pages: int = 1
) -> tuple[wasmtime.Module, wasmtime.InstancePre]:
    wat = (FIXTURES / f"{name}.wat").read_text()
    wat = wat.replace('(memory (export "memory") 1)', f'(memory (export "memory") {pages})')
    wasm, plan = plan_module(bytes(wasmtime.wat2wasm(wat)))
    assert plan.restorable
    module = wasmtime.Module(engine, wasm)
    linker = wasmtime.Linker(engine)
    linker.define_func("ext", "log", wasmtime.FuncType([wasmtime.ValType.i32()] * 3, []), lambda *_: None)
    return module, linker.instantiate_pre(module)


def new_store(engine: wasmtime.Engine):
    def make() -> wasmtime.Store:
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1_000_000)
        return store

    return make


def test_each_lend_is_a_different_instance_until_one_is_given_back():
    engine = wasmtime.Engine()
    module, pre = prepared(engine)
    pool = InstancePool()
    first, second = pool.lend(module, pre, PAGE, new_store(engine)), pool.lend(module, pre, PAGE, new_store(engine))
    assert first.instance.store is not second.instance.store
    pool.give_back(module, first)
    assert pool.lend(module, pre, PAGE, new_store(engine)) is first
    assert pool.lend(module, pre, 2 * PAGE, new_store(engine)) not in (first, second)  # another memory cap


def test_idle_instances_are_bounded_per_module_and_in_bytes():
    engine = wasmtime.Engine()
    module, pre = prepared(engine)
    pool = InstancePool(max_idle_per_key=2)
    lent = [pool.lend(module, pre, PAGE, new_store(engine)) for _ in range(4)]
    for kept in lent:
        pool.give_back(module, kept)
    assert (pool.stats.restored, pool.stats.dropped, pool.stats.idle_bytes) == (4, 2, 2 * 2 * PAGE)

    tight = InstancePool(max_idle_bytes=2 * PAGE - 1)  # less than one instance's memory and snapshot
    kept = tight.lend(module, pre, PAGE, new_store(engine))
    tight.give_back(module, kept)
    assert (tight.stats.dropped, tight.stats.idle_bytes) == (1, 0)


@pytest.mark.parametrize("pages", [1, 3, 32, 64], ids=["64KiB", "192KiB", "2MiB", "4MiB"])
def test_restore_puts_back_every_byte_whatever_the_block_size(pages):
    engine = wasmtime.Engine()
    module, pre = prepared(engine, pages=pages)
    size = pages * PAGE
    kept = InstancePool().lend(module, pre, size, new_store(engine))
    store, memory = kept.instance.store, kept.instance.memory
    address = memory_address(memory, store)
    original = bytes(memory.read(store, 0, size))
    for offset in (0, 2000, 3000, size // 2, size - 1):  # zero blocks, the data segment, the last byte
        memory.write(store, b"\xee", offset)
    assert kept.snapshot.restore(kept.instance)
    assert bytes(memory.read(store, 0, size)) == original
    # A second snapshot of the restored instance is the first one: nothing else moved.
    assert Snapshot(kept.instance).memory_bytes == kept.snapshot.memory_bytes
    assert memory_address(memory, store) == address


def test_idle_instances_of_a_collected_module_are_freed():
    engine = wasmtime.Engine()
    pool = InstancePool()
    module, pre = prepared(engine)
    pool.give_back(module, pool.lend(module, pre, PAGE, new_store(engine)))
    assert pool.stats.idle_bytes == 2 * PAGE
    del module, pre
    gc.collect()
    other, other_pre = prepared(engine, "carry_global")
    pool.lend(other, other_pre, PAGE, new_store(engine))
    assert pool.stats.idle_bytes == 0
