"""S3 event notifications delivered through SQS: which staging keys were created."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote_plus

__all__ = ["CreatedObject", "created_objects", "finalize_request"]

_REQUESTED = "ObjectCreated:FinalizeRequested"


@dataclass(frozen=True)
class CreatedObject:
    key: str
    requested: bool
    """True for an explicit finalize request (``finalize_request``), not an S3 notification."""


def _records(body: str) -> Iterable[Mapping[str, Any]]:
    try:
        message = json.loads(body)
    except ValueError:
        return ()
    if not isinstance(message, Mapping):
        return ()
    # An SNS fan-out wraps the S3 event once more.
    if message.get("Type") == "Notification" and isinstance(message.get("Message"), str):
        return _records(message["Message"])
    records = message.get("Records")
    return [r for r in records if isinstance(r, Mapping)] if isinstance(records, list) else ()


def created_objects(body: str) -> list[CreatedObject]:
    """Objects created according to one SQS message body.

    ``s3:TestEvent`` and anything that is not an ObjectCreated record give nothing.
    Keys arrive form-encoded (``+`` for space; moto also encodes ``/``), so they are
    decoded with ``unquote_plus``.
    """
    found = []
    for record in _records(body):
        name = str(record.get("eventName", ""))
        if not name.startswith("ObjectCreated:"):
            continue
        key = record.get("s3", {}).get("object", {}).get("key")
        if isinstance(key, str):
            found.append(CreatedObject(key=unquote_plus(key), requested=name == _REQUESTED))
    return found


def finalize_request(bucket: str, key: str) -> str:
    """A queue message asking the finalize worker to finalize ``key``.

    It has the shape of an S3 ObjectCreated notification, so the worker reads it
    with :func:`created_objects` like any other.
    """
    record = {
        "eventSource": "ext:finalize",
        "eventName": _REQUESTED,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
    }
    return json.dumps({"Records": [record]})
