"""Fixed one-minute rate-limit windows counted atomically in DynamoDB, so they hold across Lambdas."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import PynamoDBException

from chalicelib.dynamo import condition_failed
from chalicelib.errors import (
    RateLimited,
)
from chalicelib.registry.models import Models, storage_errors

__all__ = ["RateLimiter"]


class RateLimiter:
    """Fixed one-minute windows counted atomically in DynamoDB."""

    def __init__(self, models: Models) -> None:
        self._models = models

    @storage_errors
    def hit(self, key: str, limit_per_minute: int, now: datetime) -> None:
        """Count one call for ``key`` (e.g. ``upload#<tenant>``) in the minute of ``now``.

        Raises :class:`RateLimited` with ``retry_after`` seconds (until the window
        ends) once ``limit_per_minute`` calls were counted; 0 means unlimited.
        """
        if limit_per_minute <= 0:
            return
        limits = self._models.ratelimits
        window = int(now.timestamp()) // 60
        window_end = datetime.fromtimestamp((window + 1) * 60, UTC)
        try:
            limits(f"{key}#{window}").update(
                actions=[limits.hits.add(1), limits.ttl.set(window_end + timedelta(minutes=1))],
                condition=limits.hits.does_not_exist() | (limits.hits < limit_per_minute),
            )
        except PynamoDBException as exc:
            if not condition_failed(exc):
                raise
            retry_after = max(1, math.ceil((window_end - now).total_seconds()))
            raise RateLimited(
                f"rate limit of {limit_per_minute} calls per minute reached; retry in {retry_after} s",
                retry_after=retry_after,
            ) from None
