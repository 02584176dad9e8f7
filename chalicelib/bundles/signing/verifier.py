"""Checking a bundle's signature against the trust bundle, in a fixed, numbered order that fails closed."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cryptography.exceptions import InvalidSignature

from chalicelib.bundles.signing.describe import describe_key
from chalicelib.bundles.signing.envelope import SignatureEnvelope, signed_message
from chalicelib.bundles.signing.keys import algorithm_for, verify_message
from chalicelib.bundles.signing.policy import TrustedKey
from chalicelib.bundles.signing.trust_bundle import TrustBundle
from chalicelib.errors import (
    SignatureError,
    SignatureInvalid,
    SignatureMissing,
    SignatureScope,
    SignatureUntrusted,
)

__all__ = ["SignatureCheck", "SignatureStatus", "verify_signature"]


class SignatureStatus(StrEnum):
    """What a successful :func:`verify_signature` established about a bundle."""

    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    UNVERIFIED = "unverified"


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
    expected = algorithm_for(key.public_key)
    if envelope.algorithm is not expected:
        raise SignatureInvalid(
            f"signature algorithm {envelope.algorithm.value} does not match key {key.display}, "
            f"which is {describe_key(key.public_key)} ({expected.value})"
        )


def _check_cryptography(key: TrustedKey, envelope: SignatureEnvelope) -> None:
    try:
        verify_message(key.public_key, envelope.signature_bytes, signed_message(envelope.content_hash))
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
