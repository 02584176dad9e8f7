"""A streaming, bounded reader of WebAssembly module structure.

Publishing checks that the entry module fits its runtime before any engine sees
it: a core module (not a component) whose imports are only the host functions
the runtime provides and whose exports have the ABI's names and signatures.
:class:`WasmInspector` takes the module in chunks as the archive streams past,
keeps only the type, import, function and export sections (each bounded), and
skips code and data.  Full validation of the instructions happens when the
runner compiles the module right after publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from chalicelib.errors import WasmInvalid

__all__ = ["RUNTIME_ABIS", "ExternKind", "FuncType", "WasmInspector", "WasmModuleInfo", "check_abi"]

_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\0\0\0"
_KEPT_SECTIONS = {1: "type", 2: "import", 3: "function", 5: "memory", 7: "export"}
_MAX_KEPT_SECTION = 1024 * 1024
_SHARED_LIMITS = 0x02
_MEMORY64_LIMITS = 0x04
_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}


class ExternKind(Enum):
    FUNC = 0
    TABLE = 1
    MEMORY = 2
    GLOBAL = 3
    TAG = 4


@dataclass(frozen=True)
class FuncType:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __str__(self) -> str:
        return f"({', '.join(self.params)}) -> ({', '.join(self.results)})"


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: ExternKind
    type: FuncType | None


@dataclass(frozen=True)
class MemoryType:
    shared: bool
    is_64: bool

    @classmethod
    def from_limits_flags(cls, flags: int) -> MemoryType:
        return cls(shared=bool(flags & _SHARED_LIMITS), is_64=bool(flags & _MEMORY64_LIMITS))


@dataclass(frozen=True)
class Export:
    name: str
    kind: ExternKind
    type: FuncType | None
    memory: MemoryType | None = None


@dataclass(frozen=True)
class WasmModuleInfo:
    imports: tuple[Import, ...]
    exports: tuple[Export, ...]

    def export(self, name: str) -> Export | None:
        return next((e for e in self.exports if e.name == name), None)


class _Malformed(Exception):
    pass


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Malformed("section ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self, max_bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result
            if shift >= max_bits + 7:
                raise _Malformed("integer too long")

    def name(self) -> str:
        size = self.uleb()
        raw = self.data[self.pos : self.pos + size]
        if len(raw) != size:
            raise _Malformed("name runs past the section")
        self.pos += size
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("name is not UTF-8") from None

    def valtype(self) -> str:
        code = self.byte()
        if code not in _VALTYPES:
            raise _Malformed(f"uses value type 0x{code:02x}, which wasm-core@1 does not support")
        return _VALTYPES[code]

    def limits(self) -> int:
        """Read a limits record; returns its flags (shared, 64-bit)."""
        flags = self.byte()
        if flags & ~0x0F:
            raise _Malformed(f"has unknown limits flags 0x{flags:02x}")
        self.uleb(64)
        if flags & 0x01:
            self.uleb(64)
        if flags & 0x08:
            self.uleb()
        return flags


class WasmInspector:
    """Feed a module's bytes in order; :meth:`finish` returns its structure.

    Never raises while feeding: a malformed module is remembered and reported by
    :meth:`finish`, so a ``.wasm`` asset that is not an entry does not fail a bundle.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._state = "header"
        self._need = 8
        self._section_id = 0
        self._skip = 0
        self._size_bytes = b""
        self._error: str | None = None
        self._types: list[FuncType] = []
        self._imports: list[tuple[str, str, ExternKind, int | None]] = []
        self._functions: list[int] = []
        self._memories: list[MemoryType] = []
        self._exports: list[tuple[str, ExternKind, int]] = []

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
                self._advance(bytes(self._pending))

    def _advance(self, got: bytes) -> None:
        self._pending.clear()
        if self._state == "header":
            self._check_header(got)
            self._state, self._need = "section_id", 1
        elif self._state == "section_id":
            self._section_id = got[0]
            self._state, self._need, self._size_bytes = "section_size", 1, b""
        elif self._state == "section_size":
            self._size_bytes += got
            if got[0] & 0x80:
                if len(self._size_bytes) >= 5:
                    raise _Malformed("section size is not a valid LEB128 integer")
                return
            length = _Cursor(self._size_bytes).uleb()
            if self._section_id in _KEPT_SECTIONS:
                if length > _MAX_KEPT_SECTION:
                    raise _Malformed(f"{_KEPT_SECTIONS[self._section_id]} section is {length} bytes (limit 1 MiB)")
                if length == 0:
                    self._parse_section(self._section_id, b"")
                    self._state, self._need = "section_id", 1
                else:
                    self._state, self._need = "section_body", length
            else:
                self._skip = length
                self._state, self._need = "section_id", 1
        elif self._state == "section_body":
            self._parse_section(self._section_id, got)
            self._state, self._need = "section_id", 1

    def _check_header(self, header: bytes) -> None:
        if header[:4] != _MAGIC:
            raise _Malformed("is not a WebAssembly module (bad magic bytes)")
        if header[4:] != _CORE_VERSION:
            if header[6:8] == b"\x01\0":
                raise _Malformed("is a WebAssembly component; the runtime needs a core module")
            raise _Malformed(f"has unsupported binary version {header[4:].hex()}")

    def _parse_section(self, section_id: int, body: bytes) -> None:
        cur = _Cursor(body)
        count = cur.uleb()
        for _ in range(count):
            if section_id == 1:
                form = cur.byte()
                if form != 0x60:
                    raise _Malformed(f"uses type form 0x{form:02x}, which wasm-core@1 does not support")
                params = tuple(cur.valtype() for _ in range(cur.uleb()))
                results = tuple(cur.valtype() for _ in range(cur.uleb()))
                self._types.append(FuncType(params, results))
            elif section_id == 2:
                self._imports.append(self._parse_import(cur))
            elif section_id == 3:
                self._functions.append(cur.uleb())
            elif section_id == 5:
                self._memories.append(MemoryType.from_limits_flags(cur.limits()))
            else:
                name = cur.name()
                kind = self._kind(cur.byte())
                self._exports.append((name, kind, cur.uleb()))
        if cur.pos != len(body):
            raise _Malformed(f"{_KEPT_SECTIONS[section_id]} section has trailing bytes")

    def _parse_import(self, cur: _Cursor) -> tuple[str, str, ExternKind, int | None]:
        module, name = cur.name(), cur.name()
        kind = self._kind(cur.byte())
        type_index: int | None = None
        if kind is ExternKind.FUNC:
            type_index = cur.uleb()
        elif kind is ExternKind.TABLE:
            cur.valtype()
            cur.limits()
        elif kind is ExternKind.MEMORY:
            self._memories.append(MemoryType.from_limits_flags(cur.limits()))
        elif kind is ExternKind.GLOBAL:
            cur.valtype()
            cur.byte()
        else:
            cur.byte()
            cur.uleb()
        return module, name, kind, type_index

    @staticmethod
    def _kind(code: int) -> ExternKind:
        try:
            return ExternKind(code)
        except ValueError:
            raise _Malformed(f"has unknown import/export kind 0x{code:02x}") from None

    def _func_type(self, index: int) -> FuncType:
        if index >= len(self._types):
            raise _Malformed(f"refers to type {index}, which does not exist")
        return self._types[index]

    def finish(self) -> WasmModuleInfo:
        """Return the module's imports and exports, or raise ``WasmInvalid``."""
        if self._error is None and (self._state != "section_id" or self._pending or self._skip):
            self._error = "is truncated"
        if self._error is not None:
            raise WasmInvalid(self._error)
        try:
            imports = tuple(
                Import(m, n, k, self._func_type(t) if t is not None else None) for m, n, k, t in self._imports
            )
            imported_funcs = [i.type for i in imports if i.kind is ExternKind.FUNC]
            exports = []
            for name, kind, index in self._exports:
                func_type = None
                if kind is ExternKind.MEMORY:
                    if index >= len(self._memories):
                        raise _Malformed(f"exports memory {index}, which does not exist")
                    exports.append(Export(name, kind, None, self._memories[index]))
                    continue
                if kind is ExternKind.FUNC:
                    if index < len(imported_funcs):
                        func_type = imported_funcs[index]
                    elif index - len(imported_funcs) < len(self._functions):
                        func_type = self._func_type(self._functions[index - len(imported_funcs)])
                    else:
                        raise _Malformed(f"exports function {index}, which does not exist")
                exports.append(Export(name, kind, func_type))
        except _Malformed as exc:
            raise WasmInvalid(str(exc)) from None
        return WasmModuleInfo(imports=imports, exports=tuple(exports))


_I32 = "i32"
RUNTIME_ABIS: dict[str, dict[str, dict[str, FuncType | None]]] = {
    "wasm-core@1": {
        "required_exports": {
            "memory": None,
            "alloc": FuncType((_I32,), (_I32,)),
            "handler": FuncType((_I32, _I32, _I32), (_I32,)),
        },
        "optional_exports": {"dealloc": FuncType((_I32, _I32), ())},
        "imports": {
            "ext.log": FuncType((_I32, _I32, _I32), ()),
            "ext.http_fetch": FuncType((_I32, _I32, _I32), (_I32,)),
            "ext.kv": FuncType((_I32, _I32, _I32), (_I32,)),
            "ext.secret_get": FuncType((_I32, _I32, _I32), (_I32,)),
        },
    }
}


def check_abi(info: WasmModuleInfo, runtime: str, path: str) -> None:
    """Raise ``WASM_INVALID`` unless the module fits ``runtime``'s ABI."""
    abi = RUNTIME_ABIS[runtime]
    for imp in info.imports:
        qualified = f"{imp.module}.{imp.name}"
        expected = abi["imports"].get(qualified)
        if imp.kind is not ExternKind.FUNC or qualified not in abi["imports"]:
            provided = ", ".join(sorted(abi["imports"]))
            raise WasmInvalid(
                f"{path} imports {imp.kind.name.lower()} {qualified}, which {runtime} does not provide "
                f"(it provides: {provided})"
            )
        if imp.type != expected:
            raise WasmInvalid(f"{path} imports {qualified} as {imp.type}, but {runtime} defines it as {expected}")
    for name, expected in abi["required_exports"].items():
        exp = info.export(name)
        if exp is None:
            raise WasmInvalid(f"{path} does not export `{name}`, which {runtime} requires")
        _check_export(exp, expected, runtime, path)
    for name, expected in abi["optional_exports"].items():
        exp = info.export(name)
        if exp is not None:
            _check_export(exp, expected, runtime, path)


def _check_export(exp: Export, expected: FuncType | None, runtime: str, path: str) -> None:
    wanted_kind = ExternKind.MEMORY if expected is None else ExternKind.FUNC
    if exp.kind is not wanted_kind:
        raise WasmInvalid(
            f"{path} exports `{exp.name}` as a {exp.kind.name.lower()}, {runtime} needs a {wanted_kind.name.lower()}"
        )
    if expected is not None and exp.type != expected:
        raise WasmInvalid(f"{path} exports `{exp.name}` as {exp.type}, {runtime} needs {expected}")
    if exp.memory is not None and (exp.memory.shared or exp.memory.is_64):
        kind = "a shared memory" if exp.memory.shared else "a 64-bit memory"
        raise WasmInvalid(f"{path} exports `{exp.name}` as {kind}; {runtime} needs a plain 32-bit, unshared memory")
