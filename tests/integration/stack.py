"""A moto server with the platform's bucket, tables and queue, and the Chalice app on top.

``AwsStack`` is what the API sees in AWS, on one machine: S3 (bucket, CORS,
ObjectCreated on ``staging/`` → SQS), DynamoDB tables and the finalize queue.
Every test gets a reset server, so tests do not see each other's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import requests
from chalice.test import Client

import app as app_module
from chalicelib.auth import issue_token
from chalicelib.config import Settings, load_settings
from chalicelib.storage.s3 import make_s3_client
from devstack.aws import AwsServer
from devstack.provision import provision
from devstack.pump import sqs_event

SECRET = "integration-secret-0123456789abcdef"
BUCKET = "ext-it-bundles"
QUEUE = "ext-it-finalize"
BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "STORAGE_S3_BUCKET": BUCKET,
    "STORAGE_S3_FORCE_PATH_STYLE": "true",
    "REGISTRY_TABLE_PREFIX": "it-",
    "EXT_AUTH_SECRET": SECRET,
    "FINALIZE_QUEUE_NAME": QUEUE,
}


def fresh_rate_window(margin_s: float = 10.0) -> None:
    """Rate limits count per clock minute: let a test that counts calls start well inside one."""
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.05)


def token(tenant: str = "acme", roles: tuple[str, ...] = ("admin",), sub: str = "alice", ttl: int = 3600) -> str:
    return issue_token(SECRET, sub=sub, tenant=tenant, roles=list(roles), ttl_seconds=ttl)


def auth(tenant: str = "acme", roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant, roles)}", "Content-Type": "application/json"}


@dataclass
class AwsStack:
    endpoint: str
    settings: Settings
    queue_url: str
    client: Client
    env: dict[str, str] = field(default_factory=dict)

    @property
    def s3(self) -> Any:
        return make_s3_client(self.settings)

    @property
    def sqs(self) -> Any:
        return boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(obj["Key"] for obj in listed.get("Contents", []))

    def call(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        payload = json.dumps(body) if body is not None and not isinstance(body, (str, bytes)) else body
        chosen = dict(headers) if headers is not None else auth()
        response = getattr(self.client.http, method.lower())(path, headers=chosen, body=payload)
        response.json = json.loads(response.body) if response.body else None
        return response

    def pump(self) -> list[Any]:
        """Deliver queued S3 events to the finalize worker as Lambda's SQS trigger would."""
        answers: list[Any] = []
        while True:
            received = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=0)
            messages = received.get("Messages", [])
            if not messages:
                return answers
            message = messages[0]
            event = sqs_event(message, f"arn:aws:sqs:us-east-1:123456789012:{QUEUE}")
            answers.append(self.client.lambda_.invoke("finalize_worker", event))
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The local stack's moto server: each DynamoDB request atomic, as DynamoDB applies it."""
    server = AwsServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def stack_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a fresh stack; tests may add settings before using ``stack``."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    env = {**BASE_ENV, "AWS_ENDPOINT_URL": moto_server}
    for name in (
        "SIGNING_TRUST_BUNDLE",
        "RUNNER_BASE_URL",
        "RUNNER_FUNCTION_NAME",
        "UPLOAD_RATE_LIMIT_PER_MINUTE",
        "FINALIZE_MODE",
        "FINALIZE_QUEUE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def stack(stack_env: dict[str, str], moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsStack]:
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(dict(os.environ))
    queue_url = provision(settings, queue_name=QUEUE).queue_url
    app_module.services.cache_clear()
    with Client(app_module.app) as client:
        yield AwsStack(endpoint=moto_server, settings=settings, queue_url=queue_url, client=client, env=stack_env)
    app_module.services.cache_clear()


def content_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(
    stack: AwsStack, data: bytes, *, tenant: str = "acme", extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """initiate + upload through the presigned URL(s); returns the initiate answer plus `parts` etags."""
    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": len(data), **(extra or {})}, auth(tenant))
    assert answer.status_code == 201, answer.json
    target: dict[str, Any] = answer.json
    if target["method"] == "PUT":
        put = requests.put(target["url"], data=data, headers=target["headers"], timeout=30)
        assert put.status_code == 200, put.text
        return target
    etags = []
    for part in target["parts"]:
        offset = (part["part_number"] - 1) * target["part_size"]
        put = requests.put(part["url"], data=data[offset : offset + target["part_size"]], timeout=30)
        assert put.status_code == 200, put.text
        etags.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
    target["uploaded"] = etags
    return target


def publish(stack: AwsStack, data: bytes, *, tenant: str = "acme", extra: dict[str, Any] | None = None) -> Any:
    target = upload(stack, data, tenant=tenant, extra=extra)
    body: dict[str, Any] = {"upload_id": target["upload_id"]}
    if "uploaded" in target:
        body["parts"] = target["uploaded"]
    return stack.call("POST", "/ext-bundles/finalize", body, auth(tenant))
