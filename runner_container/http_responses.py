"""The responses of the runner's HTTP surfaces (HTTP mode and the Lambda function URL), and JSON errors.

Every response carries :data:`SECURITY_HEADERS`; errors are DESIGN §4's ``{"error": {"code", "message",
"request_id"}}`` with ``Cache-Control: no-store`` and, when the error says when to retry, ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from chalicelib.errors import ExtError
from chalicelib.logs import log_event

__all__ = [
    "NO_STORE",
    "SAFE_METHODS",
    "SECURITY_HEADERS",
    "HttpResponse",
    "error_response",
    "json_error",
    "json_response",
    "log_error_detail",
    "method_not_allowed",
]

NO_STORE = "no-store"
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
"""Headers on every response (the host app on another origin embeds the UI assets)."""


@dataclass(frozen=True)
class HttpResponse:
    """A response of the runner's HTTP surfaces: ``body``, or an open ``file`` to stream (then closed)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    file: BinaryIO | None = field(default=None, compare=False)

    def read_body(self) -> bytes:
        """The whole body; closes ``file``."""
        if self.file is None:
            return self.body
        with self.file:
            return self.file.read()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def json_response(status: int, document: Any, headers: Mapping[str, str] | None = None) -> HttpResponse:
    body = json.dumps(document, separators=(",", ":")).encode()
    return HttpResponse(
        status,
        {
            **SECURITY_HEADERS,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            **(headers or {}),
        },
        body,
    )


def json_error(
    status: int, code: str, message: str, request_id: str | None = None, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """A JSON error of DESIGN §4 (``{"error": {"code", "message", "request_id"}}``); never cached."""
    error: dict[str, str] = {"code": code, "message": message}
    if request_id is not None:
        error["request_id"] = request_id
    return json_response(status, {"error": error}, {"Cache-Control": NO_STORE, **(headers or {})})


def error_response(exc: ExtError, request_id: str | None = None) -> HttpResponse:
    """``exc`` as its JSON error with its HTTP status, and ``Retry-After`` when it says when to retry.

    An operator-side failure (``exc.hides_detail``: storage, configuration, a bug) is logged whole with the
    request id, and the client gets its generic message: the detail names storage keys and S3's own codes.
    """
    request_id = request_id or uuid.uuid4().hex
    log_error_detail(exc, request_id)
    headers = {"Cache-Control": NO_STORE}
    retry_after = exc.details.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after)))
    return json_response(exc.http_status, exc.to_client_dict(request_id), headers)


def log_error_detail(exc: ExtError, request_id: str) -> None:
    """Log the whole message of an error whose client sees only its generic message."""
    if exc.hides_detail:
        log_event("runner.error", level=logging.ERROR, request_id=request_id, outcome=exc.code, message=exc.message)


def method_not_allowed(method: str, allowed: tuple[str, ...], request_id: str | None = None) -> HttpResponse:
    message = f"{method} is not allowed here; use {' or '.join(allowed)}"
    return json_error(405, "METHOD_NOT_ALLOWED", message, request_id, {"Allow": ", ".join(allowed)})
