"""Bearer tokens: HS256 for development, RS256/ES256 from a JWKS, never algorithm confusion."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chalicelib.auth import Identity, TokenVerifier, issue_token
from chalicelib.config import Settings, load_settings
from chalicelib.errors import Forbidden, SettingsInvalid, Unauthenticated

SECRET = "test-secret-0123456789-abcdefghij"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verifier(**env: str) -> TokenVerifier:
    return TokenVerifier(load_settings(env))


def test_a_valid_dev_token_gives_the_identity() -> None:
    token = issue_token(SECRET, sub="alice", tenant="acme", roles=["admin"])
    identity = verifier(EXT_AUTH_SECRET=SECRET).verify(f"Bearer {token}")
    assert identity == Identity(sub="alice", tenant="acme", roles=frozenset({"admin"}))
    assert identity.is_admin


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "missing Authorization"),
        ("", "missing Authorization"),
        ("Basic abc", "Bearer"),
        ("Bearer ", "Bearer"),
        ("Bearer not.a.jwt", "well-formed"),
        ("Bearer " + "a" * 9000, "too large"),
    ],
)
def test_malformed_headers_are_unauthenticated(header: str | None, match: str) -> None:
    with pytest.raises(Unauthenticated, match=match):
        verifier(EXT_AUTH_SECRET=SECRET).verify(header)


def test_expired_and_wrongly_signed_tokens_are_refused() -> None:
    expired = issue_token(SECRET, sub="a", tenant="t", roles=["user"], ttl_seconds=-120)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier(EXT_AUTH_SECRET=SECRET).verify(f"Bearer {expired}")
    other = issue_token("another-secret-0123456789-abcdef", sub="a", tenant="t", roles=["user"])
    with pytest.raises(Unauthenticated, match="signature"):
        verifier(EXT_AUTH_SECRET=SECRET).verify(f"Bearer {other}")


def test_the_none_algorithm_is_never_accepted() -> None:
    claims = {"sub": "a", "tenant": "t", "roles": ["admin"], "exp": int(time.time()) + 60}
    token = _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode()) + "."
    with pytest.raises(Unauthenticated, match="not accepted"):
        verifier(EXT_AUTH_SECRET=SECRET).verify(f"Bearer {token}")


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"sub": "a", "roles": ["user"]}, "tenant"),
        ({"sub": "a", "tenant": "../x", "roles": ["user"]}, "tenant"),
        ({"sub": "a", "tenant": "t", "roles": [1]}, "roles"),
        ({"tenant": "t", "roles": ["user"]}, "sub"),
    ],
)
def test_tokens_without_the_required_claims_are_refused(claims: dict[str, object], match: str) -> None:
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=match):
        verifier(EXT_AUTH_SECRET=SECRET).verify(f"Bearer {token}")


def _jwks(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, kid: str) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public_key, as_dict=True)
    return json.dumps({"keys": [{**jwk, "kid": kid}]})


# The issuer and audience a production verifier requires (EXT_AUTH_ISSUER, EXT_AUTH_AUDIENCE).
OURS = {"iss": "https://idp.example.com/", "aud": "ext-platform"}


def production_verifier(jwks: str) -> TokenVerifier:
    return verifier(EXT_AUTH_JWKS=jwks, EXT_AUTH_ISSUER=OURS["iss"], EXT_AUTH_AUDIENCE=OURS["aud"])


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_production_tokens_verify_against_the_jwks(algorithm: str, key: rsa.RSAPrivateKey) -> None:
    jwks = _jwks(key.public_key(), "k1")
    claims = {"sub": "svc", "tenant": "acme", "roles": ["user"], "exp": int(time.time()) + 60, **OURS}
    token = jwt.encode(claims, key, algorithm=algorithm, headers={"kid": "k1"})
    identity = production_verifier(jwks).verify(f"Bearer {token}")
    assert identity.tenant == "acme"
    with pytest.raises(Unauthenticated):
        verifier(EXT_AUTH_JWKS=jwks, EXT_AUTH_ISSUER="https://other", EXT_AUTH_AUDIENCE="ext-platform").verify(
            f"Bearer {token}"
        )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"EXT_AUTH_ISSUER": "https://idp.example.com/"},
        {"EXT_AUTH_AUDIENCE": "ext-platform"},
    ],
)
def test_a_jwks_without_both_issuer_and_audience_refuses_to_start(env: dict[str, str]) -> None:
    jwks = _jwks(ec.generate_private_key(ec.SECP256R1()).public_key(), "k1")
    with pytest.raises(SettingsInvalid, match="EXT_AUTH_ISSUER and EXT_AUTH_AUDIENCE"):
        load_settings({"EXT_AUTH_JWKS": jwks, **env})
    # Settings built without load_settings still cannot make a verifier that skips the checks.
    values = {**load_settings({"EXT_AUTH_SECRET": SECRET}).values, "ext_auth_jwks": jwks}
    values.update((name.lower(), value) for name, value in env.items())
    with pytest.raises(SettingsInvalid, match="EXT_AUTH_ISSUER and EXT_AUTH_AUDIENCE"):
        TokenVerifier(Settings(values=values))


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://idp.example.com/", "aud": "another-app"},
        {"iss": "https://other-idp.example.com/", "aud": "ext-platform"},
        {"iss": "https://idp.example.com/"},
        {"aud": "ext-platform"},
        {},
    ],
)
def test_a_token_signed_by_the_jwks_for_another_application_is_refused(claims: dict[str, str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        {"sub": "x", "tenant": "acme", "roles": ["admin"], "exp": int(time.time()) + 60, **claims},
        key,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    with pytest.raises(Unauthenticated):
        production_verifier(_jwks(key.public_key(), "k1")).verify(f"Bearer {token}")


def test_an_hs256_token_is_refused_when_only_a_jwks_is_trusted() -> None:
    # Signing HS256 with the public key as the HMAC secret is the classic confusion attack.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"sub": "x", "tenant": "t", "roles": ["admin"], "exp": int(time.time()) + 60}
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + _b64(mac)
    with pytest.raises(Unauthenticated, match="not accepted"):
        production_verifier(_jwks(key.public_key(), "k1")).verify(f"Bearer {forged}")


def test_roles_gate_actions() -> None:
    user = Identity(sub="u", tenant="t", roles=frozenset({"user"}))
    with pytest.raises(Forbidden):
        user.require_admin()
    user.require_user()
    with pytest.raises(Forbidden):
        Identity(sub="u", tenant="t", roles=frozenset({"guest"})).require_user()


def test_a_verifier_needs_keys() -> None:
    with pytest.raises(SettingsInvalid):
        verifier()
