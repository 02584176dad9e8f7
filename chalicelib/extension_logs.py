"""An install's log lines: what the runner logged about its calls, read back for ``GET /installs/{name}/logs``.

The runner writes JSON lines (:mod:`chalicelib.logs`); two of them belong to an extension call and carry
its ``extension``, ``tenant`` and ``request_id``: ``runner.call`` (one per call: outcome, status, duration
and, for a failure, the trap's backtrace and the guest's stderr tail) and ``runner.guest_log`` (what the
guest logged, with ``cap:log.emit``).  Two readers find them:

- :class:`CloudWatchLogReader` (AWS): ``FilterLogEvents`` on the runner's log group (``RUNNER_LOG_GROUP``),
  filtered by extension and tenant on the server, and again here, since the filter pattern is advisory;
- :class:`RunnerLogReader` (the local stack, self-hosting): the runner's ``GET /v1/logs``, the tail it
  keeps in memory (:mod:`runner_container.log_tail`).

Both return :class:`LogPage`: lines oldest first, shaped by :func:`log_line`, and an opaque cursor that
asks for what came after (``extctl logs --follow`` polls with it).  A line never leaves its tenant.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.config import Settings
from chalicelib.errors import BadRequest, StorageError

__all__ = [
    "EXTENSION_EVENTS",
    "CloudWatchLogReader",
    "LogPage",
    "LogQuery",
    "LogReader",
    "RunnerLogReader",
    "log_line",
    "make_log_reader",
]

EXTENSION_EVENTS = frozenset({"runner.call", "runner.guest_log"})
MAX_LIMIT = 500
DEFAULT_SINCE_S = 3600
_MAX_CURSOR = 2048
_MAX_PAGES = 10
_LINE_FIELDS = (
    "request_id",
    "version",
    "outcome",
    "status",
    "duration_ms",
    "truncated",
    "backtrace",
    "stderr",
)
_SAFE_TERM = re.compile(r"[A-Za-z0-9._:@-]{1,256}")


@dataclass(frozen=True)
class LogQuery:
    """Which lines to read: an extension of a tenant, after ``cursor`` (or the last ``since_s`` seconds)."""

    extension: str
    tenant: str
    cursor: str | None = None
    request_id: str | None = None
    limit: int = MAX_LIMIT
    since_s: int = DEFAULT_SINCE_S

    @classmethod
    def parse(cls, extension: str, tenant: str, params: Mapping[str, str]) -> LogQuery:
        """The route's query string: ``cursor``, ``request_id``, ``limit`` (1–500), ``since`` (seconds)."""
        cursor = params.get("cursor") or None
        if cursor is not None and len(cursor) > _MAX_CURSOR:
            raise BadRequest("`cursor` is not one this API gave out")
        request_id = params.get("request_id") or None
        if request_id is not None and not _SAFE_TERM.fullmatch(request_id):
            raise BadRequest("`request_id` must be a request id as the API reports it")
        return cls(
            extension=extension,
            tenant=tenant,
            cursor=cursor,
            request_id=request_id,
            limit=_bounded_int(params.get("limit"), "limit", MAX_LIMIT, 1, MAX_LIMIT),
            since_s=_bounded_int(params.get("since"), "since", DEFAULT_SINCE_S, 1, 14 * 24 * 3600),
        )


def _bounded_int(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadRequest(f"`{name}` must be an integer from {low} to {high}")
    return int(text)


@dataclass(frozen=True)
class LogPage:
    lines: tuple[dict[str, Any], ...]
    cursor: str

    def to_json(self) -> dict[str, Any]:
        return {"lines": list(self.lines), "cursor": self.cursor}


def log_line(record: Mapping[str, Any], query: LogQuery) -> dict[str, Any] | None:
    """``record`` (one runner JSON line) as an API line, or None when it is not one of ``query``'s lines.

    ``{"ts": epoch seconds, "level", "kind": "call"|"log", "message", "request_id", …}``: a guest line's
    message and level are the guest's own; a call line has its ``outcome`` (``ok`` or the error code),
    ``status`` or, when it failed, the error's ``message``, ``backtrace`` and ``stderr``.
    """
    event = record.get("event")
    if event not in EXTENSION_EVENTS:
        return None
    if record.get("extension") != query.extension or record.get("tenant") != query.tenant:
        return None
    if query.request_id is not None and record.get("request_id") != query.request_id:
        return None
    guest = event == "runner.guest_log"
    level = record.get("guest_level" if guest else "level")
    line: dict[str, Any] = {
        "ts": record.get("ts"),
        "kind": "log" if guest else "call",
        "level": "warn" if level == "warning" else level,
    }
    message = record.get("guest_message" if guest else "error")
    if message is not None:
        line["message"] = message
    line.update({name: record[name] for name in _LINE_FIELDS if record.get(name) is not None})
    return line


class LogReader(Protocol):
    def read(self, query: LogQuery) -> LogPage: ...


class RunnerLogReader:
    """The runner's in-memory tail, through its ``GET /v1/logs`` (the runner's token)."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        import urllib3

        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._pool = urllib3.PoolManager(maxsize=2, retries=False)
        self._timeout = timeout_s

    def read(self, query: LogQuery) -> LogPage:
        import urllib3

        fields = {"extension": query.extension, "tenant": query.tenant, "limit": str(query.limit)}
        if query.cursor is not None:
            if not query.cursor.isdigit():
                raise BadRequest("`cursor` is not one this API gave out")
            fields["after"] = query.cursor
        if query.request_id is not None:
            fields["request_id"] = query.request_id
        try:
            response = self._pool.request(
                "GET", f"{self._base}/v1/logs", fields=fields, headers=self._headers, timeout=self._timeout
            )
            data = json.loads(response.data)
        except (urllib3.exceptions.HTTPError, ValueError) as exc:
            raise StorageError(f"the runner's logs cannot be read: {type(exc).__name__}") from None
        if response.status != 200 or not isinstance(data, Mapping) or not isinstance(data.get("records"), list):
            raise StorageError(f"the runner's logs answered {response.status}")
        lines = (log_line(record, query) for record in data["records"] if isinstance(record, Mapping))
        return LogPage(tuple(line for line in lines if line is not None), str(data.get("cursor", "0")))


def _encode_cursor(timestamp_ms: int, event_ids: list[str]) -> str:
    raw = json.dumps({"t": timestamp_ms, "ids": event_ids}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, frozenset[str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        timestamp, ids = int(data["t"]), data["ids"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest("`cursor` is not one this API gave out") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("`cursor` is not one this API gave out")
    return timestamp, frozenset(ids)


def _filter_pattern(query: LogQuery) -> str | None:
    """CloudWatch's JSON filter for the query's terms, when every term is safe to quote in one."""
    terms = {"extension": query.extension, "tenant": query.tenant, "request_id": query.request_id}
    chosen = {name: value for name, value in terms.items() if value is not None}
    if not all(_SAFE_TERM.fullmatch(value) for value in chosen.values()):
        return None
    return "{ " + " && ".join(f'($.{name} = "{value}")' for name, value in chosen.items()) + " }"


class CloudWatchLogReader:
    """``FilterLogEvents`` on the runner's log group.

    The cursor holds the newest timestamp returned and the event ids seen at it: CloudWatch's
    ``startTime`` is inclusive, and events of one millisecond may arrive in separate polls.
    """

    def __init__(self, client: Any, log_group: str, *, clock: Any = time.time) -> None:
        self.client = client
        """The CloudWatch Logs client it reads with."""
        self._group = log_group
        self._clock = clock

    def read(self, query: LogQuery) -> LogPage:
        if query.cursor is not None:
            start_ms, seen = _decode_cursor(query.cursor)
        else:
            start_ms, seen = int((self._clock() - query.since_s) * 1000), frozenset()
        events = self._events(query, start_ms)
        # Stable: events of one millisecond keep the order CloudWatch gave them.
        events.sort(key=lambda event: int(event["timestamp"]))
        lines: list[dict[str, Any]] = []
        last_ms, last_ids = start_ms, set(seen)
        for event in events:
            if event["timestamp"] == start_ms and event["eventId"] in seen:
                continue
            if len(lines) == query.limit:
                break
            if event["timestamp"] != last_ms:
                last_ms, last_ids = event["timestamp"], set()
            last_ids.add(event["eventId"])
            line = _event_line(event, query)
            if line is not None:
                lines.append(line)
        return LogPage(tuple(lines), _encode_cursor(last_ms, sorted(last_ids)))

    def _events(self, query: LogQuery, start_ms: int) -> list[dict[str, Any]]:
        arguments: dict[str, Any] = {"logGroupName": self._group, "startTime": start_ms, "limit": MAX_LIMIT}
        pattern = _filter_pattern(query)
        if pattern is not None:
            arguments["filterPattern"] = pattern
        events: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            try:
                answer = self.client.filter_log_events(**arguments)
            except Exception as exc:  # botocore's errors: the logs are unreadable, say so with the code
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                raise StorageError(f"CloudWatch Logs cannot be read ({code})") from None
            events.extend(answer.get("events", []))
            token = answer.get("nextToken")
            if not token or len(events) >= query.limit:
                break
            arguments["nextToken"] = token
        return events


def _event_line(event: Mapping[str, Any], query: LogQuery) -> dict[str, Any] | None:
    try:
        record = json.loads(event.get("message", ""))
    except ValueError:
        return None  # Lambda's own START/END/REPORT lines
    return log_line(record, query) if isinstance(record, Mapping) else None


def make_log_reader(settings: Settings) -> LogReader | None:
    """The reader for where the runner logs: CloudWatch with ``RUNNER_LOG_GROUP``, else the runner's HTTP
    mode with ``RUNNER_BASE_URL``; None when neither is set."""
    if settings.runner_log_group:
        import boto3

        logs = boto3.client("logs", region_name=settings.storage_s3_region)
        return CloudWatchLogReader(logs, settings.runner_log_group)
    if settings.runner_base_url:
        return RunnerLogReader(settings.runner_base_url, str(settings.runner_auth_token))
    return None
