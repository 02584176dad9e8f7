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

Steps 1 and 3 are :mod:`chalicelib.bundles.archive.streams`, step 2
:mod:`~chalicelib.bundles.archive.zstd_frame`, step 4 :mod:`~chalicelib.bundles.archive.tar`,
step 5 :mod:`chalicelib.bundles.members`; this module runs them and does step 6.

Memory stays bounded whatever the input: chunks of at most 1 MiB, the manifest
(≤ 64 KiB), and a few bounded wasm sections.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chalicelib.bundles.archive.hashing import HashPipeline
from chalicelib.bundles.archive.streams import CompressedSource, DecompressedStream
from chalicelib.bundles.archive.tar import TarReader, max_tar_bytes
from chalicelib.bundles.component import ComponentInfo, check_entry
from chalicelib.bundles.digests import format_content_hash
from chalicelib.bundles.manifest import Manifest
from chalicelib.bundles.members import Members
from chalicelib.bundles.wasm import WasmModuleInfo
from chalicelib.config import BundleLimits
from chalicelib.errors import BundleTooLarge, HashMismatch, ManifestFileMissing, ManifestMissing, WasmInvalid

__all__ = ["BundleFile", "VerifiedBundle", "verify_bundle", "verify_file"]


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
    hashing = HashPipeline()
    try:
        compressed = CompressedSource(source, limits, hashing)
        reader = TarReader(DecompressedStream(compressed, limits, max_tar_bytes(limits)))
        members = Members(reader, limits, hashing, extract_to, extract_filter, reserve)
        members.read()
        compressed.drain()
    finally:
        hashing.close()
    content_hash = format_content_hash(compressed.sha256.hexdigest())
    if expected_hash is not None and not hmac.compare_digest(expected_hash, content_hash):
        raise HashMismatch(f"the bundle's content hash is {content_hash}, not the declared {expected_hash}")
    files = tuple(BundleFile(path=p, size=n, sha256=h.hexdigest()) for p, n, h in members.files)
    manifest = _check_manifest(members, {f.path for f in files})
    return VerifiedBundle(
        content_hash=content_hash,
        compressed_size=compressed.size,
        unpacked_size=members.unpacked,
        manifest=manifest,
        manifest_bytes=members.manifest_bytes or b"",
        files=files,
        directories=tuple(members.directories),
        entry_module=_check_entry(members, manifest),
    )


def _check_manifest(members: Members, files: set[str]) -> Manifest:
    if members.manifest_bytes is None:
        raise ManifestMissing("the bundle has no manifest.json at its root")
    manifest = Manifest.parse(members.manifest_bytes)
    for field, path in manifest.referenced_files().items():
        if path not in files:
            raise ManifestFileMissing(f"`{field}` names {path!r}, which is not a file in the bundle")
    return manifest


def _check_entry(members: Members, manifest: Manifest) -> WasmModuleInfo | ComponentInfo | None:
    if not manifest.needs_entry:
        return None
    try:
        info = members.wasm[manifest.entry].finish()
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
