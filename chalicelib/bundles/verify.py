"""Streaming, bounded verification of ``bundle.tar.zst``.

One pass over the compressed bytes does everything, in this order per chunk:

1. count and hash the compressed bytes (``BUNDLE_TOO_LARGE`` past the cap);
2. walk the zstd frame structure: exactly one frame, a window within the limit
   (checked from the frame header, before any decoding), no trailing data;
3. decompress with a bounded window, a bounded total and a bounded ratio of
   decompressed to compressed bytes (past a floor), so a bomb stops early;
4. walk the tar with our own header parser (ustar, pax and GNU headers; header
   checksums; an explicit end-of-archive marker) instead of ``tarfile``, which
   silently ends iteration at a bad header and tolerates missing end blocks;
5. per member: normalize and check the path, refuse links and special files and
   duplicates, enforce the entry, per-file and total limits *before* reading the
   data, hash the data, keep ``manifest.json``, inspect ``.wasm`` structure,
   optionally extract;
6. at the end: the manifest (``Manifest.parse``), the files it references, the
   entry module's ABI, and the content hash against the one expected.

Memory stays bounded whatever the input: chunks of at most 1 MiB, the manifest
(≤ 64 KiB), and a few bounded wasm sections.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from chalicelib.bundles.component import ComponentInfo, EntryInspector, check_entry
from chalicelib.bundles.manifest import Manifest
from chalicelib.bundles.paths import ROOT, collision_key, normalize_member_path
from chalicelib.bundles.wasm import WasmModuleInfo
from chalicelib.config import BundleLimits
from chalicelib.errors import (
    BundleCorrupt,
    BundleDuplicateEntry,
    BundleTooLarge,
    BundleTooManyEntries,
    BundleUnpackedTooLarge,
    BundleUnsafePath,
    BundleUnsupportedEntry,
    HashMismatch,
    ManifestFileMissing,
    ManifestInvalid,
    ManifestMissing,
    WasmInvalid,
)

__all__ = ["CONTENT_HASH_RE", "BundleFile", "VerifiedBundle", "format_content_hash", "verify_bundle", "verify_file"]

CONTENT_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1024 * 1024
_BLOCK = 512
_MAX_EXTENDED_HEADER = 64 * 1024
_MAX_END_PADDING = 1024 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HASH_INLINE_BELOW = 256 * 1024
MANIFEST_PATH = "manifest.json"


def format_content_hash(hex_digest: str) -> str:
    return f"sha256:{hex_digest}"


@dataclass(frozen=True)
class BundleFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VerifiedBundle:
    """What a bundle that passed every check holds."""

    content_hash: str
    compressed_size: int
    unpacked_size: int
    manifest: Manifest
    manifest_bytes: bytes
    files: tuple[BundleFile, ...]
    directories: tuple[str, ...]
    entry_module: WasmModuleInfo | ComponentInfo | None

    @property
    def hex_digest(self) -> str:
        return self.content_hash.split(":", 1)[1]

    def file(self, path: str) -> BundleFile | None:
        return next((f for f in self.files if f.path == path), None)


# --- hashing beside decompression --------------------------------------------------------


class _HashPipeline:
    """Runs sha256 updates on a second thread, in submission order.

    hashlib and zstd both release the GIL on large buffers, so hashing the
    compressed bytes and the members overlaps decompression.  The queue is short,
    so at most a few chunks wait in memory.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._work, name="bundle-hash", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job[0].update(job[1])

    def update(self, hasher: Any, data: bytes) -> None:
        self._queue.put((hasher, data))

    def close(self) -> None:
        """Wait until every submitted update has been applied."""
        self._queue.put(None)
        self._thread.join()


# --- 1 + 2: the compressed side -----------------------------------------------------------


class _FrameWalker:
    """Follows zstd frame structure (RFC 8878 §3.1) as bytes stream past."""

    def __init__(self, max_window: int) -> None:
        self.max_window = max_window
        self.done = False
        self._header = bytearray()
        self._header_size: int | None = None
        self._state = "header"
        self._block_header = bytearray()
        self._remaining = 0
        self._checksum = False
        self._last_block = False

    def feed(self, data: memoryview) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self._state == "done":
                self._trailing(bytes(data[pos : pos + 4]))
            if self._state == "header":
                pos = self._feed_header(data, pos)
            elif self._state == "block_header":
                take = min(3 - len(self._block_header), size - pos)
                self._block_header += data[pos : pos + take]
                pos += take
                if len(self._block_header) == 3:
                    self._start_block(int.from_bytes(self._block_header, "little"))
            else:
                step = min(self._remaining, size - pos)
                self._remaining -= step
                pos += step
                if self._remaining == 0:
                    self._end_part()

    def _trailing(self, head: bytes) -> None:
        if head.startswith(_ZSTD_MAGIC[: len(head)]):
            raise BundleCorrupt("a second zstd frame follows the first; a bundle is exactly one frame")
        raise BundleCorrupt("trailing data after the zstd frame")

    def _feed_header(self, data: memoryview, pos: int) -> int:
        while pos < len(data) and (self._header_size is None or len(self._header) < self._header_size):
            self._header.append(data[pos])
            pos += 1
            if len(self._header) == 4:
                self._check_magic(bytes(self._header))
            elif len(self._header) == 5:
                self._header_size = self._frame_header_size(self._header[4])
        if self._header_size is not None and len(self._header) == self._header_size:
            self._check_window(bytes(self._header))
            self._state = "block_header"
        return pos

    @staticmethod
    def _check_magic(magic: bytes) -> None:
        if magic == _ZSTD_MAGIC:
            return
        if magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:
            raise BundleCorrupt("the bundle starts with a zstd skippable frame; it must be one zstd frame")
        raise BundleCorrupt("not a zstd stream (bad magic bytes)")

    def _frame_header_size(self, descriptor: int) -> int:
        if descriptor & 0x08:
            raise BundleCorrupt("zstd frame header has its reserved bit set")
        fcs_flag, single, dict_flag = descriptor >> 6, bool(descriptor & 0x20), descriptor & 0x03
        self._checksum = bool(descriptor & 0x04)
        fcs_size = (0 if not single else 1) if fcs_flag == 0 else (2, 4, 8)[fcs_flag - 1]
        return 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + fcs_size

    def _check_window(self, header: bytes) -> None:
        descriptor = header[4]
        single, dict_flag = bool(descriptor & 0x20), descriptor & 0x03
        offset = 5
        window: int | None = None
        if not single:
            exponent, mantissa = header[5] >> 3, header[5] & 0x07
            base = 1 << (10 + exponent)
            window = base + (base // 8) * mantissa
            offset = 6
        dict_size = (0, 1, 2, 4)[dict_flag]
        if dict_size and int.from_bytes(header[offset : offset + dict_size], "little") != 0:
            raise BundleCorrupt("the zstd frame needs a dictionary; bundles must not use one")
        offset += dict_size
        if single:
            fcs = header[offset:]
            window = int.from_bytes(fcs, "little") + (256 if len(fcs) == 2 else 0)
        assert window is not None
        if window > self.max_window:
            raise BundleTooLarge(
                f"the zstd frame asks for a {window}-byte window (limit {self.max_window}); "
                "recompress without --long or --ultra"
            )

    def _start_block(self, header: int) -> None:
        self._block_header.clear()
        self._last_block = bool(header & 1)
        block_type, block_size = (header >> 1) & 0x03, header >> 3
        if block_type == 3:
            raise BundleCorrupt("the zstd frame holds a block of the reserved type")
        self._remaining = 1 if block_type == 1 else block_size
        self._state = "block"
        if self._remaining == 0:
            self._end_part()

    def _end_part(self) -> None:
        if self._state == "block" and self._last_block:
            if self._checksum:
                self._state, self._remaining = "checksum", 4
                return
            self._state = "done"
        elif self._state == "checksum":
            self._state = "done"
        else:
            self._state = "block_header"
        self.done = self._state == "done"


class _CompressedSource:
    """The file-like the decompressor reads: counts, hashes, and walks frames."""

    def __init__(self, raw: BinaryIO, limits: BundleLimits, hashing: _HashPipeline) -> None:
        self._raw = raw
        self._hashing = hashing
        self._limit = limits.max_compressed_bytes
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.frames = _FrameWalker(limits.max_window_bytes)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(_CHUNK if size is None or size < 0 else size)
        if data:
            self.size += len(data)
            if self.size > self._limit:
                raise BundleTooLarge(f"the bundle is larger than the {self._limit}-byte limit")
            self._hashing.update(self.sha256, data)
            self.frames.feed(memoryview(data))
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass
        if not self.frames.done:
            raise BundleCorrupt("the bundle is truncated (the zstd frame does not end)")


# --- 3 + 4: the decompressed tar stream -------------------------------------------------


class _TarStream:
    def __init__(self, source: _CompressedSource, limits: BundleLimits) -> None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=limits.max_window_bytes)
        # stream_reader only calls read(); the cast states that duck type to mypy.
        self._reader = decompressor.stream_reader(cast(BinaryIO, source), read_size=_CHUNK, read_across_frames=False)
        self._source = source
        self._buffer = b""
        self.total = 0
        self._cap = limits.max_unpacked_bytes + (limits.max_entries * 4 + 16) * _BLOCK + _MAX_END_PADDING
        self._ratio = limits.max_compression_ratio
        self._floor = limits.compression_floor_bytes

    def _pull(self, size: int) -> bytes:
        try:
            data = self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise BundleCorrupt(f"the zstd data is corrupt: {exc}") from None
        self.total += len(data)
        if self.total > self._cap:
            raise BundleUnpackedTooLarge("the bundle decompresses to more than the unpacked limit")
        self._check_ratio()
        return data

    def _check_ratio(self) -> None:
        """Past the floor, what came out may be at most ``ratio`` times what went in so far.

        Checked on every pull, so a bomb stops within ``ratio`` times the compressed bytes already read
        (the reader reads ahead, so "read so far" only ever flatters the ratio, never the other way).
        """
        if self.total > self._floor and self.total > self._ratio * self._source.size:
            raise BundleUnpackedTooLarge(
                f"the bundle expands to more than {self._ratio} times its compressed size "
                f"({self.total} bytes from the first {self._source.size}); bundles may expand that much "
                f"only up to {self._floor} bytes"
            )

    def read_exact(self, size: int, what: str) -> bytes:
        while len(self._buffer) < size:
            data = self._pull(max(_CHUNK, size - len(self._buffer)))
            if not data:
                raise BundleCorrupt(f"the tar archive is truncated ({what})")
            self._buffer += data
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def chunks(self, size: int, what: str) -> Iterator[bytes]:
        """Yield exactly ``size`` bytes in pieces, without holding them all."""
        remaining = size
        if self._buffer:
            head, self._buffer = self._buffer[:remaining], self._buffer[remaining:]
            remaining -= len(head)
            yield head
        while remaining:
            data = self._pull(min(_CHUNK, remaining))
            if not data:
                raise BundleCorrupt(f"the tar archive is truncated ({what})")
            if len(data) > remaining:
                data, self._buffer = data[:remaining], data[remaining:]
            remaining -= len(data)
            yield data

    def check_end_padding(self) -> None:
        """After the end-of-archive marker only a bounded run of zeros may follow."""
        seen = 0
        data, self._buffer = self._buffer, b""
        while data or (data := self._pull(_CHUNK)):
            if data.strip(b"\0"):
                raise BundleCorrupt("data follows the end-of-archive marker")
            seen += len(data)
            if seen > _MAX_END_PADDING:
                raise BundleCorrupt(f"more than {_MAX_END_PADDING} bytes of padding after the end-of-archive marker")
            data = b""


@dataclass(frozen=True)
class _Header:
    name: bytes
    size: int
    typeflag: bytes


def _parse_number(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise BundleCorrupt(f"tar header {what} is negative")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise BundleCorrupt(f"tar header {what} field is not an octal number")
    return int(text, 8)


def _parse_header(block: bytes) -> _Header:
    stored = _parse_number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise BundleCorrupt("a tar header has a bad checksum")
    magic = block[257:265]
    if magic == b"ustar\x0000":
        prefix = block[345:500].split(b"\0", 1)[0]
    elif magic == b"ustar  \0":
        prefix = b""
    else:
        raise BundleCorrupt("a tar header is not in ustar, pax or GNU format")
    name = block[0:100].split(b"\0", 1)[0]
    if prefix:
        name = prefix + b"/" + name
    return _Header(name=name, size=_parse_number(block[124:136], "size"), typeflag=block[156:157])


def _parse_pax(data: bytes) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise BundleCorrupt("a pax extended header is malformed")
        length = int(data[pos:space])
        record = data[pos : pos + length]
        if length <= space - pos or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise BundleCorrupt("a pax extended header is malformed")
        key, value = record[space - pos + 1 : -1].split(b"=", 1)
        records[key.decode("utf-8", errors="replace")] = value
        pos += length
    return records


_UNSUPPORTED = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"K": "a link (GNU long link name)",
    b"S": "a sparse file",
    b"V": "a volume label",
    b"M": "a multi-volume continuation",
    b"D": "a GNU dump directory",
    b"N": "an old GNU long name",
}
_REGULAR = (b"0", b"\0", b"7")
_DIRECTORY = b"5"


# --- 5 + 6: members and the final checks ------------------------------------------------


class _Walker:
    def __init__(
        self,
        stream: _TarStream,
        limits: BundleLimits,
        hashing: _HashPipeline,
        extract_to: Path | None,
        extract_filter: Callable[[str], bool] | None,
        reserve: Callable[[int], None] | None,
    ) -> None:
        self.stream = stream
        self.hashing = hashing
        self.limits = limits
        self.extract_to = extract_to
        self.extract_filter = extract_filter
        self.reserve = reserve
        self.entries = 0
        self.unpacked = 0
        self.files: list[tuple[str, int, Any]] = []
        self.directories: list[str] = []
        self.kinds: dict[str, str] = {}
        self.manifest_bytes: bytes | None = None
        self.wasm: dict[str, EntryInspector] = {}

    def walk(self) -> None:
        pending: dict[str, bytes] = {}
        while True:
            block = self.stream.read_exact(_BLOCK, "expected a header or the end-of-archive marker")
            if block == b"\0" * _BLOCK:
                self._end_of_archive(pending)
                return
            header = _parse_header(block)
            flag = header.typeflag
            if flag in (b"x", b"L", b"g"):
                self._extended(header, pending)
                continue
            self._member(header, pending)
            pending = {}

    def _end_of_archive(self, pending: dict[str, bytes]) -> None:
        if pending:
            raise BundleCorrupt("an extended header is not followed by a member")
        second = self.stream.read_exact(_BLOCK, "the end-of-archive marker is incomplete")
        if second != b"\0" * _BLOCK:
            raise BundleCorrupt("a single zero block is followed by data; the tar archive is damaged")
        self.stream.check_end_padding()

    def _extended(self, header: _Header, pending: dict[str, bytes]) -> None:
        if header.size > _MAX_EXTENDED_HEADER:
            raise BundleCorrupt(f"an extended header is {header.size} bytes (limit {_MAX_EXTENDED_HEADER})")
        data = self.stream.read_exact(_padded(header.size), "extended header")[: header.size]
        if header.typeflag == b"L":
            if "path" in pending:
                raise BundleCorrupt("two long-name headers precede one member")
            pending["path"] = data.split(b"\0", 1)[0]
            return
        records = _parse_pax(data)
        if any(k.startswith("GNU.sparse") for k in records):
            raise BundleUnsupportedEntry("the bundle holds a sparse file")
        if header.typeflag == b"g":
            if {"path", "size", "linkpath"} & set(records):
                raise BundleUnsupportedEntry("a pax global header overrides member paths or sizes")
            return
        for key in ("path", "size", "linkpath"):
            if key in records:
                pending[key] = records[key]

    def _member(self, header: _Header, pending: dict[str, bytes]) -> None:
        raw_name = pending.get("path", header.name)
        size = header.size
        if "size" in pending:
            if not pending["size"].isdigit():
                raise BundleCorrupt("a pax size record is not a number")
            size = int(pending["size"])
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleUnsafePath(f"a member path is not valid UTF-8: {raw_name[:80]!r}") from None
        if header.typeflag in _UNSUPPORTED:
            raise BundleUnsupportedEntry(
                f"{name!r} is {_UNSUPPORTED[header.typeflag]}; bundles hold only files and directories"
            )
        if header.typeflag not in _REGULAR and header.typeflag != _DIRECTORY:
            raise BundleUnsupportedEntry(f"{name!r} has the unsupported tar entry type {header.typeflag!r}")
        path = normalize_member_path(name, max_bytes=self.limits.max_path_bytes, max_depth=self.limits.max_path_depth)
        if header.typeflag == _DIRECTORY:
            if size:
                raise BundleCorrupt(f"directory {name!r} claims {size} bytes of data")
            if path != ROOT:
                self._count()
                self._claim(path, "dir")
                self.directories.append(path)
                self._extract_dir(path)
            return
        if path == ROOT:
            raise BundleUnsafePath(f"a file is named {name!r}")
        self._count()
        self._claim(path, "file")
        self._check_sizes(path, size)
        self._read_file(path, size)

    def _count(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise BundleTooManyEntries(f"the bundle has more than {self.limits.max_entries} entries")

    def _claim(self, path: str, kind: str) -> None:
        key = collision_key(path)
        previous = self.kinds.get(key)
        if previous is not None:
            if previous == "implicit" and kind == "dir":
                self.kinds[key] = "dir"
                return
            raise BundleDuplicateEntry(f"{path!r} appears more than once in the bundle (or collides with another name)")
        parts = key.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if self.kinds.get(ancestor) == "file":
                raise BundleDuplicateEntry(f"{path!r} is inside {ancestor!r}, which is a file")
            self.kinds.setdefault(ancestor, "implicit")
        self.kinds[key] = kind

    def _check_sizes(self, path: str, size: int) -> None:
        if path == MANIFEST_PATH and size > self.limits.max_manifest_bytes:
            raise ManifestInvalid(f"manifest.json is {size} bytes (limit {self.limits.max_manifest_bytes})")
        if size > self.limits.max_file_bytes:
            raise BundleUnpackedTooLarge(f"{path!r} is {size} bytes (limit {self.limits.max_file_bytes} per file)")
        if self.unpacked + size > self.limits.max_unpacked_bytes:
            raise BundleUnpackedTooLarge(
                f"the bundle unpacks to more than {self.limits.max_unpacked_bytes} bytes (at {path!r})"
            )
        self.unpacked += size

    def _read_file(self, path: str, size: int) -> None:
        digest = hashlib.sha256()
        hash_aside = size >= _HASH_INLINE_BELOW
        keep_manifest = path == MANIFEST_PATH
        manifest = bytearray()
        inspector = EntryInspector() if path.endswith(".wasm") else None
        out = self._open_for_extract(path, size)
        try:
            for chunk in self.stream.chunks(size, f"data of {path!r}"):
                if hash_aside:
                    self.hashing.update(digest, chunk)
                else:
                    digest.update(chunk)
                if keep_manifest:
                    manifest += chunk
                if inspector is not None:
                    inspector.feed(chunk)
                if out is not None:
                    out.write(chunk)
        finally:
            if out is not None:
                out.close()
        padding = _padded(size) - size
        if padding:
            self.stream.read_exact(padding, f"padding of {path!r}")
        if keep_manifest:
            self.manifest_bytes = bytes(manifest)
        if inspector is not None:
            self.wasm[path] = inspector
        self.files.append((path, size, digest))

    def _wanted(self, path: str) -> bool:
        return self.extract_to is not None and (self.extract_filter is None or self.extract_filter(path))

    def _extract_dir(self, path: str) -> None:
        if self.extract_to is not None and self.extract_filter is None:
            (self.extract_to / path).mkdir(parents=True, exist_ok=True)

    def _open_for_extract(self, path: str, size: int) -> BinaryIO | None:
        if not self._wanted(path):
            return None
        assert self.extract_to is not None
        if self.reserve is not None:
            self.reserve(size)
        target = self.extract_to / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        return os.fdopen(fd, "wb")


def _padded(size: int) -> int:
    return (size + _BLOCK - 1) // _BLOCK * _BLOCK


def verify_bundle(
    source: BinaryIO,
    limits: BundleLimits | None = None,
    *,
    expected_hash: str | None = None,
    extract_to: Path | None = None,
    extract_filter: Callable[[str], bool] | None = None,
    reserve: Callable[[int], None] | None = None,
) -> VerifiedBundle:
    """Verify a bundle read from ``source`` in one streaming pass.

    ``expected_hash`` (``sha256:<hex>``) turns a different content hash into
    ``HASH_MISMATCH``.  With ``extract_to`` (an existing empty directory) the
    members are written there as they pass (only those ``extract_filter`` keeps);
    ``reserve`` is called with each extracted file's size before any of its bytes
    are written, and what it raises stops verification; on failure the caller
    discards that directory.  Raises an ``ExtError`` subclass with the stable code
    of the first problem found.
    """
    limits = limits or BundleLimits()
    hashing = _HashPipeline()
    try:
        compressed = _CompressedSource(source, limits, hashing)
        walker = _Walker(_TarStream(compressed, limits), limits, hashing, extract_to, extract_filter, reserve)
        walker.walk()
        compressed.drain()
    finally:
        hashing.close()
    content_hash = format_content_hash(compressed.sha256.hexdigest())
    if expected_hash is not None and not hmac.compare_digest(expected_hash, content_hash):
        raise HashMismatch(f"the bundle's content hash is {content_hash}, not the declared {expected_hash}")
    files = tuple(BundleFile(path=p, size=n, sha256=h.hexdigest()) for p, n, h in walker.files)
    manifest = _check_manifest(walker, {f.path for f in files})
    return VerifiedBundle(
        content_hash=content_hash,
        compressed_size=compressed.size,
        unpacked_size=walker.unpacked,
        manifest=manifest,
        manifest_bytes=walker.manifest_bytes or b"",
        files=files,
        directories=tuple(walker.directories),
        entry_module=_check_entry(walker, manifest),
    )


def _check_manifest(walker: _Walker, files: set[str]) -> Manifest:
    if walker.manifest_bytes is None:
        raise ManifestMissing("the bundle has no manifest.json at its root")
    manifest = Manifest.parse(walker.manifest_bytes)
    for field, path in manifest.referenced_files().items():
        if path not in files:
            raise ManifestFileMissing(f"`{field}` names {path!r}, which is not a file in the bundle")
    return manifest


def _check_entry(walker: _Walker, manifest: Manifest) -> WasmModuleInfo | ComponentInfo | None:
    if not manifest.needs_entry:
        return None
    try:
        info = walker.wasm[manifest.entry].finish()
    except WasmInvalid as exc:
        raise WasmInvalid(f"{manifest.entry} {exc.message}") from None
    check_entry(info, manifest.runtime, manifest.entry)
    return info


def verify_file(
    path: Path,
    limits: BundleLimits | None = None,
    *,
    expected_hash: str | None = None,
    extract_to: Path | None = None,
) -> VerifiedBundle:
    """:func:`verify_bundle` on a file, refusing an oversize file before reading it."""
    limits = limits or BundleLimits()
    size = path.stat().st_size
    if size > limits.max_compressed_bytes:
        raise BundleTooLarge(f"{path.name} is {size} bytes (limit {limits.max_compressed_bytes})")
    with path.open("rb") as handle:
        return verify_bundle(handle, limits, expected_hash=expected_hash, extract_to=extract_to)
