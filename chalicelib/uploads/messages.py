"""What the upload routes read and answer: requests parsed at the edge, frozen results with ``to_json``.

The routes parse a body into a request (:class:`BadRequest` names the field), the pipeline takes and
returns only these types, and a result becomes JSON in one place.  A finalize's result is also what
the upload session stores, so a replay answers with exactly what the first finalize did
(:meth:`FinalizeResult.from_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chalicelib.bundles.digests import hex_digest_of
from chalicelib.bundles.signing import SignatureEnvelope
from chalicelib.errors import BadRequest
from chalicelib.json_values import as_integer
from chalicelib.registry import UploadState
from chalicelib.storage.multipart import UploadedPart
from chalicelib.storage.presign import PresignedPart

__all__ = [
    "AbortRequest",
    "AbortResult",
    "FinalizeRequest",
    "FinalizeResult",
    "InitiateRequest",
    "UploadStatus",
    "UploadTarget",
]


# --- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InitiateRequest:
    """``POST /ext-bundles/initiate-upload``: ``{"size", "sha256"?, "signature"?}``."""

    size: int
    sha256: str | None = None
    """64 lowercase hex digits, without the ``sha256:`` prefix."""
    signature: SignatureEnvelope | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> InitiateRequest:
        """Read the body; :class:`BadRequest` names the field that is wrong.  The size limit is the
        pipeline's to check (``BUNDLE_TOO_LARGE``)."""
        return cls(
            size=_size(body.get("size")),
            sha256=_declared_sha256(body.get("sha256")),
            signature=_envelope(body.get("signature")),
        )


@dataclass(frozen=True)
class FinalizeRequest:
    """``POST /ext-bundles/finalize``: ``{"upload_id", "parts"?, "signature"?}``.

    ``parts`` (the uploader's ``{part_number, etag}`` list) is ``None`` when not sent: finalize then
    lists the parts S3 holds.
    """

    upload_id: str
    parts: tuple[UploadedPart, ...] | None = None
    signature: SignatureEnvelope | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> FinalizeRequest:
        """Read the body; :class:`BadRequest` names the field that is wrong."""
        return cls(
            upload_id=_upload_id(body.get("upload_id")),
            parts=_parts(body.get("parts")),
            signature=_envelope(body.get("signature")),
        )


@dataclass(frozen=True)
class AbortRequest:
    """``POST /ext-bundles/abort``: ``{"upload_id"}``."""

    upload_id: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> AbortRequest:
        """Read the body; :class:`BadRequest` without an ``upload_id``."""
        return cls(upload_id=_upload_id(body.get("upload_id")))


def _upload_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("`upload_id` is required")
    return value


def _declared_sha256(value: Any) -> str | None:
    if value is None:
        return None
    digest = hex_digest_of(value, bare_ok=True) if isinstance(value, str) else None
    if digest is None:
        raise BadRequest("`sha256` must be 64 lowercase hex characters (optionally prefixed with sha256:)")
    return digest


def _envelope(value: Any) -> SignatureEnvelope | None:
    if value is None:
        return None
    if not isinstance(value, (str, Mapping)):
        raise BadRequest("`signature` must be the signature envelope (a JSON object or its text)")
    return SignatureEnvelope.parse(value)


def _size(value: Any) -> int:
    size = as_integer(value)
    if size is None or size <= 0:
        raise BadRequest("`size` must be the bundle's size in bytes, a positive integer")
    return size


def _parts(value: Any) -> tuple[UploadedPart, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, Mapping) for p in value):
        raise BadRequest("`parts` must be a list of {part_number, etag}")
    parts = []
    for item in value:
        number, etag = item.get("part_number"), item.get("etag")
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(etag, str):
            raise BadRequest("each part needs an integer `part_number` and a string `etag`")
        parts.append(UploadedPart(part_number=number, etag=etag))
    return tuple(parts)


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadTarget:
    """Initiate's answer: where and how to upload.

    ``PUT``: one presigned ``url`` with the ``headers`` to send.  ``MULTIPART``: ``parts`` of
    ``part_size`` bytes (the last one shorter), one presigned URL each.
    """

    upload_id: str
    size: int
    method: Literal["PUT", "MULTIPART"]
    expires_at: datetime
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    part_size: int | None = None
    parts: tuple[PresignedPart, ...] = ()

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"upload_id": self.upload_id, "size": self.size, "method": self.method}
        if self.method == "PUT":
            answer.update(url=self.url, headers=dict(self.headers))
        else:
            answer.update(part_size=self.part_size, parts=_part_urls(self.parts), headers=dict(self.headers))
        answer["expires_at"] = self.expires_at.isoformat()
        return answer


@dataclass(frozen=True)
class FinalizeResult:
    """What finalize registered (``finalized``), or found registered with the same bytes (``already_finalized``)."""

    upload_id: str
    content_hash: str
    extension: str
    version: str
    status: Literal["finalized", "already_finalized"]
    signature_status: str
    key_id: str | None
    size: int

    def to_json(self) -> dict[str, Any]:
        """The answer of ``POST /ext-bundles/finalize``, and what the session stores."""
        return {
            "upload_id": self.upload_id,
            "content_hash": self.content_hash,
            "extension": self.extension,
            "version": self.version,
            "status": self.status,
            "signature_status": self.signature_status,
            "key_id": self.key_id,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> FinalizeResult:
        """The result a session stored (:meth:`to_json`'s output)."""
        return cls(
            upload_id=stored["upload_id"],
            content_hash=stored["content_hash"],
            extension=stored["extension"],
            version=stored["version"],
            status=stored["status"],
            signature_status=stored["signature_status"],
            key_id=stored["key_id"],
            size=int(stored["size"]),
        )


@dataclass(frozen=True)
class AbortResult:
    """Abort's answer."""

    upload_id: str

    def to_json(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "status": "aborted"}


@dataclass(frozen=True)
class UploadStatus:
    """``GET /ext-bundles/uploads/{upload_id}``: the session's state.

    A finalized session carries its ``result``, a failed one its ``error_code`` and ``error_message``; a
    pending multipart upload the parts S3 holds (``uploaded_parts``) and fresh URLs for the rest
    (``parts``), so an interrupted upload resumes instead of restarting.
    """

    upload_id: str
    state: UploadState
    size: int
    sha256: str | None
    expires_at: datetime
    result: FinalizeResult | None = None
    error_code: str | None = None
    error_message: str | None = None
    part_size: int | None = None
    uploaded_parts: tuple[UploadedPart, ...] | None = None
    parts: tuple[PresignedPart, ...] = ()

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "upload_id": self.upload_id,
            "state": str(self.state),
            "size": self.size,
            "sha256": self.sha256,
            "expires_at": self.expires_at.isoformat(),
        }
        if self.state is UploadState.FINALIZED and self.result is not None:
            answer["result"] = self.result.to_json()
        if self.state is UploadState.FAILED:
            answer["error"] = {"code": self.error_code, "message": self.error_message}
        if self.uploaded_parts is not None:
            answer.update(
                method="MULTIPART",
                part_size=self.part_size,
                uploaded_parts=[
                    {"part_number": p.part_number, "etag": p.etag, "size": p.size} for p in self.uploaded_parts
                ],
                parts=_part_urls(self.parts),
            )
        return answer


def _part_urls(parts: tuple[PresignedPart, ...]) -> list[dict[str, Any]]:
    return [{"part_number": part.part_number, "url": part.url} for part in parts]
