"""The API's HTTP server on the local stack: Chalice's local server around the app, as ``chalice local``
serves it, with this stack's request handler.

The runner's server is :mod:`runner_container.server`'s own (its HTTP mode); the AWS one is
:mod:`devstack.aws`.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    ForbiddenError,
    LocalChalice,
    LocalDevServer,
    LocalGatewayException,
    ThreadedHTTPServer,
    create_local_server,
)

from chalicelib.errors import BadRequest, ExtError, Forbidden, MethodNotAllowed, RouteNotFound
from chalicelib.logs import log_connection_error, log_event
from runner_container.server import LISTEN_BACKLOG

__all__ = ["ApiServer", "chalice_config"]

ROOT = Path(__file__).resolve().parent.parent
"""The platform's checkout: the Chalice project (``.chalice/config.json``)."""


def chalice_config(stage: str = "dev") -> Config:
    """The Chalice project's configuration of ``stage`` (timeouts and memory the local gateway applies)."""
    return CLIFactory(str(ROOT)).create_config_obj(chalice_stage_name=stage)


class _ApiHandler(ChaliceRequestHandler):
    def setup(self) -> None:
        super().setup()
        # See runner_container.server: keep-alive calls would wait ~40 ms on Nagle.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method it has no ``do_<METHOD>`` for (TRACE, CONNECT…) with its own 501
        # page; the app answers it instead: 405 METHOD_NOT_ALLOWED with the route's ``Allow``.
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own rejections (a method no route takes, such as TRACE; a malformed request)
        in the contract's format rather than its HTML page."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            error: ExtError = MethodNotAllowed(f"the platform takes no {self.command} requests")
        else:
            error = BadRequest(message or HTTPStatus(code).phrase)
        self.close_connection = True
        self._send_contract_error(error, {"Connection": "close"})

    def _send_error_response(self, error: LocalGatewayException) -> None:
        # Chalice's local gateway answers a path no route has as API Gateway does (403 "Missing
        # Authentication Token"); infra/template.yaml maps that to ROUTE_NOT_FOUND, and so does this.
        # A private method of chalice 1.34's handler; tests/integration/test_edges.py fails if it moves.
        if isinstance(error, ForbiddenError):
            self._send_contract_error(RouteNotFound(f"no route has the path {self.path.split('?', 1)[0]}"), {})
        else:
            self._send_contract_error(Forbidden("the request was refused"), {})

    def _send_contract_error(self, error: ExtError, headers: dict[str, str]) -> None:
        body = json.dumps(error.to_client_dict(str(uuid.uuid4()))).encode()
        self.send_response(error.http_status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One JSON line at ``debug`` (the standard library writes a line of its own to stderr)."""
        # A malformed request line is answered before http.server has set a path.
        path = getattr(self, "path", None)
        log_event("api.request", level=logging.DEBUG, method=self.command, path=path, status=str(code))

    def log_message(self, format: str, *args: Any) -> None:
        """The standard library's other notes (a malformed request, a timeout): a JSON line at ``debug``."""
        log_event("api.http", level=logging.DEBUG, message=format % args)


class _ApiHttpServer(ThreadedHTTPServer):
    """Chalice's threaded server, holding a burst of connections, logging a failed one as JSON."""

    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        log_connection_error("api.connection_error", client_address)


class ApiServer:
    """The Chalice ``app`` on 127.0.0.1:``port`` (0: a free one), bound at construction.

    Serve with :meth:`serve_forever`, stop with :meth:`shutdown` from another thread, then :meth:`close`.
    """

    def __init__(self, app: Any, port: int, config: Config | None = None) -> None:
        config = config or chalice_config()
        _local_ready(app, config)
        self._local = LocalDevServer(app, config, "127.0.0.1", port, handler_cls=_ApiHandler, server_cls=_ApiHttpServer)

    @property
    def port(self) -> int:
        port: int = self._local.server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_forever(self) -> None:
        self._local.server.serve_forever()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (call it from another thread); returns once it has returned."""
        self._local.server.shutdown()

    def close(self) -> None:
        self._local.server.server_close()


def _local_ready(app: Any, config: Config) -> None:
    """Give ``app`` a per-thread ``current_request``, as Chalice's local mode does, once per process.

    Chalice does this only inside ``create_local_server`` (which serves with its own handler), so that
    is called once on a throwaway port.
    """
    if not isinstance(app, LocalChalice):
        create_local_server(app, config, "127.0.0.1", 0).server.server_close()
