"""Install secrets (``cap:secrets.get``, DESIGN §5 and §6c): admins write them, extensions read them.

Two services for the two sides, matching what their roles may do with the KMS key:

- :class:`SecretsService`, in the API: ``put`` (seal and store), ``list`` (names and state, never a
  value, and never even read the sealed bytes), ``delete`` and ``purge``.  It only makes data keys.
- :class:`SecretReader`, in the runner: ``get`` reads the row (one GetItem, so a changed or deleted
  secret is seen on the next call) and unseals it, keeping the plaintext in memory for at most
  ``ttl_seconds`` per sealed version so KMS is asked once per version and period, not per call.  It
  only decrypts.
- :class:`SecretsAccess` is one call's view: the grant, the declared names, a per-call memo.

A secret is keyed by the install's scope (tenant, extension) and its declared name; a plain
uninstall keeps it, ``purge`` deletes it.  Stages: ``secrets.put``, ``secrets.delete``,
``secrets.purge`` (INFO, with the name), ``secrets.list`` and ``secrets.get`` (DEBUG).  No log line,
message or ``repr`` holds a value (``tests/integration/test_secrets.py`` greps for one).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib.bundles.manifest import SecretSpec
from chalicelib.dynamo import condition_failed, response_code
from chalicelib.errors import (
    BadRequest,
    SecretDenied,
    SecretError,
    SecretInvalid,
    SecretNotFound,
    SecretUnavailable,
)
from chalicelib.logs import stage, stage_at
from chalicelib.secrets.models import SecretModel
from chalicelib.secrets.sealing import FORMAT, Sealed, SecretValue, seal, silence_response_bodies, unseal
from chalicelib.tenancy import InstallScope

__all__ = [
    "WIT_CASES",
    "PutSecretRequest",
    "SecretList",
    "SecretReader",
    "SecretStatus",
    "SecretsAccess",
    "SecretsService",
    "wit_case",
]

_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name[:70]) if isinstance(name, str) else type(name).__name__
        raise SecretInvalid(f"{shown} is not a secret name (a capital letter, then capitals, digits or _)")
    return name


# --- typed requests and results ------------------------------------------------------------------


@dataclass(frozen=True)
class PutSecretRequest:
    """The body of ``PUT /installs/{extension}/secrets/{name}``: ``{"value": "…"}``."""

    value: SecretValue

    @classmethod
    def parse(cls, body: Any) -> PutSecretRequest:
        """Raises :class:`BadRequest` for a body that is not that object, :class:`SecretInvalid` for the value."""
        if not isinstance(body, Mapping):
            raise BadRequest('the body must be a JSON object {"value": "…"}')
        unknown = sorted(str(name)[:40] for name in body if name != "value")
        if unknown:
            raise BadRequest(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        value = body.get("value")
        if not isinstance(value, str):
            raise SecretInvalid("`value` must be a string")
        secret = SecretValue(value)
        secret.utf8()
        return cls(secret)


@dataclass(frozen=True)
class SecretStatus:
    """One name of an install's secrets: declared by the installed version or left from an earlier one."""

    name: str
    description: str | None
    declared: bool
    required: bool
    is_set: bool
    updated_at: datetime | None

    @property
    def missing(self) -> bool:
        """Required by the installed version and not set."""
        return self.required and not self.is_set

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "declared": self.declared,
            "required": self.required,
            "set": self.is_set,
            "missing": self.missing,
            "updated_at": _iso(self.updated_at) if self.updated_at is not None else None,
        }


@dataclass(frozen=True)
class SecretList:
    """The answer of ``GET /installs/{extension}/secrets``: declared names in manifest order, then leftovers."""

    secrets: tuple[SecretStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {"secrets": [secret.to_json() for secret in self.secrets]}


# --- the API side ---------------------------------------------------------------------------------


class SecretsService:
    """Writes, lists and deletes an install's secrets; never reads a value back.

    ``kms`` is a boto3 KMS client; ``key_id`` the key that wraps new data keys (``SECRETS_KMS_KEY_ID``).
    Whether the install exists is the caller's business (the route answers ``NOT_INSTALLED``).
    """

    def __init__(self, model: type[SecretModel], kms: Any, key_id: str, clock: Clock = _utc_now) -> None:
        silence_response_bodies()
        self._model = model
        self._kms = kms
        self._key_id = key_id
        self._clock = clock

    def put(
        self,
        scope: InstallScope,
        name: str,
        request: PutSecretRequest,
        declared: Sequence[SecretSpec],
        by: str | None = None,
    ) -> SecretStatus:
        """Seal and store ``request.value`` as ``name``, replacing any earlier value.

        ``declared`` are the installed version's ``secrets``; another name is :class:`SecretInvalid`.
        """
        _check_name(name)
        spec = next((spec for spec in declared if spec.name == name), None)
        if spec is None:
            names = ", ".join(spec.name for spec in declared) or "none"
            raise SecretInvalid(f"{name} is not a secret the installed version declares (it declares: {names})")
        with stage("secrets.put", tenant=scope.tenant, extension=scope.extension, secret=name):
            sealed = seal(self._kms, self._key_id, scope, name, request.value)
            now = self._clock()
            item = self._model(
                scope.key,
                name,
                sealed=sealed.ciphertext,
                nonce=sealed.nonce,
                wrapped_key=sealed.wrapped_key,
                kms_key_id=sealed.kms_key_id,
                format=FORMAT,
                updated_at=now,
                updated_by=by,
            )
            _storage(item.save)
        return SecretStatus(name, spec.description, True, spec.required, True, now)

    def list(self, scope: InstallScope, declared: Sequence[SecretSpec]) -> SecretList:
        """Every declared name with whether it is set, then names stored but no longer declared."""
        with stage_at(logging.DEBUG, "secrets.list", tenant=scope.tenant, extension=scope.extension):
            stored = {
                item.name: item.updated_at
                for item in _storage(
                    lambda: builtins.list(
                        self._model.query(scope.key, consistent_read=True, attributes_to_get=["name", "updated_at"])
                    )
                )
            }
        listed = [
            SecretStatus(spec.name, spec.description, True, spec.required, spec.name in stored, stored.get(spec.name))
            for spec in declared
        ]
        names = {spec.name for spec in declared}
        listed += [SecretStatus(name, None, False, False, True, stored[name]) for name in sorted(set(stored) - names)]
        return SecretList(tuple(listed))

    def delete(self, scope: InstallScope, name: str) -> bool:
        """Remove the secret ``name`` (declared or not); whether it was set."""
        _check_name(name)
        with stage("secrets.delete", tenant=scope.tenant, extension=scope.extension, secret=name) as learned:
            try:
                _storage(self._model(scope.key, name).delete, condition=self._model.name.exists())
            except PynamoDBException as exc:
                if not condition_failed(exc):
                    raise
                learned["existed"] = False
                return False
            learned["existed"] = True
            return True

    def purge(self, scope: InstallScope) -> int:
        """Delete every secret of the install (``DELETE /installs/{extension}?purge=true``); how many there were."""
        with stage("secrets.purge", tenant=scope.tenant, extension=scope.extension) as learned:
            names = _storage(
                lambda: [
                    item.name for item in self._model.query(scope.key, consistent_read=True, attributes_to_get=["name"])
                ]
            )
            for name in names:
                _storage(self._model(scope.key, name).delete)
            learned["secrets"] = len(names)
            return len(names)


# --- the runner side ---------------------------------------------------------------------------------


class SecretReader:
    """Reads and unseals secrets for the runner; caches plaintext per sealed version for ``ttl_seconds``."""

    def __init__(
        self,
        model: type[SecretModel],
        kms: Any,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        silence_response_bodies()
        self._model = model
        self._kms = kms
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._cache: OrderedDict[tuple[str, str], tuple[bytes, float, SecretValue]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scope: InstallScope, name: str) -> SecretValue:
        """The value of ``scope``'s secret ``name``; :class:`SecretNotFound` when it is not set."""
        _check_name(name)
        with stage_at(
            logging.DEBUG, "secrets.get", tenant=scope.tenant, extension=scope.extension, secret=name
        ) as learned:
            try:
                item = _storage(self._model.get, scope.key, name, consistent_read=True)
            except DoesNotExist:
                raise SecretNotFound(f"the secret {name} is not set for this install") from None
            sealed = Sealed(item.wrapped_key, item.kms_key_id, item.nonce, item.sealed)
            version = hashlib.sha256(sealed.wrapped_key + sealed.nonce + sealed.ciphertext).digest()
            cached = self._cached((scope.key, name), version)
            learned["cached"] = cached is not None
            if cached is not None:
                return cached
            value = unseal(self._kms, scope, name, sealed)
            self._remember((scope.key, name), version, value)
            return value

    def _cached(self, key: tuple[str, str], version: bytes) -> SecretValue | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            stored_version, expires, value = entry
            if stored_version != version or self._monotonic() >= expires:
                del self._cache[key]
                return None
            return value

    def _remember(self, key: tuple[str, str], version: bytes, value: SecretValue) -> None:
        with self._lock:
            self._cache[key] = (version, self._monotonic() + self._ttl, value)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)


class SecretsAccess:
    """What one call of one install may read: its grant and its manifest's declared names."""

    def __init__(self, reader: SecretReader, scope: InstallScope, declared: Collection[str], *, allowed: bool) -> None:
        self._reader = reader
        self._scope = scope
        self._declared = frozenset(declared)
        self._allowed = allowed
        self._memo: dict[str, SecretValue] = {}

    def get(self, name: str) -> SecretValue:
        """Denied without ``cap:secrets.get`` or for an undeclared name; read once per call and name."""
        if not self._allowed:
            raise SecretDenied("the install was not granted cap:secrets.get")
        if name not in self._declared:
            raise SecretDenied(f"the manifest does not declare a secret named {name[:70]!r}")
        if name not in self._memo:
            self._memo[name] = self._reader.get(self._scope, name)
        return self._memo[name]


WIT_CASES: Mapping[type[SecretError], str] = {
    SecretDenied: "denied",
    SecretNotFound: "not-found",
    SecretUnavailable: "unavailable",
}
"""Each secret error's case of the WIT ``secret-error`` variant (DESIGN §6b)."""


def wit_case(error: SecretError) -> tuple[str, str | None]:
    """The ``secret-error`` case for ``error`` and its payload (only ``unavailable`` carries one)."""
    case = WIT_CASES.get(type(error), "unavailable")
    return case, (error.message if case == "unavailable" else None)


def _storage(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call``; a DynamoDB failure other than a missing item or a failed condition is SecretUnavailable."""
    try:
        return call(*args, **kwargs)
    except DoesNotExist:
        raise
    except PynamoDBException as exc:
        if condition_failed(exc):
            raise
        raise SecretUnavailable(f"the secret store failed: {response_code(exc) or 'no response'}") from None
