"""The install's KV data and secrets for one call: the platform's services behind the host functions' seam.

The runner holds one :class:`StateServices` per process (the KV service on ``KV_TABLE_NAME``, the secret
reader on ``SECRETS_TABLE_NAME`` with its short plaintext cache) and asks it, once per call, for the
services of that call (:meth:`StateServices.for_call`):

- scoped to the install the call runs, ``(tenant, extension)``: the tenant from the gateway's request
  context, the extension the bundle's manifest names, so no guest ever names a scope;
- only for what the install was granted: without ``cap:storage.kv`` (``cap:secrets.get``) the service
  is ``None`` and every host function of it answers ``denied``;
- KV with a fresh operation budget (at most 100 operations per call, refused ones included);
- secrets limited to the names the manifest declares, each read at most once per call.

:class:`InstallKv` and :class:`InstallSecrets` turn :mod:`chalicelib.kv` and :mod:`chalicelib.secrets`
(errors from :mod:`chalicelib.errors`) into the protocols of :mod:`runner_container.host_services`,
which both ABIs adapt to.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from chalicelib import kv as platform_kv
from chalicelib import secrets as platform_secrets
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, KvError, SecretError
from chalicelib.tenancy import InstallScope
from runner_container import host_services
from runner_container.host_services import KV_CAPABILITY, SECRETS_CAPABILITY, KvErrorCode, SecretErrorCode

__all__ = ["InstallKv", "InstallSecrets", "InstallState", "StateServices"]


class InstallKv:
    """One call's KV (:class:`host_services.KvService`): the install's namespace under the call's budget."""

    def __init__(self, access: platform_kv.KvAccess) -> None:
        self._access = access

    def get(self, key: str) -> host_services.KvEntry:
        try:
            entry = self._access.get(key)
        except KvError as exc:
            raise _kv_error(exc) from None
        return host_services.KvEntry(value=entry.value, revision=entry.revision)

    def set(self, key: str, value: bytes, if_revision: int | None) -> int:
        try:
            return self._access.set(key, value, if_revision)
        except KvError as exc:
            raise _kv_error(exc) from None

    def delete(self, key: str) -> bool:
        try:
            return self._access.delete(key)
        except KvError as exc:
            raise _kv_error(exc) from None

    def list_keys(self, prefix: str, cursor: str | None, limit: int) -> host_services.KvPage:
        try:
            page = self._access.list(prefix, cursor, limit)
        except KvError as exc:
            raise _kv_error(exc) from None
        return host_services.KvPage(keys=page.keys, cursor=page.cursor)


def _kv_error(error: KvError) -> host_services.KvError:
    case, _ = platform_kv.wit_case(error)
    return host_services.KvError(KvErrorCode(case), error.message)


class InstallSecrets:
    """One call's secrets (:class:`host_services.SecretService`): the declared names of the install."""

    def __init__(self, access: platform_secrets.SecretsAccess) -> None:
        self._access = access

    def get(self, name: str) -> str:
        try:
            # The plaintext leaves its redacting wrapper here only, on its way into the guest.
            return self._access.get(name).reveal()
        except SecretError as exc:
            case, _ = platform_secrets.wit_case(exc)
            raise host_services.SecretError(SecretErrorCode(case), exc.message) from None


@dataclass(frozen=True)
class InstallState:
    """The state services of one call; ``None`` where the install was not granted the capability."""

    kv: InstallKv | None = None
    secrets: InstallSecrets | None = None


class StateServices:
    """The runner's KV and secret services (one per process, shared by its threads)."""

    def __init__(self, kv: platform_kv.KvService, reader: platform_secrets.SecretReader) -> None:
        self._kv = kv
        self._reader = reader

    @classmethod
    def from_settings(cls, settings: Settings, *, kms: Any = None) -> StateServices:
        """The services on ``KV_TABLE_NAME`` and ``SECRETS_TABLE_NAME``; KMS from the process's AWS settings."""
        client = kms if kms is not None else platform_secrets.make_kms_client(settings)
        return cls(
            platform_kv.KvService(platform_kv.make_kv_models(settings)),
            platform_secrets.SecretReader(platform_secrets.make_secret_model(settings), client),
        )

    def for_call(
        self, tenant: object, extension: str, capabilities: Collection[str], declared_secrets: Collection[str]
    ) -> InstallState:
        """The services of one call of ``extension`` for ``tenant``, limited to ``capabilities``.

        Raises :class:`BadRequest` when a state capability is granted and ``tenant`` is not a tenant id.
        """
        wants_kv, wants_secrets = KV_CAPABILITY in capabilities, SECRETS_CAPABILITY in capabilities
        if not (wants_kv or wants_secrets):
            return InstallState()
        if not isinstance(tenant, str):
            raise BadRequest("request.context.tenant_id must be a string for an install with state")
        scope = InstallScope(tenant, extension)
        kv = None
        if wants_kv:
            budget = platform_kv.OperationBudget(self._kv.limits.max_operations)
            kv = InstallKv(platform_kv.KvAccess(self._kv, scope, budget, allowed=True))
        secrets = None
        if wants_secrets:
            access = platform_secrets.SecretsAccess(self._reader, scope, declared_secrets, allowed=True)
            secrets = InstallSecrets(access)
        return InstallState(kv=kv, secrets=secrets)
