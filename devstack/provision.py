"""What the platform expects to find in AWS, created in moto for the local stack and the tests.

In AWS, ``infra/template.yaml`` creates these; here :func:`provision` does, against the AWS the process's
SDK clients reach (``AWS_ENDPOINT_URL``): the bundle bucket (CORS for browser uploads, ObjectCreated on
``staging/`` → the finalize queue), the queue and its dead-letter queue (a message the worker fails on
:data:`MAX_RECEIVE_COUNT` times parks there, as ``FinalizeQueue``'s redrive policy does in AWS), the
registry tables, the KV and secrets tables, and the
KMS key that seals secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

from chalicelib.config import Settings
from chalicelib.kv import create_kv_table, make_kv_models
from chalicelib.registry import create_tables, make_models
from chalicelib.secrets import create_secrets_table, ensure_secrets_key, make_kms_client, make_secret_model
from chalicelib.storage.s3 import ensure_bucket, make_s3_client

__all__ = ["MAX_RECEIVE_COUNT", "QUEUE_NAME", "VISIBILITY_TIMEOUT_SECONDS", "Provisioned", "provision"]

QUEUE_NAME = "ext-finalize"
MAX_RECEIVE_COUNT = 5
"""Receives of one message before SQS moves it to the dead-letter queue: ``FinalizeQueue``'s
``maxReceiveCount`` in infra/template.yaml (tests/infra checks they agree)."""
VISIBILITY_TIMEOUT_SECONDS = 30
"""How long a message the worker failed on stays hidden before its next delivery.  AWS's is six times
the worker's timeout (720 s); the local worker runs in-process without one, so a shorter wait suffices."""


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    queue_arn: str
    secrets_key_arn: str
    dead_letter_url: str


def provision(
    settings: Settings,
    *,
    queue_name: str = QUEUE_NAME,
    origins: tuple[str, ...] = ("*",),
    visibility_timeout_seconds: int = VISIBILITY_TIMEOUT_SECONDS,
) -> Provisioned:
    """Create everything ``settings`` name; ``origins`` may upload to the bucket from a browser.

    Safe to run again: what exists is kept.
    """
    sqs = boto3.client("sqs", region_name=settings.storage_s3_region)
    dead_letter_url, dead_letter_arn = _queue(sqs, f"{queue_name}-dlq", {})
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    attributes = {"VisibilityTimeout": str(visibility_timeout_seconds), "RedrivePolicy": json.dumps(redrive)}
    queue_url, queue_arn = _queue(sqs, queue_name, attributes)
    _bucket(settings, queue_arn, origins)
    create_tables(make_models(settings), wait=True)
    create_kv_table(make_kv_models(settings))
    create_secrets_table(make_secret_model(settings))
    kms = make_kms_client(settings)
    secrets_key = ensure_secrets_key(kms, settings.secrets_kms_key_id)
    return Provisioned(queue_url, queue_arn, secrets_key, dead_letter_url)


def _queue(sqs: Any, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _bucket(settings: Settings, queue_arn: str, origins: tuple[str, ...]) -> None:
    s3 = make_s3_client(settings)
    bucket = settings.storage_s3_bucket
    ensure_bucket(s3, bucket, settings.storage_s3_region)
    cors = {
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["PUT", "GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 3000,
    }
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [cors]})
    staging = {"Key": {"FilterRules": [{"Name": "prefix", "Value": settings.staging_prefix}]}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"], "Filter": staging}]
        },
    )
