"""The runner's bundle cache: verified bundles on local disk, compiled modules in memory.

A hash is loaded in one of two scopes (:class:`Scope`), each its own cache entry: ``code`` unpacks
``manifest.json`` and the ``.wasm`` files (what calls and precompile read), ``ui`` unpacks ``manifest.json``
and ``ui/`` (what the UI route serves); every file is still verified, and nothing else of the bundle
reaches the disk.  A request for a hash goes through these stages; the slow ones run under a lock of that entry only, so
concurrent cold requests for one hash fetch and compile it once while other hashes proceed:

1. known: the entry is in the disk index (built from ``<cache>/*/`` at start, kept in memory) → use it;
2. fetch: wait for a load slot of the scope (``RUNNER_MAX_COLD_LOADS`` each, so UI loads never take the
   slots of calls; ``RUNNER_BUSY`` after 5 s); stream ``<hex>/bundle.tar.zst`` from the store through
   :func:`verify_bundle` with the expected hash, unpacking the scope's files into a temp dir inside the
   cache dir in the same pass, each file's size reserved against the budget before its bytes are
   written; check ``signature.json`` against the trust bundle (fail closed when one is configured), with
   certificates judged at the publish time finalize recorded in ``published.json`` (expiry is not
   revocation; removing a key is); write ``index.json`` (the verified files and their sha256); only then
   ``os.replace`` the temp dir to ``<cache>/<hex>/`` (``<cache>/<hex>.ui/`` for the UI).  Any failure
   deletes the temp dir, so nothing unverified is ever used or left behind;
3. module (bundles with an ``api``, from the ``code`` entry): the in-memory LRU, else
   ``<cache>/<hex>/<fingerprint>.cwasm``, else the platform's ``precompiled/<fingerprint>.cwasm`` from the
   store, else the recorded compile failure (``EXTENSION_FAILED`` at once, never compiled again), else a
   compile.  Compiles run only in bounded child processes (:mod:`runner_container.compiler`): a compile
   job (:meth:`BundleCache.precompile`, after publish or when a call asks for one,
   :mod:`runner_container.compile_jobs`) with the full limits, or, inside a call, small code within half
   of the call's remaining time; otherwise the call answers ``EXTENSION_NOT_READY``.  A job's outcome
   (the ``.cwasm``, or a failure record) goes to the store, so every runner sees it.  A ``.cwasm`` is
   never taken from a bundle: deserializing one is running native code;
4. evict: entries on disk plus the reservations of loads in progress stay within
   ``RUNNER_CACHE_MAX_BYTES``; least recently used entries make room, never one in use (a UI response
   keeps its entry in use until its file is closed, so no evicted file lives on uncounted).  A load that
   cannot get room is ``RUNNER_BUSY``; one larger than the whole budget is ``BUNDLE_UNPACKED_TOO_LARGE``.

Layout::

    <cache>/<hex>/index.json            verified file list, scope, signature status, trust fingerprint
    <cache>/<hex>/bundle/…              manifest.json and the .wasm files
    <cache>/<hex>/<fingerprint>.cwasm   compiled code (this runner's, or downloaded from the store)
    <cache>/<hex>.ui/index.json         the same, for the UI scope
    <cache>/<hex>.ui/bundle/…           manifest.json and ui/
    <cache>/.incoming/                  loads and compiles in progress (cleared on start)
    <cache>/.trash/                     evicted entries being deleted (cleared on start)

Removing files under a loaded module is safe: wasmtime mmaps a ``.cwasm``, so one is never rewritten in
place (a new file is written aside and ``os.replace``'d, giving it a new inode) and eviction only
renames and unlinks.  On Linux an unlinked file stays valid for every mapping of it, so a module still
running keeps working after its files are gone; overwriting or truncating it instead would SIGBUS.

One runner process owns a cache dir (Lambda: one per container; HTTP mode: one server process).  Entries
found at start are trusted as verified only if they were verified under the same trust bundle.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Protocol, cast

import wasmtime

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
from chalicelib.config import Settings
from chalicelib.errors import (
    BundleUnpackedTooLarge,
    ExtensionNotReady,
    ExtError,
    NotFound,
    RunnerBusy,
    StorageError,
    WasmInvalid,
)
from chalicelib.logs import log_event, stage
from chalicelib.storage.store import (
    BUNDLE_OBJECT,
    PUBLISH_RECORD_OBJECT,
    SIGNATURE_OBJECT,
    ObjectInfo,
    PutOutcome,
    ReadableStream,
    content_hash_hex,
)
from runner_container.compile_jobs import BackgroundJobs, CompileJobs
from runner_container.compiler import (
    MAX_FAILURE_RECORD_BYTES,
    CompileFailure,
    CompileLimits,
    Compiler,
    CompileResult,
    FailureKind,
)
from runner_container.engine import WasmEngine

__all__ = [
    "CWASM_CONTENT_TYPE",
    "BundleCache",
    "CacheStats",
    "CachedBundle",
    "CompileStatus",
    "LoadedBundle",
    "ModuleSource",
    "PrecompileResult",
    "RunnerStore",
    "Scope",
    "trust_fingerprint",
]

CWASM_CONTENT_TYPE = "application/octet-stream"
INDEX_FILE = "index.json"
BUNDLE_DIR = "bundle"
_INDEX_FORMAT = "ext-runner-cache/v2"
_MAX_INDEX_BYTES = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
_ENTRY = re.compile(r"([0-9a-f]{64})(\.ui)?")
_LOAD_SLOT_WAIT_S = 5.0
_RETRY_AFTER_S = 1
_INCOMING = ".incoming"
_TRASH = ".trash"
MiB = 1024 * 1024
INLINE_SHARE = 0.5
"""Share of a call's remaining time an inline compile may take: the rest is left for the call."""
_MIN_INLINE_BUDGET_S = 0.05
_FAILURES_KEPT = 1024


class RunnerStore(Protocol):
    """The part of :class:`~chalicelib.storage.store.BundleStore` the runner uses (it never writes bundles)."""

    def object_key(self, content_hash: str, name: str) -> str: ...

    def precompiled_key(self, content_hash: str, fingerprint: str) -> str: ...

    def compile_failure_key(self, content_hash: str, fingerprint: str, limits_id: str) -> str: ...

    def open_stream(self, key: str) -> ReadableStream: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def put_immutable(self, key: str, body: bytes | BinaryIO, content_type: str) -> PutOutcome: ...


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


@dataclass
class _Reservation:
    """Bytes a load in progress has reserved against the cache's budget for files it is writing."""

    bytes: int = 0


class ModuleSource(StrEnum):
    """Where a compiled module came from."""

    MEMORY = "memory"
    LOCAL = "local"
    STORED = "stored"
    COMPILED = "compiled"


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


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle ready to run: ``module`` is None when the manifest declares no ``api``.

    ``size`` is the bytes the hash takes in the disk cache when it was handed out.
    """

    content_hash: str
    root: Path
    manifest: Manifest
    module: wasmtime.Module | None
    size: int
    files: Mapping[str, BundleFile]
    module_source: ModuleSource | None


class CompileStatus(StrEnum):
    """Where a compile job left the code: compiled, failed (recorded), or being compiled by another job."""

    READY = "ready"
    FAILED = "failed"
    COMPILING = "compiling"


@dataclass(frozen=True)
class PrecompileResult:
    """What :meth:`BundleCache.precompile` found or did.

    ``key`` and ``source`` are None for a bundle without ``api``; ``source`` is None unless the code is
    ready; ``failure`` says why it is not; ``stats`` are the costs of a compile this call ran.
    """

    content_hash: str
    fingerprint: str
    key: str | None
    source: ModuleSource | None
    status: CompileStatus = CompileStatus.READY
    failure: CompileFailure | None = None
    stats: CompileResult | None = None

    @property
    def compiled(self) -> bool:
        """Whether this call compiled the module (rather than finding compiled code)."""
        return self.source is ModuleSource.COMPILED

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "content_hash": self.content_hash,
            "fingerprint": self.fingerprint,
            "key": self.key,
            "source": None if self.source is None else self.source.value,
            "compiled": self.compiled,
            "status": self.status.value,
        }
        if self.failure is not None:
            answer["failure"] = {"kind": self.failure.kind.value, "reason": self.failure.reason}
        if self.stats is not None:
            answer["compile"] = self.stats.log_fields()
        return answer


@dataclass(frozen=True)
class CacheStats:
    """The cache's state; ``compiles`` counts the compiler processes this runner started (jobs and inline)."""

    entries: int
    bytes: int
    max_bytes: int
    modules: int
    compiles: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "entries": self.entries,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "modules": self.modules,
            "compiles": self.compiles,
        }


def trust_fingerprint(trust: TrustBundle | None) -> str:
    """Names a trust configuration: entries verified under another one are verified again."""
    if trust is None:
        return "none"
    described = sorted((key.key_id, key.scope, [str(window) for window in key.validity]) for key in trust.keys)
    return "sha256:" + hashlib.sha256(json.dumps(described).encode()).hexdigest()


class _KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _read_capped(stream: ReadableStream, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of ``stream``: one byte past the cap tells "too large" apart."""
    data = bytearray()
    while len(data) <= cap:
        chunk = stream.read(min(_CHUNK, cap + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _write_atomic(path: Path, chunks: Iterable[bytes], max_bytes: int) -> int:
    """Write ``chunks`` to a new file beside ``path`` and ``os.replace`` it into place; returns the size.

    ``path`` is never opened for writing, so a module mapping the previous file keeps its bytes.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    size = 0
    try:
        with open(temp, "xb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise StorageError(f"{path.name} is larger than the {max_bytes}-byte cache")
                out.write(chunk)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return size


def _stream_chunks(stream: ReadableStream) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


class BundleCache:
    """Verified bundles by content hash on local disk, and their compiled modules in memory.

    ``trust`` is the trust bundle signatures are checked against (None: unsigned bundles are accepted,
    local development only).  Safe to share between threads.
    """

    def __init__(
        self,
        store: RunnerStore,
        engine: WasmEngine,
        settings: Settings,
        trust: TrustBundle | None,
        *,
        compile_jobs: CompileJobs | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._trust = trust
        self._trust_id = trust_fingerprint(trust)
        self._limits = settings.bundle_limits
        self._root = Path(settings.runner_cache_dir)
        self._max_bytes = int(settings.runner_cache_max_bytes)
        self._module_capacity = int(settings.runner_module_cache_entries)
        self._locks = _KeyedLocks()
        self._state = threading.Lock()
        self._bundles: dict[str, CachedBundle] = {}
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._pins: Counter[str] = Counter()
        self._loading = 0
        self._load_slots = {scope: threading.BoundedSemaphore(int(settings.runner_max_cold_loads)) for scope in Scope}
        self.load_wait_s = _LOAD_SLOT_WAIT_S
        """How long a cold load waits for a load slot before ``RUNNER_BUSY``."""
        self._modules: OrderedDict[str, wasmtime.Module] = OrderedDict()
        self._failures: OrderedDict[str, CompileFailure] = OrderedDict()
        self._compiling: set[str] = set()
        self._compiled = threading.Condition(self._state)
        self._compile_limits = CompileLimits.from_settings(settings)
        self._inline_max_bytes = int(settings.runner_inline_compile_max_bytes)
        self._compiler = Compiler(engine.config_settings, int(settings.runner_compile_concurrency))
        self._jobs: CompileJobs = compile_jobs or BackgroundJobs(
            self.precompile, workers=int(settings.runner_compile_concurrency)
        )
        self._incoming = self._root / _INCOMING
        self._trash = self._root / _TRASH
        self._start()

    # --- public ---------------------------------------------------------------------------

    def get(self, content_hash: str, *, budget_s: float | None = None) -> LoadedBundle:
        """The verified bundle ``content_hash`` with its compiled module, fetching it on a miss.

        Code with no compile outcome yet compiles here only when it is small enough
        (``RUNNER_INLINE_COMPILE_MAX_BYTES``) and does so within half of what is left of ``budget_s``, the
        seconds the caller had when it asked (None: never), once the bundle is loaded; otherwise a compile
        job is requested.

        Raises ``BadRequest`` for a malformed hash, ``NotFound`` when the store does not hold it, the
        verification error (``HASH_MISMATCH``, ``SIGNATURE_*``, ``BUNDLE_*``…) when it fails a check,
        ``EXTENSION_FAILED`` when its code did not compile, ``EXTENSION_NOT_READY`` while it is compiled.
        """
        hex_digest = content_hash_hex(content_hash)
        started = time.monotonic()
        with self._pinned(hex_digest):
            bundle = self._bundle(content_hash, hex_digest)
            module: wasmtime.Module | None = None
            source: ModuleSource | None = None
            if bundle.manifest.has_api:
                # A cold load (the download, or the wait for a load slot) spent part of the caller's time.
                left_s = None if budget_s is None else budget_s - (time.monotonic() - started)
                module, source = self._module(bundle, hex_digest, left_s)
            with self._state:
                size = self._sizes.get(hex_digest, 0)
            return LoadedBundle(
                content_hash=content_hash,
                root=bundle.root,
                manifest=bundle.manifest,
                module=module,
                size=size,
                files=bundle.files,
                module_source=source,
            )

    @contextmanager
    def lease(self, content_hash: str, scope: Scope = Scope.UI) -> Iterator[CachedBundle]:
        """The verified bundle with ``scope``'s files unpacked, kept on disk (never evicted) until the block
        ends; no compiling.  Raises what :meth:`get` raises, and ``RUNNER_BUSY`` when the cache has no room
        or no load slot for it now."""
        hex_digest = content_hash_hex(content_hash)
        with self._pinned(scope.key(hex_digest)):
            yield self._bundle(content_hash, hex_digest, scope)

    def precompile(self, content_hash: str) -> PrecompileResult:
        """The compile job: make sure the store holds this engine's outcome for ``content_hash``.

        Finds compiled code (uploading a local copy the store lacks) or a recorded failure, else compiles
        under the full limits and records the ``.cwasm`` or the failure; returns ``COMPILING`` when another
        job of this process is on it.  What the code does is never an error; failing to store the outcome
        raises ``StorageError``.
        """
        hex_digest = content_hash_hex(content_hash)
        fingerprint = self._engine.fingerprint
        key = self._store.precompiled_key(content_hash, fingerprint)
        # Asked for twice (a publish and a call, two runners): a recorded outcome ends the job before any fetch.
        # Stored code is loaded once before it counts, so an unusable object is never reported ready.
        if self._cached_module(hex_digest) is not None and self._store.head(key) is not None:
            return PrecompileResult(content_hash, fingerprint, key, ModuleSource.MEMORY)
        failure = self._recorded_failure(content_hash, hex_digest)
        if failure is not None:
            return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.FAILED, failure)
        with self._pinned(hex_digest):
            bundle = self._bundle(content_hash, hex_digest)
            if not bundle.manifest.has_api:
                return PrecompileResult(content_hash, fingerprint, None, None)
            return self._job(bundle, hex_digest)

    def stats(self) -> CacheStats:
        with self._state:
            return CacheStats(
                entries=len(self._sizes),
                bytes=self._total,
                max_bytes=self._max_bytes,
                modules=len(self._modules),
                compiles=self._compiler.started,
            )

    # --- start: rebuild the index from disk --------------------------------------------------

    def _start(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for scratch in (self._incoming, self._trash):
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
        found: list[tuple[float, str, CachedBundle]] = []
        for child in self._root.iterdir():
            # Only names this cache writes are touched: a cache dir set to a shared folder loses nothing else.
            name = _ENTRY.fullmatch(child.name)
            if name is None or not child.is_dir() or child.is_symlink():
                continue
            bundle = self._read_entry(child, name.group(1), Scope.UI if name.group(2) else Scope.CODE)
            if bundle is None:
                shutil.rmtree(self._retire(child), ignore_errors=True)
                continue
            for stale in child.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            found.append((child.stat().st_mtime, child.name, bundle))
        for _mtime, key, bundle in sorted(found, key=lambda item: item[0]):
            self._bundles[key] = bundle
            self._sizes[key] = _tree_size(bundle.root.parent)
            self._total += self._sizes[key]
        if found:
            log_event("runner.cache_rebuilt", entries=len(found), bytes=self._total)
        self._evict(keep=None)

    def _read_entry(self, path: Path, hex_digest: str, scope: Scope) -> CachedBundle | None:
        """The bundle an entry left by an earlier process holds, or None when it cannot be trusted."""
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

    # --- bundles ---------------------------------------------------------------------------

    @contextmanager
    def _pinned(self, hex_digest: str) -> Iterator[None]:
        """Keep ``hex_digest`` from eviction for the block; when the last user leaves, catch up on eviction."""
        with self._state:
            self._pins[hex_digest] += 1
        try:
            yield
        finally:
            with self._state:
                self._pins[hex_digest] -= 1
                released = self._pins[hex_digest] <= 0
                if released:
                    del self._pins[hex_digest]
                over_budget = self._total + self._loading > self._max_bytes
            if released and over_budget:
                self._evict(keep=None)

    def _touch(self, hex_digest: str) -> CachedBundle | None:
        with self._state:
            bundle = self._bundles.get(hex_digest)
            if bundle is not None:
                self._sizes.move_to_end(hex_digest)
            return bundle

    def _bundle(self, content_hash: str, hex_digest: str, scope: Scope = Scope.CODE) -> CachedBundle:
        key = scope.key(hex_digest)
        bundle = self._touch(key)
        if bundle is not None:
            return bundle
        with self._locks.hold(key):
            bundle = self._touch(key)
            if bundle is not None:
                return bundle
            with self._load_slot(scope), self._reserving() as reservation:
                bundle = self._fetch(content_hash, key, scope, reservation)
                size = _tree_size(bundle.root.parent)
                with self._state:
                    # One step: the reserved bytes become the entry's, so the room is never counted free.
                    self._bundles[key] = bundle
                    self._sizes[key] = size
                    self._total += size
                    self._loading -= reservation.bytes
                    reservation.bytes = 0
        self._evict(keep=key)
        return bundle

    @contextmanager
    def _load_slot(self, scope: Scope) -> Iterator[None]:
        """One of ``RUNNER_MAX_COLD_LOADS`` concurrent loads of ``scope``; ``RUNNER_BUSY`` after a short wait."""
        slots = self._load_slots[scope]
        if not slots.acquire(timeout=self.load_wait_s):
            raise RunnerBusy(
                f"this runner is loading as many bundles as it may ({scope.value}); retry shortly",
                retry_after=_RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            slots.release()

    @contextmanager
    def _reserving(self) -> Iterator[_Reservation]:
        """A reservation for one load; whatever it still holds when the block ends is given back."""
        reservation = _Reservation()
        try:
            yield reservation
        finally:
            with self._state:
                self._loading -= reservation.bytes
                reservation.bytes = 0

    def _reserve(self, reservation: _Reservation, size: int) -> None:
        """Count ``size`` more bytes of a load in progress against the budget, evicting to make room.

        Raises ``RUNNER_BUSY`` when entries in use and other loads hold the room, and
        ``BUNDLE_UNPACKED_TOO_LARGE`` when the load alone is larger than the whole budget.
        """
        if reservation.bytes + size > self._max_bytes:
            raise BundleUnpackedTooLarge(
                f"the bundle's files to unpack are larger than this runner's cache ({self._max_bytes} bytes)"
            )
        with self._state:
            retired = self._retire_lru_locked(keep=None, need=size)
            fits = self._total + self._loading + size <= self._max_bytes
            if fits:
                self._loading += size
                reservation.bytes += size
        self._delete(retired)
        if not fits:
            log_event("runner.cache_full", level=logging.WARNING, need=size, max_bytes=self._max_bytes)
            raise RunnerBusy(
                "this runner's disk cache is full of bundles in use; retry shortly", retry_after=_RETRY_AFTER_S
            )

    def _fetch(self, content_hash: str, key: str, scope: Scope, reservation: _Reservation) -> CachedBundle:
        """Download, verify and unpack ``scope``'s files in one pass, check the signature, move into place."""
        started = time.perf_counter()
        incoming = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self._incoming))
        try:
            verified = self._download(content_hash, incoming / BUNDLE_DIR, scope, reservation)
            check = self._check_signature(content_hash, verified.manifest.name)
            self._write_index(incoming / INDEX_FILE, verified, check, scope)
            final = self._root / key
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

    def _download(self, content_hash: str, extract_to: Path, scope: Scope, reservation: _Reservation) -> VerifiedBundle:
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
                reserve=lambda size: self._reserve(reservation, size),
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
            return _read_capped(stream, cap)
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
            shutil.rmtree(self._retire(final), ignore_errors=True)
            os.replace(incoming, final)

    # --- eviction -----------------------------------------------------------------------------

    def _retire(self, path: Path) -> Path:
        """Move ``path`` out of the cache's namespace at once; the caller deletes it at leisure.

        A rename is one metadata operation, so it is done under the state lock: once a hash is gone from
        the index its directory is gone too, and a new load of it can never meet a half-deleted one.
        """
        target = self._trash / f"{path.name}.{uuid.uuid4().hex}"
        with suppress(FileNotFoundError):
            os.replace(path, target)
        return target

    def _grow(self, hex_digest: str, size: int) -> None:
        with self._state:
            if hex_digest in self._sizes:
                self._sizes[hex_digest] += size
                self._total += size
        self._evict(keep=hex_digest)

    def _evict(self, keep: str | None) -> None:
        """Drop least recently used entries until the cache fits; pinned ones and ``keep`` stay."""
        with self._state:
            retired = self._retire_lru_locked(keep, need=0)
            total = self._total + self._loading
        self._delete(retired)
        if total > self._max_bytes:
            log_event("runner.cache_over_budget", level=logging.WARNING, bytes=total, max_bytes=self._max_bytes)

    def _retire_lru_locked(self, keep: str | None, need: int) -> list[tuple[str, Path]]:
        """Under the state lock: take least recently used entries out of the index until entries, loads in
        progress and ``need`` more bytes fit the budget; returns them for :meth:`_delete`."""
        retired: list[tuple[str, Path]] = []
        for key in list(self._sizes):
            if self._total + self._loading + need <= self._max_bytes:
                break
            if key == keep or self._pins[key]:
                continue
            self._total -= self._sizes.pop(key)
            self._bundles.pop(key, None)
            self._modules.pop(key, None)
            retired.append((key, self._retire(self._root / key)))
        return retired

    @staticmethod
    def _delete(retired: list[tuple[str, Path]]) -> None:
        for key, path in retired:
            shutil.rmtree(path, ignore_errors=True)
            log_event("runner.bundle_evicted", content_hash=f"sha256:{key[:64]}", entry=key)

    # --- modules ------------------------------------------------------------------------------

    def _cached_module(self, hex_digest: str) -> wasmtime.Module | None:
        with self._state:
            module = self._modules.get(hex_digest)
            if module is not None:
                self._modules.move_to_end(hex_digest)
            return module

    def _remember_module(self, hex_digest: str, module: wasmtime.Module) -> None:
        with self._state:
            self._modules[hex_digest] = module
            self._modules.move_to_end(hex_digest)
            while len(self._modules) > self._module_capacity:
                self._modules.popitem(last=False)

    def _module(
        self, bundle: CachedBundle, hex_digest: str, budget_s: float | None
    ) -> tuple[wasmtime.Module, ModuleSource]:
        """The request path: compiled code found, or compiled inline within a share of ``budget_s``.

        Raises ``EXTENSION_FAILED`` when a compile of this code failed (recorded, never repeated) and
        ``EXTENSION_NOT_READY`` when a compile job has to run first (it is requested here).
        """
        module = self._cached_module(hex_digest)
        if module is not None:
            return module, ModuleSource.MEMORY
        inline = self._may_inline(bundle, budget_s)
        share_s = (budget_s or 0.0) * INLINE_SHARE
        started = time.monotonic()
        while True:
            with self._locks.hold(hex_digest):
                found = self._find_compiled(bundle, hex_digest)
                if found is not None:
                    return found
                failure = self._recorded_failure(bundle.content_hash, hex_digest)
                if failure is not None:
                    raise failure.error()
                with self._state:
                    compiling = hex_digest in self._compiling
                left_s = share_s - (time.monotonic() - started)
                if inline and not compiling:
                    return self._compile_inline(bundle, hex_digest, left_s)
            if not (inline and compiling and left_s > 0):
                break
            # A job of this process is compiling small code (right after publish): its result is near.
            with self._compiled:
                self._compiled.wait_for(lambda: hex_digest not in self._compiling, timeout=left_s)
            inline = False
        raise self._not_ready(bundle)

    def _compile_inline(
        self, bundle: CachedBundle, hex_digest: str, within_s: float
    ) -> tuple[wasmtime.Module, ModuleSource]:
        """Compile small code during a call, within ``within_s``; a permanent failure is recorded."""
        result = self._run_job(bundle, hex_digest, self._compile_limits.inline(within_s), within_s)
        if result is not None and result.artifact is not None:
            installed = self._install_compiled(bundle, hex_digest, result, strict=False)
            if isinstance(installed, CompileFailure):
                raise installed.error()
            return installed, ModuleSource.COMPILED
        if result is not None and result.failure is not None and result.failure.permanent:
            # Code that fails this way fails under any limits: record it under the jobs' limits.
            failure = dataclasses.replace(result.failure, limits=self._compile_limits)
            self._record_failure(bundle.content_hash, hex_digest, failure, strict=False)
            raise failure.error()
        # Over the call's share of time or memory, or no compile slot: a job gets the full limits.
        raise self._not_ready(bundle)

    def _not_ready(self, bundle: CachedBundle) -> ExtensionNotReady:
        """Request a compile job, and the call's answer meanwhile."""
        self._jobs.request(bundle.content_hash)
        retry_after = _retry_after(self._entry_size(bundle))
        return ExtensionNotReady(
            f"{bundle.manifest.name} {bundle.manifest.version}: its code is being compiled; retry in {retry_after} s",
            retry_after=retry_after,
        )

    def _may_inline(self, bundle: CachedBundle, budget_s: float | None) -> bool:
        if budget_s is None or budget_s * INLINE_SHARE < _MIN_INLINE_BUDGET_S:
            return False
        return 0 < self._entry_size(bundle) <= self._inline_max_bytes

    def _entry_size(self, bundle: CachedBundle) -> int:
        entry = bundle.files.get(bundle.manifest.entry)
        return entry.size if entry is not None else 0

    def _job(self, bundle: CachedBundle, hex_digest: str) -> PrecompileResult:
        """The compile job: the outcome for this engine, from the store when recorded, else compiled now."""
        content_hash, fingerprint = bundle.content_hash, self._engine.fingerprint
        key = self._store.precompiled_key(content_hash, fingerprint)
        with self._locks.hold(hex_digest):
            found = self._find_compiled(bundle, hex_digest)
            if found is not None:
                module, source = found
                if source in (ModuleSource.MEMORY, ModuleSource.LOCAL) and self._store.head(key) is None:
                    self._store.put_immutable(key, self._engine.serialize(module), CWASM_CONTENT_TYPE)
                return PrecompileResult(content_hash, fingerprint, key, source, CompileStatus.READY)
            failure = self._recorded_failure(content_hash, hex_digest)
            if failure is not None:
                return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.FAILED, failure)
            with self._state:
                if hex_digest in self._compiling:
                    return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.COMPILING)
                self._compiling.add(hex_digest)
        try:
            result = self._run_job(bundle, hex_digest, self._compile_limits, None)
            assert result is not None  # no wait limit: a slot always comes
            with self._locks.hold(hex_digest):
                if result.artifact is not None:
                    installed = self._install_compiled(bundle, hex_digest, result, strict=True)
                    if not isinstance(installed, CompileFailure):
                        return PrecompileResult(
                            content_hash, fingerprint, key, ModuleSource.COMPILED, CompileStatus.READY, stats=result
                        )
                    failure = installed
                else:
                    assert result.failure is not None
                    failure = result.failure
                    self._record_failure(content_hash, hex_digest, failure, strict=True)
                return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.FAILED, failure, result)
        finally:
            with self._compiled:
                self._compiling.discard(hex_digest)
                self._compiled.notify_all()

    def _find_compiled(self, bundle: CachedBundle, hex_digest: str) -> tuple[wasmtime.Module, ModuleSource] | None:
        """Compiled code from memory, the local ``.cwasm`` or the store's, without compiling."""
        module = self._cached_module(hex_digest)
        if module is not None:
            return module, ModuleSource.MEMORY
        local = bundle.root.parent / f"{self._engine.fingerprint}.cwasm"
        module = self._deserialize(local, hex_digest)
        source = ModuleSource.LOCAL
        if module is None and self._download_precompiled(bundle.content_hash, local, hex_digest):
            module = self._deserialize(local, hex_digest)
            source = ModuleSource.STORED
        if module is None:
            return None
        self._remember_module(hex_digest, module)
        return module, source

    def _deserialize(self, path: Path, hex_digest: str) -> wasmtime.Module | None:
        if not path.is_file():
            return None
        try:
            return self._engine.deserialize_file(path)
        except ExtError as exc:
            # Another wasmtime, settings or CPU: a miss.  Unlinking is safe even if something maps it.
            log_event("runner.precompiled_unusable", level=logging.WARNING, path=str(path), reason=exc.message)
            size = path.stat().st_size
            path.unlink()
            self._grow(hex_digest, -size)
            return None

    def _download_precompiled(self, content_hash: str, local: Path, hex_digest: str) -> bool:
        key = self._store.precompiled_key(content_hash, self._engine.fingerprint)
        try:
            stream = self._store.open_stream(key)
        except NotFound:
            return False
        except ExtError as exc:
            log_event("runner.precompiled_download_failed", level=logging.WARNING, key=key, reason=exc.message)
            return False
        try:
            size = _write_atomic(local, _stream_chunks(stream), self._max_bytes)
        except Exception as exc:
            # A failed download costs only a compile; any error here (network, disk) is a miss, not a failure.
            log_event(
                "runner.precompiled_download_failed",
                level=logging.WARNING,
                key=key,
                reason=f"{type(exc).__name__}: {exc}",
            )
            return False
        finally:
            stream.close()
        self._grow(hex_digest, size)
        return True

    def _run_job(
        self, bundle: CachedBundle, hex_digest: str, limits: CompileLimits, within_s: float | None
    ) -> CompileResult | None:
        """One bounded compile of the bundle's entry into ``.incoming/``; None when no compile slot came free.

        ``within_s`` (inline compiles) bounds the wait for a slot and the compile together.
        """
        output = self._incoming / f"{hex_digest}.{uuid.uuid4().hex}.cwasm"
        with stage("runner.module_compiled", content_hash=bundle.content_hash, inline=within_s is not None) as learned:
            result = self._compiler.run(bundle.root / bundle.manifest.entry, output, limits, within_s=within_s)
            learned.update(result.log_fields() if result is not None else {"failure": "no_compile_slot"})
        return result

    def _install_compiled(
        self, bundle: CachedBundle, hex_digest: str, result: CompileResult, *, strict: bool
    ) -> wasmtime.Module | CompileFailure:
        """Move a job's artifact next to the bundle, load it, check its ABI, keep it, and publish it.

        Code that compiles but does not implement the ABI is a recorded failure, returned.
        """
        assert result.artifact is not None
        local = bundle.root.parent / f"{self._engine.fingerprint}.cwasm"
        size = result.artifact.stat().st_size
        # A new inode: anything mapping an earlier file at this path keeps its bytes.
        os.replace(result.artifact, local)
        self._grow(hex_digest, size)
        module = self._engine.deserialize_file(local)
        try:
            self._engine.validate_abi(module)
        except WasmInvalid as exc:
            local.unlink(missing_ok=True)
            self._grow(hex_digest, -size)
            failure = CompileFailure(FailureKind.INVALID, exc.message, self._compile_limits)
            self._record_failure(bundle.content_hash, hex_digest, failure, strict=strict)
            return failure
        self._remember_module(hex_digest, module)
        self._publish(bundle.content_hash, local, strict=strict)
        return module

    def _publish(self, content_hash: str, artifact: Path, *, strict: bool) -> None:
        key = self._store.precompiled_key(content_hash, self._engine.fingerprint)
        try:
            with artifact.open("rb") as body:
                self._store.put_immutable(key, body, CWASM_CONTENT_TYPE)
        except (ExtError, OSError) as exc:
            if strict:
                raise
            log_event("runner.precompiled_upload_failed", level=logging.WARNING, key=key, reason=str(exc))

    # --- compile failures, recorded beside the compiled code ------------------------------------

    def _failure_key(self, content_hash: str) -> str:
        return self._store.compile_failure_key(content_hash, self._engine.fingerprint, self._compile_limits.limits_id)

    def _recorded_failure(self, content_hash: str, hex_digest: str) -> CompileFailure | None:
        with self._state:
            failure = self._failures.get(hex_digest)
        if failure is not None:
            return failure
        key = self._failure_key(content_hash)
        try:
            stream = self._store.open_stream(key)
        except NotFound:
            return None
        except ExtError as exc:
            log_event("runner.compile_failure_unreadable", level=logging.WARNING, key=key, reason=exc.message)
            return None
        try:
            failure = CompileFailure.parse(_read_capped(stream, MAX_FAILURE_RECORD_BYTES))
        except (ValueError, ExtError, OSError) as exc:
            log_event("runner.compile_failure_unreadable", level=logging.WARNING, key=key, reason=str(exc))
            return None
        finally:
            stream.close()
        self._remember_failure(hex_digest, failure)
        return failure

    def _remember_failure(self, hex_digest: str, failure: CompileFailure) -> None:
        with self._state:
            self._failures[hex_digest] = failure
            while len(self._failures) > _FAILURES_KEPT:
                self._failures.popitem(last=False)

    def _record_failure(self, content_hash: str, hex_digest: str, failure: CompileFailure, *, strict: bool) -> None:
        self._remember_failure(hex_digest, failure)
        key = self._failure_key(content_hash)
        log_event(
            "runner.compile_failed",
            level=logging.WARNING,
            content_hash=content_hash,
            failure=failure.kind.value,
            reason=failure.reason,
        )
        try:
            self._store.put_immutable(key, failure.to_json(content_hash, self._engine.fingerprint), "application/json")
        except ExtError as exc:
            if strict:
                raise
            log_event("runner.compile_failure_upload_failed", level=logging.WARNING, key=key, reason=exc.message)


def _retry_after(wasm_bytes: int) -> int:
    """Seconds a caller should wait for a compile job: about one per MiB of code, from 2 to 30."""
    return min(30, max(2, math.ceil(wasm_bytes / MiB)))
