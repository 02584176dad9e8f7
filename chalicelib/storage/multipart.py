"""Multipart uploads: how a bundle splits into parts, and the S3 operations that start, list, finish and drop them.

Uploaders send parts through presigned URLs (:mod:`chalicelib.storage.presign`); finalize completes the
upload from the parts S3 holds, and the bundle store copies a verified bundle with the same operations
(:meth:`~chalicelib.storage.store.S3BundleStore.put_bundle_from_staging`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from botocore.exceptions import ClientError

from chalicelib.errors import BadRequest, StorageError, UploadNotFound
from chalicelib.storage.s3 import error_code

__all__ = [
    "BUNDLE_CONTENT_TYPE",
    "MAX_PARTS",
    "MIN_PART_BYTES",
    "MultipartUploads",
    "PartRange",
    "S3Multipart",
    "UploadedPart",
    "part_layout",
]

BUNDLE_CONTENT_TYPE = "application/zstd"
MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest part (every part but the last)."""
MAX_PARTS = 10_000

_PART_ETAG = re.compile(r'"?([0-9a-f]{32})"?')


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


class MultipartUploads(Protocol):
    """Multipart uploads into one bucket."""

    def create(self, key: str, content_type: str = BUNDLE_CONTENT_TYPE) -> str:
        """Start a multipart upload of ``key``; returns its upload id."""
        ...

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        """Every part held for ``upload_id``, in part order; :class:`UploadNotFound` once it is gone."""
        ...

    def complete(self, key: str, upload_id: str, parts: Sequence[UploadedPart], *, if_none_match: bool = False) -> str:
        """Assemble ``key`` from ``parts`` (any order); returns the object's ETag.

        ``if_none_match`` refuses to replace an existing object (:class:`StorageError`).  Parts the store
        rejects (unknown, wrong ETag, too small, repeated) raise :class:`BadRequest`; a vanished upload
        raises :class:`UploadNotFound`.
        """
        ...

    def abort(self, key: str, upload_id: str) -> None:
        """Drop ``upload_id`` and its parts; aborting a finished or unknown upload is a no-op."""
        ...


class S3Multipart:
    """:class:`MultipartUploads` on one S3 bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def create(self, key: str, content_type: str = BUNDLE_CONTENT_TYPE) -> str:
        response = self._client.create_multipart_upload(Bucket=self._bucket, Key=key, ContentType=content_type)
        return str(response["UploadId"])

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        paginator = self._client.get_paginator("list_parts")
        found: list[UploadedPart] = []
        try:
            for page in paginator.paginate(Bucket=self._bucket, Key=key, UploadId=upload_id):
                found.extend(
                    UploadedPart(part_number=int(p["PartNumber"]), etag=str(p["ETag"]), size=int(p["Size"]))
                    for p in page.get("Parts", [])
                )
        except ClientError as exc:
            raise _multipart_error(exc, upload_id) from exc
        return sorted(found, key=lambda part: part.part_number)

    def complete(self, key: str, upload_id: str, parts: Sequence[UploadedPart], *, if_none_match: bool = False) -> str:
        request: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": _normalized_parts(parts)},
        }
        if if_none_match:
            request["IfNoneMatch"] = "*"
        try:
            response = self._client.complete_multipart_upload(**request)
        except ClientError as exc:
            raise _multipart_error(exc, upload_id) from exc
        return str(response["ETag"])

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise StorageError(f"could not abort multipart upload {upload_id}: {error_code(exc)}") from exc


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


def _multipart_error(exc: ClientError, upload_id: str) -> Exception:
    code = error_code(exc)
    if code == "NoSuchUpload":
        return UploadNotFound(f"multipart upload {upload_id} does not exist (completed or aborted)")
    if code in {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}:
        return BadRequest(f"parts: S3 rejected the part list ({code})")
    if code == "PreconditionFailed":
        return StorageError("the multipart upload's target object exists already")
    return StorageError(f"multipart upload {upload_id} failed: {code or exc}")
