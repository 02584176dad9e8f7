"""Fixed one-minute rate-limit windows, counted in DynamoDB so they hold across Lambdas, leased in batches
so that most calls cost no write.

Each process keeps, per key and window, the calls it may still admit (its *lease*).  A call takes one from
the lease without asking DynamoDB; when the lease is spent, one conditional write adds a batch to the
window's counter (``hits + n <= limit``), or, when fewer than a batch are left, whatever is left.  Once
the counter is full the process answers ``RATE_LIMITED`` from memory until the window ends.  Leases are
never given back, so the admitted calls of every process together never exceed the limit; what a process
leased and did not use is lost to the others for that window (at most ``batch - 1`` calls per process,
docs/operations.md).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import PynamoDBException

from chalicelib.dynamo import condition_failed
from chalicelib.errors import RateLimited
from chalicelib.registry.models import Models, storage_errors

__all__ = ["RateLimiter", "lease_batch"]

_MAX_BATCH = 50
_ATTEMPTS = 3
_MAX_KEYS = 10_000


def lease_batch(limit_per_minute: int) -> int:
    """How many calls one write leases: a twentieth of the limit, between 1 and 50."""
    return max(1, min(_MAX_BATCH, limit_per_minute // 20))


@dataclass
class _Lease:
    window: int
    left: int = 0
    full: bool = False


class RateLimiter:
    """Fixed one-minute windows counted in DynamoDB, leased in batches (module docstring)."""

    def __init__(self, models: Models) -> None:
        self._models = models
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    @storage_errors
    def hit(self, key: str, limit_per_minute: int, now: datetime) -> None:
        """Count one call for ``key`` (e.g. ``upload#<tenant>``) in the minute of ``now``.

        Raises :class:`RateLimited` with ``retry_after`` seconds (until the window ends) once
        ``limit_per_minute`` calls were admitted across every process; 0 means unlimited.
        """
        if limit_per_minute <= 0:
            return
        window = int(now.timestamp()) // 60
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.window != window:
                if len(self._leases) > _MAX_KEYS:
                    self._leases.clear()
                lease = self._leases[key] = _Lease(window)
            if lease.left == 0 and not lease.full:
                # Under the lock: one write per spent lease, not one per waiting thread.
                granted = self._lease(key, window, limit_per_minute, now)
                lease.left, lease.full = granted, granted == 0
            if lease.left > 0:
                lease.left -= 1
                return
        window_end = datetime.fromtimestamp((window + 1) * 60, UTC)
        retry_after = max(1, math.ceil((window_end - now).total_seconds()))
        raise RateLimited(
            f"rate limit of {limit_per_minute} calls per minute reached; retry in {retry_after} s",
            retry_after=retry_after,
        )

    def _lease(self, key: str, window: int, limit: int, now: datetime) -> int:
        """Add up to a batch to the window's counter without passing ``limit``; how many were added."""
        limits = self._models.ratelimits
        item = limits(f"{key}#{window}")
        expiry = datetime.fromtimestamp((window + 1) * 60, UTC) + timedelta(minutes=1)
        wanted = min(lease_batch(limit), limit)
        for _ in range(_ATTEMPTS):
            try:
                item.update(
                    actions=[limits.hits.add(wanted), limits.ttl.set(expiry)],
                    condition=limits.hits.does_not_exist() | (limits.hits <= limit - wanted),
                )
                return wanted
            except PynamoDBException as exc:
                if not condition_failed(exc):
                    raise
            try:
                counted = int(limits.get(f"{key}#{window}", consistent_read=True).hits or 0)
            except limits.DoesNotExist:
                counted = 0
            wanted = min(wanted, limit - counted)
            if wanted <= 0:
                return 0
        return 0
