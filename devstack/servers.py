"""The API's HTTP server on the local stack: Chalice's local server around the app, as ``chalice local``
serves it, with this stack's request handler.

The runner's server is :mod:`runner_container.server`'s own (its HTTP mode); the AWS one is
:mod:`devstack.aws`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalChalice, LocalDevServer, ThreadedHTTPServer, create_local_server

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


class ApiServer:
    """The Chalice ``app`` on 127.0.0.1:``port`` (0: a free one), bound at construction.

    Serve with :meth:`serve_forever`, stop with :meth:`shutdown` from another thread, then :meth:`close`.
    """

    def __init__(self, app: Any, port: int, config: Config | None = None) -> None:
        config = config or chalice_config()
        _local_ready(app, config)
        self._local = LocalDevServer(
            app, config, "127.0.0.1", port, handler_cls=_ApiHandler, server_cls=ThreadedHTTPServer
        )

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
