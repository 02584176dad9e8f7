"""Fetching a bundle into the runner's disk cache: stream, verify, unpack one scope, check the signature.

A hash is loaded in one of two scopes (:class:`Scope`), each its own cache entry: ``code`` unpacks
``manifest.json`` and the ``.wasm`` files (what calls and compile jobs read), ``ui`` unpacks
``manifest.json`` and ``ui/`` (what the UI route serves); every file is still verified, and nothing else of
the bundle reaches the disk.  :meth:`BundleFetcher.fetch` goes through these stages:

1. stream ``<hex>/bundle.tar.zst`` from the store through :func:`verify_bundle` with the expected hash,
   unpacking the scope's files into a temp dir under ``.incoming/`` in the same pass, each file's size
   reserved against the cache's budget before its bytes are written;
2. check ``signature.json`` against the trust bundle (fail closed when one is configured), with
   certificates judged at the publish time finalize recorded in ``published.json`` (expiry is not
   revocation; removing a key is);
3. write ``index.json`` (the verified files and their sha256, the scope, the signature status and the
   trust configuration they were checked under);
4. only then ``os.replace`` the temp dir to ``<cache>/<hex>/`` (``<cache>/<hex>.ui/`` for the UI).

Any failure deletes the temp dir, so nothing unverified is ever used or left behind.  Entries found at
start (:meth:`BundleFetcher.read_entry`) are trusted only if they were verified under the same trust
bundle.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, cast

from chalicelib.bundles.manifest import MANIFEST_PATH, Manifest
from chalicelib.bundles.publication import MAX_PUBLISH_RECORD_BYTES, PublishRecord
from chalicelib.bundles.signing import (
    MAX_ENVELOPE_BYTES,
    SignatureCheck,
    SignatureEnvelope,
    SignatureStatus,
    TrustBundle,
    verify_signature,
)
from chalicelib.bundles.verify import BundleFile, VerifiedBundle, verify_bundle
from chalicelib.config import BundleLimits
from chalicelib.errors import ExtError, NotFound
from chalicelib.logs import log_event
from chalicelib.storage.store import BUNDLE_OBJECT, PUBLISH_RECORD_OBJECT, SIGNATURE_OBJECT
from runner_container.disk_cache import DiskCache, Reservation
from runner_container.runner_store import RunnerStore, read_capped

__all__ = ["BUNDLE_DIR", "ENTRY_NAME", "INDEX_FILE", "BundleFetcher", "CachedBundle", "Scope", "trust_fingerprint"]

INDEX_FILE = "index.json"
BUNDLE_DIR = "bundle"
ENTRY_NAME = re.compile(r"([0-9a-f]{64})(\.ui)?")
"""The names of entry directories: ``<hex>`` (code) and ``<hex>.ui``."""
_INDEX_FORMAT = "ext-runner-cache/v2"
_MAX_INDEX_BYTES = 16 * 1024 * 1024


class Scope(StrEnum):
    """What of a bundle one cache entry unpacks: calls need the code, the UI route its ``ui/`` folder."""

    CODE = "code"
    UI = "ui"

    def wants(self, path: str) -> bool:
        """Whether ``path`` (a bundle path) is unpacked for this scope."""
        if path == MANIFEST_PATH:
            return True
        return path.startswith("ui/") if self is Scope.UI else path.endswith(".wasm")

    def key(self, hex_digest: str) -> str:
        """The entry's name in the cache dir and in the index: ``<hex>`` for code, ``<hex>.ui`` for the UI."""
        return hex_digest if self is Scope.CODE else f"{hex_digest}.ui"


@dataclass(frozen=True)
class CachedBundle:
    """A verified bundle on local disk; ``files`` maps each bundle path to its size and sha256.

    Only the files of its scope are under ``root``; ``files`` lists all of them, as verified.
    """

    content_hash: str
    root: Path
    manifest: Manifest
    files: Mapping[str, BundleFile]
    signature_status: SignatureStatus


def trust_fingerprint(trust: TrustBundle | None) -> str:
    """Names a trust configuration: entries verified under another one are verified again."""
    if trust is None:
        return "none"
    described = sorted((key.key_id, key.scope, [str(window) for window in key.validity]) for key in trust.keys)
    return "sha256:" + hashlib.sha256(json.dumps(described).encode()).hexdigest()


class BundleFetcher:
    """Loads verified bundles from ``store`` into ``disk``'s entries, checked against ``trust``.

    ``trust`` None accepts unsigned bundles (local development only).
    """

    def __init__(
        self, store: RunnerStore, disk: DiskCache[CachedBundle], limits: BundleLimits, trust: TrustBundle | None
    ) -> None:
        self._store = store
        self._disk = disk
        self._limits = limits
        self._trust = trust
        self._trust_id = trust_fingerprint(trust)

    def fetch(self, content_hash: str, key: str, scope: Scope, reservation: Reservation) -> CachedBundle:
        """Download, verify and unpack ``scope``'s files in one pass, check the signature, move into place.

        Raises ``NotFound`` when the store does not hold the hash, and the verification error
        (``HASH_MISMATCH``, ``SIGNATURE_*``, ``BUNDLE_*``…) when it fails a check.
        """
        started = time.perf_counter()
        incoming = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self._disk.incoming))
        try:
            verified = self._download(content_hash, incoming / BUNDLE_DIR, scope, reservation)
            # Debug lines at each stage's end: an operator (and the crash tests) can tell where a load stopped.
            log_event("runner.bundle_unpacked", level=logging.DEBUG, content_hash=content_hash, scope=scope.value)
            check = self._check_signature(content_hash, verified.manifest.name)
            self._write_index(incoming / INDEX_FILE, verified, check, scope)
            log_event("runner.bundle_indexed", level=logging.DEBUG, content_hash=content_hash, scope=scope.value)
            final = self._disk.root / key
            self._install(incoming, final)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        log_event(
            "runner.bundle_fetched",
            content_hash=content_hash,
            scope=scope.value,
            extension=verified.manifest.name,
            signature=check.status.value,
            compressed_bytes=verified.compressed_size,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        files = {f.path: f for f in verified.files}
        return CachedBundle(content_hash, final / BUNDLE_DIR, verified.manifest, MappingProxyType(files), check.status)

    def read_entry(self, path: Path) -> CachedBundle | None:
        """The bundle an entry left by an earlier process holds, or None when it cannot be trusted."""
        name = ENTRY_NAME.fullmatch(path.name)
        if name is None:
            return None
        hex_digest, scope = name.group(1), Scope.UI if name.group(2) else Scope.CODE
        try:
            index_path = path / INDEX_FILE
            if index_path.stat().st_size > _MAX_INDEX_BYTES:
                return None
            index = json.loads(index_path.read_bytes())
            if (
                index.get("format") != _INDEX_FORMAT
                or index.get("content_hash") != f"sha256:{hex_digest}"
                or index.get("scope") != scope.value
                or index.get("trust") != self._trust_id
            ):
                return None
            root = path / BUNDLE_DIR
            manifest = Manifest.parse((root / "manifest.json").read_bytes())
            files = {
                name: BundleFile(path=name, size=int(entry["size"]), sha256=str(entry["sha256"]))
                for name, entry in index["files"].items()
            }
            status = SignatureStatus(index["signature_status"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ExtError):
            return None
        return CachedBundle(index["content_hash"], root, manifest, MappingProxyType(files), status)

    def _download(self, content_hash: str, extract_to: Path, scope: Scope, reservation: Reservation) -> VerifiedBundle:
        extract_to.mkdir()
        try:
            stream = self._store.open_stream(self._store.object_key(content_hash, BUNDLE_OBJECT))
        except NotFound:
            # The store's own message names the key; the caller only needs to know the hash is unknown.
            raise NotFound(f"no published bundle has the content hash {content_hash}") from None
        try:
            # verify_bundle only calls read(size); the cast states that duck type.
            source = cast(BinaryIO, stream)
            return verify_bundle(
                source,
                self._limits,
                expected_hash=content_hash,
                extract_to=extract_to,
                extract_filter=scope.wants,
                reserve=lambda size: self._disk.reserve(reservation, size),
            )
        finally:
            stream.close()

    def _check_signature(self, content_hash: str, extension_name: str) -> SignatureCheck:
        envelope = self._read_envelope(content_hash)
        published_at = None
        if envelope is not None and self._trust is not None:
            published_at = self._published_at(content_hash, extension_name)
        return verify_signature(content_hash, extension_name, envelope, self._trust, now=published_at)

    def _read_small(self, content_hash: str, name: str, cap: int) -> bytes | None:
        """At most ``cap + 1`` bytes of a small object beside the bundle, or None when there is none."""
        try:
            stream = self._store.open_stream(self._store.object_key(content_hash, name))
        except NotFound:
            return None
        try:
            return read_capped(stream, cap)
        finally:
            stream.close()

    def _read_envelope(self, content_hash: str) -> SignatureEnvelope | None:
        raw = self._read_small(content_hash, SIGNATURE_OBJECT, MAX_ENVELOPE_BYTES)
        # An envelope past the cap fails parsing with SIGNATURE_INVALID, as any other malformed one.
        return SignatureEnvelope.parse(raw) if raw is not None else None

    def _published_at(self, content_hash: str, extension_name: str) -> datetime | None:
        """When finalize checked the signature, from the publish record only the platform writes; None for a
        bundle published before records existed (its certificate is then checked at the current time)."""
        raw = self._read_small(content_hash, PUBLISH_RECORD_OBJECT, MAX_PUBLISH_RECORD_BYTES)
        if raw is None:
            log_event("runner.publish_record_missing", content_hash=content_hash)
            return None
        record = PublishRecord.parse(raw)
        record.check(content_hash, extension_name, now=datetime.now(UTC))
        return record.published_at

    def _write_index(self, path: Path, verified: VerifiedBundle, check: SignatureCheck, scope: Scope) -> None:
        index = {
            "format": _INDEX_FORMAT,
            "content_hash": verified.content_hash,
            "scope": scope.value,
            "trust": self._trust_id,
            "signature_status": check.status.value,
            "signature_key_id": check.key_id,
            "files": {f.path: {"size": f.size, "sha256": f.sha256} for f in verified.files},
        }
        path.write_text(json.dumps(index, sort_keys=True), encoding="utf-8")

    def _install(self, incoming: Path, final: Path) -> None:
        try:
            os.replace(incoming, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # A directory the index does not know (left by a crash): it is not trusted, so replace it.
            shutil.rmtree(self._disk.retire(final), ignore_errors=True)
            os.replace(incoming, final)
