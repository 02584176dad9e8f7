"""The whole platform on one machine: moto (S3, DynamoDB, SQS, KMS), the Chalice app, the runner in HTTP
mode (running its compile jobs itself) and a pump from SQS to the finalize worker.

Everything runs in this process on 127.0.0.1.  The stack is given its settings (:class:`StackConfig`) and
passes them to each part as a :class:`~chalicelib.config.Settings`; only the AWS SDKs' endpoint and
credentials go through the environment (:func:`devstack.aws.aws_environment`), exactly as the deployed
code is pointed at AWS.  One stack per process at a time: the app and moto's state are per process.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import app as app_module
from chalicelib.auth import issue_token
from chalicelib.config import Settings, load_settings
from devstack.aws import AwsServer, aws_environment
from devstack.ports import ensure_free
from devstack.provision import QUEUE_NAME, provision
from devstack.pump import FinalizePump
from devstack.servers import ApiServer
from runner_container.server import make_server
from runner_container.service import build_service

__all__ = ["DEV_TENANT", "LocalStack", "StackConfig", "StackUrls"]

DEV_TENANT = "dev"
BUCKET = "ext-local-bundles"


@dataclass(frozen=True)
class StackConfig:
    """How to start a stack.

    ``port``: the API's (the runner takes PORT+1, moto PORT+2); 0 picks free ports.  ``environment``:
    settings as a process environment holds them (``extctl dev`` passes its own), beneath the stack's
    own wiring, except ``EXT_AUTH_SECRET``, which the stack uses when set (else a random one);
    ``settings``: settings over it (tests and benchmarks).
    """

    port: int = 0
    trust_bundle: str | None = None
    cache_dir: Path | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackUrls:
    api: str
    runner: str
    moto: str
    token: str

    @property
    def admin(self) -> str:
        return f"{self.api}/admin#token={self.token}"


class LocalStack:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; every part binds 127.0.0.1."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._exit = ExitStack()
        self._started: tuple[Settings, StackUrls] | None = None

    @property
    def settings(self) -> Settings:
        """The platform's settings in this stack (after :meth:`start`)."""
        return self._running()[0]

    @property
    def urls(self) -> StackUrls:
        """Where the stack answers, and an admin token of tenant ``dev`` (after :meth:`start`)."""
        return self._running()[1]

    def _running(self) -> tuple[Settings, StackUrls]:
        if self._started is None:
            raise RuntimeError("the stack is not started")
        return self._started

    def start(self) -> StackUrls:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> StackUrls:
        port = self.config.port
        if port:
            for busy in (port, port + 1, port + 2):
                ensure_free(busy)
        # Port 0: each server binds a free port itself, so no other process can take it in between.
        moto = AwsServer(port + 2 if port else 0).start()
        self._exit.callback(moto.stop)
        self._exit.enter_context(aws_environment(moto.url))
        api = ApiServer(app_module.app, port)
        self._exit.callback(api.close)
        settings = self._settings_for(api.port)
        provisioned = provision(settings, queue_name=QUEUE_NAME, origins=(api.url, f"http://localhost:{api.port}"))
        # As deployed: the finalize route hands uploads to the worker, which alone writes the store.
        settings = settings.replace(finalize_mode="queue", finalize_queue_url=provisioned.queue_url)
        runner_url = self._start_runner(settings, port + 1 if port else 0)
        settings = settings.replace(runner_base_url=runner_url, runner_public_base=runner_url)
        app_module.use_settings(settings)
        self._exit.callback(app_module.use_settings, None)
        self._serve("api", api.serve_forever, api.shutdown)
        pump = FinalizePump(provisioned.queue_url, provisioned.queue_arn, app_module.finalize_worker).start()
        self._exit.callback(pump.stop)
        secret = str(settings.ext_auth_secret)
        token = issue_token(secret, sub="developer", tenant=DEV_TENANT, roles=["admin", "user"], ttl_seconds=12 * 3600)
        urls = StackUrls(api=api.url, runner=runner_url, moto=moto.url, token=token)
        self._started = (settings, urls)
        return urls

    def _settings_for(self, api_port: int) -> Settings:
        """The platform's settings, the runner's URL aside (the runner's server picks its port later)."""
        cache_dir = self.config.cache_dir or Path(tempfile.gettempdir()) / f"ext-dev-{api_port}"
        wiring = {
            "STORAGE_S3_BUCKET": BUCKET,
            "STORAGE_S3_FORCE_PATH_STYLE": "true",
            # A secret the environment gives lets a person or a test mint tokens of any tenant and role.
            "EXT_AUTH_SECRET": self.config.environment.get("EXT_AUTH_SECRET") or secrets.token_urlsafe(32),
            "RUNNER_AUTH_TOKEN": secrets.token_urlsafe(32),
            # The gateway calls the runner over HTTP, and the runner runs its compile jobs itself.
            "RUNNER_FUNCTION_NAME": "",
            "RUNNER_COMPILE_FUNCTION_NAME": "",
            "RUNNER_CACHE_DIR": str(cache_dir),
            "FINALIZE_QUEUE_NAME": QUEUE_NAME,
            "SIGNING_TRUST_BUNDLE": self.config.trust_bundle or "",
        }
        return load_settings({**self.config.environment, **wiring, **self.config.settings})

    def _start_runner(self, settings: Settings, port: int) -> str:
        """Serve the runner on ``port`` (0: a free one); returns its URL."""
        service = build_service(settings)
        self._exit.callback(service.close)
        server = make_server(service, "127.0.0.1", port)
        self._exit.callback(server.server_close)
        self._serve("runner", server.serve_forever, server.shutdown)
        return server.url

    def _serve(self, name: str, serve: Callable[[], None], shutdown: Callable[[], None]) -> None:
        """Run ``serve`` on a thread; :meth:`stop` calls ``shutdown`` (which returns once ``serve`` has)."""
        thread = threading.Thread(target=serve, name=name, daemon=True)
        thread.start()
        self._exit.callback(thread.join, 5)
        self._exit.callback(shutdown)

    def stop(self) -> None:
        """Stop every part started, in reverse order, and give the process its environment back."""
        self._started = None
        self._exit.close()

    def __enter__(self) -> StackUrls:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
