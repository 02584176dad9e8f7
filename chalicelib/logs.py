"""Structured JSON logs: one object per line, the same fields everywhere.

Every stage of a request logs ``event``, ``outcome`` and ``duration_ms`` with the
request's identifiers (``request_id``, ``tenant``, ``upload_id``,
``content_hash``), so one query in CloudWatch Logs Insights follows an upload
from initiate to the runner's precompile.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from chalicelib.errors import ExtError

__all__ = [
    "LOGGER",
    "JsonFormatter",
    "bind",
    "configure_logging",
    "log_connection_error",
    "log_event",
    "stage",
    "stage_at",
]

LOGGER = logging.getLogger("ext")
_BOUND: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "ext_log_fields", default=MappingProxyType({})
)
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        data.update(_BOUND.get())
        data.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info and record.levelno >= logging.ERROR:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    """Send the ``ext`` logger's records to stderr as JSON lines (idempotent)."""
    if any(isinstance(h.formatter, JsonFormatter) for h in LOGGER.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False


def _extra(fields: dict[str, Any]) -> dict[str, Any]:
    # LogRecord refuses extras that shadow its own attributes (``message``, ``name``…).
    return {(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items() if v is not None}


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (a request id, the tenant) to every line logged inside the block."""
    token = _BOUND.set({**_BOUND.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _BOUND.reset(token)


def log_event(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, event, extra=_extra(fields))


def log_connection_error(event: str, client: object) -> None:
    """Log the exception a server is handling outside any request's own handling (its ``handle_error``).

    A client that went away (reset, broken pipe, timed out) is ordinary traffic: one ``debug`` line with
    ``outcome: client_disconnected`` and no traceback.  Anything else is an ``error`` with its traceback.
    """
    failure = sys.exc_info()[1]
    if isinstance(failure, ConnectionError | TimeoutError):
        log_event(
            event, level=logging.DEBUG, outcome="client_disconnected", error=type(failure).__name__, client=str(client)
        )
        return
    LOGGER.exception(event, extra=_extra({"outcome": "error", "client": str(client)}))


@contextmanager
def stage(event: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Log ``event`` once it ends, with its duration and outcome.

    The yielded dict collects fields learned during the stage (a content hash,
    say).  An ``ExtError`` is logged with its code as the outcome; anything else
    as ``error`` with its traceback.
    """
    with stage_at(logging.INFO, event, **fields) as learned:
        yield learned


@contextmanager
def stage_at(level: int, event: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """:func:`stage`, with its ``ok`` and ``ExtError`` lines at ``level``.

    For stages that run many times per request (KV operations log at ``DEBUG``); an
    unexpected error is always logged as an error.
    """
    started = time.perf_counter()
    learned: dict[str, Any] = {}
    try:
        yield learned
    except ExtError as exc:
        log_event(
            event, level=level, outcome=exc.code, message=exc.message, duration_ms=_ms(started), **fields, **learned
        )
        raise
    except Exception:
        LOGGER.exception(event, extra=_extra({"outcome": "error", "duration_ms": _ms(started), **fields, **learned}))
        raise
    log_event(event, level=level, outcome="ok", duration_ms=_ms(started), **fields, **learned)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
