"""FINALIZE_MODE=queue, as deployed: the route only prepares the upload; the worker (which alone may
write the store) finalizes, and the route answers with the worker's result."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import app as app_module
from chalicelib.bundles.signing import sign_content_hash
from devstack.pump import sqs_event
from tests.bundle_factory import bundle, good_files
from tests.integration.fake_lambda import FakeLambda
from tests.integration.stack import AwsStack, upload

MiB = 1024 * 1024


@pytest.fixture
def queued(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[AwsStack]:
    monkeypatch.setenv("FINALIZE_MODE", "queue")
    stack: AwsStack = request.getfixturevalue("stack")
    monkeypatch.setenv("FINALIZE_QUEUE_URL", stack.queue_url)
    app_module.services.cache_clear()
    stop = threading.Event()
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint, region_name="us-east-1")

    def worker() -> None:
        while not stop.is_set():
            messages = sqs.receive_message(QueueUrl=stack.queue_url, WaitTimeSeconds=1).get("Messages", [])
            for message in messages:
                try:
                    app_module.finalize_worker(sqs_event(message, "arn:aws:sqs:us-east-1:1:q"), None)
                except Exception:  # noqa: S112 - redelivered after the visibility timeout, as in AWS
                    continue
                sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    yield stack
    stop.set()
    thread.join(timeout=10)


def finalize(stack: AwsStack, target: dict[str, Any], **extra: Any) -> Any:
    body = {"upload_id": target["upload_id"], **extra}
    if "uploaded" in target:
        body["parts"] = target["uploaded"]
    return stack.call("POST", "/ext-bundles/finalize", body)


def test_the_route_answers_with_the_workers_result(queued: AwsStack) -> None:
    data = bundle()
    answer = finalize(queued, upload(queued, data))
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "finalized"
    assert answer.json["content_hash"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert queued.keys("staging/") == []


def test_multipart_uploads_are_completed_by_the_route_and_finalized_by_the_worker(queued: AwsStack) -> None:
    data = bundle({**good_files(), "ui/big.bin": os.urandom(17 * MiB)})
    target = upload(queued, data)
    assert target["method"] == "MULTIPART"
    answer = finalize(queued, target)
    assert answer.status_code == 200, answer.json
    assert answer.json["size"] == len(data)


def test_the_worker_asks_the_compile_function_without_knowing_the_runner_function(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # As deployed: the worker has RUNNER_COMPILE_FUNCTION_NAME and no RUNNER_FUNCTION_NAME.
    with FakeLambda().running() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
        monkeypatch.setenv("RUNNER_COMPILE_FUNCTION_NAME", "ext-compiler")
        stack: AwsStack = request.getfixturevalue("queued")

        answer = finalize(stack, upload(stack, bundle()))

        assert answer.status_code == 200, answer.json
        # The worker records the result (which the route answers) before it asks for the compile job.
        deadline = time.monotonic() + 30
        while not fake.invoked("Event") and time.monotonic() < deadline:
            time.sleep(0.05)
        asked = [(i.function, i.payload) for i in fake.invoked("Event")]
        assert asked == [("ext-compiler", {"action": "precompile", "content_hash": answer.json["content_hash"]})]


def test_rejections_come_back_from_the_worker(queued: AwsStack) -> None:
    answer = finalize(queued, upload(queued, bundle({**good_files(), "../x": b"x"})))
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "BUNDLE_UNSAFE_PATH"


def test_finalize_before_upload_is_a_conflict(queued: AwsStack) -> None:
    target = queued.call("POST", "/ext-bundles/initiate-upload", {"size": 100}).json
    answer = queued.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    assert answer.status_code == 409


def test_a_signature_sent_with_finalize_reaches_the_worker(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    monkeypatch.setenv("SIGNING_TRUST_BUNDLE", pem)
    stack: AwsStack = request.getfixturevalue("queued")
    data = bundle()
    target = upload(stack, data)
    envelope = sign_content_hash("sha256:" + hashlib.sha256(data).hexdigest(), key).to_dict()
    answer = finalize(stack, target, signature=envelope)
    assert answer.status_code == 200, answer.json
    assert answer.json["signature_status"] == "verified"
