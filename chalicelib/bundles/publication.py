"""The publish record: what finalize established about a bundle, kept beside it as ``sha256/<hex>/published.json``.

Finalize writes the record after every check passed, with the moment it checked the signature.  Only the
platform writes under ``sha256/`` (the bucket policy and the roles enforce it), so the runner, which has
no database, can trust the record: it checks certificates at ``published_at`` rather than at the current
time.  A certificate that expires after a bundle was published therefore does not stop the bundle from
loading; removing the key from the trust bundle does.

The record is JSON, one object::

    {"format": "ext-publish-record/v1", "content_hash": "sha256:…", "extension": "com.acme.tools",
     "version": "1.0.0", "published_at": "2026-11-30T12:00:00.123456Z",
     "signature_status": "verified", "key_id": "sha256:…" | null}

Readers ignore fields they do not know, so a newer platform may add some while older runners still run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.bundles.signing import SignatureStatus
from chalicelib.errors import SignatureInvalid

__all__ = ["MAX_PUBLISH_RECORD_BYTES", "PUBLISH_RECORD_FORMAT", "PublishRecord"]

PUBLISH_RECORD_FORMAT = "ext-publish-record/v1"
MAX_PUBLISH_RECORD_BYTES = 16 * 1024
"""Records are a few hundred bytes; anything past this is not a record and is not parsed."""
_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the reader's clock a record may be dated (clocks of different hosts differ a little)."""


def _invalid(problem: str) -> SignatureInvalid:
    return SignatureInvalid(f"publish record: {problem}")


def _string(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise _invalid(f"field {field!r} must be a non-empty string")
    return value


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"published_at {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise _invalid("published_at has no time zone")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class PublishRecord:
    """A bundle as finalize published it: which one, under what name, when, and how it was signed."""

    content_hash: str
    extension: str
    version: str
    published_at: datetime
    signature_status: SignatureStatus
    key_id: str | None

    def to_json(self) -> bytes:
        """The stored form: sorted keys, UTC time with a ``Z``, a trailing newline."""
        data = {
            "format": PUBLISH_RECORD_FORMAT,
            "content_hash": self.content_hash,
            "extension": self.extension,
            "version": self.version,
            "published_at": self.published_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "signature_status": str(self.signature_status),
            "key_id": self.key_id,
        }
        return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes) -> PublishRecord:
        """Read a stored record; :class:`SignatureInvalid` for anything malformed (the runner fails closed)."""
        if len(raw) > MAX_PUBLISH_RECORD_BYTES:
            raise _invalid(f"larger than {MAX_PUBLISH_RECORD_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise _invalid("not valid JSON") from None
        if not isinstance(data, dict):
            raise _invalid("not a JSON object")
        if data.get("format") != PUBLISH_RECORD_FORMAT:
            raise _invalid(f"format must be {PUBLISH_RECORD_FORMAT!r}")
        key_id = data.get("key_id")
        try:
            status = SignatureStatus(_string(data, "signature_status"))
        except ValueError:
            raise _invalid("field 'signature_status' is not a known status") from None
        if key_id is not None and not isinstance(key_id, str):
            raise _invalid("field 'key_id' must be a string or null")
        return cls(
            content_hash=_string(data, "content_hash"),
            extension=_string(data, "extension"),
            version=_string(data, "version"),
            published_at=_moment(_string(data, "published_at")),
            signature_status=status,
            key_id=key_id,
        )

    def check(self, content_hash: str, extension: str, now: datetime) -> None:
        """Make sure this is the record of ``content_hash``, published as ``extension``, and not dated after
        ``now`` (beyond a little clock skew); :class:`SignatureInvalid` otherwise."""
        if self.content_hash != content_hash:
            raise _invalid(f"it is the record of {self.content_hash}, not of {content_hash}")
        if self.extension != extension:
            raise _invalid(f"it names {self.extension!r}, but the bundle's manifest names {extension!r}")
        if self.published_at > now + _CLOCK_SKEW:
            raise _invalid(f"published_at {self.published_at.isoformat()} is in the future")
