"""Compile jobs: WebAssembly code compiled in a child process under hard limits, and what they produce.

Compiling is the one cost a publisher controls that the runner pays: a 300 KB module can take 11 s
and 540 MB, a 6 MB one minutes and gigabytes.  So nothing compiles in the runner's own process.  One
job, :meth:`Compiler.run`, goes through these stages:

1. size: code over ``max_wasm_bytes`` fails at once, no process started;
2. slot: at most ``concurrency`` jobs of one runner process run at a time;
3. child: ``python -m runner_container.compiler`` caps its own address space (``RLIMIT_AS``) and CPU
   time (``RLIMIT_CPU``, a backstop) *before* it imports wasmtime, builds an engine with the parent's
   exact :class:`wasmtime.Config` settings, compiles, serializes the native code to the output path
   (never more than ``max_output_bytes``, the room the caller reserved for it) and prints one JSON line
   with its peak RSS and CPU time.  It ends as soon as its parent does, however that dies (a pipe only
   the parent holds open reaches end of file): a killed runner leaves no compile running, and nothing
   written into a cache dir a restarted runner has already cleared;
4. wall clock: past ``timeout_s`` the parent kills the child;
5. outcome: the artifact, or a :class:`CompileFailure` with its kind and reason: ``invalid`` (wasmtime
   refused the code, deterministic), ``too_large`` (the code, or the native code it compiles to),
   ``time_limit``, ``memory_limit`` (an allocation failed under the cap) or ``crashed``.

The job is generic over "a wasm artifact" (:class:`ArtifactKind`): a core module (``wasm-core@1``,
:func:`~runner_container.engine.compile_module`) or a component (``wasm-component@1``,
:func:`~runner_container.component.compile_component`; 20–60 s and about 400 MB for a Python one), both
serialized the same way.  Where outcomes are kept (``precompiled/<fingerprint>.cwasm`` or a failure record
beside it) is the cache's business; this module defines the failure record's format,
:meth:`CompileFailure.to_json` / :meth:`CompileFailure.parse`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from chalicelib.config import Settings
from chalicelib.errors import ExtensionFailed
from chalicelib.logs import log_event

__all__ = [
    "FAILURE_FORMAT",
    "ArtifactKind",
    "CompileFailure",
    "CompileLimits",
    "CompileResult",
    "Compiler",
    "FailureKind",
]

FAILURE_FORMAT = "ext-compile-failure/v1"
MiB = 1024 * 1024
MAX_FAILURE_RECORD_BYTES = 16 * 1024
_INLINE_MEMORY_BYTES = 1024 * MiB
"""An inline compile shares the runner's function memory with the runner itself, so it gets at most this."""
_MAX_REASON_CHARS = 2000
_STDERR_TAIL_BYTES = 4096
_ALLOCATION_FAILED = "memory allocation of"
_ORPHANED_EXIT = 3
"""The child's exit status when its parent is gone (nobody reads it; it only has to differ from success)."""


class ArtifactKind(StrEnum):
    """What a compile job turns into native code: a core module or a component."""

    MODULE = "module"
    COMPONENT = "component"


class FailureKind(StrEnum):
    """Why a compile job produced no code."""

    INVALID = "invalid"
    TOO_LARGE = "too_large"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    CRASHED = "crashed"


@dataclass(frozen=True)
class CompileLimits:
    """The hard limits of one compile job; ``limits_id`` names them in the failure record's key."""

    max_wasm_bytes: int
    timeout_s: float
    memory_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CompileLimits:
        return cls(
            max_wasm_bytes=int(settings.runner_compile_max_wasm_bytes),
            timeout_s=settings.runner_compile_timeout_ms / 1000,
            memory_bytes=int(settings.runner_compile_memory_mb) * MiB,
        )

    @property
    def limits_id(self) -> str:
        """Twelve hex digits naming these limits: a failure under them is not retried, under others it is."""
        described = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(described.encode()).hexdigest()[:12]

    def inline(self, budget_s: float) -> CompileLimits:
        """The limits of a compile inside a call that may spend ``budget_s`` on it."""
        return CompileLimits(
            max_wasm_bytes=self.max_wasm_bytes,
            timeout_s=max(0.0, min(self.timeout_s, budget_s)),
            memory_bytes=min(self.memory_bytes, _INLINE_MEMORY_BYTES),
        )


@dataclass(frozen=True)
class CompileFailure:
    """Why the code did not compile, under which limits; stored as JSON beside the compiled code."""

    kind: FailureKind
    reason: str
    limits: CompileLimits

    @property
    def permanent(self) -> bool:
        """Whether the same code fails the same way under any limits (so inline attempts record it too)."""
        return self.kind in (FailureKind.INVALID, FailureKind.TOO_LARGE)

    def error(self) -> ExtensionFailed:
        """The call's answer: ``502 EXTENSION_FAILED`` naming the reason."""
        return ExtensionFailed(f"the extension's code did not compile: {self.reason}")

    def to_json(self, content_hash: str, fingerprint: str) -> bytes:
        document = {
            "format": FAILURE_FORMAT,
            "content_hash": content_hash,
            "fingerprint": fingerprint,
            "kind": self.kind.value,
            "reason": self.reason,
            "limits": asdict(self.limits),
        }
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def parse(cls, raw: bytes) -> CompileFailure:
        """A record written by :meth:`to_json`; raises ``ValueError`` for anything else."""
        try:
            document = json.loads(raw)
            if document["format"] != FAILURE_FORMAT:
                raise ValueError(f"unknown format {document['format']!r}")
            limits = document["limits"]
            return cls(
                kind=FailureKind(document["kind"]),
                reason=str(document["reason"])[:_MAX_REASON_CHARS],
                limits=CompileLimits(
                    max_wasm_bytes=int(limits["max_wasm_bytes"]),
                    timeout_s=float(limits["timeout_s"]),
                    memory_bytes=int(limits["memory_bytes"]),
                ),
            )
        except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a compile failure record: {exc}") from None


@dataclass(frozen=True)
class CompileResult:
    """One job's outcome: ``artifact`` (the native code's path) or ``failure``; costs as measured.

    ``peak_rss_bytes`` and ``cpu_s`` come from the child itself, so they are None when it was killed.
    """

    artifact: Path | None
    failure: CompileFailure | None
    wasm_bytes: int
    wall_s: float
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None

    def log_fields(self) -> dict[str, Any]:
        return {
            "wasm_bytes": self.wasm_bytes,
            "wall_ms": round(self.wall_s * 1000, 1),
            "cpu_ms": None if self.cpu_s is None else round(self.cpu_s * 1000, 1),
            "peak_rss_bytes": self.peak_rss_bytes,
            "failure": None if self.failure is None else self.failure.kind.value,
        }


def _size(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"


class Compiler:
    """Runs compile jobs in child processes, at most ``concurrency`` at a time in this process.

    ``engine_settings`` are the :class:`wasmtime.Config` attributes of the engine that will load the code
    (:attr:`~runner_container.engine.WasmEngine.config_settings`).
    """

    def __init__(self, engine_settings: Mapping[str, bool], concurrency: int = 1) -> None:
        self._engine_settings = dict(engine_settings)
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._started = 0
        self._count_lock = threading.Lock()

    @property
    def started(self) -> int:
        """How many compiler processes this compiler started."""
        with self._count_lock:
            return self._started

    def run(
        self,
        wasm: Path,
        output: Path,
        limits: CompileLimits,
        *,
        kind: ArtifactKind = ArtifactKind.MODULE,
        within_s: float | None = None,
        max_output_bytes: int | None = None,
    ) -> CompileResult | None:
        """Compile ``wasm`` into a new file ``output`` (which must not exist) under ``limits``.

        ``within_s`` bounds the whole run, waiting for a free slot included (the compile gets what is left);
        None waits for a slot as long as it takes.  Native code over ``max_output_bytes`` is not written
        (a ``too_large`` failure).  Returns None when no slot came free in time.  Never raises for what the
        code does: every way it can fail is a :class:`CompileFailure`.
        """
        size = wasm.stat().st_size
        if size > limits.max_wasm_bytes:
            reason = f"the code is {_size(size)}; compile jobs take at most {_size(limits.max_wasm_bytes)}"
            return CompileResult(None, CompileFailure(FailureKind.TOO_LARGE, reason, limits), size, 0.0)
        started = time.monotonic()
        # timeout=None waits as long as it takes; a semaphore's -1 (unlike a lock's) would not wait at all.
        if not self._slots.acquire(timeout=within_s):
            return None
        try:
            if within_s is not None:
                left = within_s - (time.monotonic() - started)
                limits = replace(limits, timeout_s=max(0.0, min(limits.timeout_s, left)))
            return self._child(wasm, output, limits, kind, size, max_output_bytes)
        finally:
            self._slots.release()

    def _child(
        self,
        wasm: Path,
        output: Path,
        limits: CompileLimits,
        kind: ArtifactKind,
        size: int,
        max_output_bytes: int | None,
    ) -> CompileResult:
        command = [
            sys.executable,
            "-m",
            "runner_container.compiler",
            kind.value,
            json.dumps(self._engine_settings),
            str(limits.memory_bytes),
            # CPU time may exceed wall time (the compiler uses every core); a backstop: the pipe stops an orphan first.
            str(math.ceil(limits.timeout_s * (os.cpu_count() or 1)) + 1),
            str(max_output_bytes if max_output_bytes is not None else -1),
            os.fspath(wasm),
            os.fspath(output),
        ]
        env = {
            **os.environ,
            # glibc reserves 64 MiB of address space per thread arena; two keep RLIMIT_AS about the heap.
            "MALLOC_ARENA_MAX": "2",
            # The child imports what this process imports (Lambda installs packages in its task root).
            "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
        }
        with self._count_lock:
            self._started += 1
        started = time.perf_counter()
        returncode, stdout, stderr, timed_out = _run_child(
            command, env, limits.timeout_s, kind=kind.value, wasm_bytes=size
        )
        wall = time.perf_counter() - started
        report = _last_json_line(stdout)
        failure = _classify(returncode, report, stderr, limits, timed_out)
        if failure is not None:
            output.unlink(missing_ok=True)
            return CompileResult(None, failure, size, wall)
        return CompileResult(
            artifact=output,
            failure=None,
            wasm_bytes=size,
            wall_s=wall,
            cpu_s=float(report["cpu_s"]),
            peak_rss_bytes=int(report["peak_rss_kib"]) * 1024,
        )


def _run_child(
    command: list[str], env: Mapping[str, str], timeout_s: float, **fields: Any
) -> tuple[int, bytes, bytes, bool]:
    """Run the compiler child to its end (killed past ``timeout_s``): its status, stdout, stderr, and whether
    it timed out.  It gets the read end of a pipe whose write end only this process holds (``os.pipe``'s
    ends are not inherited), so it reads end of file, and stops, once this process is gone."""
    parent_alive, keep_alive = os.pipe()
    try:
        try:
            child = subprocess.Popen(
                [*command, str(parent_alive)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
                pass_fds=(parent_alive,),
            )
        finally:
            os.close(parent_alive)
        with child:
            log_event("runner.compile_started", level=logging.DEBUG, pid=child.pid, **fields)
            try:
                stdout, stderr = child.communicate(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                child.kill()
                stdout, stderr = child.communicate()
                timed_out = True
    finally:
        os.close(keep_alive)
    return child.returncode, stdout, stderr, timed_out


def _last_json_line(stdout: bytes) -> dict[str, Any]:
    for line in reversed(stdout.decode("utf-8", errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _classify(
    returncode: int, report: Mapping[str, Any], stderr: bytes, limits: CompileLimits, timed_out: bool
) -> CompileFailure | None:
    """The failure a finished child reports or shows, or None when it produced the artifact."""
    out_of_memory = CompileFailure(
        FailureKind.MEMORY_LIMIT, f"compiling needed more than {_size(limits.memory_bytes)} of memory", limits
    )
    if timed_out or returncode == -signal.SIGXCPU:
        return CompileFailure(FailureKind.TIME_LIMIT, f"compiling took longer than {limits.timeout_s:g} s", limits)
    if returncode == 0 and report.get("ok") is True:
        return None
    if report.get("ok") is False and report.get("kind") in (FailureKind.INVALID, FailureKind.TOO_LARGE):
        kind = FailureKind(report["kind"])
        return CompileFailure(kind, str(report.get("reason", ""))[:_MAX_REASON_CHARS], limits)
    if report.get("ok") is False and report.get("kind") == FailureKind.MEMORY_LIMIT:
        return out_of_memory
    # Rust aborts when an allocation fails under RLIMIT_AS, after saying so on stderr.
    if returncode == -signal.SIGABRT and _ALLOCATION_FAILED in stderr[-_STDERR_TAIL_BYTES:].decode(errors="replace"):
        return out_of_memory
    how = f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return CompileFailure(FailureKind.CRASHED, f"the compiler stopped with {how}", limits)


# --- the child process ------------------------------------------------------------------------------------


def _cap(limit: int, value: int, hard: int | None = None) -> None:
    """Lower ``limit`` to ``value`` (soft) and ``hard``, never above the hard limit already in force."""
    _soft, current = resource.getrlimit(limit)
    ceiling = current if current != resource.RLIM_INFINITY else None

    def fit(wanted: int) -> int:
        return wanted if ceiling is None else min(wanted, ceiling)

    resource.setrlimit(limit, (fit(value), fit(hard if hard is not None else value)))


def _parent_gone(fd: int, *, wait: bool) -> bool:
    """Whether the parent has ended: the pipe ``fd`` only it writes to (it never does) is at end of file."""
    if not wait and not select.select([fd], [], [], 0)[0]:
        return False
    return os.read(fd, 1) == b""


def _exit_with_parent(fd: int) -> None:
    """Wait for the parent's end, then exit at once (a daemon thread of the child)."""
    if _parent_gone(fd, wait=True):
        os._exit(_ORPHANED_EXIT)


def _child_main(argv: list[str]) -> int:
    """``python -m runner_container.compiler KIND SETTINGS MEMORY CPU_S MAX_OUT WASM OUT PARENT_FD``; see
    :meth:`Compiler.run`.

    ``MAX_OUT`` is the most native code the child may write (-1: no limit); ``PARENT_FD`` the read end of a
    pipe only the parent holds open: the child exits once it reads end of file, and never writes its output
    after that.
    """
    kind, settings, memory, cpu_s, max_out, wasm_path, out_path, parent_fd = argv
    parent_alive = int(parent_fd)
    threading.Thread(target=_exit_with_parent, args=(parent_alive,), name="parent-alive", daemon=True).start()
    _cap(resource.RLIMIT_AS, int(memory))
    _cap(resource.RLIMIT_CPU, int(cpu_s), int(cpu_s) + 1)
    # Imported only now, so the limits cover everything wasmtime maps and allocates.
    import wasmtime

    from chalicelib.errors import WasmInvalid
    from runner_container.component import compile_component
    from runner_container.engine import compile_module

    artifact_kind = ArtifactKind(kind)
    try:
        config = wasmtime.Config()
        for name, value in json.loads(settings).items():
            setattr(config, name, value)
        engine, wasm = wasmtime.Engine(config), Path(wasm_path).read_bytes()
        if artifact_kind is ArtifactKind.COMPONENT:
            artifact = compile_component(engine, wasm).serialize()
        else:
            artifact = compile_module(engine, wasm).serialize()
        if 0 <= int(max_out) < len(artifact):
            reason = f"the compiled code is {_size(len(artifact))}, more than the {_size(int(max_out))} it may take"
            print(json.dumps({"ok": False, "kind": FailureKind.TOO_LARGE.value, "reason": reason}), flush=True)
            return 1
        if _parent_gone(parent_alive, wait=False):
            return _ORPHANED_EXIT
        with open(out_path, "xb") as out:
            out.write(artifact)
    except MemoryError:
        print(json.dumps({"ok": False, "kind": FailureKind.MEMORY_LIMIT.value}), flush=True)
        return 1
    except WasmInvalid as exc:
        print(json.dumps({"ok": False, "kind": FailureKind.INVALID.value, "reason": exc.message}), flush=True)
        return 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status", encoding="ascii") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"ok": True, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_kib": peak_kib}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
