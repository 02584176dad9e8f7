"""Presigned uploads: a single PUT, or a multipart upload with one URL per part.

What a URL signs is the only limit S3 enforces on an anonymous uploader, so the
PUT URL signs ``Content-Length`` and, when the uploader declared it, the SHA-256
checksum (``x-amz-checksum-sha256``); part URLs sign their exact lengths.  moto
checks none of this, which is why unit tests inspect the URLs themselves.
Finalize still hashes what arrived: these signatures are a defence in AWS only.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from chalicelib.errors import BadRequest, StorageError, UploadNotFound
from chalicelib.storage.s3 import error_code

__all__ = [
    "BUNDLE_CONTENT_TYPE",
    "MAX_PARTS",
    "MAX_PRESIGN_TTL_SECONDS",
    "MIN_PART_BYTES",
    "PartRange",
    "PresignedPart",
    "PresignedRequest",
    "UploadedPart",
    "abort_multipart",
    "complete_multipart",
    "create_multipart",
    "list_parts",
    "part_layout",
    "presign_parts",
    "presign_put",
    "sha256_checksum_header",
]

BUNDLE_CONTENT_TYPE = "application/zstd"
MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest part (every part but the last)."""
MAX_PARTS = 10_000
MAX_PRESIGN_TTL_SECONDS = 7 * 24 * 3600
"""SigV4's longest presigned lifetime."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PART_ETAG = re.compile(r'"?([0-9a-f]{32})"?')


@dataclass(frozen=True)
class PresignedRequest:
    """A request the uploader must make exactly: ``method`` to ``url`` with ``headers``."""

    url: str
    method: str
    headers: Mapping[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class PresignedPart:
    """The URL for one part of a multipart upload."""

    part_number: int
    url: str


class PartRange(NamedTuple):
    """Which bytes of the bundle go into part ``part_number`` (1-based)."""

    part_number: int
    offset: int
    length: int


@dataclass(frozen=True)
class UploadedPart:
    """A part S3 holds (or the uploader says it sent): its number, ETag and size."""

    part_number: int
    etag: str
    size: int | None = None


def _check_ttl(ttl_seconds: int) -> None:
    if not 1 <= ttl_seconds <= MAX_PRESIGN_TTL_SECONDS:
        raise ValueError(f"presign TTL must be 1..{MAX_PRESIGN_TTL_SECONDS} seconds, got {ttl_seconds}")


def _expiry(ttl_seconds: int) -> datetime:
    # Taken before signing, so the promise is never later than the URL's real expiry.
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=ttl_seconds)


def sha256_checksum_header(sha256_hex: str) -> str:
    """The ``x-amz-checksum-sha256`` value (base64 of the raw digest) for a hex digest."""
    if not _SHA256_HEX.fullmatch(sha256_hex):
        raise BadRequest(f"sha256 must be 64 lowercase hex characters, got {sha256_hex!r}")
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def presign_put(
    client: Any,
    bucket: str,
    key: str,
    size: int,
    sha256_hex: str | None,
    ttl_seconds: int,
    content_type: str = BUNDLE_CONTENT_TYPE,
) -> PresignedRequest:
    """A presigned single PUT of exactly ``size`` bytes (and ``sha256_hex``, when declared).

    ``headers`` lists every header the uploader must send besides
    ``Content-Length``, which HTTP clients set themselves from the body.
    """
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    _check_ttl(ttl_seconds)
    expires_at = _expiry(ttl_seconds)
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentLength": size, "ContentType": content_type}
    headers = {"content-type": content_type}
    if sha256_hex is not None:
        params["ChecksumSHA256"] = headers["x-amz-checksum-sha256"] = sha256_checksum_header(sha256_hex)
    url = client.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl_seconds, HttpMethod="PUT")
    return PresignedRequest(url=url, method="PUT", headers=headers, expires_at=expires_at)


def create_multipart(client: Any, bucket: str, key: str, content_type: str = BUNDLE_CONTENT_TYPE) -> str:
    """Start a multipart upload of ``key``; returns its upload id."""
    response = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
    return str(response["UploadId"])


def part_layout(size: int, part_size: int) -> list[PartRange]:
    """Split ``size`` bytes into parts of ``part_size`` (the last one shorter).

    Raises ``ValueError`` when S3 would refuse the layout: parts under 5 MiB
    (unless there is only one) or more than 10,000 of them.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if part_size < MIN_PART_BYTES:
        raise ValueError(f"part size must be at least {MIN_PART_BYTES} bytes, got {part_size}")
    count = -(-size // part_size)
    if count > MAX_PARTS:
        raise ValueError(f"{size} bytes in parts of {part_size} needs {count} parts, more than {MAX_PARTS}")
    return [
        PartRange(part_number=index + 1, offset=index * part_size, length=min(part_size, size - index * part_size))
        for index in range(count)
    ]


def presign_parts(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    parts: int | Sequence[PartRange],
    ttl_seconds: int,
) -> list[PresignedPart]:
    """One presigned ``UploadPart`` URL per part.

    Given a :func:`part_layout`, each URL also signs its part's exact
    ``Content-Length``; given only a count, lengths are left to the
    ``complete`` step's checks.
    """
    _check_ttl(ttl_seconds)
    lengths: list[tuple[int, int | None]] = (
        [(number, None) for number in range(1, parts + 1)]
        if isinstance(parts, int)
        else [(part.part_number, part.length) for part in parts]
    )
    if not 1 <= len(lengths) <= MAX_PARTS:
        raise ValueError(f"a multipart upload has 1..{MAX_PARTS} parts, got {len(lengths)}")
    return [_presign_part(client, bucket, key, upload_id, number, length, ttl_seconds) for number, length in lengths]


def _presign_part(
    client: Any, bucket: str, key: str, upload_id: str, part_number: int, length: int | None, ttl_seconds: int
) -> PresignedPart:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number}
    if length is not None:
        params["ContentLength"] = length
    url = client.generate_presigned_url("upload_part", Params=params, ExpiresIn=ttl_seconds, HttpMethod="PUT")
    return PresignedPart(part_number=part_number, url=url)


def list_parts(client: Any, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
    """Every part S3 holds for ``upload_id``, in part order.

    Raises :class:`UploadNotFound` when the multipart upload is gone (completed
    or aborted).
    """
    paginator = client.get_paginator("list_parts")
    found: list[UploadedPart] = []
    try:
        for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
            found.extend(
                UploadedPart(part_number=int(p["PartNumber"]), etag=str(p["ETag"]), size=int(p["Size"]))
                for p in page.get("Parts", [])
            )
    except ClientError as exc:
        raise _multipart_error(exc, upload_id) from exc
    return sorted(found, key=lambda part: part.part_number)


def _normalized_parts(parts: Sequence[UploadedPart]) -> list[dict[str, Any]]:
    if not 1 <= len(parts) <= MAX_PARTS:
        raise BadRequest(f"a multipart upload has 1..{MAX_PARTS} parts, got {len(parts)}")
    numbers = [part.part_number for part in parts]
    if len(set(numbers)) != len(numbers):
        raise BadRequest("parts: a part number appears more than once")
    normalized = []
    for part in sorted(parts, key=lambda p: p.part_number):
        if not 1 <= part.part_number <= MAX_PARTS:
            raise BadRequest(f"parts: part number {part.part_number} is outside 1..{MAX_PARTS}")
        match = _PART_ETAG.fullmatch(part.etag)
        if match is None:
            raise BadRequest(f"parts: part {part.part_number} has a malformed ETag {part.etag!r}")
        normalized.append({"PartNumber": part.part_number, "ETag": f'"{match.group(1)}"'})
    return normalized


def complete_multipart(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[UploadedPart],
    *,
    if_none_match: bool = False,
) -> str:
    """Complete ``upload_id`` from ``parts`` (any order); returns the object's ETag.

    ``if_none_match`` refuses to replace an existing object (S3 answers 412,
    raised as :class:`StorageError`).  Parts S3 rejects (unknown, wrong ETag,
    too small) raise :class:`BadRequest`; a vanished upload raises
    :class:`UploadNotFound`.
    """
    request: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "UploadId": upload_id,
        "MultipartUpload": {"Parts": _normalized_parts(parts)},
    }
    if if_none_match:
        request["IfNoneMatch"] = "*"
    try:
        response = client.complete_multipart_upload(**request)
    except ClientError as exc:
        raise _multipart_error(exc, upload_id) from exc
    return str(response["ETag"])


def abort_multipart(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort ``upload_id`` and free its parts; aborting a finished or unknown upload is a no-op."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if error_code(exc) != "NoSuchUpload":
            raise StorageError(f"could not abort multipart upload {upload_id}: {error_code(exc)}") from exc


def _multipart_error(exc: ClientError, upload_id: str) -> Exception:
    code = error_code(exc)
    if code == "NoSuchUpload":
        return UploadNotFound(f"multipart upload {upload_id} does not exist (completed or aborted)")
    if code in {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}:
        return BadRequest(f"parts: S3 rejected the part list ({code})")
    if code == "PreconditionFailed":
        return StorageError("the multipart upload's target object exists already")
    return StorageError(f"multipart upload {upload_id} failed: {code or exc}")
