"""Builders of good and hostile bundles for tests.

Hostile archives are assembled from raw 512-byte tar headers where ``tarfile``
would refuse to write them, so every byte of the attack is explicit.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
import zstandard

MINIMAL_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))
"""


def wasm(wat: str = MINIMAL_WAT) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def fixed_response_guest(response: dict[str, Any], code: int = 0) -> bytes:
    """A guest that answers every call with ``response`` (and returns ``code``)."""
    text = json.dumps(response).replace("\\", "\\\\").replace('"', '\\"')
    size = len(json.dumps(response).encode())
    return wasm(
        f"""(module (memory (export "memory") 1)
        (data (i32.const 1024) "{text}")
        (func (export "alloc") (param i32) (result i32) i32.const 8192)
        (func (export "handler") (param i32 i32 i32) (result i32)
          (i32.store (local.get 2) (i32.const 1024))
          (i32.store offset=4 (local.get 2) (i32.const {size}))
          i32.const {code}))"""
    )


def manifest(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "com.acme.tools",
        "publisher": "Acme Inc.",
        "version": "1.0.0",
        "runtime": "wasm-core@1",
        "ui": {"type": "iframe", "entry": "ui/index.html"},
        "api": {"endpoints": [{"method": "GET", "path": "/hello", "handler": "hello"}]},
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def manifest_bytes(**overrides: Any) -> bytes:
    return json.dumps(manifest(**overrides)).encode()


def good_files(**manifest_overrides: Any) -> dict[str, bytes]:
    return {
        "manifest.json": manifest_bytes(**manifest_overrides),
        "dist/main.wasm": wasm(),
        "ui/index.html": b"<!doctype html><title>t</title>",
    }


@dataclass
class Entry:
    """One raw tar member; ``typeflag`` and ``data`` are written as given."""

    name: str | bytes
    data: bytes = b""
    typeflag: bytes = b"0"
    linkname: bytes = b""
    size: int | None = None
    magic: bytes = b"ustar\x0000"
    pax: dict[str, str] = field(default_factory=dict)


def _octal(value: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, value)) + b"\0"


def raw_header(entry: Entry, *, checksum_delta: int = 0) -> bytes:
    name = entry.name.encode() if isinstance(entry.name, str) else entry.name
    size = len(entry.data) if entry.size is None else entry.size
    block = bytearray(512)
    block[0 : min(len(name), 100)] = name[:100]
    block[100:108] = _octal(0o644, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = entry.typeflag
    block[157 : 157 + len(entry.linkname)] = entry.linkname
    block[257:265] = entry.magic
    checksum = sum(block) + checksum_delta
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _pax_data(records: dict[str, str]) -> bytes:
    out = b""
    for key, value in records.items():
        body = f" {key}={value}\n".encode()
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return out


def raw_tar(entries: Iterable[Entry], *, end: bytes = b"\0" * 1024) -> bytes:
    out = bytearray()
    for entry in entries:
        if entry.pax:
            data = _pax_data(entry.pax)
            out += raw_header(Entry(name="PaxHeader", data=data, typeflag=b"x")) + _pad(data)
        out += raw_header(entry) + _pad(entry.data)
    return bytes(out) + end


def files_tar(files: dict[str, bytes]) -> list[Entry]:
    return [Entry(name=name, data=data) for name, data in files.items()]


def std_tar(files: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar written by Python's tarfile, as standard tools write it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zst(data: bytes, *, level: int = 3, checksum: bool = True, **params: Any) -> bytes:
    if params:
        cparams = zstandard.ZstdCompressionParameters.from_level(level, write_checksum=checksum, **params)
        return zstandard.ZstdCompressor(compression_params=cparams).compress(data)
    return zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(data)


def bundle(files: dict[str, bytes] | None = None) -> bytes:
    return zst(raw_tar(files_tar(files if files is not None else good_files())))


def write_project(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def zero_filled_bundle(files: dict[str, bytes], zeros: dict[str, int]) -> bytes:
    """A bundle of ``files`` plus files of ``zeros[name]`` zero bytes each, compressed as it is written:
    a few KiB that unpack to any size, without ever holding the unpacked bytes in memory."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True).compressobj()
    out = bytearray(compressor.compress(raw_tar(files_tar(files), end=b"")))
    chunk = b"\0" * (1024 * 1024)
    for name, size in zeros.items():
        out += compressor.compress(raw_header(Entry(name=name, size=size)))
        for offset in range(0, size, len(chunk)):
            out += compressor.compress(chunk[: min(len(chunk), size - offset)])
        out += compressor.compress(b"\0" * (-size % 512))
    out += compressor.compress(b"\0" * 1024)
    out += compressor.flush()
    return bytes(out)


# --- code that is hostile to the compiler ------------------------------------------------------------


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _leb128(len(payload)) + payload


def _vector(items: list[bytes]) -> bytes:
    return _leb128(len(items)) + b"".join(items)


def _name(text: str) -> bytes:
    return _leb128(len(text)) + text.encode()


def slow_to_compile_wasm(additions: int) -> bytes:
    """A valid ``wasm-core@1`` module whose ``handler`` is one function of ``additions`` ``i32.add``s.

    Tiny to publish, costly to compile: Cranelift's time and memory grow with the size of one function
    (100,000 additions, 300 KB, took 11 s and 540 MB here; 300,000 took 25 s and 1.9 GB).  Built as bytes:
    the text format would take longer to assemble than the test has.
    """
    i32 = b"\x7f"
    types = _vector([b"\x60" + _vector([i32]) + _vector([i32]), b"\x60" + _vector([i32] * 3) + _vector([i32])])
    functions = _vector([_leb128(0), _leb128(1)])
    memories = _vector([b"\x00" + _leb128(1)])
    exports = _vector(
        [_name("memory") + b"\x02\x00", _name("alloc") + b"\x00\x00", _name("handler") + b"\x00" + _leb128(1)]
    )
    alloc = b"\x00" + b"\x41" + _leb128(1024) + b"\x0b"
    body = bytearray(b"\x00\x20\x00")  # no locals; local.get 0
    for step in range(additions):
        body += b"\x41" + _leb128(step & 0x3F) + b"\x6a"  # i32.const k; i32.add
    body += b"\x0b"
    code = _vector([_leb128(len(alloc)) + alloc, _leb128(len(body)) + bytes(body)])
    return (
        b"\0asm\x01\0\0\0"
        + _section(1, types)
        + _section(3, functions)
        + _section(5, memories)
        + _section(7, exports)
        + _section(10, code)
    )


TYPE_MISMATCH_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handler") (param i32 i32 i32) (result i32) i64.const 0))
"""
"""Imports and exports fit the ABI (publish checks only those); the body does not validate."""
