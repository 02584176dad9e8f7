"""Bundle signatures: the envelope, signing, trust bundles of scoped keys, and verification.

A publisher signs a bundle's content hash (DESIGN §4 "Signatures"); the platform checks that signature
against the keys it trusts before anything is stored or run.  This package's surface is ``__all__``:

- :class:`SignatureEnvelope` is the ``<bundle>.sig`` JSON (``envelope``).  :meth:`SignatureEnvelope.parse`
  is strict (exact field set, types, syntax, size), so an envelope object is always well formed.
- :func:`sign_content_hash` signs ``b"ext-bundle-signature/v1\\n" + content_hash`` with an Ed25519 or
  EC P-256 key; :func:`load_private_key` and :func:`generate_ed25519_keypair` supply keys (``keys``).
- :class:`TrustBundle` is the set of keys the platform trusts, read from PEM text whose ``# name:``,
  ``# scope:`` and ``# publisher:`` comment lines give each :class:`TrustedKey` a label, a
  :class:`NamePattern` scope and the publisher it signs for (``trust_bundle``; the policies in ``policy``).
  A key may appear in several certificates (renewals); it is then trusted at any moment one of them is
  valid.
- :func:`verify_signature` runs the checks in a fixed, numbered order and fails closed: every failure,
  expected or not, is a :class:`~chalicelib.errors.SignatureError` (``verifier``).

``describe`` holds how the messages name values and keys.
"""

from chalicelib.bundles.signing.envelope import (
    MAX_ENVELOPE_BYTES,
    SIGNATURE_FORMAT,
    SignatureEnvelope,
    sign_content_hash,
)
from chalicelib.bundles.signing.keys import (
    PrivateKey,
    PublicKey,
    SignatureAlgorithm,
    generate_ed25519_keypair,
    key_id_for,
    load_private_key,
)
from chalicelib.bundles.signing.policy import ANY_NAME, NamePattern, PatternKind, TrustedKey, Validity
from chalicelib.bundles.signing.trust_bundle import TrustBundle
from chalicelib.bundles.signing.verifier import SignatureCheck, SignatureStatus, verify_signature

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
