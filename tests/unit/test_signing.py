"""Bundle signatures: envelope parsing, signing, trust bundles with scopes, and fail-closed verification."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import KeySerializationEncryption
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.signing import (
    ANY_NAME,
    MAX_ENVELOPE_BYTES,
    NamePattern,
    PatternKind,
    SignatureAlgorithm,
    SignatureEnvelope,
    SignatureStatus,
    TrustBundle,
    TrustedKey,
    generate_ed25519_keypair,
    key_id_for,
    load_private_key,
    sign_content_hash,
    verify_signature,
)
from chalicelib.errors import (
    KeyInvalid,
    SettingsInvalid,
    SignatureInvalid,
    SignatureMissing,
    SignatureScope,
    SignatureUntrusted,
)

BUNDLE_HASH = "sha256:" + hashlib.sha256(b"the bundle").hexdigest()
OTHER_HASH = "sha256:" + hashlib.sha256(b"another bundle").hexdigest()
NAME = "com.acme.tools"


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(params=["ed25519", "ecdsa-p256-sha256"])
def any_key(request, ed_key, p256_key):
    """Each supported key type in turn."""
    return ed_key if request.param == "ed25519" else p256_key


def public_pem(private_key: PrivateKeyTypes) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(private_key: PrivateKeyTypes, encryption: KeySerializationEncryption | None = None) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


def self_signed_cert(private_key, not_before: datetime, not_after: datetime) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme release")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private_key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def trust_of(*pems: str, scope: str | None = None, name: str | None = None) -> TrustBundle:
    """A trust bundle whose first block carries the given comment lines."""
    preamble = (f"# name: {name}\n" if name else "") + (f"# scope: {scope}\n" if scope is not None else "")
    return TrustBundle.parse(preamble + "\n".join(pems))


def envelope_dict(private_key) -> dict[str, Any]:
    return sign_content_hash(BUNDLE_HASH, private_key).to_dict()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- signing and successful verification --------------------------------------------------


def test_signatures_of_both_algorithms_verify_against_a_trusted_scoped_key(any_key):
    envelope = sign_content_hash(BUNDLE_HASH, any_key)
    trust = trust_of(public_pem(any_key), scope="com.acme.*", name="acme release key")

    check = verify_signature(BUNDLE_HASH, NAME, envelope, trust)

    assert check.status is SignatureStatus.VERIFIED
    assert check.key_id == key_id_for(any_key.public_key())
    assert check.key_label == "acme release key"


def test_the_algorithm_is_chosen_from_the_key(ed_key, p256_key):
    assert sign_content_hash(BUNDLE_HASH, ed_key).algorithm == "ed25519"
    assert sign_content_hash(BUNDLE_HASH, p256_key).algorithm == "ecdsa-p256-sha256"


def test_signed_bytes_are_the_domain_separated_content_hash(any_key):
    envelope = sign_content_hash(BUNDLE_HASH, any_key)
    raw = base64.b64decode(envelope.signature)
    message = b"ext-bundle-signature/v1\n" + BUNDLE_HASH.encode()
    public_key = any_key.public_key()
    extra = () if isinstance(any_key, ed25519.Ed25519PrivateKey) else (ec.ECDSA(hashes.SHA256()),)

    public_key.verify(raw, message, *extra)
    with pytest.raises(InvalidSignature):
        public_key.verify(raw, BUNDLE_HASH.encode(), *extra)


def test_ecdsa_signatures_are_der_encoded(p256_key):
    envelope = sign_content_hash(BUNDLE_HASH, p256_key)
    r, s = decode_dss_signature(base64.b64decode(envelope.signature))
    assert r > 0
    assert s > 0


def test_signing_with_an_unsupported_key_is_refused(rsa_key):
    with pytest.raises(KeyInvalid, match="RSA-2048 keys are not supported"):
        sign_content_hash(BUNDLE_HASH, rsa_key)


def test_signing_a_malformed_content_hash_is_refused(ed_key):
    with pytest.raises(SignatureInvalid, match="content_hash"):
        sign_content_hash("sha256:ABC", ed_key)


# --- verification failures, in step order ---------------------------------------------------


def test_without_trust_or_signature_the_bundle_is_unsigned():
    check = verify_signature(BUNDLE_HASH, NAME, None, None)
    assert check == verify_signature(BUNDLE_HASH, NAME, None, None)
    assert check.status is SignatureStatus.UNSIGNED
    assert check.key_id is None


def test_without_trust_a_well_formed_signature_is_recorded_as_unverified(ed_key):
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)
    check = verify_signature(BUNDLE_HASH, NAME, envelope, None)
    assert check.status is SignatureStatus.UNVERIFIED
    assert check.key_id == envelope.key_id
    assert check.key_label is None


@pytest.mark.parametrize("with_trust", [True, False])
def test_a_signature_for_another_bundle_is_invalid_even_without_trust(ed_key, with_trust):
    envelope = sign_content_hash(OTHER_HASH, ed_key)
    trust = trust_of(public_pem(ed_key)) if with_trust else None

    with pytest.raises(SignatureInvalid) as caught:
        verify_signature(BUNDLE_HASH, NAME, envelope, trust)

    assert caught.value.code == "SIGNATURE_INVALID"
    assert caught.value.message == f"signature is for {OTHER_HASH}, bundle is {BUNDLE_HASH}"


def test_a_missing_signature_is_rejected_when_trust_is_configured(ed_key):
    with pytest.raises(SignatureMissing, match="no signature was given") as caught:
        verify_signature(BUNDLE_HASH, NAME, None, trust_of(public_pem(ed_key)))
    assert caught.value.code == "SIGNATURE_MISSING"


def test_a_key_outside_the_trust_bundle_is_untrusted(ed_key, p256_key):
    envelope = sign_content_hash(BUNDLE_HASH, p256_key)

    with pytest.raises(SignatureUntrusted) as caught:
        verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(public_pem(ed_key)))

    assert caught.value.code == "SIGNATURE_UNTRUSTED"
    assert caught.value.message == f"signing key {envelope.key_id} is not in the trust bundle"


def test_an_algorithm_that_does_not_match_the_trusted_key_is_invalid(ed_key):
    fields = envelope_dict(ed_key) | {"algorithm": "ecdsa-p256-sha256"}
    envelope = SignatureEnvelope.parse(fields)

    with pytest.raises(SignatureInvalid, match=r"algorithm ecdsa-p256-sha256 does not match key .*Ed25519"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(public_pem(ed_key)))


def test_tampered_signature_bytes_do_not_verify(any_key):
    fields = envelope_dict(any_key)
    raw = bytearray(base64.b64decode(fields["signature"]))
    raw[-1] ^= 0x01
    envelope = SignatureEnvelope.parse(fields | {"signature": b64(bytes(raw))})

    with pytest.raises(SignatureInvalid, match="signature does not verify against key sha256:"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(public_pem(any_key)))


def test_a_signature_by_another_key_claiming_a_trusted_key_id_does_not_verify(ed_key):
    impostor = ed25519.Ed25519PrivateKey.generate()
    spoofed = envelope_dict(impostor) | {"key_id": key_id_for(ed_key.public_key())}
    envelope = SignatureEnvelope.parse(spoofed)

    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(public_pem(ed_key)))


def test_a_trusted_key_may_not_sign_outside_its_scope(ed_key):
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)
    trust = trust_of(public_pem(ed_key), scope="com.acme.*, com.acme", name="acme release key")

    with pytest.raises(SignatureScope) as caught:
        verify_signature(BUNDLE_HASH, "com.evil.tools", envelope, trust)

    assert caught.value.code == "SIGNATURE_SCOPE"
    assert caught.value.message == (
        f"key 'acme release key' ({envelope.key_id}) may not sign 'com.evil.tools'; its scope is com.acme.*, com.acme"
    )


def test_a_bad_signature_is_reported_as_invalid_before_its_scope(ed_key):
    impostor = ed25519.Ed25519PrivateKey.generate()
    spoofed = envelope_dict(impostor) | {"key_id": key_id_for(ed_key.public_key())}
    trust = trust_of(public_pem(ed_key), scope="org.other")

    with pytest.raises(SignatureInvalid):
        verify_signature(BUNDLE_HASH, NAME, SignatureEnvelope.parse(spoofed), trust)


def test_unexpected_errors_during_verification_fail_closed(ed_key):
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)
    trust = trust_of(public_pem(ed_key))
    with pytest.raises(SignatureInvalid, match="could not be verified"):
        verify_signature(BUNDLE_HASH.encode(), NAME, envelope, trust)  # type: ignore[arg-type]


# --- certificates -------------------------------------------------------------------------


def test_a_certificate_in_the_trust_bundle_verifies_with_its_public_key(any_key):
    now = datetime.now(UTC)
    cert = self_signed_cert(any_key, now - timedelta(days=1), now + timedelta(days=30))
    envelope = sign_content_hash(BUNDLE_HASH, any_key)

    check = verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(cert, scope="com.acme.*", name="acme cert"))

    assert check.status is SignatureStatus.VERIFIED
    assert check.key_id == key_id_for(any_key.public_key())
    assert check.key_label == "acme cert"


def test_an_expired_certificate_cannot_verify(ed_key):
    now = datetime.now(UTC)
    cert = self_signed_cert(ed_key, now - timedelta(days=30), now - timedelta(days=1))
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)

    with pytest.raises(SignatureUntrusted, match=r"certificate of key sha256:[0-9a-f]{64} expired at "):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(cert))


def test_a_certificate_that_is_not_yet_valid_cannot_verify(ed_key):
    start = datetime(2030, 1, 1, tzinfo=UTC)
    cert = self_signed_cert(ed_key, start, start + timedelta(days=365))
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)
    trust = trust_of(cert)

    with pytest.raises(SignatureUntrusted, match="is not valid before 2030-01-01"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust, now=start - timedelta(seconds=1))
    assert verify_signature(BUNDLE_HASH, NAME, envelope, trust, now=start).status is SignatureStatus.VERIFIED


def test_a_naive_clock_fails_closed_rather_than_skipping_the_validity_check(ed_key):
    now = datetime.now(UTC)
    cert = self_signed_cert(ed_key, now - timedelta(days=1), now + timedelta(days=1))
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)
    with pytest.raises(SignatureInvalid, match="could not be verified"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust_of(cert), now=datetime(2030, 1, 1))


def test_a_renewed_certificate_of_the_same_key_keeps_what_the_old_one_signed_verifiable(ed_key):
    start = datetime(2024, 1, 1, tzinfo=UTC)
    old = self_signed_cert(ed_key, start, start + timedelta(days=365))
    renewed = self_signed_cert(ed_key, start + timedelta(days=400), start + timedelta(days=800))
    trust = TrustBundle.parse("# scope: com.acme.*\n" + old + "# scope: com.acme.*\n" + renewed)
    envelope = sign_content_hash(BUNDLE_HASH, ed_key)

    (key,) = trust.keys
    assert [window.not_before for window in key.validity] == [start, start + timedelta(days=400)]
    for moment in (start + timedelta(days=10), start + timedelta(days=500)):
        assert verify_signature(BUNDLE_HASH, NAME, envelope, trust, now=moment).status is SignatureStatus.VERIFIED
    with pytest.raises(SignatureUntrusted, match="expired at 2024-12-31"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust, now=start + timedelta(days=380))
    with pytest.raises(SignatureUntrusted, match="is not valid before 2024-01-01"):
        verify_signature(BUNDLE_HASH, NAME, envelope, trust, now=start - timedelta(days=1))


@pytest.mark.parametrize(
    ("second_block", "expected"),
    [
        (lambda cert, pem: cert, "block 2 repeats the certificate of block 1"),
        (lambda cert, pem: pem, "block 2 repeats the key of block 1"),
        (lambda cert, pem: "# scope: com.other.*\n" + cert, "with another '# scope:'"),
    ],
    ids=["same certificate", "certificate and bare key", "renewal with another scope"],
)
def test_a_key_may_repeat_only_in_renewed_certificates_with_the_same_scope(ed_key, second_block, expected):
    now = datetime.now(UTC)
    cert = self_signed_cert(ed_key, now - timedelta(days=1), now + timedelta(days=1))
    renewal = self_signed_cert(ed_key, now, now + timedelta(days=30))
    text = cert + second_block(cert if "repeats the certificate" in expected else renewal, public_pem(ed_key))
    with pytest.raises(SettingsInvalid) as caught:
        TrustBundle.parse(text)
    assert expected in caught.value.message


def test_a_trust_bundle_with_an_rsa_certificate_is_rejected(ed_key, rsa_key):
    now = datetime.now(UTC)
    cert = self_signed_cert(rsa_key, now, now + timedelta(days=1))
    with pytest.raises(SettingsInvalid, match="block 2: RSA-2048 keys are not supported"):
        trust_of(public_pem(ed_key), cert)


# --- envelope parsing ---------------------------------------------------------------------


def test_envelope_json_round_trips(any_key):
    envelope = sign_content_hash(BUNDLE_HASH, any_key)
    text = envelope.to_json()

    assert SignatureEnvelope.parse(text) == envelope
    assert SignatureEnvelope.parse(text.encode()) == envelope
    assert SignatureEnvelope.parse(json.loads(text)) == envelope
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert list(json.loads(text)) == ["algorithm", "content_hash", "format", "key_id", "signature"]
    assert json.loads(text)["format"] == "ext-bundle-signature/v1"


MALFORMED_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", {"comment": "hi"}, "'comment'"),
    ("wrong format", {"format": "ext-bundle-signature/v2"}, "'format'"),
    ("format not a string", {"format": 1}, "'format' must be a string, got number"),
    ("uppercase hex", {"content_hash": "sha256:" + "A" * 64}, "'content_hash'"),
    ("no prefix", {"content_hash": "a" * 64}, "'content_hash'"),
    ("short hash", {"content_hash": "sha256:" + "a" * 63}, "'content_hash'"),
    ("trailing newline", {"content_hash": BUNDLE_HASH + "\n"}, "'content_hash'"),
    ("unknown algorithm", {"algorithm": "rsa-pss"}, "'algorithm'"),
    ("algorithm not a string", {"algorithm": ["ed25519"]}, "'algorithm' must be a string, got array"),
    ("key id null", {"key_id": None}, "'key_id' must be a string, got null"),
    ("key id not a digest", {"key_id": "acme"}, "'key_id'"),
    ("not base64", {"signature": "!!!!"}, "'signature' is not standard base64"),
    ("urlsafe base64", {"signature": "-_" + "A" * 82 + "=="}, "'signature' is not standard base64"),
    ("missing padding", {"signature": "A" * 86}, "'signature' is not standard base64"),
    ("embedded newline", {"signature": "A" * 43 + "\n" + "A" * 43 + "=="}, "'signature' is not standard base64"),
    ("wrong length", {"signature": b64(b"\0" * 32)}, "'signature' must decode to 64 bytes for ed25519, got 32"),
    ("signature object", {"signature": {"b64": "x"}}, "'signature' must be a string, got object"),
    # Found by Schemathesis (issue 14): non-ASCII text made base64 raise ValueError, a 500.
    ("non-ASCII", {"signature": "\u00d7" * 88}, "'signature' is not standard base64"),
]


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in MALFORMED_FIELDS], ids=[case[0] for case in MALFORMED_FIELDS]
)
def test_a_malformed_envelope_field_is_rejected_naming_the_field(ed_key, change, expected):
    raw = json.dumps(envelope_dict(ed_key) | change).encode()
    with pytest.raises(SignatureInvalid, match="signature envelope") as caught:
        SignatureEnvelope.parse(raw)
    assert expected in caught.value.message


@pytest.mark.parametrize("missing", ["format", "content_hash", "algorithm", "key_id", "signature"])
def test_an_envelope_missing_a_field_is_rejected_naming_it(ed_key, missing):
    fields = envelope_dict(ed_key)
    del fields[missing]
    with pytest.raises(SignatureInvalid, match=f"missing field\\(s\\) '{missing}'"):
        SignatureEnvelope.parse(fields)


def test_a_noncanonical_base64_signature_is_rejected(ed_key):
    fields = envelope_dict(ed_key)
    text = fields["signature"]
    # The last character before '==' carries 4 unused bits; setting one keeps it decodable but not canonical.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    altered = text[:-3] + alphabet[alphabet.index(text[-3]) ^ 1] + "=="
    with pytest.raises(SignatureInvalid, match="'signature' is not canonical"):
        SignatureEnvelope.parse(fields | {"signature": altered})


def test_an_envelope_with_a_duplicate_key_is_rejected(ed_key):
    text = json.dumps(envelope_dict(ed_key))
    duplicated = text[:-1] + ', "key_id": "sha256:' + "0" * 64 + '"}'
    with pytest.raises(SignatureInvalid, match="duplicate field 'key_id'"):
        SignatureEnvelope.parse(duplicated)


def test_an_envelope_at_the_size_limit_parses_and_one_byte_more_does_not(ed_key):
    text = json.dumps(envelope_dict(ed_key))
    at_limit = text + " " * (MAX_ENVELOPE_BYTES - len(text))
    assert SignatureEnvelope.parse(at_limit).content_hash == BUNDLE_HASH
    with pytest.raises(SignatureInvalid, match="larger than 16384 bytes"):
        SignatureEnvelope.parse(at_limit + " ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        ('{"format": "\udc80"}', "not valid UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[" * 10_000, "not valid JSON"),
        (b'["a list"]', "must be a JSON object, got array"),
        (b"null", "must be a JSON object, got null"),
    ],
    ids=["bad utf-8 bytes", "lone surrogate", "not json", "empty", "deep nesting", "array", "null"],
)
def test_envelope_text_that_is_not_a_json_object_is_rejected(raw, expected):
    with pytest.raises(SignatureInvalid, match=expected):
        SignatureEnvelope.parse(raw)


# --- keys ---------------------------------------------------------------------------------


def test_key_id_is_the_sha256_of_the_spki_der_in_the_public_pem():
    _, public = generate_ed25519_keypair()
    body = "".join(line for line in public.decode().splitlines() if not line.startswith("-----"))
    expected = "sha256:" + hashlib.sha256(base64.b64decode(body)).hexdigest()

    key = serialization.load_pem_public_key(public)
    assert key_id_for(key) == expected


def test_generated_keypair_is_an_unencrypted_pkcs8_key_and_its_spki_public_key():
    private, public = generate_ed25519_keypair()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    key = load_private_key(private)
    assert key_id_for(key.public_key()) == key_id_for(serialization.load_pem_public_key(public))


def test_a_p256_private_key_loads_and_an_encrypted_one_needs_its_password(p256_key):
    assert isinstance(load_private_key(private_pem(p256_key)), ec.EllipticCurvePrivateKey)
    encrypted = private_pem(p256_key, serialization.BestAvailableEncryption(b"s3cret"))
    assert key_id_for(load_private_key(encrypted, b"s3cret").public_key()) == key_id_for(p256_key.public_key())
    with pytest.raises(KeyInvalid, match="cannot read private key"):
        load_private_key(encrypted, b"wrong")
    with pytest.raises(KeyInvalid, match="cannot read private key"):
        load_private_key(encrypted)


@pytest.fixture
def unsupported_key(request, rsa_key):
    """An RSA-2048, P-384 or secp256k1 private key, by the test's parameter."""
    curves = {"EC secp384r1": ec.SECP384R1(), "EC secp256k1": ec.SECP256K1()}
    return rsa_key if request.param == "RSA-2048" else ec.generate_private_key(curves[request.param])


@pytest.mark.parametrize("unsupported_key", ["RSA-2048", "EC secp384r1", "EC secp256k1"], indirect=True)
def test_private_keys_of_other_types_are_rejected_naming_the_type(unsupported_key, request):
    key_type = request.node.callspec.params["unsupported_key"]
    with pytest.raises(KeyInvalid) as caught:
        load_private_key(private_pem(unsupported_key))
    assert caught.value.message.startswith(f"{key_type} keys are not supported")
    assert caught.value.code == "KEY_INVALID"


def test_an_unparsable_private_key_is_rejected():
    with pytest.raises(KeyInvalid, match="cannot read private key"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")


# --- trust bundle parsing -----------------------------------------------------------------


def test_comment_lines_apply_only_to_the_next_block(ed_key, p256_key):
    text = (
        "# name: acme release key\n# scope: com.acme.*\n"
        + public_pem(ed_key)
        + "\n# owner: unknown keys are ignored\n# owner: even twice\n# free text without a key\n"
        + public_pem(p256_key)
    )
    first, second = TrustBundle.parse(text).keys

    assert (first.label, first.scope) == ("acme release key", "com.acme.*")
    assert (second.label, second.patterns) == (None, (ANY_NAME,))
    envelope = sign_content_hash(BUNDLE_HASH, p256_key)
    check = verify_signature(BUNDLE_HASH, "org.anyone.else", envelope, TrustBundle.parse(text))
    assert check.status is SignatureStatus.VERIFIED


def test_comment_keys_are_case_insensitive_and_windows_line_endings_parse(ed_key):
    text = "#Scope:  com.acme  \r\n#  NAME: acme\r\n" + public_pem(ed_key).replace("\n", "\r\n")
    (key,) = TrustBundle.parse(text).keys
    assert (key.label, key.scope) == ("acme", "com.acme")


def test_a_publisher_annotation_names_who_a_key_signs_for(ed_key, p256_key):
    other = ed25519.Ed25519PrivateKey.generate()
    text = (
        "# publisher: acme\n# scope: com.acme.*\n"
        + public_pem(ed_key)
        + "# publisher: acme\n# scope: com.acme.*\n"
        + public_pem(p256_key)
        + public_pem(other)
    )
    trust = TrustBundle.parse(text)

    assert [key.publisher for key in trust.keys] == ["acme", "acme", None]
    assert trust.publisher_of(key_id_for(p256_key.public_key())) == "acme"
    assert trust.publisher_of(key_id_for(other.public_key())) == key_id_for(other.public_key())
    assert trust.publisher_of("sha256:" + "0" * 64) is None
    assert trust.publishers == {"acme", key_id_for(other.public_key())}
    check = verify_signature(BUNDLE_HASH, NAME, sign_content_hash(BUNDLE_HASH, p256_key), trust)
    assert check.publisher == "acme"
    unsigned = verify_signature(BUNDLE_HASH, NAME, None, None)
    assert unsigned.publisher is None


@pytest.mark.parametrize("publisher", ["Acme Inc.", "-acme", "acme:x", "a" * 65, ""])
def test_a_malformed_publisher_annotation_is_rejected_naming_the_block(ed_key, publisher):
    with pytest.raises(SettingsInvalid, match="trust bundle block 1: '# publisher:'"):
        TrustBundle.parse(f"# publisher: {publisher}\n" + public_pem(ed_key))


@pytest.mark.parametrize(
    ("text_for", "expected"),
    [
        (lambda pem: "", "holds no PUBLIC KEY or CERTIFICATE blocks"),
        (lambda pem: "# scope: com.acme.*\n", "after the last block apply to no key"),
        (lambda pem: pem + "# scope: com.acme.*\n", "after the last block apply to no key"),
        (lambda pem: "scope: com.acme.*\n" + pem, "line 1: text outside a PEM block must start with '#'"),
        (lambda pem: "# scope: a\n# scope: b\n" + pem, "line 2: second '# scope:' line"),
        (lambda pem: pem.rsplit("-----END", 1)[0], "line 1: PEM block has no matching END line"),
        (lambda pem: "# scope: com.*.tools\n" + pem, "block 1: scope pattern 'com.*.tools'"),
        (lambda pem: "# scope: Com.Acme\n" + pem, "block 1: scope pattern 'Com.Acme'"),
        (lambda pem: "# scope: *.acme\n" + pem, "block 1: scope pattern '*.acme'"),
        (lambda pem: "# scope: com.acme,\n" + pem, "block 1: '# scope:' has an empty pattern"),
        (lambda pem: pem + pem, "block 2 repeats the key of block 1"),
        (lambda pem: pem.replace("MCow", "MCoX"), "block 1 (PUBLIC KEY) cannot be parsed"),
        (
            lambda pem: pem + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "block 2 is a PRIVATE KEY; only PUBLIC KEY and CERTIFICATE blocks are allowed",
        ),
    ],
    ids=[
        "empty",
        "only comments",
        "dangling scope",
        "uncommented scope",
        "two scopes",
        "no end",
        "inner wildcard",
        "uppercase",
        "leading wildcard",
        "empty pattern",
        "duplicate key",
        "garbage key",
        "private key",
    ],
)
def test_a_malformed_trust_bundle_is_rejected_naming_the_line_or_block(ed_key, text_for, expected):
    with pytest.raises(SettingsInvalid, match="trust bundle") as caught:
        TrustBundle.parse(text_for(public_pem(ed_key)))
    assert expected in caught.value.message
    assert caught.value.code == "SETTINGS_INVALID"


@pytest.mark.parametrize("unsupported_key", ["RSA-2048", "EC secp384r1"], indirect=True)
def test_a_trust_bundle_with_an_unsupported_public_key_is_rejected_naming_the_block(ed_key, unsupported_key, request):
    key_type = request.node.callspec.params["unsupported_key"]
    with pytest.raises(SettingsInvalid) as caught:
        TrustBundle.parse(public_pem(ed_key) + public_pem(unsupported_key))
    assert caught.value.message.startswith(f"trust bundle block 2: {key_type} keys are not supported")


def test_a_trust_bundle_loads_from_inline_pem_or_a_file(ed_key, tmp_path):
    text = "# scope: com.acme.*\n" + public_pem(ed_key)
    path = tmp_path / "trust.pem"
    path.write_text(text)

    assert TrustBundle.load(text) == TrustBundle.load(str(path)) == TrustBundle.from_setting(str(path))
    assert TrustBundle.load(text).keys[0].key_id == key_id_for(ed_key.public_key())


def test_a_missing_trust_bundle_file_is_a_config_error_naming_the_path():
    with pytest.raises(SettingsInvalid) as caught:
        TrustBundle.load("/nonexistent/trust.pem")
    assert caught.value.message.startswith("cannot read trust bundle '/nonexistent/trust.pem': ")


def test_an_invalid_trust_bundle_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "trust.pem"
    path.write_text("# scope: com.acme.*\n")
    with pytest.raises(SettingsInvalid) as caught:
        TrustBundle.load(str(path))
    assert caught.value.message.startswith(f"{path}: trust bundle: ")


def test_an_empty_setting_means_no_trust_bundle_but_an_empty_source_is_an_error():
    assert TrustBundle.from_setting("") is None
    assert TrustBundle.from_setting("  ") is None
    with pytest.raises(SettingsInvalid, match="source is empty"):
        TrustBundle.load(" ")


def test_a_hand_built_trusted_key_must_carry_its_own_key_id(ed_key, p256_key):
    assert TrustedKey.for_key(ed_key.public_key()).key_id == key_id_for(ed_key.public_key())
    with pytest.raises(SettingsInvalid, match="does not belong to its public key"):
        TrustedKey(key_id_for(p256_key.public_key()), ed_key.public_key())
    with pytest.raises(SettingsInvalid, match="empty scope"):
        TrustedKey.for_key(ed_key.public_key(), patterns=())


# --- scope patterns -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("com.acme.*", "com.acme.x", True),
        ("com.acme.*", "com.acme.x.y", True),
        ("com.acme.*", "com.acme", False),
        ("com.acme.*", "com.acmeevil.x", False),
        ("com.acme.*", "org.com.acme.x", False),
        ("com.acme.*", "com.acme.", False),
        ("com.acme", "com.acme", True),
        ("com.acme", "com.acme.x", False),
        ("com.acme", "com.acm", False),
        ("*", "anything.at.all", True),
    ],
)
def test_scope_patterns_match_as_documented(pattern, name, expected):
    assert NamePattern.parse(pattern).matches(name) is expected


labels = st.from_regex(r"[a-z0-9][a-z0-9-]{0,5}", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(base=names, name=st.one_of(names, st.text(alphabet="ab.-*", max_size=12)))
def test_a_wildcard_never_matches_outside_its_prefix_or_the_parent_itself(base, name):
    if NamePattern.parse(base + ".*").matches(name):
        assert name.startswith(base + ".")
        assert name != base


@given(base=names, below=names)
def test_a_wildcard_matches_every_name_strictly_below_it(base, below):
    assert NamePattern.parse(base + ".*").matches(f"{base}.{below}")


@given(base=names, name=names)
def test_an_exact_pattern_matches_only_that_name(base, name):
    assert NamePattern.parse(base).matches(name) is (name == base)


@given(text=st.one_of(names, names.map(lambda n: n + ".*"), st.just("*")))
def test_scope_patterns_print_as_they_were_written(text):
    pattern = NamePattern.parse(text)
    assert str(pattern) == text
    assert pattern.kind is {"*": PatternKind.ANY}.get(
        text, PatternKind.BELOW if text.endswith(".*") else PatternKind.EXACT
    )


def test_the_signature_algorithm_values_are_the_contract_strings():
    assert [a.value for a in SignatureAlgorithm] == ["ed25519", "ecdsa-p256-sha256"]
    assert [s.value for s in SignatureStatus] == ["verified", "unsigned", "unverified"]
