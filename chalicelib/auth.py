"""Bearer tokens: verify a JWT and turn it into an :class:`Identity`.

Tokens carry ``sub``, ``tenant`` and ``roles`` (``user``; ``admin`` may also upload
and manage installs; ``operator``, the platform's own staff, may transfer extension
names between owners).  Development and tests sign them with HS256 and
``EXT_AUTH_SECRET``; production verifies RS256/ES256 against a JWKS
(``EXT_AUTH_JWKS``: inline JSON, a file path, or an https URL), and then also
requires the ``iss`` and ``aud`` claims to be ``EXT_AUTH_ISSUER`` and
``EXT_AUTH_AUDIENCE`` (a verifier refuses to start without both).  The key family
decides the algorithms, so an HS256 token can never be checked against a
public key ("algorithm confusion"), and ``none`` is never accepted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt

from chalicelib.config import Settings, check_combinations
from chalicelib.errors import Forbidden, SettingsInvalid, Unauthenticated
from chalicelib.tenancy import TENANT_ID

__all__ = ["ADMIN", "OPERATOR", "USER", "Identity", "TokenVerifier", "issue_token"]

USER = "user"
ADMIN = "admin"
OPERATOR = "operator"
_KNOWN_ROLES = frozenset({USER, ADMIN, OPERATOR})
_ASYMMETRIC = ["RS256", "ES256"]
_LEEWAY_SECONDS = 30
_MAX_TOKEN_BYTES = 8 * 1024


@dataclass(frozen=True)
class Identity:
    sub: str
    tenant: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def require_user(self) -> None:
        if not self.roles & _KNOWN_ROLES:
            raise Forbidden("this token has no role that may call the API")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this action needs the admin role")

    def require_operator(self) -> None:
        if OPERATOR not in self.roles:
            raise Forbidden("this action needs the operator role (the platform's operators only)")


def _bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing Authorization header (expected: Bearer <token>)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be: Bearer <token>")
    if len(token) > _MAX_TOKEN_BYTES:
        raise Unauthenticated("the token is too large")
    return token.strip()


def _identity(claims: Mapping[str, Any]) -> Identity:
    sub, tenant, roles = claims.get("sub"), claims.get("tenant"), claims.get("roles")
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("the token has no subject (`sub`)")
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise Unauthenticated("the token has no valid `tenant` claim")
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, Sequence) or not all(isinstance(r, str) for r in roles):
        raise Unauthenticated("the token's `roles` claim must be a list of strings")
    return Identity(sub=sub, tenant=tenant, roles=frozenset(roles))


class TokenVerifier:
    """Verifies bearer tokens with the keys the settings name."""

    def __init__(self, settings: Settings) -> None:
        self._secret: str = settings.ext_auth_secret
        self._jwks_source: str = settings.ext_auth_jwks
        self._issuer: str = settings.ext_auth_issuer
        self._audience: str = settings.ext_auth_audience
        if not self._secret and not self._jwks_source:
            raise SettingsInvalid("set EXT_AUTH_SECRET (development) or EXT_AUTH_JWKS (production)")
        check_combinations(settings.values)

    @cached_property
    def _jwks(self) -> jwt.PyJWKSet | jwt.PyJWKClient:
        source = self._jwks_source.strip()
        if source.startswith("https://"):
            return jwt.PyJWKClient(source, cache_keys=True, lifespan=600)
        try:
            text = source if source.startswith("{") else Path(source).read_text("utf-8")
            return jwt.PyJWKSet.from_dict(json.loads(text))
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise SettingsInvalid(f"EXT_AUTH_JWKS cannot be loaded: {exc}") from None

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret:
            return self._secret, ["HS256"]
        if algorithm in _ASYMMETRIC and self._jwks_source:
            jwks = self._jwks
            kid = header.get("kid")
            try:
                if isinstance(jwks, jwt.PyJWKClient):
                    return jwks.get_signing_key_from_jwt(token).key, _ASYMMETRIC
                key = next(k for k in jwks.keys if kid is None or k.key_id == kid)
            except (StopIteration, jwt.PyJWTError):
                raise Unauthenticated(f"no trusted key for this token (kid {kid!r})") from None
            return key.key, _ASYMMETRIC
        raise Unauthenticated(f"tokens signed with {algorithm!r} are not accepted here")

    def verify(self, authorization: str | None) -> Identity:
        """The caller's identity, or ``UNAUTHENTICATED`` saying what is wrong."""
        token = _bearer(authorization)
        key, algorithms = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self._issuer or None,
                audience=self._audience or None,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": bool(self._audience)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature is not valid") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from None
        return _identity(claims)


def issue_token(secret: str, *, sub: str, tenant: str, roles: Sequence[str], ttl_seconds: int = 3600) -> str:
    """An HS256 token for development and tests."""
    now = int(time.time())
    claims = {"sub": sub, "tenant": tenant, "roles": list(roles), "iat": now, "exp": now + ttl_seconds}
    claims["jti"] = uuid.uuid4().hex
    return jwt.encode(claims, secret, algorithm="HS256")
