"""The one place S3 clients are built.

Every client signs with SigV4 (``s3v4``): botocore would otherwise presign SigV2
URLs, which real regions refuse.  When ``STORAGE_S3_ENDPOINT`` is empty the
endpoint is left to boto3, so ``AWS_ENDPOINT_URL`` (moto, MinIO) works without
code changes.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.config import Settings

__all__ = ["ensure_bucket", "error_code", "make_s3_client", "make_s3_presign_client"]

_RETRIES = {"total_max_attempts": 5, "mode": "standard"}
"""At most 5 requests per S3 operation, the first included (``max_attempts`` would count retries only)."""
_CONNECT_TIMEOUT_SECONDS = 5
_READ_TIMEOUT_SECONDS = 60


def _config(settings: Settings) -> Config:
    addressing_style = "path" if settings.storage_s3_force_path_style else "auto"
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        retries=_RETRIES,
        connect_timeout=_CONNECT_TIMEOUT_SECONDS,
        read_timeout=_READ_TIMEOUT_SECONDS,
    )


def make_s3_client(settings: Settings) -> Any:
    """A SigV4 S3 client for ``settings``: its endpoint, region and addressing style."""
    return boto3.client(
        "s3",
        endpoint_url=settings.storage_s3_endpoint or None,
        region_name=settings.storage_s3_region,
        config=_config(settings),
    )


def make_s3_presign_client(settings: Settings, public_endpoint: str | None = None) -> Any:
    """A client whose presigned URLs point at ``public_endpoint``.

    Presigned URLs embed the host they were signed for, so when uploaders reach
    S3 through another address than the API does (a container network, a
    proxy), sign with a client built for the public address.  ``None`` gives the
    same endpoint as :func:`make_s3_client`.
    """
    if not public_endpoint:
        return make_s3_client(settings)
    return boto3.client(
        "s3",
        endpoint_url=public_endpoint,
        region_name=settings.storage_s3_region,
        config=_config(settings),
    )


def error_code(exc: ClientError) -> str:
    """The S3 error code of ``exc`` (``NoSuchKey``, ``PreconditionFailed``, …)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def ensure_bucket(client: Any, bucket: str, region: str) -> None:
    """Create ``bucket`` unless it exists already (local stacks and tests)."""
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    params: dict[str, Any] = {"Bucket": bucket}
    # us-east-1 is the one region that rejects an explicit location constraint.
    if region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**params)
    except ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
