"""Our own tar reader, instead of :mod:`tarfile` (which silently ends iteration at a bad header and
tolerates a missing end-of-archive marker).

:class:`TarReader` walks ustar, pax and GNU headers, checks every header checksum, applies pax ``path`` /
``size`` records and GNU long names to the member they precede, requires the two-block end-of-archive
marker, and allows only a bounded run of zero padding after it.  It yields each member's raw name, size
and type; what a bundle may hold is the caller's decision (:mod:`chalicelib.bundles.members`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from chalicelib.bundles.archive.streams import DecompressedStream
from chalicelib.config import BundleLimits
from chalicelib.errors import BundleCorrupt, BundleUnsupportedEntry

__all__ = ["DIRECTORY", "REGULAR", "SPECIAL", "TarEntry", "TarReader", "max_tar_bytes"]

_BLOCK = 512
_ZERO_BLOCK = b"\0" * _BLOCK
_MAX_EXTENDED_HEADER = 64 * 1024
_MAX_END_PADDING = 1024 * 1024
_EXTENDED = (b"x", b"L", b"g")

REGULAR = (b"0", b"\0", b"7")
"""Type flags of a regular file."""
DIRECTORY = b"5"
SPECIAL = {
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
"""Type flags of everything else tar can hold that is neither a file nor a directory, and what each is."""


def max_tar_bytes(limits: BundleLimits) -> int:
    """The most bytes a tar within ``limits`` takes: the data, a few header blocks per entry, the end
    marker and the padding after it."""
    return limits.max_unpacked_bytes + (limits.max_entries * 4 + 16) * _BLOCK + _MAX_END_PADDING


@dataclass(frozen=True)
class TarEntry:
    """One header as the archive states it: the raw name, the data size and the type flag.

    :meth:`TarReader.entries` yields those of members, with pax records and GNU long names applied.
    """

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


def _parse_header(block: bytes) -> TarEntry:
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
    return TarEntry(name=name, size=_parse_number(block[124:136], "size"), typeflag=block[156:157])


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


def _padded(size: int) -> int:
    return (size + _BLOCK - 1) // _BLOCK * _BLOCK


class TarReader:
    """The members of the tar archive in ``stream``, one at a time.

    The caller reads each member's data with :meth:`data` before asking for the next member.
    """

    def __init__(self, stream: DecompressedStream) -> None:
        self._stream = stream

    def entries(self) -> Iterator[TarEntry]:
        """Yield each member in archive order; return after the end-of-archive marker and its padding."""
        pending: dict[str, bytes] = {}
        while True:
            block = self._stream.read_exact(_BLOCK, "expected a header or the end-of-archive marker")
            if block == _ZERO_BLOCK:
                self._end_of_archive(pending)
                return
            header = _parse_header(block)
            if header.typeflag in _EXTENDED:
                self._extended(header, pending)
                continue
            yield self._entry(header, pending)
            pending = {}

    def data(self, entry: TarEntry, what: str) -> Iterator[bytes]:
        """Yield ``entry``'s ``size`` bytes of data in pieces, then pass the padding to the next header;
        ``what`` names the member in errors."""
        yield from self._stream.chunks(entry.size, f"data of {what}")
        padding = _padded(entry.size) - entry.size
        if padding:
            self._stream.read_exact(padding, f"padding of {what}")

    def _end_of_archive(self, pending: dict[str, bytes]) -> None:
        if pending:
            raise BundleCorrupt("an extended header is not followed by a member")
        second = self._stream.read_exact(_BLOCK, "the end-of-archive marker is incomplete")
        if second != _ZERO_BLOCK:
            raise BundleCorrupt("a single zero block is followed by data; the tar archive is damaged")
        seen = 0
        for data in self._stream.rest():
            if data.strip(b"\0"):
                raise BundleCorrupt("data follows the end-of-archive marker")
            seen += len(data)
            if seen > _MAX_END_PADDING:
                raise BundleCorrupt(f"more than {_MAX_END_PADDING} bytes of padding after the end-of-archive marker")

    def _extended(self, header: TarEntry, pending: dict[str, bytes]) -> None:
        if header.size > _MAX_EXTENDED_HEADER:
            raise BundleCorrupt(f"an extended header is {header.size} bytes (limit {_MAX_EXTENDED_HEADER})")
        data = self._stream.read_exact(_padded(header.size), "extended header")[: header.size]
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

    @staticmethod
    def _entry(header: TarEntry, pending: dict[str, bytes]) -> TarEntry:
        size = header.size
        if "size" in pending:
            if not pending["size"].isdigit():
                raise BundleCorrupt("a pax size record is not a number")
            size = int(pending["size"])
        return TarEntry(name=pending.get("path", header.name), size=size, typeflag=header.typeflag)
