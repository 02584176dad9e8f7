"""The whole platform on one machine: moto (S3, DynamoDB, SQS), the Chalice app,
the runner in HTTP mode, and a pump from SQS to the finalize worker.

Everything runs in this process on 127.0.0.1 and is pointed at moto through
``AWS_ENDPOINT_URL`` only, exactly as the deployed code is pointed at AWS.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from chalicelib.auth import issue_token
from chalicelib.config import Settings, load_settings
from chalicelib.errors import UsageError
from chalicelib.logs import log_event
from chalicelib.registry import create_tables, make_models
from chalicelib.storage.s3 import ensure_bucket, make_s3_client

__all__ = ["LocalStack", "StackUrls", "provision", "sqs_event"]

DEV_TENANT = "dev"
QUEUE_NAME = "ext-finalize"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_free(port: int) -> None:
    """Refuse a busy port up front, with a message a person can act on."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"port {port} on 127.0.0.1 is in use; stop what uses it or pass another --port") from None


def provision(
    settings: Settings, endpoint: str, queue_name: str = QUEUE_NAME, origins: tuple[str, ...] = ("*",)
) -> str:
    """Create the bucket (CORS for browser uploads; ObjectCreated on staging → SQS), the queue and the tables.

    Returns the queue URL.  Safe to run against a fresh moto server only.
    """
    s3 = make_s3_client(settings)
    ensure_bucket(s3, settings.storage_s3_bucket, settings.storage_s3_region)
    s3.put_bucket_cors(
        Bucket=settings.storage_s3_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": list(origins),
                    "AllowedMethods": ["PUT", "GET", "HEAD"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=settings.storage_s3_region)
    queue_url: str = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=settings.storage_s3_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": settings.staging_prefix}]}},
                }
            ]
        },
    )
    create_tables(make_models(settings), wait=True)
    return queue_url


@dataclass(frozen=True)
class StackUrls:
    api: str
    runner: str
    moto: str
    token: str

    @property
    def admin(self) -> str:
        return f"{self.api}/admin#token={self.token}"


def sqs_event(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
        ]
    }


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop`; every part binds 127.0.0.1."""

    port: int = 0
    trust_bundle: str | None = None
    cache_dir: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _closers: list[Any] = field(default_factory=list)
    _saved_env: dict[str, str | None] = field(default_factory=dict)

    def start(self) -> StackUrls:
        api_port = self.port or free_port()
        runner_port = free_port() if not self.port else self.port + 1
        moto_port = free_port() if not self.port else self.port + 2
        for port in (api_port, runner_port, moto_port):
            ensure_free(port)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        self._closers.append(moto.stop)
        moto_url = f"http://127.0.0.1:{moto_port}"
        secret = secrets.token_urlsafe(32)
        runner_url = f"http://127.0.0.1:{runner_port}"
        api_url = f"http://127.0.0.1:{api_port}"
        env = {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "STORAGE_S3_BUCKET": "ext-local-bundles",
            "STORAGE_S3_FORCE_PATH_STYLE": "true",
            "EXT_AUTH_SECRET": secret,
            "RUNNER_BASE_URL": runner_url,
            "RUNNER_PUBLIC_BASE": runner_url,
            "RUNNER_AUTH_TOKEN": secrets.token_urlsafe(32),
            "RUNNER_CACHE_DIR": str(self.cache_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"ext-dev-{api_port}"),
            "FINALIZE_QUEUE_NAME": QUEUE_NAME,
            "SIGNING_TRUST_BUNDLE": self.trust_bundle or "",
            **self.extra_env,
        }
        self._set_env(env)
        settings = load_settings()
        queue_url = provision(settings, moto_url, origins=(api_url, f"http://localhost:{api_port}"))
        # As deployed: the finalize route hands uploads to the worker, which alone writes the store.
        self._set_env({"FINALIZE_MODE": "queue", "FINALIZE_QUEUE_URL": queue_url})
        self._start_runner(settings, runner_port)
        self._start_api(api_port)
        self._start_pump(moto_url, queue_url)
        token = issue_token(secret, sub="developer", tenant=DEV_TENANT, roles=["admin", "user"], ttl_seconds=12 * 3600)
        return StackUrls(api=api_url, runner=runner_url, moto=moto_url, token=token)

    def _set_env(self, values: Mapping[str, str]) -> None:
        """The stack's code reads its settings from the environment; :meth:`stop` puts it back."""
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _start_runner(self, settings: Settings, port: int) -> None:
        from runner_container.server import make_server
        from runner_container.service import build_service

        server = make_server(build_service(settings), "127.0.0.1", port)
        self._serve("runner", server.serve_forever)
        self._closers.append(server.shutdown)

    def _start_api(self, port: int) -> None:
        from chalice.cli.factory import CLIFactory
        from chalice.local import ChaliceRequestHandler, LocalChalice, LocalDevServer, create_local_server

        import app as app_module

        class NoDelayHandler(ChaliceRequestHandler):
            def setup(self) -> None:
                super().setup()
                # See runner_container.server: keep-alive calls would wait ~40 ms on Nagle.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        app_module.services.cache_clear()
        config = CLIFactory(str(ROOT)).create_config_obj(chalice_stage_name="dev")
        if isinstance(app_module.app, LocalChalice):
            # A stack started earlier in this process already made the app local-ready;
            # create_local_server would now give its class itself as a base.
            server = LocalDevServer(app_module.app, config, "127.0.0.1", port, handler_cls=NoDelayHandler)
        else:
            server = create_local_server(app_module.app, config, "127.0.0.1", port)
            server.server.RequestHandlerClass = functools.partial(
                NoDelayHandler, app_object=app_module.app, config=config
            )
        self._serve("api", server.server.serve_forever)
        self._closers.append(server.shutdown)

    def _start_pump(self, moto_url: str, queue_url: str) -> None:
        import app as app_module

        sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        def pump() -> None:
            while not self._stopping.is_set():
                try:
                    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
                except Exception as exc:  # the server is going away
                    log_event("dev.pump_error", error=type(exc).__name__)
                    self._stopping.wait(0.5)
                    continue
                for message in received.get("Messages", []):
                    try:
                        app_module.finalize_worker(sqs_event(message, arn), None)
                    except Exception as exc:  # SQS would redeliver: leave the message for its visibility timeout
                        log_event("dev.finalize_retry", error=type(exc).__name__)
                        continue
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

        self._serve("sqs-pump", pump)

    def _serve(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # stopping: keep closing the rest
                log_event("dev.stop_error", error=type(exc).__name__)
        for thread in self._threads:
            thread.join(timeout=5)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
