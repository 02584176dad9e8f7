"""SQS to the finalize worker, as Lambda's SQS trigger delivers: one message per event (with its
``ApproximateReceiveCount``), deleted once the worker returns, left for its visibility timeout (and
redelivered) when the worker raises.  SQS itself counts the receives and, past the queue's
``maxReceiveCount``, moves the message to the dead-letter queue: the pump never deletes a failed one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import boto3

from chalicelib.logs import log_event

__all__ = ["FinalizePump", "sqs_event"]

Worker = Callable[[dict[str, Any], Any], Any]
"""A Chalice SQS handler called as Lambda calls it: ``(event, context)``."""


def sqs_event(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """The Lambda event of one received SQS ``message``."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": queue_arn.split(":")[3],
            }
        ]
    }


class FinalizePump:
    """A thread that long-polls ``queue_url`` and hands each message to ``worker`` until :meth:`stop`."""

    def __init__(self, queue_url: str, queue_arn: str, worker: Worker) -> None:
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._worker = worker
        self._sqs = boto3.client("sqs", region_name=queue_arn.split(":")[3])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-pump", daemon=True)

    def start(self) -> FinalizePump:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                received = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1, AttributeNames=["All"]
                )
            except Exception as exc:  # the server is going away
                log_event("dev.pump_error", error=type(exc).__name__)
                self._stopping.wait(0.5)
                continue
            for message in received.get("Messages", []):
                self._deliver(message)

    def _deliver(self, message: Mapping[str, Any]) -> None:
        try:
            self._worker(sqs_event(message, self._queue_arn), None)
        except Exception as exc:  # SQS would redeliver: leave the message for its visibility timeout
            attempt = message.get("Attributes", {}).get("ApproximateReceiveCount")
            log_event("dev.finalize_retry", error=type(exc).__name__, receive_count=attempt)
            return
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
