"""A streaming, bounded reader of WebAssembly *component* structure, for ``wasm-component@1`` (DESIGN §6b).

Publishing checks a component entry before any engine sees it, without wasmtime (the API Lambda does
not ship it): :class:`ComponentInspector` takes the binary in chunks as the archive streams past, keeps
only the top-level sections that name imports, exports and their types (instance, alias, type, canon,
import and export sections, at most 4 MiB together) and skips the rest (core modules, nested
components, custom sections: the bulk of an 18 MB component). :func:`check_component` then requires

1. imports only from ``ext:platform/*@1.x`` and WASI 0.2 (``wasi:io``, ``wasi:clocks``, ``wasi:random``,
   ``wasi:cli``, ``wasi:filesystem``, ``wasi:sockets``), plus the type imports a world's ``use`` makes;
   anything else (``wasi:http`` in particular) is ``WASM_INVALID`` naming the import;
2. an export ``handle`` whose type is exactly the world's ``handle`` (:data:`HANDLE_TYPE`, rendered
   from the binary's own type definitions, so a record with a missing or retyped field is refused).

Full validation of the code happens when the runner compiles the component after publish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chalicelib.bundles.wasm import WasmInspector, WasmModuleInfo, check_abi
from chalicelib.errors import WasmInvalid

__all__ = [
    "ALLOWED_IMPORTS",
    "COMPONENT_RUNTIME",
    "HANDLE_TYPE",
    "ComponentImport",
    "ComponentInfo",
    "ComponentInspector",
    "EntryInspector",
    "check_component",
    "check_entry",
    "is_component_header",
]

COMPONENT_RUNTIME = "wasm-component@1"
_MAGIC = b"\0asm"
_COMPONENT_VERSION = b"\x0d\x00\x01\x00"
_KEPT_SECTIONS = {5: "instance", 6: "alias", 7: "type", 8: "canon", 10: "import", 11: "export"}
_MAX_KEPT_BYTES = 4 * 1024 * 1024
_MAX_DEPTH = 48
_MAX_RENDERED = 64 * 1024

ALLOWED_IMPORTS = (
    re.compile(r"ext:platform/(types|log|http|kv|secrets)@1\.\d+\.\d+(-[0-9A-Za-z.-]+)?"),
    re.compile(r"wasi:(io|clocks|random|cli|filesystem|sockets)/[a-z][a-z0-9-]*@0\.2\.\d+(-[0-9A-Za-z.-]+)?"),
)
"""Instance imports a ``wasm-component@1`` component may have (full-match patterns)."""

_FIELDS = "list<tuple<string, string>>"
_CONTEXT = (
    "record{request-id: string, tenant-id: string, extension-id: string, install-id: string, version: string, "
    "content-hash: string, config: string, user: option<record{sub: string, roles: list<string>}>}"
)
_ENDPOINT = f"record{{method: string, path: string, handler: string, params: {_FIELDS}}}"
_REQUEST = (
    f"record{{method: string, path: string, query: {_FIELDS}, headers: {_FIELDS}, body: list<u8>, "
    f"endpoint: option<{_ENDPOINT}>}}"
)
_RESPONSE = f"record{{status: u16, headers: {_FIELDS}, body: list<u8>}}"
HANDLE_TYPE = f"func(ctx: {_CONTEXT}, req: {_REQUEST}) -> {_RESPONSE}"
"""The type of the world ``extension``'s export ``handle`` as :func:`check_component` renders it."""

_PRIMITIVES = {
    0x7F: "bool",
    0x7E: "s8",
    0x7D: "u8",
    0x7C: "s16",
    0x7B: "u16",
    0x7A: "s32",
    0x79: "u32",
    0x78: "s64",
    0x77: "u64",
    0x76: "f32",
    0x75: "f64",
    0x74: "char",
    0x73: "string",
    0x64: "error-context",
}
_SORTS = {0x01: "func", 0x02: "value", 0x03: "type", 0x04: "component", 0x05: "instance"}
_EXTERN_KINDS = {0x00: "core module", 0x01: "func", 0x02: "value", 0x03: "type", 0x04: "component", 0x05: "instance"}


class _Malformed(Exception):
    pass


def is_component_header(header: bytes) -> bool:
    """Whether the first 8 bytes of a binary announce a component (rather than a core module)."""
    return header[:4] == _MAGIC and header[6:8] == b"\x01\x00"


# --- the type model ---------------------------------------------------------------------------
#
# Types are kept as small tuples whose value-type references are ``(scope, index)`` pairs, resolved
# lazily when the export's type is rendered.  A scope is one type index space: the component's own,
# or an instance type's (which starts empty and reaches outward through ``alias outer``).


@dataclass
class _Scope:
    parent: _Scope | None = None
    types: list[tuple[object, ...]] = field(default_factory=list)
    exports: dict[str, tuple[str, int]] = field(default_factory=dict)


_ValType = tuple[object, ...]


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Malformed("a section ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise _Malformed("a section ends early")
        return self.data[self.pos]

    def u32(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 35:
                raise _Malformed("an integer is too long")
        if result > 0xFFFFFFFF:
            raise _Malformed("an integer is out of range")
        return result

    def name(self) -> str:
        size = self.u32()
        raw = self.data[self.pos : self.pos + size]
        if len(raw) != size:
            raise _Malformed("a name runs past its section")
        self.pos += size
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("a name is not UTF-8") from None

    def extern_name(self) -> str:
        form = self.byte()
        if form not in (0x00, 0x01, 0x02):
            raise _Malformed(f"an import or export name has unknown form 0x{form:02x}")
        name = self.name()
        if form == 0x02:
            for _ in range(self.u32()):
                kind = self.byte()
                if kind in (0x00, 0x01, 0x02):
                    self.name()
                else:
                    raise _Malformed(f"a name attribute has unknown kind 0x{kind:02x}")
        return name

    def vec(self) -> range:
        return range(self.u32())


def _valtype(cur: _Cursor, scope: _Scope) -> _ValType:
    first = cur.peek()
    if 0x40 <= first <= 0x7F:
        cur.byte()
        if first not in _PRIMITIVES:
            raise _Malformed(f"uses value type 0x{first:02x}, which is not a component value type")
        return ("prim", _PRIMITIVES[first])
    return ("ref", scope, cur.u32())


def _optional(cur: _Cursor, scope: _Scope) -> _ValType | None:
    flag = cur.byte()
    if flag == 0x00:
        return None
    if flag == 0x01:
        return _valtype(cur, scope)
    raise _Malformed(f"has an optional value with flag 0x{flag:02x}")


def _defvaltype(code: int, cur: _Cursor, scope: _Scope) -> tuple[object, ...]:
    if code in _PRIMITIVES:
        return ("prim", _PRIMITIVES[code])
    if code == 0x72:
        return ("record", tuple((cur.name(), _valtype(cur, scope)) for _ in cur.vec()))
    if code == 0x71:
        cases = []
        for _ in cur.vec():
            label, payload = cur.name(), _optional(cur, scope)
            if cur.byte() != 0x00:
                raise _Malformed("a variant case uses the retired 'refines' form")
            cases.append((label, payload))
        return ("variant", tuple(cases))
    if code == 0x70:
        return ("list", _valtype(cur, scope))
    if code == 0x67:
        return ("fixed-list", _valtype(cur, scope), cur.u32())
    if code == 0x6F:
        return ("tuple", tuple(_valtype(cur, scope) for _ in cur.vec()))
    if code in (0x6E, 0x6D):
        return ("flags" if code == 0x6E else "enum", tuple(cur.name() for _ in cur.vec()))
    if code == 0x6B:
        return ("option", _valtype(cur, scope))
    if code == 0x6A:
        return ("result", _optional(cur, scope), _optional(cur, scope))
    if code in (0x69, 0x68):
        return ("own" if code == 0x69 else "borrow", ("ref", scope, cur.u32()))
    if code in (0x66, 0x65):
        return ("stream" if code == 0x66 else "future", _optional(cur, scope))
    if code == 0x63:
        return ("map", _valtype(cur, scope), _valtype(cur, scope))
    raise _Malformed(f"uses type constructor 0x{code:02x}, which this verifier does not know")


def _deftype(cur: _Cursor, scope: _Scope) -> tuple[object, ...]:
    code = cur.byte()
    if code in (0x40, 0x43):
        params = tuple((cur.name(), _valtype(cur, scope)) for _ in cur.vec())
        form = cur.byte()
        if form == 0x00:
            result: _ValType | None = _valtype(cur, scope)
        elif form == 0x01 and cur.byte() == 0x00:
            result = None
        else:
            raise _Malformed("a function type has a malformed result list")
        return ("func", params, result)
    if code == 0x41:
        _declarations(cur, _Scope(parent=scope), component=True)
        return ("component",)
    if code == 0x42:
        inner = _Scope(parent=scope)
        _declarations(cur, inner, component=False)
        return ("instance", inner)
    if code == 0x3F:
        if cur.byte() != 0x7F:
            raise _Malformed("a resource type has a representation other than i32")
        if cur.byte() == 0x01:
            cur.u32()
        return ("resource",)
    return _defvaltype(code, cur, scope)


def _externtype(cur: _Cursor, scope: _Scope) -> tuple[str, int | None, bool]:
    """``(kind, type index or None, adds a type index)`` of an import's or export's type."""
    kind = cur.byte()
    if kind == 0x00:
        if cur.byte() != 0x11:
            raise _Malformed("a core extern type is not a module")
        cur.u32()
        return "core module", None, False
    if kind in (0x01, 0x04, 0x05):
        return _EXTERN_KINDS[kind], cur.u32(), False
    if kind == 0x02:
        if cur.byte() == 0x00:
            cur.u32()
        else:
            _valtype(cur, scope)
        return "value", None, False
    if kind == 0x03:
        bound = cur.byte()
        if bound == 0x00:
            return "type", cur.u32(), True
        if bound == 0x01:
            return "resource", None, True
        raise _Malformed(f"a type bound has unknown form 0x{bound:02x}")
    raise _Malformed(f"an extern type has unknown kind 0x{kind:02x}")


def _declarations(cur: _Cursor, scope: _Scope, *, component: bool) -> None:
    for _ in cur.vec():
        tag = cur.byte()
        if tag == 0x01:
            scope.types.append(_deftype(cur, scope))
        elif tag == 0x02:
            sort = _sort(cur)
            target = cur.byte()
            if sort != "type" or target != 0x02:
                raise _Malformed("an instance or component type holds an alias other than an outer type alias")
            count, outer_index = cur.u32(), cur.u32()
            scope.types.append(("outer", count, outer_index))
        elif tag == 0x04 or (component and tag == 0x03):
            name = cur.extern_name()
            kind, index, adds_type = _externtype(cur, scope)
            if adds_type:
                scope.types.append(("eq", index) if index is not None else ("resource",))
                scope.exports.setdefault(name, ("type", len(scope.types) - 1))
            elif kind == "func" and index is not None and tag == 0x04:
                scope.exports[name] = ("func", index)
        elif tag == 0x00:
            raise _Malformed("an instance or component type declares a core type, which this verifier does not read")
        else:
            raise _Malformed(f"an instance or component type has a declaration of unknown kind 0x{tag:02x}")


def _sort(cur: _Cursor) -> str:
    code = cur.byte()
    if code == 0x00:
        cur.byte()
        return "core"
    if code not in _SORTS:
        raise _Malformed(f"uses sort 0x{code:02x}, which is not a component sort")
    return _SORTS[code]


# --- the component's index spaces ---------------------------------------------------------------


@dataclass(frozen=True)
class ComponentImport:
    """One top-level import: its name and what kind of thing it is (``instance``, ``type``, ``func``…)."""

    name: str
    kind: str


@dataclass(frozen=True)
class ComponentInfo:
    """What publishing needs to know about a component: its imports and its exports' rendered types.

    ``exports`` maps each exported function's name to its type as :func:`render` writes it, or to a
    message saying why it could not be read.
    """

    imports: tuple[ComponentImport, ...]
    exports: dict[str, str]


class _Index:
    """The component's top-level index spaces, built as the kept sections are read in order."""

    def __init__(self) -> None:
        self.scope = _Scope()
        self.instances: list[tuple[object, ...]] = []
        self.funcs: list[tuple[object, ...]] = []
        self.imports: list[ComponentImport] = []
        self.exports: dict[str, tuple[object, ...]] = {}

    def read(self, section_id: int, body: bytes) -> None:
        cur = _Cursor(body)
        for _ in cur.vec():
            {5: self._instance, 6: self._alias, 7: self._type, 8: self._canon, 10: self._import, 11: self._export}[
                section_id
            ](cur)
        if cur.pos != len(body):
            raise _Malformed(f"a {_KEPT_SECTIONS[section_id]} section has trailing bytes")

    def _type(self, cur: _Cursor) -> None:
        self.scope.types.append(_deftype(cur, self.scope))

    def _instance(self, cur: _Cursor) -> None:
        form = cur.byte()
        if form == 0x00:
            cur.u32()
            for _ in cur.vec():
                cur.name()
                _sort(cur)
                cur.u32()
        elif form == 0x01:
            for _ in cur.vec():
                cur.extern_name()
                _sort(cur)
                cur.u32()
        else:
            raise _Malformed(f"an instance definition has unknown form 0x{form:02x}")
        self.instances.append(("opaque",))

    def _alias(self, cur: _Cursor) -> None:
        sort = _sort(cur)
        target = cur.byte()
        if target == 0x00:
            instance, name = cur.u32(), cur.name()
            entry: tuple[object, ...] = ("alias", instance, name)
        elif target == 0x01:
            cur.u32()
            cur.name()
            entry = ("opaque",)
        elif target == 0x02:
            cur.u32()
            cur.u32()
            entry = ("opaque",)
        else:
            raise _Malformed(f"an alias has unknown target 0x{target:02x}")
        self._add(sort, entry)

    def _add(self, sort: str, entry: tuple[object, ...]) -> None:
        if sort == "type":
            self.scope.types.append(entry if entry[0] != "alias" else ("alias-export", self, entry[1], entry[2]))
        elif sort == "instance":
            self.instances.append(entry)
        elif sort == "func":
            self.funcs.append(entry)

    def _canon(self, cur: _Cursor) -> None:
        code = cur.byte()
        if code == 0x00:
            if cur.byte() != 0x00:
                raise _Malformed("a canon lift does not lift a core function")
            cur.u32()
            self._options(cur)
            self.funcs.append(("typed", cur.u32()))
        elif code == 0x01:
            if cur.byte() != 0x00:
                raise _Malformed("a canon lower does not lower a function")
            cur.u32()
            self._options(cur)
        elif code in (0x02, 0x03, 0x04, 0x07, 0x0E, 0x13, 0x14, 0x15, 0x1A, 0x1B):
            cur.u32()
        elif code in (0x05, 0x0D, 0x1E, 0x1F, 0x22, 0x23, 0x24, 0x25, 0x26, 0x28):
            pass
        elif code in (0x06, 0x0C, 0x29, 0x2A, 0x2B, 0x2C, 0x2D):
            cur.byte()
        elif code in (0x0A, 0x0B):
            cur.byte()
            cur.u32()
        elif code == 0x09:
            if cur.byte() == 0x00:
                _valtype(cur, self.scope)
            else:
                cur.byte()
            self._options(cur)
        elif code in (0x0F, 0x10, 0x16, 0x17):
            cur.u32()
            self._options(cur)
        elif code in (0x11, 0x12, 0x18, 0x19):
            cur.u32()
            cur.byte()
        elif code in (0x1C, 0x1D):
            self._options(cur)
        elif code in (0x20, 0x21):
            cur.byte()
            cur.u32()
        else:
            raise _Malformed(f"uses canonical definition 0x{code:02x}, which this verifier does not know")

    @staticmethod
    def _options(cur: _Cursor) -> None:
        for _ in cur.vec():
            option = cur.byte()
            if option in (0x03, 0x04, 0x05, 0x07):
                cur.u32()
            elif option not in (0x00, 0x01, 0x02, 0x06):
                raise _Malformed(f"a canonical option has unknown kind 0x{option:02x}")

    def _import(self, cur: _Cursor) -> None:
        name = cur.extern_name()
        kind, index, _ = _externtype(cur, self.scope)
        self.imports.append(ComponentImport(name, kind))
        if kind == "instance" and index is not None:
            self.instances.append(("typed", index))
        elif kind == "func" and index is not None:
            self.funcs.append(("typed", index))
        elif kind == "type":
            self.scope.types.append(("eq", index))
        elif kind == "resource":
            self.scope.types.append(("resource",))

    def _export(self, cur: _Cursor) -> None:
        name = cur.extern_name()
        sort = _sort(cur)
        index = cur.u32()
        ascribed: int | None = None
        if cur.byte() == 0x01:
            kind, ascribed, _ = _externtype(cur, self.scope)
            if kind != "func":
                ascribed = None
        if sort == "func":
            entry: tuple[object, ...] = ("typed", ascribed) if ascribed is not None else ("same", index)
            self.exports[name] = entry
            self.funcs.append(entry)
        elif sort == "type":
            self.scope.types.append(("same", index))
        elif sort == "instance":
            self.instances.append(("same", index))

    # --- resolving and rendering ---------------------------------------------------------------

    def func_type(self, entry: tuple[object, ...], depth: int = 0) -> str:
        if depth > _MAX_DEPTH:
            raise _Malformed("a function is defined through too many aliases")
        if entry[0] == "typed":
            return _render(("ref", self.scope, entry[1]), 0)
        if entry[0] == "same":
            return self.func_type(self._at(self.funcs, entry[1], "function"), depth + 1)
        if entry[0] == "alias":
            scope, exported = self._instance_export(entry[1], entry[2], depth)
            kind, index = exported
            if kind != "func":
                raise _Malformed(f"an alias of {entry[2]!r} is not a function")
            return _render(("ref", scope, index), 0)
        raise _Malformed("the function comes from a nested component, whose types this verifier does not read")

    def _instance_export(self, instance: object, name: object, depth: int) -> tuple[_Scope, tuple[str, int]]:
        entry = self._at(self.instances, instance, "instance")
        while entry[0] == "same" and depth <= _MAX_DEPTH:
            entry = self._at(self.instances, entry[1], "instance")
            depth += 1
        if entry[0] != "typed":
            raise _Malformed("a type or function comes from an instance whose type this verifier does not read")
        kind, _scope = _resolve(("ref", self.scope, entry[1]), depth + 1)
        if kind[0] != "instance":
            raise _Malformed("an imported instance is not typed as an instance")
        inner = kind[1]
        assert isinstance(inner, _Scope)
        exported = inner.exports.get(str(name))
        if exported is None:
            raise _Malformed(f"an alias names {name!r}, which its instance does not export")
        return inner, exported

    @staticmethod
    def _at(space: list[tuple[object, ...]], index: object, what: str) -> tuple[object, ...]:
        if not isinstance(index, int) or index >= len(space):
            raise _Malformed(f"refers to {what} {index}, which does not exist")
        return space[index]


def _resolve(ref: _ValType, depth: int) -> tuple[tuple[object, ...], _Scope]:
    """Follow aliases, type imports and exports to the definition ``ref`` names."""
    _tag, scope, index = ref
    assert isinstance(scope, _Scope)
    while True:
        if depth > _MAX_DEPTH:
            raise _Malformed("a type is defined through too many aliases")
        depth += 1
        if not isinstance(index, int) or index >= len(scope.types):
            raise _Malformed(f"refers to type {index}, which does not exist")
        entry = scope.types[index]
        if entry[0] in ("eq", "same"):
            index = entry[1]
        elif entry[0] == "outer":
            count, index = entry[1], entry[2]
            for _ in range(int(str(count))):
                if scope.parent is None:
                    raise _Malformed("an outer alias reaches past the outermost component")
                scope = scope.parent
        elif entry[0] == "alias-export":
            owner = entry[1]
            assert isinstance(owner, _Index)
            scope, exported = owner._instance_export(entry[2], entry[3], depth)
            kind, index = exported
            if kind != "type":
                raise _Malformed(f"an alias of {entry[3]!r} is not a type")
        elif entry[0] == "opaque":
            raise _Malformed("a type comes from a definition this verifier does not read")
        else:
            return entry, scope


def _render(value: _ValType | None, depth: int) -> str:
    if value is None:
        return "_"
    if depth > _MAX_DEPTH:
        raise _Malformed("a type nests too deeply")
    if value[0] == "prim":
        return str(value[1])
    entry, _scope = _resolve(value, depth)
    kind = entry[0]
    inner = depth + 1
    if kind == "prim":
        return str(entry[1])
    if kind == "func":
        params = ", ".join(f"{n}: {_render(t, inner)}" for n, t in entry[1])  # type: ignore[attr-defined]
        result = entry[2]
        return f"func({params})" + ("" if result is None else f" -> {_render(result, inner)}")  # type: ignore[arg-type]
    if kind == "record":
        return "record{" + ", ".join(f"{n}: {_render(t, inner)}" for n, t in entry[1]) + "}"  # type: ignore[attr-defined]
    if kind == "variant":
        cases = (n if t is None else f"{n}({_render(t, inner)})" for n, t in entry[1])  # type: ignore[attr-defined]
        return "variant{" + ", ".join(cases) + "}"
    if kind in ("list", "option", "stream", "future"):
        return f"{kind}<{_render(entry[1], inner)}>"  # type: ignore[arg-type]
    if kind == "fixed-list":
        return f"list<{_render(entry[1], inner)}, {entry[2]}>"  # type: ignore[arg-type]
    if kind == "tuple":
        return "tuple<" + ", ".join(_render(t, inner) for t in entry[1]) + ">"  # type: ignore[attr-defined]
    if kind in ("flags", "enum"):
        return f"{kind}{{" + ", ".join(entry[1]) + "}"  # type: ignore[arg-type]
    if kind == "result":
        return f"result<{_render(entry[1], inner)}, {_render(entry[2], inner)}>"  # type: ignore[arg-type]
    if kind == "map":
        return f"map<{_render(entry[1], inner)}, {_render(entry[2], inner)}>"  # type: ignore[arg-type]
    if kind in ("own", "borrow"):
        return f"{kind}<resource>"
    return str(kind)


# --- streaming ---------------------------------------------------------------------------------


class ComponentInspector:
    """Feed a component's bytes in order; :meth:`finish` returns its imports and exports.

    Never raises while feeding: a malformed component is remembered and reported by :meth:`finish`.
    Memory stays bounded: skipped sections are never buffered, kept ones total at most 4 MiB.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._state = "header"
        self._need = 8
        self._section_id = 0
        self._skip = 0
        self._size_bytes = b""
        self._kept_bytes = 0
        self._sections: list[tuple[int, bytes]] = []
        self._error: str | None = None

    def feed(self, chunk: bytes | memoryview) -> None:
        if self._error is not None:
            return
        try:
            self._feed(memoryview(chunk))
        except _Malformed as exc:
            self._error = str(exc)

    def _feed(self, data: memoryview) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._pending), size - pos)
            self._pending += data[pos : pos + take]
            pos += take
            if len(self._pending) == self._need:
                got = bytes(self._pending)
                self._pending.clear()
                self._advance(got)

    def _advance(self, got: bytes) -> None:
        if self._state == "header":
            if got[:4] != _MAGIC or not is_component_header(got):
                raise _Malformed("is not a WebAssembly component")
            if got[4:] != _COMPONENT_VERSION:
                raise _Malformed(f"is a component of binary version {got[4:6].hex()}, wasm-component@1 reads 0d00")
            self._state, self._need = "section_id", 1
        elif self._state == "section_id":
            self._section_id = got[0]
            if self._section_id > 12:
                raise _Malformed(f"has a section of unknown id {self._section_id}")
            self._state, self._need, self._size_bytes = "section_size", 1, b""
        elif self._state == "section_size":
            self._size_bytes += got
            if got[0] & 0x80:
                if len(self._size_bytes) >= 5:
                    raise _Malformed("a section size is not a valid LEB128 integer")
                return
            length = _Cursor(self._size_bytes).u32()
            if self._section_id in _KEPT_SECTIONS:
                self._kept_bytes += length
                if self._kept_bytes > _MAX_KEPT_BYTES:
                    raise _Malformed("declares more than 4 MiB of types, imports and exports")
                if length == 0:
                    raise _Malformed(f"has an empty {_KEPT_SECTIONS[self._section_id]} section")
                self._state, self._need = "section_body", length
            else:
                self._skip = length
                self._state, self._need = "section_id", 1
        else:
            self._sections.append((self._section_id, got))
            self._state, self._need = "section_id", 1

    def finish(self) -> ComponentInfo:
        """The component's imports and exported functions' types, or ``WasmInvalid``."""
        if self._error is None and (self._state != "section_id" or self._pending or self._skip):
            self._error = "is truncated"
        if self._error is not None:
            raise WasmInvalid(self._error)
        index = _Index()
        try:
            for section_id, body in self._sections:
                index.read(section_id, body)
        except _Malformed as exc:
            raise WasmInvalid(str(exc)) from None
        exports: dict[str, str] = {}
        for name, entry in index.exports.items():
            try:
                rendered = index.func_type(entry)
            except _Malformed as exc:
                rendered = f"(unreadable: {exc})"
            if len(rendered) > _MAX_RENDERED:
                rendered = "(unreadable: the type is too large)"
            exports[name] = rendered
        return ComponentInfo(imports=tuple(index.imports), exports=exports)


def _allowed_import(item: ComponentImport) -> bool:
    if item.kind == "instance":
        return any(pattern.fullmatch(item.name) for pattern in ALLOWED_IMPORTS)
    # A world's `use types.{context, ...}` imports those type names bound to ext:platform's own types.
    return item.kind == "type"


def check_component(info: ComponentInfo, path: str) -> None:
    """Raise ``WASM_INVALID`` unless the component fits ``wasm-component@1`` (the world ``extension``)."""
    for item in info.imports:
        if not _allowed_import(item):
            raise WasmInvalid(
                f"{path} imports {item.kind} {item.name!r}, which {COMPONENT_RUNTIME} does not provide "
                "(it provides ext:platform/*@1 and WASI 0.2 io, clocks, random, cli, filesystem and sockets; "
                "wasi:http is never linked: fetch through ext:platform/http)"
            )
    handle = info.exports.get("handle")
    if handle is None:
        raise WasmInvalid(f"{path} does not export the function `handle` of the world ext:platform/extension")
    if handle != HANDLE_TYPE:
        raise WasmInvalid(
            f"{path} exports `handle` as {handle}, but the world ext:platform/extension needs {HANDLE_TYPE}"
        )


class EntryInspector:
    """Feed any ``.wasm``: a core module goes to :class:`WasmInspector`, a component to :class:`ComponentInspector`.

    Never raises while feeding; :meth:`finish` returns the structure of whichever it was.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._inner: WasmInspector | ComponentInspector | None = None

    def feed(self, chunk: bytes | memoryview) -> None:
        if self._inner is None:
            view = memoryview(chunk)
            take = 8 - len(self._header)
            self._header += view[:take]
            if len(self._header) < 8:
                return
            self._inner = ComponentInspector() if is_component_header(bytes(self._header)) else WasmInspector()
            self._inner.feed(bytes(self._header))
            chunk = view[take:]
        self._inner.feed(chunk)

    def finish(self) -> WasmModuleInfo | ComponentInfo:
        """The module's or component's structure, or ``WasmInvalid``."""
        if self._inner is None:
            raise WasmInvalid("is truncated")
        return self._inner.finish()


def check_entry(info: WasmModuleInfo | ComponentInfo, runtime: str, path: str) -> None:
    """Raise ``WASM_INVALID`` unless the entry fits ``runtime``: a core module's ABI or a component's world."""
    if runtime == COMPONENT_RUNTIME:
        if not isinstance(info, ComponentInfo):
            raise WasmInvalid(f"{path} is a core module; {COMPONENT_RUNTIME} needs a WebAssembly component")
        check_component(info, path)
        return
    if isinstance(info, ComponentInfo):
        raise WasmInvalid(
            f"{path} is a WebAssembly component; {runtime} needs a core module (or use {COMPONENT_RUNTIME})"
        )
    check_abi(info, runtime, path)
