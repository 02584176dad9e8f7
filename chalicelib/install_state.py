"""An install's state as its tenant's admins see it: secrets, KV data, and purge on uninstall.

The admin routes of DESIGN §5 (``/installs/{extension}/secrets…``, ``/installs/{extension}/kv…`` and
``DELETE /installs/{extension}?purge=true``) call :class:`InstallStateService`, which joins three
services: the install (it must exist, and its version says which secrets are declared), the secrets
service (write-only) and the KV service.  The scope is always the caller's tenant and the path's
extension; no request names another.

The routes parse their query strings and bodies into :class:`KvPutRequest`, :class:`KvKeyQuery`,
:class:`KvListQuery` and :class:`UninstallQuery`.  Keys travel in query strings and bodies, never in
the path, because a key may hold ``/`` and any other UTF-8.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.bundles.manifest import SecretSpec
from chalicelib.errors import BadRequest, KvNotFound, NotInstalled, SecretNotFound
from chalicelib.json_values import as_integer
from chalicelib.kv import KvEntry, KvPage, KvService, KvUsage
from chalicelib.registry import InstallService, RegistryService
from chalicelib.secrets import PutSecretRequest, SecretList, SecretsService, SecretStatus
from chalicelib.tenancy import InstallScope, is_extension_name

__all__ = [
    "InstallStateService",
    "KvKeyQuery",
    "KvListQuery",
    "KvListing",
    "KvPutRequest",
    "KvStored",
    "KvValue",
    "Purged",
    "UninstallQuery",
    "Uninstalled",
]

_MAX_PAGE = 1000
_U64 = 2**64
_PUT_FIELDS = frozenset({"key", "value", "value_b64", "if_revision"})


def _only(body: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(str(name)[:40] for name in body if name not in allowed)
    if unknown:
        raise BadRequest(f"unknown {what}{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")


def _text(source: Mapping[str, Any], name: str) -> str | None:
    value = source.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string")
    return value


def _required_text(source: Mapping[str, Any], name: str) -> str:
    value = _text(source, name)
    if value is None:
        raise BadRequest(f"`{name}` is required")
    return value


# --- typed requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvPutRequest:
    """``PUT /installs/{extension}/kv/entry``: ``{"key", "value" | "value_b64", "if_revision"?}``.

    ``value`` stores UTF-8 text, ``value_b64`` exact bytes; exactly one of them.  ``if_revision`` as in
    the guest's ``set``: absent or null always writes, ``0`` only a new key, ``n`` only over revision ``n``.
    """

    key: str
    value: bytes = field(repr=False)
    if_revision: int | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> KvPutRequest:
        """Read the body; :class:`BadRequest` names the field that is wrong (the key's rules are the service's)."""
        _only(body, _PUT_FIELDS, "field")
        key = _required_text(body, "key")
        if ("value" in body) == ("value_b64" in body):
            raise BadRequest("send exactly one of `value` (UTF-8 text) and `value_b64` (base64 bytes)")
        if "value" in body:
            try:
                value = _required_text(body, "value").encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("`value` must be valid UTF-8 text (it holds a lone surrogate)") from None
        else:
            try:
                value = base64.b64decode(_required_text(body, "value_b64"), validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("`value_b64` must be standard base64") from None
        raw = body.get("if_revision")
        revision = as_integer(raw)
        if raw is not None and (revision is None or not 0 <= revision < _U64):
            raise BadRequest("`if_revision` must be null or an integer from 0 to 2**64 - 1")
        return cls(key=key, value=value, if_revision=revision)


@dataclass(frozen=True)
class KvKeyQuery:
    """``?key=…`` of ``GET`` and ``DELETE /installs/{extension}/kv/entry``."""

    key: str

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> KvKeyQuery:
        _only(query, frozenset({"key"}), "query parameter")
        return cls(_required_text(query, "key"))


@dataclass(frozen=True)
class KvListQuery:
    """``?prefix=&cursor=&limit=`` of ``GET /installs/{extension}/kv``; ``limit`` 1–1000, default 1000."""

    prefix: str = ""
    cursor: str | None = None
    limit: int = _MAX_PAGE

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> KvListQuery:
        _only(query, frozenset({"prefix", "cursor", "limit"}), "query parameter")
        raw_limit = query.get("limit")
        limit = _MAX_PAGE
        if raw_limit is not None:
            if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_PAGE:
                raise BadRequest(f"`limit` must be an integer from 1 to {_MAX_PAGE}")
            limit = int(raw_limit)
        return cls(prefix=_text(query, "prefix") or "", cursor=_text(query, "cursor") or None, limit=limit)


@dataclass(frozen=True)
class UninstallQuery:
    """``?purge=true|false`` of ``DELETE /installs/{extension}`` (default false: the data is kept)."""

    purge: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> UninstallQuery:
        _only(query, frozenset({"purge"}), "query parameter")
        purge = query.get("purge", "false")
        if purge not in ("true", "false"):
            raise BadRequest("`purge` must be true or false")
        return cls(purge=purge == "true")


# --- typed results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvValue:
    """A key's value as the admin API shows it."""

    key: str
    entry: KvEntry

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **self.entry.to_json()}


@dataclass(frozen=True)
class KvStored:
    """What a ``PUT`` of a key wrote."""

    key: str
    revision: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "revision": self.revision}


@dataclass(frozen=True)
class KvListing:
    """One page of keys and the install's usage against its quota."""

    page: KvPage
    usage: KvUsage

    def to_json(self) -> dict[str, Any]:
        return {**self.page.to_json(), "usage": self.usage.to_json()}


@dataclass(frozen=True)
class Purged:
    """What a purge deleted."""

    kv_keys: int
    secrets: int

    def to_json(self) -> dict[str, Any]:
        return {"kv_keys": self.kv_keys, "secrets": self.secrets}


@dataclass(frozen=True)
class Uninstalled:
    """The answer of ``DELETE /installs/{extension}``.

    ``removed``: an install was removed (always, without purge: no install is ``NOT_INSTALLED``);
    ``purged``: what the purge deleted, ``None`` without one.
    """

    extension: str
    removed: bool
    purged: Purged | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"extension": self.extension, "status": "uninstalled" if self.removed else "purged"}
        if self.purged is not None:
            body["purged"] = self.purged.to_json()
        return body


# --- the service ------------------------------------------------------------------------------------


class InstallStateService:
    """Secrets, KV data and uninstall of one tenant's installs, for that tenant's admins.

    Every method takes the tenant (from the caller's token) and the extension (from the path); the
    caller has already checked the admin role.  Secret and KV routes need the install
    (:class:`NotInstalled` otherwise); a purge does not, so an interrupted one can be finished.
    """

    def __init__(
        self, installs: InstallService, registry: RegistryService, kv: KvService, secrets: SecretsService
    ) -> None:
        self._installs = installs
        self._registry = registry
        self._kv = kv
        self._secrets = secrets

    def _installed(self, tenant: str, extension: str) -> InstallScope:
        # The install first: a name no extension can have is not installed, like any other absent one.
        self._installs.get(tenant, extension)
        return InstallScope(tenant, extension)

    def _declared(self, tenant: str, extension: str) -> tuple[InstallScope, tuple[SecretSpec, ...]]:
        install = self._installs.get(tenant, extension)
        scope = InstallScope(tenant, extension)
        version = self._registry.get_version(extension, install.version)
        return scope, SecretSpec.from_manifest(version.manifest)

    # --- secrets ------------------------------------------------------------------------------------

    def list_secrets(self, tenant: str, extension: str) -> SecretList:
        """The installed version's declared names with their state, then leftovers; never a value."""
        scope, declared = self._declared(tenant, extension)
        return self._secrets.list(scope, declared)

    def put_secret(
        self, tenant: str, extension: str, name: str, request: PutSecretRequest, by: str | None = None
    ) -> SecretStatus:
        """Seal and store a value for a name the installed version declares (:class:`SecretInvalid` otherwise)."""
        scope, declared = self._declared(tenant, extension)
        return self._secrets.put(scope, name, request, declared, by=by)

    def delete_secret(self, tenant: str, extension: str, name: str) -> None:
        """Remove a stored secret (declared or left over); :class:`SecretNotFound` when it is not set."""
        scope = self._installed(tenant, extension)
        if not self._secrets.delete(scope, name):
            raise SecretNotFound(f"the secret {name} is not set for this install")

    # --- KV ----------------------------------------------------------------------------------------------

    def kv_get(self, tenant: str, extension: str, query: KvKeyQuery) -> KvValue:
        scope = self._installed(tenant, extension)
        return KvValue(query.key, self._kv.get(scope, query.key))

    def kv_put(self, tenant: str, extension: str, request: KvPutRequest) -> KvStored:
        scope = self._installed(tenant, extension)
        return KvStored(request.key, self._kv.set(scope, request.key, request.value, request.if_revision))

    def kv_delete(self, tenant: str, extension: str, query: KvKeyQuery) -> None:
        """Remove a key; :class:`KvNotFound` when none is stored."""
        scope = self._installed(tenant, extension)
        if not self._kv.delete(scope, query.key):
            raise KvNotFound("no value is stored under this key")

    def kv_list(self, tenant: str, extension: str, query: KvListQuery) -> KvListing:
        scope = self._installed(tenant, extension)
        page = self._kv.list(scope, query.prefix, query.cursor, query.limit)
        return KvListing(page, self._kv.usage(scope))

    # --- uninstall ----------------------------------------------------------------------------------------

    def uninstall(self, tenant: str, extension: str, query: UninstallQuery) -> Uninstalled:
        """Remove the install; with ``purge``, then delete its KV data and secrets.

        Without purge, no install is :class:`NotInstalled`, and the data stays for a reinstall.  With
        purge, the data goes whether or not an install was there, so a purge a failure interrupted
        (``KV_UNAVAILABLE``, ``SECRET_UNAVAILABLE``) finishes when sent again; a name no extension can
        have holds no data and stays :class:`NotInstalled`.
        """
        try:
            self._installs.uninstall(tenant, extension)
            removed = True
        except NotInstalled:
            if not query.purge or not is_extension_name(extension):
                raise
            removed = False
        if not query.purge:
            return Uninstalled(extension, removed)
        scope = InstallScope(tenant, extension)
        purged = Purged(kv_keys=self._kv.purge(scope), secrets=self._secrets.purge(scope))
        return Uninstalled(extension, removed, purged)
