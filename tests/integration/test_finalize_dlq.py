"""A poison message on the finalize queue: SQS (moto) counts its receives and, after
``MAX_RECEIVE_COUNT`` failed deliveries by the local stack's pump, parks it in the dead-letter queue,
while the uploads queued around it are finalized."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import app as app_module
from chalicelib.registry import UploadState
from chalicelib.uploads.events import created_objects
from devstack.provision import MAX_RECEIVE_COUNT, provision
from devstack.pump import FinalizePump
from tests.bundle_factory import bundle, good_files
from tests.integration.stack import AwsStack, upload


def _bundle(name: str) -> bytes:
    return bundle(good_files(name=name))


def test_a_poison_message_parks_in_the_dead_letter_queue_and_the_rest_keep_flowing(stack: AwsStack) -> None:
    queues = provision(stack.settings, queue_name="ext-it-poison", visibility_timeout_seconds=1)
    uploads = app_module.services().uploads
    # A finalize that crashed holding its claim: until the claim's lease runs out, every delivery of the
    # upload's event meets a held claim, raises and is redelivered.
    poison = upload(stack, _bundle("com.acme.poison"))
    uploads.claim_for_finalize(poison["upload_id"], datetime.now(UTC), 300)
    deliveries: list[dict[str, Any]] = []

    def worker(event: dict[str, Any], context: Any) -> None:
        deliveries.append(event["Records"][0])
        app_module.finalize_worker(event, context)

    pump = FinalizePump(queues.queue_url, queues.queue_arn, worker).start()
    try:
        healthy = [upload(stack, _bundle(f"com.acme.ok{i}")) for i in range(3)]
        parked = _wait_for_dead_letter(stack, queues.dead_letter_url)
    finally:
        pump.stop()
    [poison_key] = [c.key for c in created_objects(parked["Body"])]
    assert poison_key.split("/")[-2] == poison["upload_id"]
    for target in healthy:
        assert uploads.get(target["upload_id"], "acme").state is UploadState.FINALIZED
    poison_deliveries = [d for d in deliveries if d["body"] == parked["Body"]]
    assert [d["attributes"]["ApproximateReceiveCount"] for d in poison_deliveries] == [
        str(n) for n in range(1, MAX_RECEIVE_COUNT + 1)
    ]
    left = stack.sqs.get_queue_attributes(QueueUrl=queues.queue_url, AttributeNames=["All"])["Attributes"]
    assert (left["ApproximateNumberOfMessages"], left["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


def _wait_for_dead_letter(stack: AwsStack, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        messages = stack.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
        if messages:
            return dict(messages[0])
    raise AssertionError("nothing reached the dead-letter queue")
