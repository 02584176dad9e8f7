"""The zstd frame structure (RFC 8878 §3.1), followed as compressed bytes stream past.

A bundle is exactly one zstd frame: no skippable frames, no dictionary, a window within the limit (read
from the frame header, before anything is decoded), no reserved block types, and nothing after the frame.
"""

from __future__ import annotations

from chalicelib.errors import BundleCorrupt, BundleTooLarge

__all__ = ["ZSTD_MAGIC", "FrameWalker"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FrameWalker:
    """Follows zstd frame structure (RFC 8878 §3.1) as bytes stream past."""

    def __init__(self, max_window: int) -> None:
        self.max_window = max_window
        self.done = False
        """Whether the frame has ended (anything fed after it is refused)."""
        self._header = bytearray()
        self._header_size: int | None = None
        self._state = "header"
        self._block_header = bytearray()
        self._remaining = 0
        self._checksum = False
        self._last_block = False

    def feed(self, data: memoryview) -> None:
        """Follow the next compressed bytes; raise at the first that break the rules above."""
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
        if head.startswith(ZSTD_MAGIC[: len(head)]):
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
        if magic == ZSTD_MAGIC:
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
