"""Faults in the AWS the platform depends on (S3, DynamoDB, SQS, KMS behind one endpoint): for a window,
requests are answered 500/503, throttled, reset or delayed by a TCP fault proxy (tests/faults.py).

Every answer the API gives meanwhile is a success or the contract's error with a documented code (never
``INTERNAL``); the SDKs' retries are bounded; and once the window closes, clients that retry what failed
converge: every upload published once, nothing lost, duplicated or half-written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import app as app_module
from chalicelib.errors import errors_by_code
from devstack.pump import FinalizePump
from tests.bundle_factory import bundle, good_files
from tests.faults import FaultProxy
from tests.integration.stack import AwsStack, auth

DOCUMENTED = set(errors_by_code()) - {"INTERNAL"}
MAX_ATTEMPTS = 5
"""The most requests one SDK call makes (chalicelib/storage/s3.py; pynamodb's own retries are fewer)."""
NAMES = [f"com.acme.fault{i}" for i in range(3)]


@pytest.fixture
def proxy(stack_env: dict[str, str]) -> Iterator[FaultProxy]:
    upstream = urlsplit(stack_env["AWS_ENDPOINT_URL"])
    proxy = FaultProxy((str(upstream.hostname), int(upstream.port or 80)))
    stack_env["AWS_ENDPOINT_URL"] = proxy.url  # the stack's SDK clients (and presigned URLs) go through it
    yield proxy
    proxy.close()


class Publisher:
    """A client publishing one bundle step by step; a failed step is retried by calling :meth:`step` again."""

    def __init__(self, stack: AwsStack, data: bytes) -> None:
        self.stack, self.data = stack, data
        self.target: dict[str, Any] | None = None
        self.uploaded = False
        self.result: dict[str, Any] | None = None
        self.answers: list[tuple[int, Any]] = []

    def step(self) -> bool:
        """Run the next step; whether it succeeded."""
        if self.target is None:
            answer = self.stack.call("POST", "/ext-bundles/initiate-upload", {"size": len(self.data)})
            self.answers.append((answer.status_code, answer.json))
            created: bool = answer.status_code == 201
            if created:
                self.target = answer.json
            return created
        if not self.uploaded:
            try:
                put = requests.put(self.target["url"], data=self.data, headers=self.target["headers"], timeout=30)
            except requests.ConnectionError:
                return False
            self.uploaded = put.status_code == 200
            return self.uploaded
        answer = self.stack.call("POST", "/ext-bundles/finalize", {"upload_id": self.target["upload_id"]})
        self.answers.append((answer.status_code, answer.json))
        finalized: bool = answer.status_code == 200
        if finalized:
            self.result = answer.json
        return finalized

    @property
    def done(self) -> bool:
        return self.result is not None


def _contract(status: int, body: Any) -> str | None:
    """``None`` for a success; the error's code when the answer is in the contract's format."""
    if status < 400:
        return None
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert {"code", "message", "request_id"} <= set(body["error"]), body
    return str(body["error"]["code"])


def test_faults_in_aws_give_documented_errors_and_converge_once_they_stop(
    proxy: FaultProxy, stack: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As deployed: the route hands finalize to the worker through SQS, which the pump polls through the proxy.
    monkeypatch.setenv("FINALIZE_MODE", "queue")
    monkeypatch.setenv("FINALIZE_QUEUE_URL", stack.queue_url)
    app_module.services.cache_clear()
    arn = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]
    pump = FinalizePump(stack.queue_url, arn["QueueArn"], app_module.finalize_worker).start()
    try:
        _faults_then_convergence(proxy, stack)
    finally:
        pump.stop()


def _faults_then_convergence(proxy: FaultProxy, stack: AwsStack) -> None:
    base = Publisher(stack, bundle(good_files(name="com.acme.base")))
    while not base.done:
        assert base.step()
    publishers = [Publisher(stack, bundle(good_files(name=name))) for name in NAMES]
    answers: list[tuple[int, Any]] = []

    with proxy.window(rate=0.3):
        for publisher in publishers:
            while not publisher.done and publisher.step():
                pass
        for path, body in (("/installs", {"extension": "com.acme.base", "version": "1.0.0"}), ("/extensions", None)):
            method = "POST" if body else "GET"
            answer = stack.call(method, path, body)
            answers.append((answer.status_code, answer.json))
    assert sum(proxy.injected.values()) > 0, "no fault was injected"
    during = answers + [a for p in publishers for a in p.answers]
    codes = {_contract(status, body) for status, body in during} - {None}
    assert codes <= DOCUMENTED, [a for a in during if _contract(*a) not in DOCUMENTED and a[0] >= 400]

    # After the window, clients retry what failed, a bounded number of times.
    for publisher in publishers:
        for _ in range(5):
            if publisher.done or (publisher.step() and publisher.done):
                break
        assert publisher.done, publisher.answers[-1:]
    installed = stack.call("POST", "/installs", {"extension": "com.acme.base", "version": "1.0.0"})
    assert installed.status_code in (200, 201), installed.json

    # Converged: each upload is one version, each stored hash complete, nothing staged or half-copied.
    hashes = {p.result["content_hash"].split(":")[1] for p in (base, *publishers) if p.result}
    stored = stack.keys("sha256/")
    assert {key.split("/")[1] for key in stored} == hashes
    objects = sorted(key.rsplit("/", 1)[1] for key in stored)
    assert objects == sorted(name for _ in hashes for name in _object_names(stack, base))
    for name in NAMES:
        extension = stack.call("GET", f"/extensions/{name}", headers=auth())
        assert [v["version"] for v in extension.json["versions"]] == ["1.0.0"]
    assert stack.keys("staging/") == []
    assert stack.s3.list_multipart_uploads(Bucket=stack.settings.storage_s3_bucket).get("Uploads", []) == []
    listed = stack.call("GET", "/installs").json["installs"]
    assert [i["extension"] for i in listed] == ["com.acme.base"]


def _object_names(stack: AwsStack, publisher: Publisher) -> list[str]:
    assert publisher.result is not None
    hex_digest = publisher.result["content_hash"].split(":")[1]
    return [key.rsplit("/", 1)[1] for key in stack.keys(f"sha256/{hex_digest}/")]


def test_a_connection_reset_by_dynamodb_is_a_storage_error_not_a_crash(proxy: FaultProxy, stack: AwsStack) -> None:
    # botocore's connection errors carry `response=None`: pynamodb's `cause_response_code` raised on them,
    # and a reset became `500 INTERNAL`.
    with proxy.window(rate=1.0, faults=("reset",)):
        answer = stack.call("GET", "/extensions")
    assert (answer.status_code, _contract(answer.status_code, answer.json)) == (503, "STORAGE_ERROR")


def test_a_total_outage_answers_storage_error_after_a_bounded_number_of_attempts(
    proxy: FaultProxy, stack: AwsStack
) -> None:
    with proxy.window(rate=1.0, faults=("503",)):
        before = proxy.chunks
        outage = stack.call("GET", "/extensions")
        attempts = proxy.chunks - before
    assert (outage.status_code, _contract(outage.status_code, outage.json)) == (503, "STORAGE_ERROR")
    assert 1 < attempts <= MAX_ATTEMPTS
