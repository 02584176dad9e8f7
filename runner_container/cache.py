"""The runner's bundle cache: verified bundles on local disk, compiled modules in memory.

A request for a hash goes through these stages; the slow ones run under a lock of that entry only, so
concurrent cold requests for one hash fetch and compile it once while other hashes proceed:

1. known: the entry is in the disk index (:mod:`runner_container.disk_cache`) → use it;
2. fetch: wait for a load slot of the scope (``RUNNER_MAX_COLD_LOADS`` each, so UI loads never take the
   slots of calls; ``RUNNER_BUSY`` after 5 s), then stream, verify, unpack and check the signature
   (:mod:`runner_container.bundle_fetch`): nothing unverified is ever used or left behind;
3. module (bundles with an ``api``, from the ``code`` entry): compiled code found in memory, on disk or in
   the store, or compiled by a bounded job (:mod:`runner_container.compiled_code`); ``EXTENSION_NOT_READY``
   while a job runs, ``EXTENSION_FAILED`` once one failed;
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

One runner process owns a cache dir (Lambda: one per container; HTTP mode: one server process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chalicelib.bundles.manifest import Manifest
from chalicelib.bundles.signing import TrustBundle
from chalicelib.bundles.verify import BundleFile
from chalicelib.config import Settings
from chalicelib.errors import RunnerBusy
from chalicelib.storage.store import content_hash_hex
from runner_container.bundle_fetch import ENTRY_NAME, BundleFetcher, CachedBundle, Scope
from runner_container.compile_jobs import BackgroundJobs, CompileJobs
from runner_container.compiled_code import Code, CompiledCode, CompileStatus, ModuleSource, PrecompileResult
from runner_container.component import ComponentEngine
from runner_container.disk_cache import RETRY_AFTER_S, DiskCache, KeyedLocks
from runner_container.engine import WasmEngine
from runner_container.runner_store import RunnerStore

__all__ = ["BundleCache", "CacheStats", "LoadedBundle"]

_LOAD_SLOT_WAIT_S = 5.0


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle ready to run: ``module`` is its compiled code (a core module, or a checked component for
    ``wasm-component@1``), None when the manifest declares no ``api``.

    ``size`` is the bytes the hash takes in the disk cache when it was handed out.
    """

    content_hash: str
    root: Path
    manifest: Manifest
    module: Code | None
    size: int
    files: Mapping[str, BundleFile]
    module_source: ModuleSource | None


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


class BundleCache:
    """Verified bundles by content hash on local disk, and their compiled modules in memory.

    ``trust`` is the trust bundle signatures are checked against (None: unsigned bundles are accepted,
    local development only).  ``compile_jobs`` runs the compile jobs calls ask for (default: this process,
    in the background).  Components load on ``components`` (default: one on ``engine``).  Safe to share
    between threads.
    """

    def __init__(
        self,
        store: RunnerStore,
        engine: WasmEngine,
        settings: Settings,
        trust: TrustBundle | None,
        *,
        compile_jobs: CompileJobs | None = None,
        components: ComponentEngine | None = None,
    ) -> None:
        self._locks = KeyedLocks()
        self._disk: DiskCache[CachedBundle] = DiskCache(
            Path(settings.runner_cache_dir), int(settings.runner_cache_max_bytes), on_evict=self._forget
        )
        self._fetcher = BundleFetcher(store, self._disk, settings.bundle_limits, trust)
        self._load_slots = {scope: threading.BoundedSemaphore(int(settings.runner_max_cold_loads)) for scope in Scope}
        self.load_wait_s = _LOAD_SLOT_WAIT_S
        """How long a cold load waits for a load slot before ``RUNNER_BUSY``."""
        jobs = compile_jobs or BackgroundJobs(self.precompile, workers=int(settings.runner_compile_concurrency))
        components = components or ComponentEngine(engine)
        self._code = CompiledCode(store, engine, components, settings, self._disk, self._locks, jobs)
        self._disk.start(ENTRY_NAME, self._fetcher.read_entry)

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
        with self._disk.pinned(hex_digest):
            bundle = self._bundle(content_hash, hex_digest)
            module: Code | None = None
            source: ModuleSource | None = None
            if bundle.manifest.has_api:
                # A cold load (the download, or the wait for a load slot) spent part of the caller's time.
                left_s = None if budget_s is None else budget_s - (time.monotonic() - started)
                module, source = self._code.load(bundle, hex_digest, left_s)
            return LoadedBundle(
                content_hash=content_hash,
                root=bundle.root,
                manifest=bundle.manifest,
                module=module,
                size=self._disk.size(hex_digest),
                files=bundle.files,
                module_source=source,
            )

    @contextmanager
    def lease(self, content_hash: str, scope: Scope = Scope.UI) -> Iterator[CachedBundle]:
        """The verified bundle with ``scope``'s files unpacked, kept on disk (never evicted) until the block
        ends; no compiling.  Raises what :meth:`get` raises, and ``RUNNER_BUSY`` when the cache has no room
        or no load slot for it now."""
        hex_digest = content_hash_hex(content_hash)
        with self._disk.pinned(scope.key(hex_digest)):
            yield self._bundle(content_hash, hex_digest, scope)

    def precompile(self, content_hash: str) -> PrecompileResult:
        """The compile job: make sure the store holds this engine's outcome for ``content_hash``.

        Finds compiled code (uploading a local copy the store lacks) or a recorded failure, else compiles
        under the full limits and records the ``.cwasm`` or the failure; returns ``COMPILING`` when another
        job of this process is on it.  What the code does is never an error; failing to store the outcome
        raises ``StorageError``.
        """
        hex_digest = content_hash_hex(content_hash)
        fingerprint = self._code.fingerprint
        key = self._code.precompiled_key(content_hash)
        # Asked for twice (a publish and a call, two runners): a recorded outcome ends the job before any fetch.
        # Stored code is loaded once before it counts, so an unusable object is never reported ready.
        if self._code.cached(hex_digest) is not None and self._code.stored(content_hash):
            return PrecompileResult(content_hash, fingerprint, key, ModuleSource.MEMORY)
        failure = self._code.recorded_failure(content_hash, hex_digest)
        if failure is not None:
            return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.FAILED, failure)
        with self._disk.pinned(hex_digest):
            bundle = self._bundle(content_hash, hex_digest)
            if not bundle.manifest.has_api:
                return PrecompileResult(content_hash, fingerprint, None, None)
            return self._code.job(bundle, hex_digest)

    def stats(self) -> CacheStats:
        entries, used = self._disk.usage()
        return CacheStats(
            entries=entries,
            bytes=used,
            max_bytes=self._disk.max_bytes,
            modules=self._code.count(),
            compiles=self._code.compiles,
        )

    # --- bundles ---------------------------------------------------------------------------

    def _forget(self, key: str) -> None:
        self._code.forget(key)

    def _bundle(self, content_hash: str, hex_digest: str, scope: Scope = Scope.CODE) -> CachedBundle:
        key = scope.key(hex_digest)
        bundle = self._disk.get(key)
        if bundle is not None:
            return bundle
        with self._locks.hold(key):
            bundle = self._disk.get(key)
            if bundle is not None:
                return bundle
            with self._load_slot(scope), self._disk.reserving() as reservation:
                bundle = self._fetcher.fetch(content_hash, key, scope, reservation)
                self._disk.add(key, bundle, reservation)
        self._disk.evict(keep=key)
        return bundle

    @contextmanager
    def _load_slot(self, scope: Scope) -> Iterator[None]:
        """One of ``RUNNER_MAX_COLD_LOADS`` concurrent loads of ``scope``; ``RUNNER_BUSY`` after a short wait."""
        slots = self._load_slots[scope]
        if not slots.acquire(timeout=self.load_wait_s):
            raise RunnerBusy(
                f"this runner is loading as many bundles as it may ({scope.value}); retry shortly",
                retry_after=RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            slots.release()
