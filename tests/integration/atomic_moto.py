"""A moto server that applies each request atomically, as DynamoDB does, for concurrency tests.

moto's server answers requests on many threads, and its DynamoDB backend does not lock: a
conditional write checks, then writes, and another thread's write can land in between; a cancelled
``TransactWriteItems`` even restores a snapshot of the tables taken before it started, erasing
writes other threads made meanwhile.  DynamoDB applies each request (and each transaction) as one
step.  This server runs moto's own WSGI application behind one lock, so every request is atomic
while clients still race each other between requests: the races a service must survive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

__all__ = ["atomic_moto_server"]


class _OneRequestAtATime:
    """WSGI middleware: the wrapped application serves one request at a time, body included."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


@pytest.fixture(scope="session")
def atomic_moto_server() -> Iterator[str]:
    """The URL of a moto server on a free port of 127.0.0.1 whose requests are each atomic."""
    app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=10)
