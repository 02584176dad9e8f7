"""The two byte streams verification reads, each with its limits.

- :class:`CompressedSource` is what the decompressor reads: it counts the compressed bytes
  (``BUNDLE_TOO_LARGE`` past the cap), hashes them (the content hash) and walks the zstd frame structure;
- :class:`DecompressedStream` decompresses with a bounded window, a bounded total and a bounded ratio of
  decompressed to compressed bytes (past a floor), so a bomb stops early, and hands out exact sizes or
  pieces of at most :data:`CHUNK` bytes, never more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO, cast

import zstandard

from chalicelib.bundles.archive.hashing import HashPipeline
from chalicelib.bundles.archive.zstd_frame import FrameWalker
from chalicelib.config import BundleLimits
from chalicelib.errors import BundleCorrupt, BundleTooLarge, BundleUnpackedTooLarge

__all__ = ["CHUNK", "CompressedSource", "DecompressedStream"]

CHUNK = 1024 * 1024


class CompressedSource:
    """The file-like the decompressor reads: counts, hashes, and walks frames."""

    def __init__(self, raw: BinaryIO, limits: BundleLimits, hashing: HashPipeline) -> None:
        self._raw = raw
        self._hashing = hashing
        self._limit = limits.max_compressed_bytes
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.frames = FrameWalker(limits.max_window_bytes)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(CHUNK if size is None or size < 0 else size)
        if data:
            self.size += len(data)
            if self.size > self._limit:
                raise BundleTooLarge(f"the bundle is larger than the {self._limit}-byte limit")
            self._hashing.update(self.sha256, data)
            self.frames.feed(memoryview(data))
        return data

    def drain(self) -> None:
        """Read what the decompressor left; the frame must end exactly where the bytes do."""
        while self.read(CHUNK):
            pass
        if not self.frames.done:
            raise BundleCorrupt("the bundle is truncated (the zstd frame does not end)")


class DecompressedStream:
    """The decompressed bytes of ``source``, at most ``max_bytes`` of them."""

    def __init__(self, source: CompressedSource, limits: BundleLimits, max_bytes: int) -> None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=limits.max_window_bytes)
        # stream_reader only calls read(); the cast states that duck type to mypy.
        self._reader = decompressor.stream_reader(cast(BinaryIO, source), read_size=CHUNK, read_across_frames=False)
        self._source = source
        self._buffer = b""
        self.total = 0
        self._cap = max_bytes
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
        """Exactly ``size`` bytes; ``BUNDLE_CORRUPT`` naming ``what`` when the stream ends first."""
        while len(self._buffer) < size:
            data = self._pull(max(CHUNK, size - len(self._buffer)))
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
            data = self._pull(min(CHUNK, remaining))
            if not data:
                raise BundleCorrupt(f"the tar archive is truncated ({what})")
            if len(data) > remaining:
                data, self._buffer = data[:remaining], data[remaining:]
            remaining -= len(data)
            yield data

    def rest(self) -> Iterator[bytes]:
        """Yield everything left, in pieces, to the end of the stream."""
        data, self._buffer = self._buffer, b""
        while data or (data := self._pull(CHUNK)):
            yield data
            data = b""
