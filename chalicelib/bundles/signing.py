"""Bundle signatures: the envelope, signing, trust bundles of scoped keys, and verification.

A publisher signs a bundle's content hash (DESIGN §4 "Signatures"); the platform checks that signature
against the keys it trusts before anything is stored or run.

- :class:`SignatureEnvelope` is the ``<bundle>.sig`` JSON.  :meth:`SignatureEnvelope.parse` is strict
  (exact field set, types, syntax, size), so an envelope object is always well formed.
- :func:`sign_content_hash` signs ``b"ext-bundle-signature/v1\\n" + content_hash`` with an Ed25519 or
  EC P-256 key; :func:`load_private_key` and :func:`generate_ed25519_keypair` supply keys.
- :class:`TrustBundle` is the set of keys the platform trusts, read from PEM text whose ``# name:``,
  ``# scope:`` and ``# publisher:`` comment lines give each :class:`TrustedKey` a label, a
  :class:`NamePattern` scope and the publisher it signs for.  A key may appear in several certificates
  (renewals); it is then trusted at any moment one of them is valid.
- :func:`verify_signature` runs the checks in a fixed, numbered order and fails closed: every failure,
  expected or not, is a :class:`~chalicelib.errors.SignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from chalicelib.errors import (
    ConfigInvalid,
    KeyInvalid,
    SignatureError,
    SignatureInvalid,
    SignatureMissing,
    SignatureScope,
    SignatureUntrusted,
)

__all__ = [
    "ANY_NAME",
    "MAX_ENVELOPE_BYTES",
    "SIGNATURE_FORMAT",
    "NamePattern",
    "PatternKind",
    "PrivateKey",
    "PublicKey",
    "SignatureAlgorithm",
    "SignatureCheck",
    "SignatureEnvelope",
    "SignatureStatus",
    "TrustBundle",
    "TrustedKey",
    "Validity",
    "generate_ed25519_keypair",
    "key_id_for",
    "load_private_key",
    "sign_content_hash",
    "verify_signature",
]

SIGNATURE_FORMAT = "ext-bundle-signature/v1"
MAX_ENVELOPE_BYTES = 16 * 1024
"""Envelopes are a few hundred bytes; anything past this is not an envelope and is not parsed."""

PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PUBLISHER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST_RULE = "'sha256:' followed by 64 lowercase hex digits"
_ENVELOPE_FIELDS = frozenset({"format", "content_hash", "algorithm", "key_id", "signature"})


class SignatureStatus(StrEnum):
    """What a successful :func:`verify_signature` established about a bundle."""

    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    UNVERIFIED = "unverified"


class SignatureAlgorithm(StrEnum):
    """The ``algorithm`` values of the envelope."""

    ED25519 = "ed25519"
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"


# Ed25519 signatures have a fixed size; a DER ECDSA P-256 signature is a SEQUENCE of two INTEGERs of at
# most 33 bytes each, so anything outside these bounds cannot be a signature of that algorithm.
_SIGNATURE_SIZES: Mapping[SignatureAlgorithm, tuple[int, int]] = {
    SignatureAlgorithm.ED25519: (64, 64),
    SignatureAlgorithm.ECDSA_P256_SHA256: (8, 72),
}


# --- keys ---------------------------------------------------------------------------------


_KEY_FAMILIES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey), "Ed25519"),
    ((ed448.Ed448PublicKey, ed448.Ed448PrivateKey), "Ed448"),
    ((x25519.X25519PublicKey, x25519.X25519PrivateKey), "X25519"),
    ((x448.X448PublicKey, x448.X448PrivateKey), "X448"),
)


def _describe_key(key: object) -> str:
    """A short human name for a key's type, such as ``RSA-2048`` or ``EC secp384r1``."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return f"DSA-{key.key_size}"
    return next((name for kinds, name in _KEY_FAMILIES if isinstance(key, kinds)), type(key).__name__)


def _is_supported(key: object) -> bool:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return True
    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def _unsupported(key: object) -> str:
    return f"{_describe_key(key)} keys are not supported; use an Ed25519 or EC P-256 (secp256r1) key"


def _algorithm_for(key: PublicKey | PrivateKey) -> SignatureAlgorithm:
    if not _is_supported(key):
        raise KeyInvalid(_unsupported(key))
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return SignatureAlgorithm.ED25519
    return SignatureAlgorithm.ECDSA_P256_SHA256


def key_id_for(public_key: PublicKeyTypes) -> str:
    """``sha256:`` + the hex sha256 of the key's SubjectPublicKeyInfo DER: the envelope's ``key_id``."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKey:
    """Read a PEM private key, accepting only Ed25519 and EC P-256 keys.

    Raises :class:`KeyInvalid` when the PEM cannot be read (including a wrong or missing password) or
    holds a key of another type, naming that type.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
        # cryptography reports a missing or superfluous password as TypeError, bad data as ValueError.
        raise KeyInvalid(f"cannot read private key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) and _is_supported(key):
        return key
    raise KeyInvalid(_unsupported(key))


def generate_ed25519_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (unencrypted PKCS#8 PEM private key, SubjectPublicKeyInfo PEM public key)."""
    private_key = ed25519.Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


# --- envelope -----------------------------------------------------------------------------


def _signed_message(content_hash: str) -> bytes:
    # Domain separation: these bytes can never be mistaken for a signature over anything else.
    return f"{SIGNATURE_FORMAT}\n".encode() + content_hash.encode()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: object) -> str:
    names: tuple[tuple[type, str], ...] = ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"))
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _field_error(name: str, problem: str) -> SignatureInvalid:
    return SignatureInvalid(f"signature envelope: field '{name}' {problem}")


def _require_string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _field_error(name, f"must be a string, got {_json_type(value)}")
    return value


def _require_digest(name: str, value: object) -> None:
    if not _DIGEST_RE.fullmatch(_require_string(name, value)):
        raise _field_error(name, f"must be {_DIGEST_RULE}, got {_show(value)}")


def _parse_algorithm(value: object) -> SignatureAlgorithm:
    text = _require_string("algorithm", value)
    try:
        return SignatureAlgorithm(text)
    except ValueError:
        allowed = ", ".join(repr(a.value) for a in SignatureAlgorithm)
        raise _field_error("algorithm", f"must be one of {allowed}, got {_show(text)}") from None


def _decode_signature(value: object, algorithm: SignatureAlgorithm) -> bytes:
    text = _require_string("signature", value)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise _field_error("signature", "is not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise _field_error("signature", "is not canonical standard base64")
    low, high = _SIGNATURE_SIZES[algorithm]
    if not low <= len(raw) <= high:
        size = f"{low}" if low == high else f"{low} to {high}"
        raise _field_error("signature", f"must decode to {size} bytes for {algorithm.value}, got {len(raw)}")
    return raw


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise SignatureInvalid(f"signature envelope: duplicate field '{key}'")
        found[key] = value
    return found


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
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
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
            raise _field_error("format", f"must be {SIGNATURE_FORMAT!r}, got {_show(self.format)}")
        _require_digest("content_hash", self.content_hash)
        if not isinstance(self.algorithm, SignatureAlgorithm):
            raise _field_error("algorithm", f"must be a SignatureAlgorithm, got {_show(self.algorithm)}")
        _require_digest("key_id", self.key_id)
        _decode_signature(self.signature, self.algorithm)

    @classmethod
    def parse(cls, raw: bytes | str | Mapping[str, Any]) -> SignatureEnvelope:
        """Parse envelope JSON (bytes, text or an already decoded object); :class:`SignatureInvalid` names
        the offending field for anything but an exact, well-formed envelope."""
        obj = raw if isinstance(raw, Mapping) else _decode_envelope_json(raw)
        if not isinstance(obj, Mapping):
            raise SignatureInvalid(f"signature envelope must be a JSON object, got {_json_type(obj)}")
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
    algorithm = _algorithm_for(private_key)
    message = _signed_message(content_hash)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        signature = private_key.sign(message)
    else:
        signature = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    return SignatureEnvelope(
        format=SIGNATURE_FORMAT,
        content_hash=content_hash,
        algorithm=algorithm,
        key_id=key_id_for(private_key.public_key()),
        signature=base64.b64encode(signature).decode("ascii"),
    )


# --- trust --------------------------------------------------------------------------------


class PatternKind(Enum):
    """How a :class:`NamePattern` matches."""

    ANY = "any"
    EXACT = "exact"
    BELOW = "below"


_PATTERN_BASE_RE = re.compile(r"[a-z0-9][a-z0-9-]*(?:\.[a-z0-9][a-z0-9-]*)*")


@dataclass(frozen=True)
class NamePattern:
    """One scope entry: ``*`` (every name), ``com.acme`` (that name) or ``com.acme.*`` (names below it)."""

    kind: PatternKind
    base: str = ""

    def __post_init__(self) -> None:
        # ANY carries no base; EXACT and BELOW need a well-formed one.
        base_ok = _PATTERN_BASE_RE.fullmatch(self.base) is not None
        if base_ok == (self.kind is PatternKind.ANY):
            raise ConfigInvalid(f"scope pattern {str(self)!r} is not '*', a lowercase name, or 'name.*'")

    @classmethod
    def parse(cls, text: str) -> NamePattern:
        """Read one pattern; :class:`ConfigInvalid` for anything but the three forms."""
        value = text.strip()
        if value == "*":
            return cls(PatternKind.ANY)
        if value.endswith(".*"):
            return cls(PatternKind.BELOW, value[:-2])
        return cls(PatternKind.EXACT, value)

    def matches(self, name: str) -> bool:
        """Whether ``name`` is inside this pattern; ``com.acme.*`` excludes ``com.acme`` itself."""
        if self.kind is PatternKind.ANY:
            return True
        if self.kind is PatternKind.EXACT:
            return name == self.base
        prefix = self.base + "."
        return len(name) > len(prefix) and name.startswith(prefix)

    def __str__(self) -> str:
        return {PatternKind.ANY: "*", PatternKind.EXACT: self.base, PatternKind.BELOW: f"{self.base}.*"}[self.kind]


ANY_NAME = NamePattern(PatternKind.ANY)


@dataclass(frozen=True, order=True)
class Validity:
    """The dates of one certificate: valid from ``not_before`` to ``not_after``, both included."""

    not_before: datetime
    not_after: datetime

    def contains(self, moment: datetime) -> bool:
        return self.not_before <= moment <= self.not_after


@dataclass(frozen=True)
class TrustedKey:
    """A public key the platform trusts, for the names its patterns allow.

    ``validity`` holds the dates of the certificates the key came in (several when a certificate was
    renewed); a bare public key has none and is valid at any time.  ``publisher`` is the ``# publisher:``
    annotation: keys with the same one sign for the same publisher (see :attr:`publisher_id`).
    """

    key_id: str
    public_key: PublicKey
    patterns: tuple[NamePattern, ...] = (ANY_NAME,)
    label: str | None = None
    validity: tuple[Validity, ...] = ()
    publisher: str | None = None

    def __post_init__(self) -> None:
        if not _is_supported(self.public_key):
            raise ConfigInvalid(_unsupported(self.public_key))
        if self.key_id != key_id_for(self.public_key):
            raise ConfigInvalid(f"key id {self.key_id} does not belong to its public key")
        if not self.patterns:
            # An empty scope would be a key that signs nothing: almost certainly a mistake, so say so.
            raise ConfigInvalid(f"trusted key {self.key_id} has an empty scope")
        if self.publisher is not None and not _PUBLISHER_RE.fullmatch(self.publisher):
            raise ConfigInvalid(
                f"'# publisher:' {_show(self.publisher)} must be 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )

    @classmethod
    def for_key(
        cls,
        public_key: PublicKey,
        patterns: Iterable[NamePattern] = (ANY_NAME,),
        label: str | None = None,
        *,
        validity: Iterable[Validity] = (),
        publisher: str | None = None,
    ) -> TrustedKey:
        """A trusted key whose id is computed from ``public_key``."""
        return cls(key_id_for(public_key), public_key, tuple(patterns), label, tuple(sorted(validity)), publisher)

    @property
    def publisher_id(self) -> str:
        """Who this key signs for: its ``# publisher:`` annotation, else the key itself (its key id)."""
        return self.publisher or self.key_id

    def allows(self, name: str) -> bool:
        """Whether this key may sign the extension ``name``."""
        return any(pattern.matches(name) for pattern in self.patterns)

    def valid_at(self, moment: datetime) -> bool:
        """Whether one of the key's certificates (if it came in any) is valid at ``moment``."""
        return not self.validity or any(window.contains(moment) for window in self.validity)

    @property
    def scope(self) -> str:
        """The patterns as written in a trust bundle's ``# scope:`` line."""
        return ", ".join(str(pattern) for pattern in self.patterns)

    @property
    def display(self) -> str:
        """How messages name this key: ``'label' (key id)`` or the bare key id."""
        return f"{self.label!r} ({self.key_id})" if self.label else self.key_id


_PEM_BLOCK_RE = re.compile(r"^-----BEGIN (?P<kind>[A-Z0-9 ]+)-----$.*?^-----END (?P=kind)-----$", re.M | re.S)
_PREAMBLE_KEYS = frozenset({"name", "scope", "publisher"})


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _read_preamble(text: str, start: int, end: int) -> dict[str, str]:
    """The ``# name:`` / ``# scope:`` / ``# publisher:`` lines between two PEM blocks; anything but comments is
    an error."""
    found: dict[str, str] = {}
    first_line = _line_of(text, start)
    for number, line in enumerate(text[start:end].split("\n"), start=first_line):
        if line.startswith("-----BEGIN"):
            raise ConfigInvalid(f"trust bundle line {number}: PEM block has no matching END line")
        if line and not line.startswith("#"):
            raise ConfigInvalid(f"trust bundle line {number}: text outside a PEM block must start with '#'")
        key, colon, value = line[1:].partition(":")
        key = key.strip().lower()
        if not colon or key not in _PREAMBLE_KEYS:
            continue
        if key in found:
            raise ConfigInvalid(f"trust bundle line {number}: second '# {key}:' line for the same block")
        found[key] = value.strip()
    return found


def _read_scope(number: int, scope: str | None) -> tuple[NamePattern, ...]:
    if scope is None:
        return (ANY_NAME,)
    items = [item.strip() for item in scope.split(",")]
    if not all(items):
        raise ConfigInvalid(f"trust bundle block {number}: '# scope:' has an empty pattern")
    try:
        return tuple(NamePattern.parse(item) for item in items)
    except ConfigInvalid as exc:
        raise ConfigInvalid(f"trust bundle block {number}: {exc.message}") from exc


def _read_block_key(number: int, kind: str, pem: bytes) -> tuple[PublicKeyTypes, Validity | None]:
    try:
        if kind == "PUBLIC KEY":
            return serialization.load_pem_public_key(pem), None
        if kind == "CERTIFICATE":
            cert = x509.load_pem_x509_certificate(pem)
            return cert.public_key(), Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigInvalid(f"trust bundle block {number} ({kind}) cannot be parsed: {exc}") from exc
    raise ConfigInvalid(f"trust bundle block {number} is a {kind}; only PUBLIC KEY and CERTIFICATE blocks are allowed")


@dataclass(frozen=True)
class _Block:
    """One PEM block of a trust bundle, read: its key and, for a certificate, its dates."""

    number: int
    key: TrustedKey
    validity: Validity | None


def _read_block(number: int, kind: str, pem: bytes, preamble: Mapping[str, str]) -> _Block:
    public_key, validity = _read_block_key(number, kind, pem)
    if not (isinstance(public_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) and _is_supported(public_key)):
        raise ConfigInvalid(f"trust bundle block {number}: {_unsupported(public_key)}")
    patterns = _read_scope(number, preamble.get("scope"))
    label = preamble.get("name") or None
    try:
        key = TrustedKey(key_id_for(public_key), public_key, patterns, label, (), preamble.get("publisher"))
    except ConfigInvalid as exc:
        raise ConfigInvalid(f"trust bundle block {number}: {exc.message}") from exc
    return _Block(number, key, validity)


def _merge_renewal(first: _Block, block: _Block, merged: TrustedKey) -> TrustedKey:
    """Add ``block``, another certificate of ``first``'s key, to the key ``merged`` so far."""
    if first.validity is None or block.validity is None:
        raise ConfigInvalid(
            f"trust bundle block {block.number} repeats the key of block {first.number} ({merged.key_id}); "
            "list each key once (only certificates of one key, such as renewals, may repeat it)"
        )
    if block.validity in merged.validity:
        raise ConfigInvalid(f"trust bundle block {block.number} repeats the certificate of block {first.number}")
    if (block.key.patterns, block.key.publisher) != (merged.patterns, merged.publisher):
        raise ConfigInvalid(
            f"trust bundle block {block.number} is another certificate of the key of block {first.number} "
            f"({merged.key_id}) with another '# scope:' or '# publisher:'; give every certificate of one key the same"
        )
    return replace(merged, validity=tuple(sorted((*merged.validity, block.validity))))


def _merge(blocks: list[_Block]) -> tuple[TrustedKey, ...]:
    """One :class:`TrustedKey` per key id, in order of first appearance; a key's certificates pool their dates."""
    first: dict[str, _Block] = {}
    merged: dict[str, TrustedKey] = {}
    for block in blocks:
        key_id = block.key.key_id
        if key_id not in first:
            first[key_id] = block
            dates = (block.validity,) if block.validity is not None else ()
            merged[key_id] = replace(block.key, validity=dates)
        else:
            merged[key_id] = _merge_renewal(first[key_id], block, merged[key_id])
    return tuple(merged.values())


@dataclass(frozen=True)
class TrustBundle:
    """The keys signatures are checked against (``SIGNING_TRUST_BUNDLE``), in bundle order."""

    keys: tuple[TrustedKey, ...]

    @classmethod
    def parse(cls, pem_text: str) -> TrustBundle:
        """Read PEM text of ``PUBLIC KEY`` / ``CERTIFICATE`` blocks, each optionally preceded by ``# name:``,
        ``# scope:`` and ``# publisher:`` lines.  Raises :class:`ConfigInvalid` naming the line or block at
        fault."""
        text = "\n".join(line.strip() for line in pem_text.splitlines())
        blocks: list[_Block] = []
        position = 0
        for number, block in enumerate(_PEM_BLOCK_RE.finditer(text), start=1):
            preamble = _read_preamble(text, position, block.start())
            blocks.append(_read_block(number, block["kind"], block[0].encode("utf-8"), preamble))
            position = block.end()
        if _read_preamble(text, position, len(text)):
            raise ConfigInvalid(
                "trust bundle: '# name:' / '# scope:' / '# publisher:' lines after the last block apply to no key"
            )
        if not blocks:
            raise ConfigInvalid("trust bundle holds no PUBLIC KEY or CERTIFICATE blocks")
        return cls(_merge(blocks))

    @classmethod
    def load(cls, source: str) -> TrustBundle:
        """Read a trust bundle from inline PEM (text containing ``-----BEGIN``) or from a file path."""
        if "-----BEGIN" in source:
            return cls.parse(source)
        path = source.strip()
        if not path:
            raise ConfigInvalid("trust bundle source is empty; give a file path or inline PEM")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigInvalid(f"cannot read trust bundle {path!r}: {exc}") from exc
        try:
            return cls.parse(text)
        except ConfigInvalid as exc:
            raise ConfigInvalid(f"{path}: {exc.message}") from exc

    @classmethod
    def from_setting(cls, value: str) -> TrustBundle | None:
        """The trust bundle of the ``SIGNING_TRUST_BUNDLE`` setting, or None when it is unset (empty)."""
        return cls.load(value) if value.strip() else None

    def find(self, key_id: str) -> TrustedKey | None:
        """The trusted key with this id, if any."""
        return next((key for key in self.keys if key.key_id == key_id), None)

    def publisher_of(self, key_id: str) -> str | None:
        """The publisher the key ``key_id`` signs for, or None when the key is not trusted."""
        key = self.find(key_id)
        return key.publisher_id if key is not None else None

    @property
    def publishers(self) -> frozenset[str]:
        """Every publisher some key signs for (see :attr:`TrustedKey.publisher_id`)."""
        return frozenset(key.publisher_id for key in self.keys)


# --- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of a verification that did not raise; ``publisher`` is the verifying key's
    :attr:`~TrustedKey.publisher_id` (``VERIFIED`` only)."""

    status: SignatureStatus
    key_id: str | None
    key_label: str | None
    publisher: str | None = None


def _check_content_hash(envelope: SignatureEnvelope, content_hash: str) -> None:
    if not hmac.compare_digest(envelope.content_hash.encode(), content_hash.encode()):
        raise SignatureInvalid(f"signature is for {envelope.content_hash}, bundle is {content_hash}")


def _find_trusted_key(trust: TrustBundle, key_id: str, now: datetime) -> TrustedKey:
    key = trust.find(key_id)
    if key is None:
        raise SignatureUntrusted(f"signing key {key_id} is not in the trust bundle")
    if key.valid_at(now):
        return key
    checked = f"(checked as of {now.isoformat()})"
    ended = [window.not_after for window in key.validity if window.not_after < now]
    if ended:
        raise SignatureUntrusted(f"certificate of key {key.display} expired at {max(ended).isoformat()} {checked}")
    start = min(window.not_before for window in key.validity)
    raise SignatureUntrusted(f"certificate of key {key.display} is not valid before {start.isoformat()} {checked}")


def _check_algorithm(key: TrustedKey, envelope: SignatureEnvelope) -> None:
    expected = _algorithm_for(key.public_key)
    if envelope.algorithm is not expected:
        raise SignatureInvalid(
            f"signature algorithm {envelope.algorithm.value} does not match key {key.display}, "
            f"which is {_describe_key(key.public_key)} ({expected.value})"
        )


def _check_cryptography(key: TrustedKey, envelope: SignatureEnvelope) -> None:
    message = _signed_message(envelope.content_hash)
    try:
        if isinstance(key.public_key, ed25519.Ed25519PublicKey):
            key.public_key.verify(envelope.signature_bytes, message)
        else:
            key.public_key.verify(envelope.signature_bytes, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid(f"signature does not verify against key {key.display}") from None


def _check_scope(key: TrustedKey, extension_name: str) -> None:
    if not key.allows(extension_name):
        raise SignatureScope(f"key {key.display} may not sign {extension_name!r}; its scope is {key.scope}")


def _verify(
    content_hash: str,
    extension_name: str,
    envelope: SignatureEnvelope | None,
    trust: TrustBundle | None,
    now: datetime,
) -> SignatureCheck:
    if envelope is None:
        if trust is None:
            # (1) nothing signed, nothing configured: local development only.
            return SignatureCheck(SignatureStatus.UNSIGNED, None, None)
        # (4) a configured trust bundle makes signatures mandatory.
        raise SignatureMissing("a trust bundle is configured, so the bundle must be signed; no signature was given")
    # (2) the signature must be about this very bundle, whether or not it can be checked.
    _check_content_hash(envelope, content_hash)
    if trust is None:
        # (3) well formed and about this bundle, but there is no key to check it against.
        return SignatureCheck(SignatureStatus.UNVERIFIED, envelope.key_id, None)
    # (5) the key must be trusted (and its certificate, if any, valid now).
    key = _find_trusted_key(trust, envelope.key_id, now)
    # (6) the envelope's algorithm must be the trusted key's.
    _check_algorithm(key, envelope)
    # (7) the signature must verify under that key.
    _check_cryptography(key, envelope)
    # (8) the key must be allowed to sign this name.
    _check_scope(key, extension_name)
    # (9) every check passed.
    return SignatureCheck(SignatureStatus.VERIFIED, key.key_id, key.label, key.publisher_id)


def verify_signature(
    content_hash: str,
    extension_name: str,
    envelope: SignatureEnvelope | None,
    trust: TrustBundle | None,
    *,
    now: datetime | None = None,
) -> SignatureCheck:
    """Check a bundle's signature; return what was established or raise a :class:`SignatureError`.

    Steps, in order, each with one precise message:

    1. no trust bundle and no envelope → ``UNSIGNED``;
    2. the envelope is for another content hash → :class:`SignatureInvalid` (even without a trust bundle);
    3. no trust bundle → ``UNVERIFIED`` (the envelope's key id is reported, not checked);
    4. no envelope → :class:`SignatureMissing`;
    5. key id not in the trust bundle, or none of its certificates valid at ``now`` → :class:`SignatureUntrusted`;
    6. algorithm differs from the trusted key's → :class:`SignatureInvalid`;
    7. the signature does not verify → :class:`SignatureInvalid`;
    8. the key's scope does not allow ``extension_name`` → :class:`SignatureScope`;
    9. otherwise ``VERIFIED``.

    ``now`` (default: the current time) is the moment certificates must be valid at: finalize checks at
    the time of publishing, and the runner at the publish time finalize recorded, so a certificate that
    expires later does not stop what it signed (removing the key from the trust bundle does).

    Fails closed: any unexpected exception along the way becomes :class:`SignatureInvalid`.
    """
    try:
        return _verify(content_hash, extension_name, envelope, trust, now if now is not None else datetime.now(UTC))
    except SignatureError:
        raise
    except Exception as exc:
        raise SignatureInvalid(f"signature could not be verified: {type(exc).__name__}: {exc}") from exc
