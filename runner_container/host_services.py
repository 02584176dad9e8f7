"""The KV and secrets services behind the host functions of both ABIs (DESIGN §6c).

``ext.kv`` / ``ext.secret_get`` (``wasm-core@1``) and ``ext:platform/kv`` / ``ext:platform/secrets``
(``wasm-component@1``) are thin adapters over these two protocols: each ABI turns its arguments into a
call here and a :class:`KvError` / :class:`SecretError` into its own error shape (JSON
``{"error": {"code", "message"}}`` for the core ABI, the WIT variants for components). A
:class:`~runner_container.engine.HostServices` without a service (``None``) answers every call with
``denied``, as a call without the capability does; a service is built per call, already scoped to the
install (tenant, extension) and to the manifest's declared secret names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

__all__ = [
    "KV_CAPABILITY",
    "SECRETS_CAPABILITY",
    "KvEntry",
    "KvError",
    "KvErrorCode",
    "KvPage",
    "KvService",
    "SecretError",
    "SecretErrorCode",
    "SecretService",
]

KV_CAPABILITY = "cap:storage.kv"
SECRETS_CAPABILITY = "cap:secrets.get"


class KvErrorCode(Enum):
    """Why a KV operation did not happen; the value is the WIT case name of ``kv-error``."""

    DENIED = "denied"
    NOT_FOUND = "not-found"
    INVALID = "invalid"
    CONFLICT = "conflict"
    QUOTA_EXCEEDED = "quota-exceeded"
    UNAVAILABLE = "unavailable"


class KvError(Exception):
    """A refused or failed KV operation."""

    def __init__(self, code: KvErrorCode, message: str = "") -> None:
        super().__init__(message or code.value)
        self.code = code
        self.message = message


class SecretErrorCode(Enum):
    """Why a secret was not returned; the value is the WIT case name of ``secret-error``."""

    DENIED = "denied"
    NOT_FOUND = "not-found"
    UNAVAILABLE = "unavailable"


class SecretError(Exception):
    """A refused or failed secret read."""

    def __init__(self, code: SecretErrorCode, message: str = "") -> None:
        super().__init__(message or code.value)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KvEntry:
    """A stored value and its revision (a positive integer that changes on every write)."""

    value: bytes
    revision: int


@dataclass(frozen=True)
class KvPage:
    """One page of keys in key order; ``cursor`` continues the listing, ``None`` at the end."""

    keys: tuple[str, ...]
    cursor: str | None


class KvService(Protocol):
    """The install's KV namespace (one per tenant and extension); every method raises :class:`KvError`."""

    def get(self, key: str) -> KvEntry:
        """The entry at ``key``; ``NOT_FOUND`` when there is none."""
        ...

    def set(self, key: str, value: bytes, if_revision: int | None) -> int:
        """Store ``value``; ``if_revision`` ``None`` = always, 0 = only if absent, n = only at revision n."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        ...

    def list_keys(self, prefix: str, cursor: str | None, limit: int) -> KvPage:
        """Keys starting with ``prefix`` after ``cursor``, at most ``limit``."""
        ...


class SecretService(Protocol):
    """The install's secrets, limited to the names its manifest declares; raises :class:`SecretError`."""

    def get(self, name: str) -> str:
        """The secret's value; ``NOT_FOUND`` when the install holds none by that name."""
        ...
