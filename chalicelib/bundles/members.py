"""What a bundle may hold, checked member by member as the archive streams past.

For each member :class:`Members` normalizes and checks the path (:mod:`chalicelib.bundles.paths`), refuses
links, special files and duplicates (including names that collide once case and Unicode are folded, and
members inside a file), enforces the entry, per-file and total limits *before* reading the data, then
hashes the data, keeps ``manifest.json``, feeds ``.wasm`` files to an :class:`EntryInspector`, and
optionally extracts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from chalicelib.bundles.archive.hashing import HashPipeline
from chalicelib.bundles.archive.tar import DIRECTORY, REGULAR, SPECIAL, TarEntry, TarReader
from chalicelib.bundles.component import EntryInspector
from chalicelib.bundles.manifest import MANIFEST_PATH
from chalicelib.bundles.paths import ROOT, collision_key, normalize_member_path
from chalicelib.config import BundleLimits
from chalicelib.errors import (
    BundleCorrupt,
    BundleDuplicateEntry,
    BundleTooManyEntries,
    BundleUnpackedTooLarge,
    BundleUnsafePath,
    BundleUnsupportedEntry,
    ManifestInvalid,
)

__all__ = ["Members"]

_HASH_INLINE_BELOW = 256 * 1024


class Members:
    """Reads every member of ``reader``'s archive under the rules above.

    After :meth:`read`: ``files`` (path, size and sha256 hasher of each), ``directories``, ``unpacked``
    (the files' total size), ``manifest_bytes`` and ``wasm`` (an inspector fed each ``.wasm`` file).
    With ``extract_to`` the files ``extract_filter`` keeps (all when it is None) are written there, after
    ``reserve`` accepted each one's size.
    """

    def __init__(
        self,
        reader: TarReader,
        limits: BundleLimits,
        hashing: HashPipeline,
        extract_to: Path | None,
        extract_filter: Callable[[str], bool] | None,
        reserve: Callable[[int], None] | None,
    ) -> None:
        self._reader = reader
        self._hashing = hashing
        self._limits = limits
        self._extract_to = extract_to
        self._extract_filter = extract_filter
        self._reserve = reserve
        self._entries = 0
        self.unpacked = 0
        self.files: list[tuple[str, int, Any]] = []
        self.directories: list[str] = []
        self._kinds: dict[str, str] = {}
        self.manifest_bytes: bytes | None = None
        self.wasm: dict[str, EntryInspector] = {}

    def read(self) -> None:
        """Read the archive to its end; raise at the first member a bundle may not hold."""
        for entry in self._reader.entries():
            self._member(entry)

    def _member(self, entry: TarEntry) -> None:
        try:
            name = entry.name.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleUnsafePath(f"a member path is not valid UTF-8: {entry.name[:80]!r}") from None
        if entry.typeflag in SPECIAL:
            raise BundleUnsupportedEntry(
                f"{name!r} is {SPECIAL[entry.typeflag]}; bundles hold only files and directories"
            )
        if entry.typeflag not in REGULAR and entry.typeflag != DIRECTORY:
            raise BundleUnsupportedEntry(f"{name!r} has the unsupported tar entry type {entry.typeflag!r}")
        path = normalize_member_path(name, max_bytes=self._limits.max_path_bytes, max_depth=self._limits.max_path_depth)
        if entry.typeflag == DIRECTORY:
            if entry.size:
                raise BundleCorrupt(f"directory {name!r} claims {entry.size} bytes of data")
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
        self._check_sizes(path, entry.size)
        self._read_file(path, entry)

    def _count(self) -> None:
        self._entries += 1
        if self._entries > self._limits.max_entries:
            raise BundleTooManyEntries(f"the bundle has more than {self._limits.max_entries} entries")

    def _claim(self, path: str, kind: str) -> None:
        key = collision_key(path)
        previous = self._kinds.get(key)
        if previous is not None:
            if previous == "implicit" and kind == "dir":
                self._kinds[key] = "dir"
                return
            raise BundleDuplicateEntry(f"{path!r} appears more than once in the bundle (or collides with another name)")
        parts = key.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if self._kinds.get(ancestor) == "file":
                raise BundleDuplicateEntry(f"{path!r} is inside {ancestor!r}, which is a file")
            self._kinds.setdefault(ancestor, "implicit")
        self._kinds[key] = kind

    def _check_sizes(self, path: str, size: int) -> None:
        if path == MANIFEST_PATH and size > self._limits.max_manifest_bytes:
            raise ManifestInvalid(f"manifest.json is {size} bytes (limit {self._limits.max_manifest_bytes})")
        if size > self._limits.max_file_bytes:
            raise BundleUnpackedTooLarge(f"{path!r} is {size} bytes (limit {self._limits.max_file_bytes} per file)")
        if self.unpacked + size > self._limits.max_unpacked_bytes:
            raise BundleUnpackedTooLarge(
                f"the bundle unpacks to more than {self._limits.max_unpacked_bytes} bytes (at {path!r})"
            )
        self.unpacked += size

    def _read_file(self, path: str, entry: TarEntry) -> None:
        digest = hashlib.sha256()
        hash_aside = entry.size >= _HASH_INLINE_BELOW
        keep_manifest = path == MANIFEST_PATH
        manifest = bytearray()
        inspector = EntryInspector() if path.endswith(".wasm") else None
        out = self._open_for_extract(path, entry.size)
        try:
            for chunk in self._reader.data(entry, repr(path)):
                if hash_aside:
                    self._hashing.update(digest, chunk)
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
        if keep_manifest:
            self.manifest_bytes = bytes(manifest)
        if inspector is not None:
            self.wasm[path] = inspector
        self.files.append((path, entry.size, digest))

    def _wanted(self, path: str) -> bool:
        return self._extract_to is not None and (self._extract_filter is None or self._extract_filter(path))

    def _extract_dir(self, path: str) -> None:
        if self._extract_to is not None and self._extract_filter is None:
            (self._extract_to / path).mkdir(parents=True, exist_ok=True)

    def _open_for_extract(self, path: str, size: int) -> BinaryIO | None:
        if not self._wanted(path):
            return None
        assert self._extract_to is not None
        if self._reserve is not None:
            self._reserve(size)
        target = self._extract_to / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        return os.fdopen(fd, "wb")
