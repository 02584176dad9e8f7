"""S3 event notifications delivered through SQS: which staging keys were created."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["created_keys"]


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


def created_keys(body: str) -> list[str]:
    """Object keys created according to one SQS message body.

    ``s3:TestEvent`` and anything that is not an ObjectCreated record give nothing.
    Keys arrive form-encoded (``+`` for space; moto also encodes ``/``), so they are
    decoded with ``unquote_plus``.
    """
    keys = []
    for record in _records(body):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        key = record.get("s3", {}).get("object", {}).get("key")
        if isinstance(key, str):
            keys.append(unquote_plus(key))
    return keys
