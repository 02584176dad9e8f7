"""The ``<bundle>.sig`` envelope (DESIGN §4 "Signatures") and signing a content hash into one.

:meth:`SignatureEnvelope.parse` is strict (exact field set, types, syntax, size), so an envelope object is
always well formed.  :func:`sign_content_hash` signs ``b"ext-bundle-signature/v1\\n" + content_hash``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.bundles.digests import CONTENT_HASH_RE, DIGEST_RULE
from chalicelib.bundles.duplicate_keys import refuse_duplicate_keys
from chalicelib.bundles.signing.describe import json_type, show
from chalicelib.bundles.signing.keys import PrivateKey, SignatureAlgorithm, algorithm_for, key_id_for, sign_message
from chalicelib.errors import SignatureInvalid

__all__ = ["MAX_ENVELOPE_BYTES", "SIGNATURE_FORMAT", "SignatureEnvelope", "sign_content_hash", "signed_message"]

SIGNATURE_FORMAT = "ext-bundle-signature/v1"
MAX_ENVELOPE_BYTES = 16 * 1024
"""Envelopes are a few hundred bytes; anything past this is not an envelope and is not parsed."""
_ENVELOPE_FIELDS = frozenset({"format", "content_hash", "algorithm", "key_id", "signature"})

# Ed25519 signatures have a fixed size; a DER ECDSA P-256 signature is a SEQUENCE of two INTEGERs of at
# most 33 bytes each, so anything outside these bounds cannot be a signature of that algorithm.
_SIGNATURE_SIZES: Mapping[SignatureAlgorithm, tuple[int, int]] = {
    SignatureAlgorithm.ED25519: (64, 64),
    SignatureAlgorithm.ECDSA_P256_SHA256: (8, 72),
}


def signed_message(content_hash: str) -> bytes:
    """The bytes a signature of ``content_hash`` covers."""
    # Domain separation: these bytes can never be mistaken for a signature over anything else.
    return f"{SIGNATURE_FORMAT}\n".encode() + content_hash.encode()


def _field_error(name: str, problem: str) -> SignatureInvalid:
    return SignatureInvalid(f"signature envelope: field '{name}' {problem}")


def _require_string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _field_error(name, f"must be a string, got {json_type(value)}")
    return value


def _require_digest(name: str, value: object) -> None:
    if not CONTENT_HASH_RE.fullmatch(_require_string(name, value)):
        raise _field_error(name, f"must be {DIGEST_RULE}, got {show(value)}")


def _parse_algorithm(value: object) -> SignatureAlgorithm:
    text = _require_string("algorithm", value)
    try:
        return SignatureAlgorithm(text)
    except ValueError:
        allowed = ", ".join(repr(a.value) for a in SignatureAlgorithm)
        raise _field_error("algorithm", f"must be one of {allowed}, got {show(text)}") from None


def _decode_signature(value: object, algorithm: SignatureAlgorithm) -> bytes:
    text = _require_string("signature", value)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: text outside ASCII
        raise _field_error("signature", "is not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise _field_error("signature", "is not canonical standard base64")
    low, high = _SIGNATURE_SIZES[algorithm]
    if not low <= len(raw) <= high:
        size = f"{low}" if low == high else f"{low} to {high}"
        raise _field_error("signature", f"must decode to {size} bytes for {algorithm.value}, got {len(raw)}")
    return raw


_unique_keys = refuse_duplicate_keys(lambda key: SignatureInvalid(f"signature envelope: duplicate field '{key}'"))


def _decode_envelope_json(raw: bytes | str) -> object:
    # surrogatepass lets a str with lone surrogates through here so the strict decode below rejects it.
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SignatureInvalid(f"signature envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureInvalid("signature envelope is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SignatureInvalid(f"signature envelope is not valid JSON: {exc}") from None
    except RecursionError:
        raise SignatureInvalid("signature envelope is not valid JSON: nested too deeply") from None


def _check_field_names(obj: Mapping[Any, Any]) -> None:
    unknown = sorted(str(key) for key in obj if key not in _ENVELOPE_FIELDS)
    if unknown:
        raise SignatureInvalid(f"signature envelope: unknown field(s) {', '.join(map(repr, unknown))}")
    missing = sorted(_ENVELOPE_FIELDS - set(obj))
    if missing:
        raise SignatureInvalid(f"signature envelope: missing field(s) {', '.join(map(repr, missing))}")


@dataclass(frozen=True)
class SignatureEnvelope:
    """A well-formed ``ext-bundle-signature/v1`` envelope (DESIGN §4); building one validates every field."""

    format: str
    content_hash: str
    algorithm: SignatureAlgorithm
    key_id: str
    signature: str

    def __post_init__(self) -> None:
        if _require_string("format", self.format) != SIGNATURE_FORMAT:
            raise _field_error("format", f"must be {SIGNATURE_FORMAT!r}, got {show(self.format)}")
        _require_digest("content_hash", self.content_hash)
        if not isinstance(self.algorithm, SignatureAlgorithm):
            raise _field_error("algorithm", f"must be a SignatureAlgorithm, got {show(self.algorithm)}")
        _require_digest("key_id", self.key_id)
        _decode_signature(self.signature, self.algorithm)

    @classmethod
    def parse(cls, raw: bytes | str | Mapping[str, Any]) -> SignatureEnvelope:
        """Parse envelope JSON (bytes, text or an already decoded object); :class:`SignatureInvalid` names
        the offending field for anything but an exact, well-formed envelope."""
        obj = raw if isinstance(raw, Mapping) else _decode_envelope_json(raw)
        if not isinstance(obj, Mapping):
            raise SignatureInvalid(f"signature envelope must be a JSON object, got {json_type(obj)}")
        _check_field_names(obj)
        return cls(
            format=obj["format"],
            content_hash=obj["content_hash"],
            algorithm=_parse_algorithm(obj["algorithm"]),
            key_id=obj["key_id"],
            signature=obj["signature"],
        )

    @property
    def signature_bytes(self) -> bytes:
        """The raw signature (64 bytes for Ed25519, DER for ECDSA)."""
        return base64.b64decode(self.signature, validate=True)

    def to_dict(self) -> dict[str, str]:
        """The envelope as a JSON-ready mapping."""
        return {
            "format": self.format,
            "content_hash": self.content_hash,
            "algorithm": self.algorithm.value,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    def to_json(self) -> str:
        """The canonical file form: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"


def sign_content_hash(content_hash: str, private_key: PrivateKey) -> SignatureEnvelope:
    """Sign a bundle's content hash; the algorithm follows from the key (Ed25519 or EC P-256).

    Raises :class:`KeyInvalid` for any other key and :class:`SignatureInvalid` for a malformed hash.
    """
    algorithm = algorithm_for(private_key)
    signature = sign_message(private_key, signed_message(content_hash))
    return SignatureEnvelope(
        format=SIGNATURE_FORMAT,
        content_hash=content_hash,
        algorithm=algorithm,
        key_id=key_id_for(private_key.public_key()),
        signature=base64.b64encode(signature).decode("ascii"),
    )
