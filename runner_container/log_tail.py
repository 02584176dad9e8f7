"""The runner's recent extension log lines, kept in memory for its HTTP mode (``GET /v1/logs``).

In AWS the runner's lines go to CloudWatch Logs and the API reads them there; a runner in HTTP mode
(the local stack, self-hosting) has no such store, so it keeps the last :data:`TAIL_RECORDS` lines that
belong to an extension call (``runner.call``, ``runner.guest_log``) as the JSON objects its log handler
writes (:class:`chalicelib.logs.JsonFormatter`), each numbered so a reader can ask for what came after.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.extension_logs import EXTENSION_EVENTS
from chalicelib.logs import LOGGER, JsonFormatter

__all__ = ["TAIL_RECORDS", "LogTail", "TailPage"]

TAIL_RECORDS = 5000
"""Lines kept (oldest dropped first): a few MiB at most, since a line's stderr and backtrace are bounded."""


@dataclass(frozen=True)
class TailPage:
    """Lines after a cursor, oldest first, and the cursor that follows them."""

    records: tuple[Mapping[str, Any], ...]
    cursor: int

    def to_dict(self) -> dict[str, Any]:
        return {"records": list(self.records), "cursor": str(self.cursor)}


class LogTail(logging.Handler):
    """A handler keeping the extension lines of :data:`~chalicelib.logs.LOGGER`; attach, query, detach."""

    def __init__(self, capacity: int = TAIL_RECORDS) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self._records: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)
        self._seq = 0
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() not in EXTENSION_EVENTS or not getattr(record, "extension", None):
            return
        data = json.loads(self.format(record))
        with self._lock_records:
            self._seq += 1
            self._records.append((self._seq, data))

    def attach(self) -> LogTail:
        LOGGER.addHandler(self)
        return self

    def detach(self) -> None:
        LOGGER.removeHandler(self)

    def query(
        self, extension: str, tenant: str, *, after: int = 0, request_id: str | None = None, limit: int = 500
    ) -> TailPage:
        """The lines of ``extension`` in ``tenant`` numbered after ``after`` (and of ``request_id`` when given).

        The cursor is the number of the last line returned, or the newest line's when none matched, so a
        follower skips what it was not asked about.
        """
        with self._lock_records:
            snapshot = list(self._records)
        found: list[Mapping[str, Any]] = []
        cursor = max(after, snapshot[-1][0] if snapshot else 0)
        for seq, data in snapshot:
            if seq <= after:
                continue
            if data.get("extension") != extension or data.get("tenant") != tenant:
                continue
            if request_id is not None and data.get("request_id") != request_id:
                continue
            found.append(data)
            if len(found) == limit:
                cursor = seq
                break
        return TailPage(tuple(found), cursor)
