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

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from chalicelib.errors import KvInvalid as KvInvalidRequest
from chalicelib.kv.abi import KvDeleteRequest, KvGetRequest, KvSetRequest, parse_core_request

__all__ = [
    "KV_CAPABILITY",
    "MAX_SECRET_NAME_BYTES",
    "SECRETS_CAPABILITY",
    "KvEntry",
    "KvError",
    "KvErrorCode",
    "KvPage",
    "KvService",
    "SecretError",
    "SecretErrorCode",
    "SecretService",
    "core_kv_answer",
    "core_secret_answer",
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


# --- wasm-core@1: the JSON shapes of ext.kv and ext.secret_get ---------------------------------

MAX_SECRET_NAME_BYTES = 64
"""The longest name a manifest can declare (``^[A-Z][A-Z0-9_]{0,63}$``): longer ones are refused unread."""


def _core_error(prefix: str, code: KvErrorCode | SecretErrorCode, message: str) -> dict[str, Any]:
    # The core ABI's codes are the WIT cases spelled as error codes: not-found -> KV_NOT_FOUND.
    return {"error": {"code": f"{prefix}_{code.value.upper().replace('-', '_')}", "message": message or code.value}}


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _refused(body: Mapping[str, Any]) -> tuple[int, bytes]:
    return 1, _json(body)


def core_kv_answer(service: KvService | None, raw: bytes) -> tuple[int, bytes]:
    """The return code and answer of ``ext.kv`` for the request bytes ``raw``.

    ``(0, result)`` when the operation ran, ``(1, {"error": {"code", "message"}})`` when it was refused
    or failed. ``service`` ``None`` (no ``cap:storage.kv``) answers ``KV_DENIED`` without reading ``raw``.
    Never raises for anything the guest sent.
    """
    if service is None:
        return _refused(_core_error("KV", KvErrorCode.DENIED, f"the install was not granted {KV_CAPABILITY}"))
    try:
        request = parse_core_request(raw)
    except KvInvalidRequest as exc:
        return _refused(_core_error("KV", KvErrorCode.INVALID, exc.message))
    try:
        body: dict[str, Any]
        if isinstance(request, KvGetRequest):
            entry = service.get(request.key)
            body = {"value_b64": base64.b64encode(entry.value).decode("ascii"), "revision": entry.revision}
        elif isinstance(request, KvSetRequest):
            body = {"revision": service.set(request.key, request.value, request.if_revision)}
        elif isinstance(request, KvDeleteRequest):
            body = {"deleted": service.delete(request.key)}
        else:
            page = service.list_keys(request.prefix, request.cursor, request.limit)
            body = {"keys": list(page.keys), "cursor": page.cursor}
    except KvError as exc:
        return _refused(_core_error("KV", exc.code, exc.message))
    return 0, _json(body)


def core_secret_answer(service: SecretService | None, raw_name: bytes) -> tuple[int, bytes]:
    """The return code and answer of ``ext.secret_get`` for the name bytes ``raw_name``.

    ``(0, {"value": "…"})``, or ``(1, {"error": {"code", "message"}})``. ``service`` ``None`` (no
    ``cap:secrets.get``) answers ``SECRET_DENIED``; so does a name that is not UTF-8 or longer than any
    declared name can be.
    """
    if service is None:
        message = f"the install was not granted {SECRETS_CAPABILITY}"
        return _refused(_core_error("SECRET", SecretErrorCode.DENIED, message))
    if len(raw_name) > MAX_SECRET_NAME_BYTES:
        message = f"a secret name is at most {MAX_SECRET_NAME_BYTES} bytes; the manifest declares none this long"
        return _refused(_core_error("SECRET", SecretErrorCode.DENIED, message))
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        return _refused(_core_error("SECRET", SecretErrorCode.DENIED, "a secret name is UTF-8 text"))
    try:
        return 0, _json({"value": service.get(name)})
    except SecretError as exc:
        return _refused(_core_error("SECRET", exc.code, exc.message))
