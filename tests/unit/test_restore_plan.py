"""The restore plan: which modules may keep an instance between calls, and the export rewrite."""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from runner_container.restore_plan import GLOBAL_EXPORT_PREFIX, RESTORABLE_MARKER, plan_module

ABI = """
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "alloc") (param i32) (result i32) (global.get $heap))
  (func (export "handler") (param i32 i32 i32) (result i32) {body})
"""


def module(body: str = "(i32.const 0)", extra: str = "") -> bytes:
    """A wasm-core@1 module whose handler runs ``body``, with ``extra`` fields (imports go first)."""
    imports = extra if extra.startswith("(import") else ""
    rest = "" if imports else extra
    return bytes(wasmtime.wat2wasm(f"(module {imports} {ABI.replace('{body}', body)} {rest})"))


def exports_of(wasm: bytes) -> dict[str, str]:
    compiled = wasmtime.Module(wasmtime.Engine(), wasm)
    return {item.name or "": type(item.type).__name__ for item in compiled.exports}


TABLE = "(table $t 2 funcref) (elem (i32.const 0) $f) (func $f) (elem $passive func $f)"


@pytest.mark.parametrize(
    ("body", "extra", "reason"),
    [
        ("(table.set $t (i32.const 0) (ref.null func)) (i32.const 0)", TABLE, "uses table.set"),
        ("(drop (table.grow $t (ref.null func) (i32.const 1))) (i32.const 0)", TABLE, "uses table.grow"),
        ("(table.fill $t (i32.const 0) (ref.null func) (i32.const 1)) (i32.const 0)", TABLE, "uses table.fill"),
        ("(table.copy $t $t (i32.const 0) (i32.const 1) (i32.const 1)) (i32.const 0)", TABLE, "uses table.copy"),
        ("(table.init $t $passive (i32.const 0) (i32.const 0) (i32.const 1)) (i32.const 0)", TABLE, "uses table.init"),
        ("(elem.drop $passive) (i32.const 0)", TABLE, "uses elem.drop"),
        ("(data.drop $d) (i32.const 0)", '(data $d "x")', "uses data.drop"),
        ("(i32.const 0)", "(func $s) (start $s)", "has a start function"),
        ("(i32.const 0)", "(global (mut f64) (f64.const 0))", "mutable global 1 is not an integer"),
        ("(i32.const 0)", "(memory $second 1)", "has 2 memories, not one"),
        ("(i32.const 0)", '(import "ext" "g" (global i32))', "imports a global"),
        ("(i32.const 0)", '(import "ext" "t" (table 1 funcref))', "imports a table"),
        ("(drop (i32.atomic.load (i32.const 0))) (i32.const 0)", "", "not readable: instruction 0xfe"),
        ("(block $b (try_table (catch_all $b))) (i32.const 0)", "", "not readable: instruction 0x1f"),
    ],
)
def test_module_that_can_change_state_the_host_cannot_restore_is_not_restorable(body, extra, reason):
    wasm = module(body, extra)
    rewritten, plan = plan_module(wasm)
    assert not plan.restorable
    assert any(found.startswith(reason) for found in plan.reasons), plan.reasons
    assert rewritten == wasm
    assert RESTORABLE_MARKER not in exports_of(rewritten)


@pytest.mark.parametrize(
    "body",
    [
        "(memory.init $d (i32.const 0) (i32.const 0) (i32.const 1)) (i32.const 0)",
        "(memory.copy (i32.const 0) (i32.const 8) (i32.const 8)) (i32.const 0)",
        "(memory.fill (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0)",
        "(drop (memory.grow (i32.const 1))) (i32.const 0)",
        "(drop (call_indirect $t (param) (result i32) (i32.const 0))) (i32.const 0)",
        "(drop (table.get $t (i32.const 0))) (drop (table.size $t)) (i32.const 0)",
    ],
)
def test_memory_instructions_and_table_reads_keep_a_module_restorable(body):
    extra = '(data $d "x") (table $t 1 funcref) (elem (i32.const 0) $one) (func $one (result i32) (i32.const 1))'
    _, plan = plan_module(module(body, extra))
    assert plan.restorable, plan.reasons


def test_restorable_module_exports_every_mutable_global_and_the_marker_and_keeps_its_exports():
    extra = "(global $a (mut i64) (i64.const 7)) (global $b i32 (i32.const 1)) (global $c (mut i32) (i32.const 2))"
    rewritten, plan = plan_module(module(extra=extra))
    assert plan.restorable
    assert plan.mutable_globals == (0, 1, 3)
    assert exports_of(rewritten) == {
        "memory": "MemoryType",
        "alloc": "FuncType",
        "handler": "FuncType",
        f"{GLOBAL_EXPORT_PREFIX}0": "GlobalType",
        f"{GLOBAL_EXPORT_PREFIX}1": "GlobalType",
        f"{GLOBAL_EXPORT_PREFIX}3": "GlobalType",
        RESTORABLE_MARKER: "MemoryType",
    }


def test_exported_global_names_point_at_the_right_globals():
    extra = "(global (mut i32) (i32.const 11)) (global (mut i64) (i64.const 22))"
    rewritten, _ = plan_module(module(extra=extra))
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, rewritten), [])
    exports = instance.exports(store)
    values = {name: item.value(store) for name, item in exports.items() if isinstance(item, wasmtime.Global)}
    assert values == {f"{GLOBAL_EXPORT_PREFIX}0": 4096, f"{GLOBAL_EXPORT_PREFIX}1": 11, f"{GLOBAL_EXPORT_PREFIX}2": 22}


@pytest.mark.parametrize("restorable", [True, False], ids=["restorable", "not-restorable"])
def test_guest_cannot_claim_the_marker_or_reserved_names(restorable):
    forged = f'(export "{RESTORABLE_MARKER}" (memory 0)) (export "{GLOBAL_EXPORT_PREFIX}9" (func 0))'
    body = "(i32.const 0)" if restorable else "(data.drop $d) (i32.const 0)"
    rewritten, plan = plan_module(module(body, forged + ' (data $d "x")'))
    assert plan.restorable is restorable
    names = exports_of(rewritten)
    assert (RESTORABLE_MARKER in names) is restorable
    assert f"{GLOBAL_EXPORT_PREFIX}9" not in names


KITCHEN_SINK = """
  (type $pair (func (param i32) (result i32 i32)))
  (table $t 4 funcref)
  (func $two (param i32) (result i32 i32) (local.get 0) (i32.const 2))
  (func $mix (param $x i32) (result i32) (local $v v128) (local $d f64) (local $r externref)
    (block $out (result i32)
      (loop $again
        (br_table $again $out $again (i32.const 5) (local.get $x))))
    (drop)
    (call $two (i32.const 300000))
    (drop) (drop)
    (if (result i32) (i32.eqz (local.get $x)) (then (i32.const -1)) (else (i32.const 0x7fffffff)))
    (drop)
    (local.set $v (v128.const i32x4 1 2 3 4))
    (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
    (drop (i32x4.extract_lane 3 (local.get $v)))
    (local.set $v (v128.load32_lane offset=16 1 (i32.const 0) (local.get $v)))
    (v128.store offset=64 align=4 (i32.const 0) (local.get $v))
    (local.set $v (v128.load64_zero (i32.const 8)))
    (drop (v128.any_true (local.get $v)))
    (local.set $d (f64.const 1.5e300))
    (drop (f32.const 3.25))
    (drop (i64.const -9223372036854775808))
    (drop (i32.trunc_sat_f64_s (local.get $d)))
    (drop (i64.extend32_s (i64.const 5)))
    (drop (select (result i32) (i32.const 1) (i32.const 2) (local.get $x)))
    (drop (ref.is_null (local.get $r)))
    (drop (ref.func $two))
    (i64.store16 offset=123456 (i32.const 0) (i64.const 1))
    (block (type $pair) (i32.const 1) (i32.const 2) (drop) (drop) (i32.const 3) (i32.const 4))
    (drop) (drop)
    (table.set $t (i32.const 1) (ref.null func))
    (local.get $x))
  (elem declare func $two)
"""


def test_decoder_follows_every_instruction_kind_to_a_mutation_at_the_end():
    # The table.set sits after one of each kind of immediate: a decoder that lost its place would miss it.
    _, plan = plan_module(module(extra=KITCHEN_SINK))
    assert plan.reasons == ("uses table.set",)


def test_decoder_reads_the_example_guest_as_restorable(example_wasm):
    _, plan = plan_module(example_wasm)
    assert plan.restorable, plan.reasons


@pytest.fixture
def example_wasm():
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "examples" / "hello" / "dist" / "main.wasm").read_bytes()


def test_body_that_does_not_end_where_its_size_says_is_not_readable():
    wasm = bytearray(module())
    code = wasm.rindex(b"\x41\x00\x0b")  # the handler body: i32.const 0, end
    wasm[code : code + 3] = b"\x01\x01\x0b"  # nop nop end: same size, but an unbalanced body is still one `end`
    wasm[code + 1] = 0x0B  # nop end end: the body ends one byte early
    _, plan = plan_module(bytes(wasm))
    assert not plan.restorable
    assert plan.reasons == ("not readable: a function body does not end where its size says",)


@given(st.binary(max_size=200))
def test_plan_module_never_raises_on_arbitrary_bytes(tail):
    for wasm in (b"\0asm\x01\0\0\0" + tail, module()[: len(tail)] + tail):
        rewritten, plan = plan_module(wasm)
        assert not plan.restorable or RESTORABLE_MARKER.encode() in rewritten


V = "(v128.const i64x2 0 0)"
# Every SIMD instruction with an immediate, with immediates chosen so that a decoder skipping them wrongly
# reads them as opcodes that lose its place (0x03 loop, 0x07 catch): lanes 7 and 3, memarg offset=3.
SIMD_WITH_IMMEDIATES = [
    *(f"(drop ({op} 7 {V}))" for op in ("i8x16.extract_lane_s", "i8x16.extract_lane_u")),
    f"(drop (i8x16.replace_lane 7 {V} (i32.const 0)))",
    *(f"(drop ({op} 7 {V}))" for op in ("i16x8.extract_lane_s", "i16x8.extract_lane_u")),
    f"(drop (i16x8.replace_lane 7 {V} (i32.const 0)))",
    f"(drop (i32x4.extract_lane 3 {V}))",
    f"(drop (i32x4.replace_lane 3 {V} (i32.const 0)))",
    f"(drop (f32x4.extract_lane 3 {V}))",
    f"(drop (f32x4.replace_lane 3 {V} (f32.const 0)))",
    *(
        f"(drop ({op} offset=3 align=1 (i32.const 0)))"
        for op in (
            "v128.load",
            "v128.load8x8_s",
            "v128.load8x8_u",
            "v128.load16x4_s",
            "v128.load16x4_u",
            "v128.load32x2_s",
            "v128.load32x2_u",
            "v128.load8_splat",
            "v128.load16_splat",
            "v128.load32_splat",
            "v128.load64_splat",
            "v128.load32_zero",
            "v128.load64_zero",
        )
    ),
    f"(v128.store offset=3 align=1 (i32.const 0) {V})",
    *(
        f"(drop ({op} offset=3 align=1 {lane} (i32.const 0) {V}))"
        for op, lane in (("v128.load8_lane", 7), ("v128.load16_lane", 7), ("v128.load32_lane", 3))
    ),
    *(
        f"({op} offset=3 align=1 {lane} (i32.const 0) {V})"
        for op, lane in (("v128.store8_lane", 7), ("v128.store16_lane", 7), ("v128.store32_lane", 3))
    ),
    f"(drop (i8x16.shuffle 3 7 3 7 3 7 3 7 3 7 3 7 3 7 3 7 {V} {V}))",
    "(drop (v128.const i8x16 3 7 3 7 3 7 3 7 3 7 3 7 3 7 3 7))",
    "(drop (i32.load offset=3 align=1 (i32.const 0)))",
    "(drop (f64.const 0x1.0303030303030p-1007))",
    "(drop (f32.const 0x1.060606p-121))",
]


@pytest.mark.parametrize("instruction", SIMD_WITH_IMMEDIATES)
def test_decoder_skips_each_immediate_exactly(instruction):
    extra = "(table $t 1 funcref) (func $probe " + instruction + " (table.set $t (i32.const 0) (ref.null func)))"
    _, plan = plan_module(module(extra=extra))
    assert plan.reasons == ("uses table.set",)


def test_decoder_follows_memory_indices_of_a_second_memory():
    extra = (
        "(memory $other 1) (table $t 1 funcref)"
        " (func (drop (i32.load $other offset=3 (i32.const 0))) (table.set $t (i32.const 0) (ref.null func)))"
    )
    _, plan = plan_module(module(extra=extra))
    assert plan.reasons == ("has 2 memories, not one", "uses table.set")
