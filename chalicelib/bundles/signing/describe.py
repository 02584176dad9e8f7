"""How signing's messages name what they refuse: a value cut short, a JSON type, a key type."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

__all__ = ["describe_key", "json_type", "show"]

_KEY_FAMILIES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey), "Ed25519"),
    ((ed448.Ed448PublicKey, ed448.Ed448PrivateKey), "Ed448"),
    ((x25519.X25519PublicKey, x25519.X25519PrivateKey), "X25519"),
    ((x448.X448PublicKey, x448.X448PrivateKey), "X448"),
)


def describe_key(key: object) -> str:
    """A short human name for a key's type, such as ``RSA-2048`` or ``EC secp384r1``."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return f"DSA-{key.key_size}"
    return next((name for kinds, name in _KEY_FAMILIES if isinstance(key, kinds)), type(key).__name__)


def show(value: object) -> str:
    """``value``'s repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type (``string``, ``object``…), or its Python type name."""
    names: tuple[tuple[type, str], ...] = ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"))
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)
