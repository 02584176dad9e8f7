"""Presigned uploads: a single PUT, or one URL per part of a multipart upload.

What a URL signs is the only limit S3 enforces on an anonymous uploader, so the
PUT URL signs ``Content-Length`` and, when the uploader declared it, the SHA-256
checksum (``x-amz-checksum-sha256``); part URLs sign their exact lengths.  moto
checks none of this, which is why unit tests inspect the URLs themselves.
Finalize still hashes what arrived: these signatures are a defence in AWS only.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from chalicelib.bundles.digests import HEX_DIGEST_RE
from chalicelib.errors import BadRequest
from chalicelib.storage.multipart import BUNDLE_CONTENT_TYPE, MAX_PARTS, PartRange

__all__ = [
    "MAX_PRESIGN_TTL_SECONDS",
    "PresignedPart",
    "PresignedRequest",
    "S3UploadSigner",
    "UploadSigner",
    "sha256_checksum_header",
]

MAX_PRESIGN_TTL_SECONDS = 7 * 24 * 3600
"""SigV4's longest presigned lifetime."""


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


class UploadSigner(Protocol):
    """Hands anonymous uploaders URLs that let them write exactly one object, for a while."""

    def presign_put(
        self, key: str, size: int, sha256_hex: str | None, ttl_seconds: int, content_type: str = BUNDLE_CONTENT_TYPE
    ) -> PresignedRequest:
        """A single PUT of exactly ``size`` bytes (and ``sha256_hex``, when declared).

        ``headers`` lists every header the uploader must send besides ``Content-Length``, which HTTP
        clients set themselves from the body.
        """
        ...

    def presign_parts(
        self, key: str, upload_id: str, parts: Sequence[PartRange], ttl_seconds: int
    ) -> list[PresignedPart]:
        """One ``UploadPart`` URL per part of ``upload_id``, each signing its part's exact length."""
        ...


def _check_ttl(ttl_seconds: int) -> None:
    if not 1 <= ttl_seconds <= MAX_PRESIGN_TTL_SECONDS:
        raise ValueError(f"presign TTL must be 1..{MAX_PRESIGN_TTL_SECONDS} seconds, got {ttl_seconds}")


def _expiry(ttl_seconds: int) -> datetime:
    # Taken before signing, so the promise is never later than the URL's real expiry.
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=ttl_seconds)


def sha256_checksum_header(sha256_hex: str) -> str:
    """The ``x-amz-checksum-sha256`` value (base64 of the raw digest) for a hex digest."""
    if not HEX_DIGEST_RE.fullmatch(sha256_hex):
        raise BadRequest(f"sha256 must be 64 lowercase hex characters, got {sha256_hex!r}")
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


class S3UploadSigner:
    """:class:`UploadSigner` for one S3 bucket.

    ``client`` is built for the address uploaders reach S3 at
    (:func:`~chalicelib.storage.s3.make_s3_presign_client`): a URL embeds the host it was signed for.
    """

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def presign_put(
        self, key: str, size: int, sha256_hex: str | None, ttl_seconds: int, content_type: str = BUNDLE_CONTENT_TYPE
    ) -> PresignedRequest:
        if size < 0:
            raise ValueError(f"size must not be negative, got {size}")
        _check_ttl(ttl_seconds)
        expires_at = _expiry(ttl_seconds)
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "ContentLength": size,
            "ContentType": content_type,
        }
        headers = {"content-type": content_type}
        if sha256_hex is not None:
            params["ChecksumSHA256"] = headers["x-amz-checksum-sha256"] = sha256_checksum_header(sha256_hex)
        url = self._client.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl_seconds, HttpMethod="PUT")
        return PresignedRequest(url=url, method="PUT", headers=headers, expires_at=expires_at)

    def presign_parts(
        self, key: str, upload_id: str, parts: int | Sequence[PartRange], ttl_seconds: int
    ) -> list[PresignedPart]:
        """Given a :func:`~chalicelib.storage.multipart.part_layout`, each URL also signs its part's exact
        ``Content-Length``; given only a count, lengths are left to the ``complete`` step's checks."""
        _check_ttl(ttl_seconds)
        lengths: list[tuple[int, int | None]] = (
            [(number, None) for number in range(1, parts + 1)]
            if isinstance(parts, int)
            else [(part.part_number, part.length) for part in parts]
        )
        if not 1 <= len(lengths) <= MAX_PARTS:
            raise ValueError(f"a multipart upload has 1..{MAX_PARTS} parts, got {len(lengths)}")
        return [self._presign_part(key, upload_id, number, length, ttl_seconds) for number, length in lengths]

    def _presign_part(
        self, key: str, upload_id: str, part_number: int, length: int | None, ttl_seconds: int
    ) -> PresignedPart:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number}
        if length is not None:
            params["ContentLength"] = length
        url = self._client.generate_presigned_url("upload_part", Params=params, ExpiresIn=ttl_seconds, HttpMethod="PUT")
        return PresignedPart(part_number=part_number, url=url)
