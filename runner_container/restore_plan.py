"""Which modules may run on a kept instance restored after every call, and the rewrite that makes it possible.

The engine keeps an instance between calls and, after each call, puts back the state it had right after
instantiation (:mod:`runner_container.instances`). That is exact only for state the host can read and write
through wasmtime's public API: the bytes and size of linear memory and the values of *exported* globals. So
the runner reads each module's binary once, when it compiles it, and:

1. makes every mutable global readable: :func:`plan_module` exports each one under ``ext-runner:global:<index>``.
   Export names are invisible to the guest, so this changes nothing the guest can observe;
2. calls the module *restorable* only when nothing else it can observe may change between calls:

   - it imports functions only (no memory, table or global it could share with anything else);
   - it has exactly one memory, and no start function (that would run guest code at instantiation);
   - its mutable globals are integers (i32, i64), which the host can set back exactly;
   - no function holds an instruction that changes a table or a segment: ``table.set``, ``table.grow``,
     ``table.fill``, ``table.copy``, ``table.init``, ``elem.drop``, ``data.drop``;
   - every instruction decodes to an opcode this reader knows (MVP, sign extension, saturating
     conversions, bulk memory, reference types, tail calls, SIMD); anything else (threads, exceptions,
     GC, a newer proposal) makes the module not restorable rather than guessed about;
3. marks a restorable module with the export ``ext-runner:restorable:v1``. Exports whose names start with
   ``ext-runner:`` in the input are dropped first, so a guest cannot claim the marker for itself.

Every module still runs; one that is not restorable gets a fresh instance per call, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GLOBAL_EXPORT_PREFIX",
    "RESERVED_EXPORT_PREFIX",
    "RESTORABLE_MARKER",
    "RestorePlan",
    "plan_module",
]

RESERVED_EXPORT_PREFIX = "ext-runner:"
GLOBAL_EXPORT_PREFIX = "ext-runner:global:"
# Bump the version whenever the rules above change: artifacts marked under older rules then run fresh.
RESTORABLE_MARKER = "ext-runner:restorable:v1"

_MAGIC_AND_VERSION = b"\0asm\x01\0\0\0"
_EXPORT_SECTION = 7
_EXTERN_KINDS = ("function", "table", "memory", "global", "tag")
_GLOBAL_KIND = 3
_MEMORY_KIND = 2
# Integers only: a float goes through a Python float on its way back, which may not keep a NaN's exact bits.
_INTEGER_TYPES = frozenset({0x7F, 0x7E})  # i32, i64
_TYPED_REF = (0x63, 0x64)  # (ref null ht) and (ref ht): a heap type follows

# What follows each single-byte opcode, as a kind for the decoder's dispatch table.
_PLAIN, _LEB, _LEB2, _MEMARG, _BLOCK, _END, _BYTES4, _BYTES8, _BR_TABLE, _SELECT_T, _MISC, _SIMD, _UNKNOWN = range(13)
_OPCODE_KINDS = [_UNKNOWN] * 256
for _op in (0x00, 0x01, 0x05, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)):
    _OPCODE_KINDS[_op] = _PLAIN
# branches, calls, locals, globals, table.get/set, memory.size/grow, i32/i64.const, ref.null, ref.func
for _op in (0x0C, 0x0D, 0x10, 0x12, *range(0x20, 0x27), 0x3F, 0x40, 0x41, 0x42, 0xD0, 0xD2):
    _OPCODE_KINDS[_op] = _LEB
for _op in (0x11, 0x13):  # call_indirect, return_call_indirect: type and table
    _OPCODE_KINDS[_op] = _LEB2
for _op in range(0x28, 0x3F):  # loads and stores
    _OPCODE_KINDS[_op] = _MEMARG
for _op in (0x02, 0x03, 0x04):  # block, loop, if
    _OPCODE_KINDS[_op] = _BLOCK
_OPCODE_KINDS[0x0B] = _END
_OPCODE_KINDS[0x43] = _BYTES4
_OPCODE_KINDS[0x44] = _BYTES8
_OPCODE_KINDS[0x0E] = _BR_TABLE
_OPCODE_KINDS[0x1C] = _SELECT_T
_OPCODE_KINDS[0xFC] = _MISC
_OPCODE_KINDS[0xFD] = _SIMD
_TABLE_SET = 0x26

# 0xFC sub-opcodes: how many index immediates each carries, and which change a table or a segment.
_MISC_INDICES = {**dict.fromkeys(range(8), 0), 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2, 15: 1, 16: 1, 17: 1}
_MISC_MUTATORS = {
    9: "data.drop",
    12: "table.init",
    13: "elem.drop",
    14: "table.copy",
    15: "table.grow",
    17: "table.fill",
}
# 0xFD (SIMD) sub-opcodes with immediates; every other defined one (up to relaxed SIMD's 0x113) has none.
_SIMD_MEMARG = frozenset({*range(0x0C), 0x5C, 0x5D})
_SIMD_MEMARG_LANE = frozenset(range(0x54, 0x5C))
_SIMD_BYTES16 = frozenset({0x0C, 0x0D})
_SIMD_LANE = frozenset(range(0x15, 0x23))
_SIMD_LAST = 0x113


@dataclass(frozen=True)
class RestorePlan:
    """The verdict on one module: ``restorable``, or the ``reasons`` it is not (for logs and tests)."""

    restorable: bool
    reasons: tuple[str, ...] = ()
    mutable_globals: tuple[int, ...] = ()


class _Unsupported(Exception):
    """Something this reader does not know: the module is not restorable, whatever it is."""


class _Reader:
    """Reads the wasm binary encoding from ``data[pos:end]``; every read past ``end`` raises."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _Unsupported("the binary ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        if count > self.end - self.pos:
            raise _Unsupported("the binary ends early")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u32(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 28:
                raise _Unsupported("an unsigned LEB128 longer than 5 bytes")

    def skip_leb(self) -> None:
        """Skip one LEB128 number of up to 64 bits, signed or not (its value is never needed)."""
        for _ in range(10):
            if self.byte() < 0x80:
                return
        raise _Unsupported("a LEB128 number longer than 10 bytes")

    def peek(self) -> int:
        if self.pos >= self.end:
            raise _Unsupported("the binary ends early")
        return self.data[self.pos]

    def name(self) -> str:
        return self.take(self.u32()).decode("utf-8")

    def done(self) -> bool:
        return self.pos >= self.end


# --- types and instructions ------------------------------------------------------------------


def _valtype(reader: _Reader) -> int:
    code = reader.byte()
    if code in _TYPED_REF:
        reader.skip_leb()  # the heap type
    return code


def _limits(reader: _Reader) -> None:
    flags = reader.byte()
    reader.skip_leb()  # minimum (64-bit for memory64)
    if flags & 0x01:
        reader.skip_leb()  # maximum
    if flags & 0x08:
        reader.u32()  # custom page size (log2)


# The decoder below works on (data, pos) in plain locals: it is the one loop that sees every instruction of
# every function, so it trades the reader's checks for speed. Reading past the data raises IndexError (the
# caller's "not readable"); running past a function body is caught by the body's end check.


def _skip(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _memarg(data: bytes, pos: int) -> int:
    align, pos = _leb(data, pos)
    if align & 0x40:
        pos = _skip(data, pos)  # memory index (multi-memory)
    return _skip(data, pos)  # offset


def _misc(data: bytes, pos: int, found: set[str]) -> int:
    sub, pos = _leb(data, pos)
    indices = _MISC_INDICES.get(sub)
    if indices is None:
        raise _Unsupported(f"instruction 0xfc {sub}")
    mutator = _MISC_MUTATORS.get(sub)
    if mutator is not None:
        found.add(mutator)
    for _ in range(indices):
        pos = _skip(data, pos)
    return pos


def _simd(data: bytes, pos: int) -> int:
    sub, pos = _leb(data, pos)
    if sub > _SIMD_LAST:
        raise _Unsupported(f"instruction 0xfd {sub}")
    if sub in _SIMD_BYTES16:
        return pos + 16
    if sub in _SIMD_MEMARG:
        return _memarg(data, pos)
    if sub in _SIMD_MEMARG_LANE:
        return _memarg(data, pos) + 1
    if sub in _SIMD_LANE:
        return pos + 1
    return pos


def _instructions(reader: _Reader, found: set[str]) -> None:
    """Decode one expression up to and including its final ``end``; instructions that change a table or a
    segment are added to ``found``."""
    data, pos, kinds = reader.data, reader.pos, _OPCODE_KINDS
    depth = 0
    while True:
        op = data[pos]
        pos += 1
        kind = kinds[op]
        if kind == _PLAIN:
            continue
        if kind == _LEB:
            if op == _TABLE_SET:
                found.add("table.set")
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == _MEMARG:
            pos = _memarg(data, pos)
        elif kind == _END:
            if depth == 0:
                reader.pos = pos
                return
            depth -= 1
        elif kind == _BLOCK:
            # 0x40 (empty), a value type or a type index (signed LEB); a typed reference adds a heap type.
            if data[pos] in _TYPED_REF:
                pos += 1
            pos = _skip(data, pos)
            depth += 1
        elif kind == _LEB2:
            pos = _skip(data, _skip(data, pos))
        elif kind == _BYTES4:
            pos += 4
        elif kind == _BYTES8:
            pos += 8
        elif kind == _BR_TABLE:
            count, pos = _leb(data, pos)
            for _ in range(count + 1):
                pos = _skip(data, pos)
        elif kind == _SELECT_T:
            count, pos = _leb(data, pos)
            for _ in range(count):
                pos = _skip(data, pos + 1) if data[pos] in _TYPED_REF else pos + 1
        elif kind == _MISC:
            pos = _misc(data, pos, found)
        elif kind == _SIMD:
            pos = _simd(data, pos)
        else:
            raise _Unsupported(f"instruction 0x{op:02x}")


# --- sections --------------------------------------------------------------------------------


@dataclass
class _Export:
    name: str
    kind: int
    index: int


@dataclass
class _Module:
    imports: list[str]
    memories: int
    globals: list[tuple[int, bool]]
    exports: list[_Export]
    export_section: tuple[int, int] | None
    has_start: bool
    mutators: set[str]


def _imports(reader: _Reader) -> list[str]:
    kinds = []
    for _ in range(reader.u32()):
        reader.name()
        reader.name()
        kind = reader.byte()
        if kind == 0:
            reader.u32()
        elif kind == 1:
            _valtype(reader)
            _limits(reader)
        elif kind == 2:
            _limits(reader)
        elif kind == 3:
            _valtype(reader)
            reader.byte()
        elif kind == 4:
            reader.byte()
            reader.u32()
        else:
            raise _Unsupported(f"import kind {kind}")
        kinds.append(_EXTERN_KINDS[kind])
    return kinds


def _globals(reader: _Reader) -> list[tuple[int, bool]]:
    found: list[tuple[int, bool]] = []
    ignored: set[str] = set()
    for _ in range(reader.u32()):
        code = _valtype(reader)
        mutable = reader.byte() == 1
        _instructions(reader, ignored)
        found.append((code, mutable))
    return found


def _exports(reader: _Reader) -> list[_Export]:
    return [_Export(reader.name(), reader.byte(), reader.u32()) for _ in range(reader.u32())]


def _code(reader: _Reader, found: set[str]) -> None:
    for _ in range(reader.u32()):
        size = reader.u32()
        if size > reader.end - reader.pos:
            raise _Unsupported("a function body runs past its section")
        body = _Reader(reader.data, reader.pos, reader.pos + size)
        for _ in range(body.u32()):
            body.u32()
            _valtype(body)
        _instructions(body, found)
        if body.pos != body.end:
            raise _Unsupported("a function body does not end where its size says")
        reader.pos += size


def _read(wasm: bytes) -> _Module:
    if wasm[:8] != _MAGIC_AND_VERSION:
        raise _Unsupported("not a core WebAssembly module (version 1)")
    module = _Module([], 0, [], [], None, False, set())
    reader = _Reader(wasm, 8)
    while not reader.done():
        section_begin = reader.pos
        section_id = reader.byte()
        size = reader.u32()
        start = reader.pos
        if size > reader.end - start:
            raise _Unsupported(f"section {section_id} runs past the end of the binary")
        content = _Reader(wasm, start, start + size)
        if section_id == 2:
            module.imports = _imports(content)
        elif section_id == 5:
            module.memories = content.u32()
            content.pos = content.end
        elif section_id == 6:
            module.globals = _globals(content)
        elif section_id == _EXPORT_SECTION:
            module.exports = _exports(content)
            module.export_section = (section_begin, start + size)
        elif section_id == 8:
            module.has_start = True
            content.u32()
        elif section_id == 10:
            _code(content, module.mutators)
        elif section_id in (0, 1, 3, 4, 9, 11, 12, 13):
            content.pos = content.end
        else:
            raise _Unsupported(f"unknown section {section_id}")
        if content.pos != content.end:
            raise _Unsupported(f"section {section_id} does not end where its size says")
        reader.pos = start + size
    return module


def _reasons(module: _Module) -> list[str]:
    reasons = [f"imports a {kind}" for kind in sorted(set(module.imports) - {"function"})]
    memories = module.memories + module.imports.count("memory")
    if memories != 1:
        reasons.append(f"has {memories} memories, not one")
    if module.has_start:
        reasons.append("has a start function")
    for index, (code, mutable) in enumerate(module.globals):
        if mutable and code not in _INTEGER_TYPES:
            reasons.append(f"mutable global {index} is not an integer")
    reasons.extend(f"uses {name}" for name in sorted(module.mutators))
    return reasons


# --- the rewrite ------------------------------------------------------------------------------


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _export_section(exports: list[_Export]) -> bytes:
    body = bytearray(_uleb(len(exports)))
    for export in exports:
        name = export.name.encode("utf-8")
        body += _uleb(len(name)) + name + bytes([export.kind]) + _uleb(export.index)
    return bytes([_EXPORT_SECTION]) + _uleb(len(body)) + bytes(body)


def plan_module(wasm: bytes) -> tuple[bytes, RestorePlan]:
    """The bytes the runner should compile for ``wasm``, and whether instances of them may be restored.

    Never raises: bytes this reader cannot follow come back unchanged with a plan that is not restorable
    (wasmtime then reports whatever is wrong with them). Reserved exports (``ext-runner:…``) are always
    removed; a restorable module gains one export per mutable global and the marker.
    """
    try:
        module = _read(wasm)
    except (_Unsupported, UnicodeDecodeError) as exc:
        return wasm, RestorePlan(False, (f"not readable: {exc}",))
    except IndexError:
        return wasm, RestorePlan(False, ("not readable: the binary ends early",))
    if module.imports.count("global"):
        # Imported globals shift the index space; the ABI allows none, so this reader does not try.
        return wasm, RestorePlan(False, ("imports a global",))
    reasons = _reasons(module)
    kept = [export for export in module.exports if not export.name.startswith(RESERVED_EXPORT_PREFIX)]
    mutable = tuple(index for index, (_, is_mutable) in enumerate(module.globals) if is_mutable)
    plan = RestorePlan(not reasons, tuple(reasons), mutable if not reasons else ())
    if plan.restorable:
        kept += [_Export(f"{GLOBAL_EXPORT_PREFIX}{index}", _GLOBAL_KIND, index) for index in mutable]
        kept.append(_Export(RESTORABLE_MARKER, _MEMORY_KIND, 0))
    elif len(kept) == len(module.exports):
        return wasm, plan
    section = _export_section(kept)
    if module.export_section is None:
        # No export section means no ABI exports: the module fails its ABI check whatever this returns.
        return wasm, RestorePlan(False, (*reasons, "exports nothing"))
    begin, end = module.export_section
    return wasm[:begin] + section + wasm[end:], plan
