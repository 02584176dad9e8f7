"""Who runs a compile job when a call finds code with no compile outcome yet.

The job itself is :meth:`~runner_container.cache.BundleCache.precompile`; a request only asks for it and
returns at once, so the call can answer ``503 EXTENSION_NOT_READY``:

- :class:`BackgroundJobs`: this process runs it on its own worker threads (HTTP mode, and the fallback when
  no compile function is configured).  A hash already waiting or running is not queued again.
- :class:`LambdaJobs`: the compile function runs it (AWS): an asynchronous ``Invoke``, at most once per hash
  per ``cooldown_s`` from one runner instance.  The function's reserved concurrency queues the rest, and
  the outcome it records in the store ends the requests, since later calls find it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.logs import log_event

__all__ = ["BackgroundJobs", "CompileJobs", "LambdaJobs"]

_MAX_PENDING = 1024


class CompileJobs(Protocol):
    def request(self, content_hash: str) -> None:
        """Ask for a compile job of ``content_hash``; returns at once and never raises."""
        ...


class BackgroundJobs:
    """Runs ``job(content_hash)`` on ``workers`` daemon threads of this process, in request order."""

    def __init__(self, job: Callable[[str], object], *, workers: int = 1) -> None:
        self._job = job
        self._workers = max(1, workers)
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def request(self, content_hash: str) -> None:
        with self._lock:
            if content_hash in self._pending:
                return
            if len(self._pending) >= _MAX_PENDING:
                # A later call asks again; dropping beats an unbounded queue.
                log_event("runner.compile_queue_full", level=logging.WARNING, content_hash=content_hash)
                return
            self._pending.add(content_hash)
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name="compile-jobs", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put(content_hash)

    def _work(self) -> None:
        while True:
            content_hash = self._queue.get()
            try:
                self._job(content_hash)
            except Exception:
                # The job records what the code did; an error here (storage, say) leaves no record,
                # so the next call that needs the code asks again.
                logging.getLogger("ext").exception("runner.compile_job_error", extra={"content_hash": content_hash})
            finally:
                with self._lock:
                    self._pending.discard(content_hash)


class LambdaJobs:
    """Asks the compile function (``InvocationType=Event``) for a job, once per hash per ``cooldown_s``."""

    def __init__(
        self,
        lambda_client: Any,
        function_name: str,
        *,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lambda = lambda_client
        self._function = function_name
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def request(self, content_hash: str) -> None:
        now = self._clock()
        with self._lock:
            if now - self._asked.get(content_hash, -self._cooldown_s) < self._cooldown_s:
                return
            if len(self._asked) >= _MAX_PENDING:
                self._asked = {h: t for h, t in self._asked.items() if now - t < self._cooldown_s}
            self._asked[content_hash] = now
        try:
            self._lambda.invoke(
                FunctionName=self._function,
                InvocationType="Event",
                Payload=json.dumps({"action": "precompile", "content_hash": content_hash}).encode(),
            )
        except (BotoCoreError, ClientError) as exc:
            with self._lock:
                self._asked.pop(content_hash, None)
            log_event(
                "runner.compile_request_failed",
                level=logging.WARNING,
                content_hash=content_hash,
                reason=f"{type(exc).__name__}: {exc}",
            )
