"""Caps on calls in flight, counted in DynamoDB so they hold across gateway instances.

A Lambda instance serves one request at a time, so how many calls a tenant has in flight exists only
across instances.  One item per key (``concurrency#<key>`` in the ratelimits table) maps each call in
flight to the moment its lease ends (the gateway's deadline plus a margin):

1. take: one conditional write adds the call (``size(calls) < cap``); the first call creates the map;
2. full: read the map, drop leases that ended (an instance that died mid-call never gave its slot back),
   and try once more; still full is ``RUNNER_BUSY``, remembered by this instance for a moment so a flood
   of rejected calls costs no writes;
3. give back: one write removes the call (and ends this instance's memory of the key being full); a
   failure there only leaves a lease that ends on its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import MapAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.condition import size

from chalicelib.dynamo import condition_failed, response_code
from chalicelib.errors import RunnerBusy
from chalicelib.logs import log_event
from chalicelib.registry.models import Models, storage_errors

__all__ = ["ConcurrencyLimiter"]

_ATTEMPTS = 3
_TTL_MARGIN_S = 60
RETRY_AFTER_S = 1


class ConcurrencyLimiter:
    """At most ``cap`` calls in flight per key, across every process sharing the table.

    ``memo_s`` is how long a process answers ``RUNNER_BUSY`` for a key it found full without asking
    DynamoDB again.
    """

    def __init__(self, models: Models, clock: Callable[[], float] = time.time, *, memo_s: float = 0.5) -> None:
        self._models = models
        self._clock = clock
        self._memo_s = memo_s
        self._full_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, key: str, cap: int, lease_s: float) -> Iterator[None]:
        """Hold one of ``key``'s ``cap`` slots for the block (0 means no cap).

        Raises :class:`RunnerBusy` (``retry_after`` 1 s) when all are taken, ``StorageError`` when
        DynamoDB fails.  ``lease_s`` bounds the block: a slot not given back ends then.
        """
        if cap <= 0:
            yield
            return
        call_id = uuid.uuid4().hex
        self._take(key, call_id, cap, lease_s)
        try:
            yield
        finally:
            self._give_back(key, call_id)

    def _busy(self, key: str, cap: int, now: float) -> RunnerBusy:
        with self._lock:
            if len(self._full_until) > 10_000:
                self._full_until.clear()
            self._full_until[key] = now + self._memo_s
        return RunnerBusy(
            f"{cap} calls are already in flight for this tenant; retry in {RETRY_AFTER_S} s",
            retry_after=RETRY_AFTER_S,
        )

    @storage_errors
    def _take(self, key: str, call_id: str, cap: int, lease_s: float) -> None:
        now = self._clock()
        with self._lock:
            if self._full_until.get(key, 0.0) > now:
                raise RunnerBusy(
                    f"{cap} calls are already in flight for this tenant; retry in {RETRY_AFTER_S} s",
                    retry_after=RETRY_AFTER_S,
                )
        limits = self._models.ratelimits
        item = limits(f"concurrency#{key}")
        ends = now + lease_s
        expiry = datetime.fromtimestamp(math.ceil(ends) + _TTL_MARGIN_S, UTC)
        for _ in range(_ATTEMPTS):
            try:
                item.update(
                    actions=[limits.calls[call_id].set(ends), limits.ttl.set(expiry)],
                    condition=limits.calls.exists() & (size(limits.calls) < cap),  # type: ignore[no-untyped-call]
                )
                return
            except PynamoDBException as exc:
                if not condition_failed(exc):
                    raise
            held = self._held(key)
            if held is None:
                try:
                    item.update(
                        actions=[limits.calls.set({call_id: ends}), limits.ttl.set(expiry)],
                        condition=limits.calls.does_not_exist(),
                    )
                    return
                except PynamoDBException as exc:
                    if not condition_failed(exc):
                        raise
                continue
            ended = {held_id: end for held_id, end in held.items() if end < now}
            if not ended:
                break
            self._clear(key, ended)
        raise self._busy(key, cap, now)

    def _held(self, key: str) -> dict[str, float] | None:
        """The leases of ``key`` (call id → end, Unix seconds), or None when it has no map yet."""
        limits = self._models.ratelimits
        try:
            item = limits.get(f"concurrency#{key}", consistent_read=True)
        except limits.DoesNotExist:
            return None
        # A raw map reads back as None when the item has none (the model's type does not say so).
        calls: MapAttribute[str, Any] | None = item.calls
        if calls is None:
            return None
        return {str(held_id): float(end) for held_id, end in calls.attribute_values.items()}

    def _clear(self, key: str, ended: dict[str, float]) -> None:
        limits = self._models.ratelimits
        condition = None
        for held_id, end in ended.items():
            seen = limits.calls[held_id] == end
            condition = seen if condition is None else condition & seen
        try:
            limits(f"concurrency#{key}").update(
                actions=[limits.calls[held_id].remove() for held_id in ended], condition=condition
            )
        except PynamoDBException as exc:
            # Someone else cleared them first; the next attempt reads the map again.
            if not condition_failed(exc):
                raise

    def _give_back(self, key: str, call_id: str) -> None:
        with self._lock:
            self._full_until.pop(key, None)  # a slot this instance frees is one it knows is free
        limits = self._models.ratelimits
        try:
            limits(f"concurrency#{key}").update(
                actions=[limits.calls[call_id].remove()], condition=limits.calls.exists()
            )
        except PynamoDBException as exc:
            if not condition_failed(exc):
                # The lease ends on its own; the call's answer is not worth failing for this.
                log_event(
                    "gateway.concurrency_release_failed",
                    level=logging.WARNING,
                    key=key,
                    reason=response_code(exc) or str(exc),
                )
