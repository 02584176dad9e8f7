"""The local stack's AWS: moto's server (S3, DynamoDB, SQS, KMS) on 127.0.0.1, and the environment the
AWS SDKs read to reach it.

moto's server answers each request on a thread of its own, and its DynamoDB backend takes no lock: two
conditional writes can both pass their condition, and a cancelled ``TransactWriteItems`` restores a
snapshot of the tables taken before it began, erasing what other requests wrote meanwhile.  DynamoDB
applies each request (each transaction) as one step.  So this server runs DynamoDB requests one at a
time, by a lock around moto's own WSGI application, and everything else concurrently: clients still
race each other between requests, which are the races the platform must survive.

moto's documented server, ``ThreadedMotoServer``, takes no middleware, so this module builds the same
server from the same public names it uses (``moto.moto_server.werkzeug_app``: ``DomainDispatcherApplication``
over ``create_backend_app``, served with ``MotoRequestHandler``) and adds the lock as WSGI middleware;
nothing of moto is patched.  Written against moto 5.2.5 (requirements-dev.txt); tests/integration/
test_devstack.py fails if an upgrade changes what this relies on.  moto keeps its state per process:
every moto server in one process shares it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import ThreadedWSGIServer

from chalicelib.logs import log_connection_error, log_event
from runner_container.server import LISTEN_BACKLOG

__all__ = ["AwsServer", "aws_environment"]

REGION = "us-east-1"
_DYNAMODB_TARGET = "DynamoDB_"
"""``X-Amz-Target`` of every DynamoDB API call starts with this (``DynamoDB_20120810.PutItem``)."""
_SDK_OVERRIDES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB")
"""Variables that would send an SDK elsewhere than the endpoint: unset while the stack runs."""

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _DynamoDbOneAtATime:
    """WSGI middleware: DynamoDB requests run one at a time, body and answer included; others pass."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(_DYNAMODB_TARGET):
            return self._app(environ, start_response)
        with self._lock:
            return list(self._app(environ, start_response))


class _AwsRequestHandler(MotoRequestHandler):
    """moto's handler without werkzeug's access log: the pump alone polls SQS every second."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Not logged: the platform's own lines say what it asked of AWS."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """werkzeug's other lines about a request (a malformed one, say) as JSON."""
        _log_werkzeug(type, message % args if args else message)


def _log_werkzeug(type: str, message: str) -> None:
    """A line werkzeug would write to stderr itself, as a JSON line of the dev log at its level."""
    level = logging.ERROR if type == "error" else logging.INFO
    log_event("aws.server", level=level, message=message.rstrip())


class _AwsHttpServer(ThreadedWSGIServer):
    """werkzeug's threaded server, holding a burst of connections, logging as the rest of the stack."""

    request_queue_size = LISTEN_BACKLOG

    def log(self, type: str, message: str, *args: Any) -> None:
        """A request moto failed on, with werkzeug's traceback in the message."""
        _log_werkzeug(type, message % args if args else message)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log_connection_error("aws.connection_error", client_address)


class AwsServer:
    """moto's server on 127.0.0.1: :meth:`start` it, use :attr:`url`, :meth:`stop` it."""

    def __init__(self, port: int = 0) -> None:
        app = _DynamoDbOneAtATime(DomainDispatcherApplication(create_backend_app))
        self._server = _AwsHttpServer("127.0.0.1", port, app, handler=_AwsRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> AwsServer:
        self._thread.start()
        return self

    def reset(self) -> None:
        """Forget every bucket, table, queue and key (moto's whole state in this process)."""
        requests.post(f"{self.url}/moto-api/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _aws_variables(endpoint: str) -> dict[str, str]:
    """What an AWS SDK needs to talk to ``endpoint`` with throwaway credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": REGION,
    }


@contextmanager
def aws_environment(endpoint: str) -> Iterator[Mapping[str, str]]:
    """Point this process's AWS SDK clients at ``endpoint`` inside the block, then put the environment back.

    boto3 and pynamodb take their endpoint and credentials from the process environment, and the
    platform's code reaches AWS only through them (DESIGN §2): this is the one setting the local stack
    cannot pass as an argument.  Yields the variables set.
    """
    values = _aws_variables(endpoint)
    saved = {name: os.environ.get(name) for name in (*values, *_SDK_OVERRIDES)}
    for name in _SDK_OVERRIDES:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield values
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
