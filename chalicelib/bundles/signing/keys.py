"""Signing keys: the two kinds accepted (Ed25519 and EC P-256), their algorithms, key ids, loading and
generating private keys, and the raw sign / verify operations of each kind."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from chalicelib.bundles.signing.describe import describe_key
from chalicelib.errors import KeyInvalid

__all__ = [
    "PrivateKey",
    "PublicKey",
    "SignatureAlgorithm",
    "algorithm_for",
    "generate_ed25519_keypair",
    "is_supported",
    "key_id_for",
    "load_private_key",
    "sign_message",
    "unsupported",
    "verify_message",
]

PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class SignatureAlgorithm(StrEnum):
    """The ``algorithm`` values of the envelope."""

    ED25519 = "ed25519"
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"


def is_supported(key: object) -> bool:
    """Whether ``key`` (public or private) is one of the two accepted kinds."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return True
    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def unsupported(key: object) -> str:
    """The message that refuses ``key``, naming its type."""
    return f"{describe_key(key)} keys are not supported; use an Ed25519 or EC P-256 (secp256r1) key"


def algorithm_for(key: PublicKey | PrivateKey) -> SignatureAlgorithm:
    """The envelope algorithm of signatures by ``key``; :class:`KeyInvalid` for a key of another kind."""
    if not is_supported(key):
        raise KeyInvalid(unsupported(key))
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
    if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) and is_supported(key):
        return key
    raise KeyInvalid(unsupported(key))


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


def sign_message(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign ``message``: Ed25519, or ECDSA over SHA-256 (DER) with a P-256 key."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    return private_key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_message(public_key: PublicKey, signature: bytes, message: bytes) -> None:
    """Check :func:`sign_message`'s ``signature`` of ``message``; ``InvalidSignature`` when it does not verify."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, message)
    else:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
