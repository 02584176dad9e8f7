"""The content-addressed, immutable bundle store, and the staging area next to it.

Two protocols, one S3 implementation of both (:class:`S3BundleStore`): :class:`BundleStore` is what
readers and finalize may do with ``sha256/``, :class:`StagingArea` what finalize and cleanup may do
with ``staging/``.

Layout (DESIGN §2)::

    <base><hex>/bundle.tar.zst | manifest.json | signature.json | entry.wasm | published.json
    <base><hex>/precompiled/<fingerprint>.cwasm
    <staging><tenant>/<upload_id>/bundle.tar.zst

Objects under the base are written once: every write is conditional on the key
being absent (``If-None-Match: *``).  When it exists already the store compares
bytes, so writing the same content again is a no-op (:attr:`PutOutcome.SAME`) and
different content is refused (:class:`StorageError`).  Reads stream; nothing here
holds a whole bundle in memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.bundles.digests import DIGEST_RULE, hex_digest_of
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, NotFound, StorageError
from chalicelib.storage.multipart import S3Multipart, UploadedPart
from chalicelib.storage.s3 import error_code, make_s3_client

__all__ = [
    "BUNDLE_OBJECT",
    "ENTRY_OBJECT",
    "MANIFEST_OBJECT",
    "MAX_COPY_PART_BYTES",
    "PUBLISH_RECORD_OBJECT",
    "SIGNATURE_OBJECT",
    "BundleStore",
    "ObjectInfo",
    "PutOutcome",
    "ReadableStream",
    "S3BundleStore",
    "StagingArea",
    "content_hash_hex",
]

BUNDLE_OBJECT = "bundle.tar.zst"
MANIFEST_OBJECT = "manifest.json"
SIGNATURE_OBJECT = "signature.json"
ENTRY_OBJECT = "entry.wasm"
PUBLISH_RECORD_OBJECT = "published.json"
"""When and how finalize published the bundle (:mod:`chalicelib.bundles.publication`)."""
_FIXED_OBJECTS = frozenset({BUNDLE_OBJECT, MANIFEST_OBJECT, SIGNATURE_OBJECT, ENTRY_OBJECT, PUBLISH_RECORD_OBJECT})

_FINGERPRINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KEY_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_CHUNK_BYTES = 1024 * 1024
MAX_COPY_PART_BYTES = 5 * 1024**3
"""S3's largest ``UploadPartCopy`` range."""
_PUT_ATTEMPTS = 3


class PutOutcome(StrEnum):
    """What an immutable write did: stored new bytes, or found the same bytes there."""

    NEW = "new"
    SAME = "same"


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD or a listing says about one object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


class ReadableStream(Protocol):
    """A streamed object body (botocore's ``StreamingBody``): read it in chunks, then close it."""

    def read(self, amt: int | None = None) -> bytes: ...

    def close(self) -> None: ...


class BundleStore(Protocol):
    """Where verified bundles and their derived objects live, addressed by content hash."""

    def object_key(self, content_hash: str, name: str) -> str:
        """The key of ``name`` (``bundle.tar.zst``, ``manifest.json``, …) for ``content_hash``."""
        ...

    def precompiled_key(self, content_hash: str, fingerprint: str) -> str:
        """The key of the platform-compiled module for ``content_hash`` and an engine fingerprint."""
        ...

    def compile_failure_key(self, content_hash: str, fingerprint: str, limits_id: str) -> str:
        """The key of the record of a failed compile (engine fingerprint, compile limits id)."""
        ...

    def put_immutable(self, key: str, body: bytes | BinaryIO, content_type: str) -> PutOutcome:
        """Write ``key`` once; the same bytes again give ``SAME``, other bytes raise ``StorageError``."""
        ...

    def put_bundle_from_staging(
        self, staging_key: str, content_hash: str, *, source_etag: str | None = None
    ) -> PutOutcome:
        """Copy a verified staged bundle to its canonical key, with ``put_immutable``'s promises."""
        ...

    def open_stream(self, key: str, *, if_match: str | None = None) -> ReadableStream:
        """Stream ``key``'s bytes; raises ``NotFound`` when it does not exist.

        With ``if_match`` (an ETag from :meth:`head`) the read fails with
        ``StorageError`` unless the object still has that ETag.
        """
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of ``key``, or ``None`` when it does not exist."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """The whole of a small object; raises ``StorageError`` when it is larger than ``max_bytes``."""
        ...


class StagingArea(Protocol):
    """Where uploads land before finalize: written by uploaders (through presigned URLs), read once, deleted."""

    def staging_key(self, tenant: str, upload_id: str) -> str:
        """The key an upload session's bundle is staged under; :class:`BadRequest` for an unsafe segment."""
        ...

    def upload_of(self, key: str) -> tuple[str, str] | None:
        """``(tenant, upload_id)`` of a key :meth:`staging_key` made, or ``None`` for any other key."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of ``key``, or ``None`` when nothing is staged there."""
        ...

    def open_stream(self, key: str, *, if_match: str | None = None) -> ReadableStream:
        """Stream ``key``'s bytes (see :meth:`BundleStore.open_stream`)."""
        ...

    def delete(self, key: str) -> None:
        """Delete a staging object; keys outside staging are refused."""
        ...

    def list_staging(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every staging object whose key (below the staging prefix) starts with ``prefix``."""
        ...


def content_hash_hex(content_hash: str) -> str:
    """The 64 hex digits of a ``sha256:<hex>`` content hash; raises ``BadRequest`` otherwise."""
    digest = hex_digest_of(content_hash)
    if digest is None:
        raise BadRequest(f"content hash must be {DIGEST_RULE}, got {content_hash!r}")
    return digest


@contextmanager
def _storage_errors(action: str, key: str) -> Iterator[None]:
    """Turn S3 failures nobody handled into ``StorageError`` naming the action and key."""
    try:
        yield
    except ClientError as exc:
        raise StorageError(f"could not {action} {key}: {error_code(exc) or exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"could not {action} {key}: {exc}") from exc


def _digest_of_body(body: bytes | BinaryIO) -> tuple[bytes, int]:
    """SHA-256 digest and size of ``body``, reading a file object from where it stands to its end."""
    if isinstance(body, bytes):
        return hashlib.sha256(body).digest(), len(body)
    digest = hashlib.sha256()
    size = 0
    while chunk := body.read(_CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.digest(), size


def _copy_ranges(size: int, max_part_bytes: int) -> list[str | None]:
    """``CopySourceRange`` values covering ``size`` bytes; one part needs no range at all."""
    if size <= max_part_bytes:
        return [None]
    return [f"bytes={start}-{min(start + max_part_bytes, size) - 1}" for start in range(0, size, max_part_bytes)]


class S3BundleStore:
    """:class:`BundleStore` and :class:`StagingArea` on one S3 bucket.

    ``max_copy_part_bytes`` is the largest range one ``UploadPartCopy`` copies (S3 allows 5 GiB).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        base: str = "sha256/",
        staging_prefix: str = "staging/",
        max_copy_part_bytes: int = MAX_COPY_PART_BYTES,
    ) -> None:
        if not base.endswith("/") or not staging_prefix.endswith("/"):
            raise ValueError("base and staging_prefix must end with '/'")
        if base.startswith(staging_prefix) or staging_prefix.startswith(base):
            raise ValueError(f"store base {base!r} and staging prefix {staging_prefix!r} must not overlap")
        if not 1 <= max_copy_part_bytes <= MAX_COPY_PART_BYTES:
            raise ValueError(f"max_copy_part_bytes must be 1..{MAX_COPY_PART_BYTES}, got {max_copy_part_bytes}")
        self._client = client
        self._bucket = bucket
        self._base = base
        self._staging = staging_prefix
        self._max_copy_part_bytes = max_copy_part_bytes
        self._multipart = S3Multipart(client, bucket)

    @classmethod
    def from_settings(cls, settings: Settings, client: Any | None = None) -> S3BundleStore:
        """The store ``settings`` describe (bucket, base, staging prefix), on ``client`` or a new one."""
        return cls(
            client if client is not None else make_s3_client(settings),
            settings.storage_s3_bucket,
            base=settings.bundle_store_base,
            staging_prefix=settings.staging_prefix,
        )

    @property
    def bucket(self) -> str:
        return self._bucket

    # --- keys -------------------------------------------------------------------------

    def object_key(self, content_hash: str, name: str) -> str:
        if name not in _FIXED_OBJECTS:
            raise ValueError(f"unknown store object {name!r}; use precompiled_key for compiled modules")
        return f"{self._base}{content_hash_hex(content_hash)}/{name}"

    def precompiled_key(self, content_hash: str, fingerprint: str) -> str:
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise ValueError(f"engine fingerprint {fingerprint!r} is not a safe key segment")
        return f"{self._base}{content_hash_hex(content_hash)}/precompiled/{fingerprint}.cwasm"

    def compile_failure_key(self, content_hash: str, fingerprint: str, limits_id: str) -> str:
        """Where a failed compile of this code, for this engine and these compile limits, is recorded."""
        if not _FINGERPRINT.match(fingerprint) or not _FINGERPRINT.match(limits_id):
            raise ValueError(f"engine fingerprint {fingerprint!r} or limits id {limits_id!r} is not a safe key segment")
        return f"{self._base}{content_hash_hex(content_hash)}/precompiled/{fingerprint}.failed-{limits_id}.json"

    def staging_key(self, tenant: str, upload_id: str) -> str:
        for label, segment in (("tenant", tenant), ("upload id", upload_id)):
            if not _KEY_SEGMENT.fullmatch(segment) or segment in {".", ".."}:
                raise BadRequest(f"{label} {segment!r} cannot be part of a storage key")
        return f"{self._staging}{tenant}/{upload_id}/{BUNDLE_OBJECT}"

    def upload_of(self, key: str) -> tuple[str, str] | None:
        match = re.fullmatch(re.escape(self._staging) + r"([^/]+)/([^/]+)/" + re.escape(BUNDLE_OBJECT), key)
        return (match.group(1), match.group(2)) if match else None

    # --- immutable writes -------------------------------------------------------------

    def put_immutable(self, key: str, body: bytes | BinaryIO, content_type: str) -> PutOutcome:
        """Write ``key`` once with ``If-None-Match: *``.

        A file object must be seekable: it is read once to hash it, then streamed
        to S3.  On ``412`` the existing object is streamed and hashed:
        identical bytes give ``SAME``, anything else raises ``StorageError``.
        """
        if not isinstance(body, bytes) and not body.seekable():
            raise ValueError("put_immutable needs bytes or a seekable file object")
        start = 0 if isinstance(body, bytes) else body.tell()
        digest, size = _digest_of_body(body)
        for _ in range(_PUT_ATTEMPTS):
            if not isinstance(body, bytes):
                body.seek(start)
            try:
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=body,
                    ContentType=content_type,
                    ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
                    IfNoneMatch="*",
                )
                return PutOutcome.NEW
            except ClientError as exc:
                code = error_code(exc)
                if code == "PreconditionFailed":
                    return self._compare_existing(key, digest, size)
                # S3 answers 409 while a concurrent conditional write to the key is in flight: try again.
                if code != "ConditionalRequestConflict":
                    raise StorageError(f"could not write {key}: {code or exc}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"could not write {key}: {exc}") from exc
        raise StorageError(f"could not write {key}: concurrent writes kept conflicting")

    def put_bundle_from_staging(
        self, staging_key: str, content_hash: str, *, source_etag: str | None = None
    ) -> PutOutcome:
        """Copy the staged bundle to ``<base><hex>/bundle.tar.zst`` without moving its bytes through us.

        CopyObject cannot be trusted to keep the key immutable: S3-compatible stores
        (moto among them) ignore ``If-None-Match`` on a copy and overwrite.  So the copy
        is a multipart upload whose parts are server-side ``UploadPartCopy`` ranges of
        the staging object, completed with ``If-None-Match: *``, which S3, MinIO and moto
        all enforce.  ``source_etag`` (the ETag the bytes were verified under) is sent as
        ``x-amz-copy-source-if-match`` so a staging object replaced after verification
        is never copied.
        """
        target = self.object_key(content_hash, BUNDLE_OBJECT)
        digest = bytes.fromhex(content_hash_hex(content_hash))
        source = self.head(staging_key)
        if source is None:
            raise NotFound(f"staging object {staging_key} does not exist")
        if source_etag is not None and source.etag != source_etag:
            raise StorageError(f"staging object {staging_key} changed after it was verified")
        if self.exists(target):
            return self._compare_existing(target, digest, source.size)
        with _storage_errors("start the copy to", target):
            upload_id = self._multipart.create(target)
        try:
            parts = self._copy_parts(source, upload_id, target)
            self._multipart.complete(target, upload_id, parts, if_none_match=True)
        except StorageError:
            self._multipart.abort(target, upload_id)
            # A concurrent finalize may have completed first (412): same bytes are fine.
            if self.exists(target):
                return self._compare_existing(target, digest, source.size)
            raise
        except BaseException:
            self._multipart.abort(target, upload_id)
            raise
        return PutOutcome.NEW

    def _copy_parts(self, source: ObjectInfo, upload_id: str, target: str) -> list[UploadedPart]:
        parts = []
        for number, copy_range in enumerate(_copy_ranges(source.size, self._max_copy_part_bytes), start=1):
            request: dict[str, Any] = {
                "Bucket": self._bucket,
                "Key": target,
                "UploadId": upload_id,
                "PartNumber": number,
                "CopySource": {"Bucket": self._bucket, "Key": source.key},
                "CopySourceIfMatch": source.etag,
            }
            if copy_range is not None:
                request["CopySourceRange"] = copy_range
            with _storage_errors("copy a part of", source.key):
                response = self._client.upload_part_copy(**request)
            parts.append(UploadedPart(part_number=number, etag=str(response["CopyPartResult"]["ETag"])))
        return parts

    def _compare_existing(self, key: str, digest: bytes, size: int) -> PutOutcome:
        existing = self.head(key)
        if existing is None:
            raise StorageError(f"immutable object {key} was reported present but is gone")
        if existing.size != size or not hmac.compare_digest(self._sha256_of(key), digest):
            raise StorageError(f"immutable object {key} already holds different bytes")
        return PutOutcome.SAME

    def _sha256_of(self, key: str) -> bytes:
        digest = hashlib.sha256()
        stream = self.open_stream(key)
        try:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
        finally:
            stream.close()
        return digest.digest()

    # --- reads ------------------------------------------------------------------------

    def open_stream(self, key: str, *, if_match: str | None = None) -> ReadableStream:
        request = {"Bucket": self._bucket, "Key": key}
        if if_match is not None:
            request["IfMatch"] = if_match
        try:
            response = self._client.get_object(**request)
        except ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                raise NotFound(f"object {key} does not exist") from exc
            if error_code(exc) in {"PreconditionFailed", "412"}:
                raise StorageError(f"object {key} changed: its ETag is no longer {if_match}") from exc
            raise StorageError(f"could not read {key}: {error_code(exc) or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not read {key}: {exc}") from exc
        body: ReadableStream = response["Body"]
        return body

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"could not inspect {key}: {error_code(exc) or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not inspect {key}: {exc}") from exc
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response["ETag"]),
            last_modified=response.get("LastModified"),
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        stream = self.open_stream(key)
        try:
            # One byte more than allowed tells "too large" apart without reading the rest.
            data = stream.read(max_bytes + 1)
        finally:
            stream.close()
        if len(data) > max_bytes:
            raise StorageError(f"object {key} is larger than the {max_bytes} bytes allowed here")
        return data

    # --- staging ----------------------------------------------------------------------

    def delete(self, key: str) -> None:
        if key.startswith(self._base) or not key.startswith(self._staging):
            raise StorageError(f"refusing to delete {key}: only staging objects ({self._staging}…) may be deleted")
        with _storage_errors("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=key)

    def list_staging(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if ".." in prefix.split("/"):
            raise ValueError(f"staging prefix {prefix!r} must not contain '..'")
        paginator = self._client.get_paginator("list_objects_v2")
        with _storage_errors("list", self._staging + prefix):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._staging + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=str(item["Key"]),
                        size=int(item["Size"]),
                        etag=str(item["ETag"]),
                        last_modified=item.get("LastModified"),
                    )
