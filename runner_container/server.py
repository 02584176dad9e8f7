"""The runner's HTTP mode (local stack and self-hosting), on the standard library's threading server.

Routes:

- ``POST /v1/execute`` and ``POST /v1/precompile``: need ``Authorization: Bearer <RUNNER_AUTH_TOKEN>``
  (compared in constant time); JSON bodies up to :data:`MAX_BODY_BYTES` with a ``Content-Length``;
- ``GET|HEAD /ext-ui/{extension}/{content_hash}/{path}``: UI assets (:mod:`runner_container.ui`), public;
- ``GET|HEAD /healthz``: ``{"status": "ok"}`` to anyone; with the bearer token also the engine fingerprint
  and the cache's figures;
- ``GET /v1/logs?extension=&tenant=&after=&request_id=&limit=``: with the bearer token, the extension lines
  this server keeps (:mod:`runner_container.log_tail`), for the API's ``GET /installs/{name}/logs``.

Every ``ExtError`` becomes its status and ``{"error": {"code", "message", "request_id"}}``; anything
unexpected is a logged ``500 INTERNAL``.  Each request logs one JSON line (method, path, status,
duration, content hash, request id) through :func:`chalicelib.logs.log_event`.

The server refuses to start without a token unless explicitly told it is a development server
(``insecure_no_auth``): the execute route runs code with the grants the caller names, so it must only
answer the gateway.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chalicelib.config import Settings
from chalicelib.errors import (
    BadRequest,
    ExtError,
    Internal,
    NotFound,
    PayloadTooLarge,
    SettingsInvalid,
    Unauthenticated,
)
from chalicelib.logs import LOGGER, log_connection_error, log_event
from runner_container.http_responses import (
    SAFE_METHODS,
    HttpResponse,
    error_response,
    json_error,
    json_response,
    method_not_allowed,
)
from runner_container.log_tail import LogTail
from runner_container.service import RunnerService, build_service
from runner_container.ui import UI_PREFIX

__all__ = ["LISTEN_BACKLOG", "MAX_BODY_BYTES", "RunnerHTTPServer", "make_server", "serve"]

MAX_BODY_BYTES = 6 * 1024 * 1024
"""Largest execute/precompile body: the gateway's body cap (default 4 MiB) plus its JSON envelope."""
IDLE_TIMEOUT_S = 30
LISTEN_BACKLOG = 1024
"""Connections the kernel queues before this server accepts them (capped by ``net.core.somaxconn``).

The standard library's default of 5 resets or stalls a burst of connections (a page loading its
assets, a load test): the server accepts them one by one, on one thread, however many arrive at once.
"""
DRAIN_TIMEOUT_S = 10.0
_COPY_CHUNK = 64 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_HASH_IN_UI_PATH = re.compile(r"^/ext-ui/[^/]+/(sha256(?::|%3[Aa])[0-9a-f]{64})")
_POST_ROUTES = ("/v1/execute", "/v1/precompile")
_LOGS_ROUTE = "/v1/logs"
_MAX_LOG_LINES = 500
_POST_ONLY = ("POST",)
_BASE_ERROR_CODES = {501: "NOT_IMPLEMENTED"}


@dataclass
class _Exchange:
    """What one request's log line reports, filled in as the request is handled."""

    method: str
    path: str
    request_id: str
    content_hash: str | None = None
    body_read: bool = False


class RunnerHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one :class:`RunnerService`; ``auth_token`` None means no auth."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], service: RunnerService, auth_token: str | None) -> None:
        super().__init__(address, _Handler)
        self.service = service
        self.auth_token = auth_token
        self.log_tail = LogTail().attach()
        self._active = 0
        self._idle = threading.Condition()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def begin(self) -> None:
        with self._idle:
            self._active += 1

    def end(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def server_close(self) -> None:
        self.log_tail.detach()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed outside any request's own error handling: log it (the base class prints)."""
        log_connection_error("runner.connection_error", client_address)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled (after :meth:`shutdown`); False if time ran out."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)


def _request_id(header: str | None) -> str:
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class _Handler(BaseHTTPRequestHandler):
    server: RunnerHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's
        # algorithm meets the client's delayed ACK and each keep-alive call waits ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    server_version = "ext-runner"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: every request is logged once, as JSON, by :meth:`_dispatch`."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests the base class rejects get the same JSON errors as everything else."""
        error_code = _BASE_ERROR_CODES.get(code, "BAD_REQUEST" if code < 500 else "INTERNAL")
        response = json_error(code, error_code, message or HTTPStatus(code).phrase)
        self._send(response, head=self.command == "HEAD", close=True)
        # The request line may not have parsed, so the path may be unknown.
        log_event("runner.request", method=self.command, path=getattr(self, "path", None), status=code)

    # --- one request ---------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        exchange = _Exchange(method, path, _request_id(self.headers.get("X-Request-Id")))
        self.server.begin()
        try:
            response = self._respond(exchange)
            # An unread body would be parsed as the next request on this connection: close it instead.
            close = not exchange.body_read and self._has_body()
            self._send(response, head=method == "HEAD", close=close, request_id=exchange.request_id)
        finally:
            self.server.end()
        log_event(
            "runner.request",
            method=method,
            path=path,
            status=response.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            content_hash=exchange.content_hash,
            request_id=exchange.request_id,
        )

    def _respond(self, exchange: _Exchange) -> HttpResponse:
        try:
            return self._route(exchange)
        except ExtError as exc:
            return error_response(exc, exchange.request_id)
        except Exception:
            LOGGER.exception("runner.unhandled_error", extra={"request_id": exchange.request_id})
            internal = Internal("unexpected runner error")
            return error_response(internal, exchange.request_id)

    def _route(self, exchange: _Exchange) -> HttpResponse:
        service = self.server.service
        method, path = exchange.method, exchange.path
        if path.startswith(UI_PREFIX):
            match = _HASH_IN_UI_PATH.match(path)
            exchange.content_hash = match.group(1).replace("%3A", ":").replace("%3a", ":") if match else None
            if_none_match = self.headers.get("If-None-Match")
            return service.ui.serve(method, path, if_none_match=if_none_match, request_id=exchange.request_id)
        if path == "/healthz":
            if method not in SAFE_METHODS:
                return method_not_allowed(method, SAFE_METHODS, exchange.request_id)
            # Versions and cache figures help an attacker more than a load balancer: only the gateway's token.
            health = service.health() if self._authorized() else {"status": "ok"}
            return json_response(200, health, {"Cache-Control": "no-store"})
        if path == _LOGS_ROUTE:
            if method not in SAFE_METHODS:
                return method_not_allowed(method, SAFE_METHODS, exchange.request_id)
            self._authorize()
            return json_response(200, self._logs(), {"Cache-Control": "no-store"})
        if path not in _POST_ROUTES:
            raise NotFound(f"no route {path}")
        if method != "POST":
            return method_not_allowed(method, _POST_ONLY, exchange.request_id)
        self._authorize()
        payload = self._read_json(exchange)
        if isinstance(payload.get("content_hash"), str):
            exchange.content_hash = payload["content_hash"]
        if path == "/v1/execute":
            return json_response(200, service.execute(payload).to_dict())
        return json_response(200, service.precompile(payload.get("content_hash")).to_dict())

    def _logs(self) -> dict[str, Any]:
        query = {name: values[-1] for name, values in parse_qs(urlsplit(self.path).query).items()}
        extension, tenant = query.get("extension"), query.get("tenant")
        if not extension or not tenant:
            raise BadRequest("`extension` and `tenant` are required")
        after, limit = query.get("after", "0"), query.get("limit", "500")
        if not after.isdigit() or not limit.isdigit() or not 1 <= int(limit) <= _MAX_LOG_LINES:
            raise BadRequest(f"`after` must be a line number and `limit` from 1 to {_MAX_LOG_LINES}")
        page = self.server.log_tail.query(
            extension, tenant, after=int(after), request_id=query.get("request_id"), limit=int(limit)
        )
        return page.to_dict()

    def _authorized(self) -> bool:
        """Whether the request carries the runner's token (always, for a server started without one)."""
        expected = self.server.auth_token
        if expected is None:
            return True
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())

    def _authorize(self) -> None:
        if not self._authorized():
            raise Unauthenticated("a valid 'Authorization: Bearer <RUNNER_AUTH_TOKEN>' header is required")

    def _has_body(self) -> bool:
        return self.headers.get("Transfer-Encoding") is not None or self.headers.get("Content-Length", "0") != "0"

    def _read_json(self, exchange: _Exchange) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding") is not None:
            raise BadRequest("chunked request bodies are not supported; send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            raise BadRequest("a Content-Length header with the body's size is required")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the request body is {length} bytes (limit {MAX_BODY_BYTES})")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise BadRequest(f"the request body did not arrive within {IDLE_TIMEOUT_S} s") from None
        exchange.body_read = True
        if len(body) != length:
            raise BadRequest("the request body ended before Content-Length bytes")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the request body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadRequest("the request body must be a JSON object")
        return payload

    def _send(self, response: HttpResponse, *, head: bool, close: bool, request_id: str | None = None) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if request_id is not None:
                self.send_header("X-Request-Id", request_id)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if head:
                return
            if response.file is not None:
                shutil.copyfileobj(response.file, self.wfile, _COPY_CHUNK)
            else:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client went away mid-response; nothing is left to tell it.
            self.close_connection = True
        finally:
            response.close()


def make_server(service: RunnerService, host: str, port: int, *, insecure_no_auth: bool = False) -> RunnerHTTPServer:
    """A bound, not yet serving, server (port 0 picks a free port; see ``server.url``).

    Raises ``SettingsInvalid`` when ``RUNNER_AUTH_TOKEN`` is empty, unless ``insecure_no_auth`` is set.
    """
    token = str(service.settings.runner_auth_token)
    if not token and not insecure_no_auth:
        raise SettingsInvalid("RUNNER_AUTH_TOKEN is empty; set it, or pass --insecure-no-auth for local development")
    if insecure_no_auth:
        log_event(
            "runner.auth_disabled",
            level=logging.WARNING,
            reason="--insecure-no-auth: anyone reaching this port may execute",
        )
    return RunnerHTTPServer((host, port), service, None if insecure_no_auth else token)


def serve(settings: Settings, host: str, port: int, *, insecure_no_auth: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting, let running requests finish, and close.

    Must run on the main thread (it installs the signal handlers).
    """
    service = build_service(settings)
    try:
        server = make_server(service, host, port, insecure_no_auth=insecure_no_auth)
    except BaseException:
        service.close()
        raise

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, which runs on this very thread: ask from another one.
        threading.Thread(target=server.shutdown, name="runner-shutdown", daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        log_event("runner.listening", url=server.url, fingerprint=service.health()["fingerprint"])
        server.serve_forever(poll_interval=0.5)
        if not server.wait_idle(DRAIN_TIMEOUT_S):
            log_event("runner.shutdown_with_requests_running", level=logging.WARNING, waited_s=DRAIN_TIMEOUT_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
        service.close()
        log_event(
            "runner.stopped",
        )
