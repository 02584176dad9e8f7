"""Compiled code for the runner's bundle cache: found, downloaded, or compiled by a bounded job.

Compiled code (:data:`Code`) is a core module for ``wasm-core@1`` bundles and a checked component
(:class:`~runner_container.component.PreparedComponent`) for ``wasm-component@1``; both are kept, stored
and loaded the same way, under the same ``precompiled/<fingerprint>.cwasm`` key.  For a bundle with an
``api`` (its ``code`` entry loaded), :meth:`CompiledCode.load` looks in order at:

1. the in-memory LRU (``RUNNER_MODULE_CACHE_ENTRIES``);
2. ``<cache>/<hex>/<fingerprint>.cwasm``, this runner's own or an earlier download;
3. the platform's ``precompiled/<fingerprint>.cwasm`` in the store (a ``.cwasm`` is never taken from a
   bundle: deserializing one is running native code);
4. the recorded compile failure (``EXTENSION_FAILED`` at once, never compiled again under the same limits);
5. a compile.  Compiles run only in bounded child processes (:mod:`runner_container.compiler`): a compile
   job (:meth:`CompiledCode.job`, after publish or when a call asks for one through
   :mod:`runner_container.compile_jobs`) with the full limits, or, inside a call, small code within half of
   the call's remaining time; otherwise the call answers ``EXTENSION_NOT_READY``.  Components never
   compile inside a call, whatever their size (a Python one takes 20–60 s and about 400 MB): always a
   job.  A job's outcome (the ``.cwasm``, or a failure record) goes to the store, so every runner sees it.

Every ``.cwasm`` is counted against the disk budget before its bytes are written: a download reserves each
chunk before writing it, and a compile reserves :func:`output_bound` before it starts, a bound the
compiler's child enforces on what it writes.

A ``.cwasm`` is never rewritten in place: wasmtime maps it, so a new file is written aside and
``os.replace``'d (a new inode); overwriting or truncating a mapped file would SIGBUS a module still running.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime.component import Component

from chalicelib.bundles.component import COMPONENT_RUNTIME
from chalicelib.config import Settings
from chalicelib.errors import BundleUnpackedTooLarge, ExtensionNotReady, ExtError, NotFound, RunnerBusy, WasmInvalid
from chalicelib.logs import log_event, stage
from runner_container.bundle_fetch import CachedBundle
from runner_container.compile_jobs import CompileJobs
from runner_container.compiler import (
    MAX_FAILURE_RECORD_BYTES,
    ArtifactKind,
    CompileFailure,
    CompileLimits,
    Compiler,
    CompileResult,
    FailureKind,
)
from runner_container.component import ComponentEngine, PreparedComponent
from runner_container.disk_cache import DiskCache, KeyedLocks, Reservation, write_atomic
from runner_container.engine import WasmEngine
from runner_container.runner_store import RunnerStore, read_capped, stream_chunks

__all__ = [
    "CWASM_CONTENT_TYPE",
    "INLINE_SHARE",
    "Code",
    "CompileStatus",
    "CompiledCode",
    "ModuleSource",
    "PrecompileResult",
    "artifact_kind",
    "output_bound",
    "retry_after_s",
]

CWASM_CONTENT_TYPE = "application/octet-stream"
MiB = 1024 * 1024
INLINE_SHARE = 0.5
"""Share of a call's remaining time an inline compile may take: the rest is left for the call."""
_MIN_INLINE_BUDGET_S = 0.05
_FAILURES_KEPT = 1024
_OUTPUT_FACTOR = 8
"""Native code is at most about 5x its wasm for core modules (fuel on) and 2x for components: 8x is room."""

Code = wasmtime.Module | PreparedComponent
"""Compiled code ready to run: a core module (``wasm-core@1``) or a checked component (``wasm-component@1``)."""


class ModuleSource(StrEnum):
    """Where a compiled module came from."""

    MEMORY = "memory"
    LOCAL = "local"
    STORED = "stored"
    COMPILED = "compiled"


class CompileStatus(StrEnum):
    """Where a compile job left the code: compiled, failed (recorded), or being compiled by another job."""

    READY = "ready"
    FAILED = "failed"
    COMPILING = "compiling"


@dataclass(frozen=True)
class PrecompileResult:
    """What a compile job (:meth:`~runner_container.cache.BundleCache.precompile`) found or did.

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


def artifact_kind(bundle: CachedBundle) -> ArtifactKind:
    """What the bundle's entry compiles to, by its manifest's runtime."""
    return ArtifactKind.COMPONENT if bundle.manifest.runtime == COMPONENT_RUNTIME else ArtifactKind.MODULE


def output_bound(wasm_bytes: int) -> int:
    """The room reserved for the native code of ``wasm_bytes`` of wasm before it is compiled."""
    return _OUTPUT_FACTOR * wasm_bytes + MiB


def retry_after_s(wasm_bytes: int) -> int:
    """Seconds a caller should wait for a compile job: about one per MiB of code, from 2 to 30."""
    return min(30, max(2, math.ceil(wasm_bytes / MiB)))


class CompiledCode:
    """The compiled code of the bundles in ``disk``, by hex digest; safe to share between threads.

    Core modules load on ``engine``, components on ``components`` (built on the same wasmtime engine).
    ``locks`` are the cache's per-entry locks (a code entry's key is its hex digest), so one hash is
    looked up, downloaded or compiled by one thread at a time.  ``jobs`` runs the compile jobs calls ask for.
    """

    def __init__(
        self,
        store: RunnerStore,
        engine: WasmEngine,
        components: ComponentEngine,
        settings: Settings,
        disk: DiskCache[CachedBundle],
        locks: KeyedLocks,
        jobs: CompileJobs,
    ) -> None:
        self._store = store
        self._engine = engine
        self._components = components
        self._disk = disk
        self._locks = locks
        self._jobs = jobs
        self._capacity = int(settings.runner_module_cache_entries)
        self._limits = CompileLimits.from_settings(settings)
        self._inline_max_bytes = int(settings.runner_inline_compile_max_bytes)
        self._compiler = Compiler(engine.config_settings, int(settings.runner_compile_concurrency))
        self._state = threading.Lock()
        self._modules: OrderedDict[str, Code] = OrderedDict()
        self._failures: OrderedDict[str, CompileFailure] = OrderedDict()
        self._compiling: set[str] = set()
        self._compiled = threading.Condition(self._state)

    @property
    def fingerprint(self) -> str:
        """The engine fingerprint compiled code is stored under."""
        return self._engine.fingerprint

    @property
    def compiles(self) -> int:
        """How many compiler processes this runner started (jobs and inline)."""
        return self._compiler.started

    def count(self) -> int:
        """How many compiled modules are in memory."""
        with self._state:
            return len(self._modules)

    def precompiled_key(self, content_hash: str) -> str:
        """The store key of the hash's compiled code for this engine."""
        return self._store.precompiled_key(content_hash, self._engine.fingerprint)

    def stored(self, content_hash: str) -> bool:
        """Whether the store holds this engine's compiled code for ``content_hash``."""
        return self._store.head(self.precompiled_key(content_hash)) is not None

    # --- memory ----------------------------------------------------------------------------

    def cached(self, hex_digest: str) -> Code | None:
        """The compiled code in memory, marked as just used; None when it is not there."""
        with self._state:
            module = self._modules.get(hex_digest)
            if module is not None:
                self._modules.move_to_end(hex_digest)
            return module

    def forget(self, key: str) -> None:
        """Drop the module of an evicted entry from memory (code still running keeps its mapping)."""
        with self._state:
            self._modules.pop(key, None)

    def _remember(self, hex_digest: str, module: Code) -> None:
        with self._state:
            self._modules[hex_digest] = module
            self._modules.move_to_end(hex_digest)
            while len(self._modules) > self._capacity:
                self._modules.popitem(last=False)

    # --- the request path -------------------------------------------------------------------

    def load(self, bundle: CachedBundle, hex_digest: str, budget_s: float | None) -> tuple[Code, ModuleSource]:
        """Compiled code found, or (small core modules only) compiled inline within a share of ``budget_s``.

        Raises ``EXTENSION_FAILED`` when a compile of this code failed (recorded, never repeated) and
        ``EXTENSION_NOT_READY`` when a compile job has to run first (it is requested here).
        """
        module = self.cached(hex_digest)
        if module is not None:
            return module, ModuleSource.MEMORY
        inline = self._may_inline(bundle, budget_s)
        share_s = (budget_s or 0.0) * INLINE_SHARE
        started = time.monotonic()
        while True:
            with self._locks.hold(hex_digest):
                found = self._find(bundle, hex_digest)
                if found is not None:
                    return found
                failure = self.recorded_failure(bundle.content_hash, hex_digest)
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

    def _compile_inline(self, bundle: CachedBundle, hex_digest: str, within_s: float) -> tuple[Code, ModuleSource]:
        """Compile small code during a call, within ``within_s``; a permanent failure is recorded."""
        with self._disk.reserving() as reservation:
            result = self._run(bundle, hex_digest, self._limits.inline(within_s), within_s, reservation)
            if result is not None and result.artifact is not None:
                installed = self._install(bundle, hex_digest, result, reservation, strict=False)
                if isinstance(installed, CompileFailure):
                    raise installed.error()
                return installed, ModuleSource.COMPILED
        if result is not None and result.failure is not None and result.failure.permanent:
            # Code that fails this way fails under any limits: record it under the jobs' limits.
            failure = dataclasses.replace(result.failure, limits=self._limits)
            self._record_failure(bundle.content_hash, hex_digest, failure, strict=False)
            raise failure.error()
        # Over the call's share of time or memory, or no compile slot: a job gets the full limits.
        raise self._not_ready(bundle)

    def _not_ready(self, bundle: CachedBundle) -> ExtensionNotReady:
        """Request a compile job, and the call's answer meanwhile."""
        self._jobs.request(bundle.content_hash)
        retry_after = retry_after_s(_entry_size(bundle))
        return ExtensionNotReady(
            f"{bundle.manifest.name} {bundle.manifest.version}: its code is being compiled; retry in {retry_after} s",
            retry_after=retry_after,
        )

    def _may_inline(self, bundle: CachedBundle, budget_s: float | None) -> bool:
        if budget_s is None or budget_s * INLINE_SHARE < _MIN_INLINE_BUDGET_S:
            return False
        if artifact_kind(bundle) is ArtifactKind.COMPONENT:
            # Even a small component embeds a language runtime: tens of seconds to compile.
            return False
        return 0 < _entry_size(bundle) <= self._inline_max_bytes

    # --- the compile job --------------------------------------------------------------------

    def job(self, bundle: CachedBundle, hex_digest: str) -> PrecompileResult:
        """The compile job: the outcome for this engine, from the store when recorded, else compiled now."""
        content_hash, fingerprint = bundle.content_hash, self._engine.fingerprint
        key = self.precompiled_key(content_hash)
        with self._locks.hold(hex_digest):
            found = self._find(bundle, hex_digest)
            if found is not None:
                module, source = found
                if source in (ModuleSource.MEMORY, ModuleSource.LOCAL) and self._store.head(key) is None:
                    self._store.put_immutable(key, self._serialize(module), CWASM_CONTENT_TYPE)
                return PrecompileResult(content_hash, fingerprint, key, source, CompileStatus.READY)
            failure = self.recorded_failure(content_hash, hex_digest)
            if failure is not None:
                return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.FAILED, failure)
            with self._state:
                if hex_digest in self._compiling:
                    return PrecompileResult(content_hash, fingerprint, key, None, CompileStatus.COMPILING)
                self._compiling.add(hex_digest)
        try:
            with self._disk.reserving() as reservation:
                result = self._run(bundle, hex_digest, self._limits, None, reservation)
                assert result is not None  # no wait limit: a slot always comes
                with self._locks.hold(hex_digest):
                    if result.artifact is not None:
                        installed = self._install(bundle, hex_digest, result, reservation, strict=True)
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

    # --- finding, compiling and keeping compiled code ---------------------------------------

    def _find(self, bundle: CachedBundle, hex_digest: str) -> tuple[Code, ModuleSource] | None:
        """Compiled code from memory, the local ``.cwasm`` or the store's, without compiling."""
        module = self.cached(hex_digest)
        if module is not None:
            return module, ModuleSource.MEMORY
        local, kind = self._local_path(bundle), artifact_kind(bundle)
        module = self._deserialize(local, kind, hex_digest)
        source = ModuleSource.LOCAL
        if module is None and self._download(bundle.content_hash, local, hex_digest):
            module = self._deserialize(local, kind, hex_digest)
            source = ModuleSource.STORED
        if module is None:
            return None
        self._remember(hex_digest, module)
        return module, source

    def _local_path(self, bundle: CachedBundle) -> Path:
        return bundle.root.parent / f"{self._engine.fingerprint}.cwasm"

    def _load_file(self, kind: ArtifactKind, path: Path) -> wasmtime.Module | Component:
        """The native code in ``path``, unchecked; ``WASM_INVALID`` when this engine cannot use it."""
        if kind is ArtifactKind.COMPONENT:
            return self._components.load_file(path)
        return self._engine.deserialize_file(path)

    def _check(self, loaded: wasmtime.Module | Component) -> Code:
        """The loaded code checked against its ABI; ``WASM_INVALID`` names what does not fit."""
        if isinstance(loaded, Component):
            return self._components.prepare(loaded)
        self._engine.validate_abi(loaded)
        return loaded

    def _serialize(self, code: Code) -> bytes:
        if isinstance(code, PreparedComponent):
            return self._components.serialize(code)
        return self._engine.serialize(code)

    def _deserialize(self, path: Path, kind: ArtifactKind, hex_digest: str) -> Code | None:
        if not path.is_file():
            return None
        try:
            loaded = self._load_file(kind, path)
            # The platform's own code was checked when it was compiled; a component's world is checked on
            # every load because that is what makes it callable (its function types), and it costs microseconds.
            return loaded if isinstance(loaded, wasmtime.Module) else self._components.prepare(loaded)
        except ExtError as exc:
            # Another wasmtime, settings or CPU: a miss.  Unlinking is safe even if something maps it.
            log_event("runner.precompiled_unusable", level=logging.WARNING, path=str(path), reason=exc.message)
            size = path.stat().st_size
            path.unlink()
            self._disk.grow(hex_digest, -size)
            return None

    def _download(self, content_hash: str, local: Path, hex_digest: str) -> bool:
        key = self.precompiled_key(content_hash)
        try:
            stream = self._store.open_stream(key)
        except NotFound:
            return False
        except ExtError as exc:
            log_event("runner.precompiled_download_failed", level=logging.WARNING, key=key, reason=exc.message)
            return False
        with self._disk.reserving() as reservation:
            try:
                chunks = self._reserved(stream_chunks(stream), reservation)
                size = write_atomic(local, chunks, self._disk.max_bytes)
            except (RunnerBusy, BundleUnpackedTooLarge):
                # No room on this runner's disk: the call is busy, not a miss to compile.
                raise
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
            self._disk.settle(hex_digest, reservation, size)
        return True

    def _reserved(self, chunks: Iterator[bytes], reservation: Reservation) -> Iterator[bytes]:
        """``chunks``, each reserved against the disk budget before it is handed on to be written."""
        for chunk in chunks:
            self._disk.reserve(reservation, len(chunk), what="the compiled code is")
            yield chunk

    def _run(
        self,
        bundle: CachedBundle,
        hex_digest: str,
        limits: CompileLimits,
        within_s: float | None,
        reservation: Reservation,
    ) -> CompileResult | None:
        """One bounded compile of the bundle's entry into ``.incoming/``; None when no compile slot came free.

        The room for its output (:func:`output_bound`, at most the whole budget) is reserved first, and the
        compiler writes no more than that; ``RUNNER_BUSY`` when the cache has no such room now.
        ``within_s`` (inline compiles) bounds the wait for a slot and the compile together.
        """
        kind = artifact_kind(bundle)
        bound = min(output_bound(_entry_size(bundle)), self._disk.max_bytes)
        self._disk.reserve(reservation, bound, what="the compiled code is")
        output = self._disk.incoming / f"{hex_digest}.{uuid.uuid4().hex}.cwasm"
        fields = {"content_hash": bundle.content_hash, "inline": within_s is not None, "kind": kind.value}
        with stage("runner.module_compiled", **fields) as learned:
            wasm = bundle.root / bundle.manifest.entry
            result = self._compiler.run(wasm, output, limits, kind=kind, within_s=within_s, max_output_bytes=bound)
            learned.update(result.log_fields() if result is not None else {"failure": "no_compile_slot"})
        return result

    def _install(
        self, bundle: CachedBundle, hex_digest: str, result: CompileResult, reservation: Reservation, *, strict: bool
    ) -> Code | CompileFailure:
        """Move a job's artifact next to the bundle (its reserved room becomes the entry's), load it, check
        its ABI, keep it, and publish it.

        Code that compiles but does not implement the ABI is a recorded failure, returned.
        """
        assert result.artifact is not None
        local = self._local_path(bundle)
        size = result.artifact.stat().st_size
        # A new inode: anything mapping an earlier file at this path keeps its bytes.
        os.replace(result.artifact, local)
        self._disk.settle(hex_digest, reservation, size)
        log_event("runner.module_installed", level=logging.DEBUG, content_hash=bundle.content_hash, bytes=size)
        loaded = self._load_file(artifact_kind(bundle), local)
        try:
            module = self._check(loaded)
        except WasmInvalid as exc:
            local.unlink(missing_ok=True)
            self._disk.grow(hex_digest, -size)
            failure = CompileFailure(FailureKind.INVALID, exc.message, self._limits)
            self._record_failure(bundle.content_hash, hex_digest, failure, strict=strict)
            return failure
        # Stored before remembered: once a call runs this code, the store holds it for every other runner.
        self._publish(bundle.content_hash, local, strict=strict)
        self._remember(hex_digest, module)
        return module

    def _publish(self, content_hash: str, artifact: Path, *, strict: bool) -> None:
        key = self.precompiled_key(content_hash)
        try:
            with artifact.open("rb") as body:
                self._store.put_immutable(key, body, CWASM_CONTENT_TYPE)
        except (ExtError, OSError) as exc:
            if strict:
                raise
            log_event("runner.precompiled_upload_failed", level=logging.WARNING, key=key, reason=str(exc))

    # --- compile failures, recorded beside the compiled code ------------------------------------

    def _failure_key(self, content_hash: str) -> str:
        return self._store.compile_failure_key(content_hash, self._engine.fingerprint, self._limits.limits_id)

    def recorded_failure(self, content_hash: str, hex_digest: str) -> CompileFailure | None:
        """The failure a compile of this code met under these limits, from memory or the store; None if none."""
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
            failure = CompileFailure.parse(read_capped(stream, MAX_FAILURE_RECORD_BYTES))
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


def _entry_size(bundle: CachedBundle) -> int:
    entry = bundle.files.get(bundle.manifest.entry)
    return entry.size if entry is not None else 0
