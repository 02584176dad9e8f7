"""What an extension's call sees of KV: the per-call access object and both ABIs' shapes.

The runner builds one :class:`KvAccess` per call (the install's scope, whether it was granted
``cap:storage.kv``, and a fresh :class:`~chalicelib.kv.service.OperationBudget`) and hands it to the
host functions, which stay thin:

- ``wasm-core@1``, import ``ext.kv(req_ptr, req_len, out_ptr) -> i32``: the host parses the guest's
  request bytes with :func:`parse_core_request` (``runner_container.host_services.core_kv_answer``)
  and writes the answer back through the guest's ``alloc`` (0 = ok; errors are in the JSON, never a
  trap)::

      {"op": "get", "key": "k"}                        -> {"value_b64": "…", "revision": 7}
      {"op": "set", "key": "k", "value_b64": "…",
       "if_revision": null | 0 | n}                    -> {"revision": 8}
      {"op": "delete", "key": "k"}                     -> {"deleted": true}
      {"op": "list", "prefix": "a/", "cursor": null,
       "limit": 100}                                   -> {"keys": ["a/1", …], "cursor": "…" | null}
      anything refused                                 -> {"error": {"code": "KV_…", "message": "…"}}

- ``wasm-component@1``, interface ``ext:platform/kv``: the host calls :meth:`KvAccess.get` and the
  others directly and turns a :class:`~chalicelib.errors.KvError` into the ``kv-error`` case that
  :func:`wit_case` names.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import (
    KvConflict,
    KvDenied,
    KvError,
    KvInvalid,
    KvNotFound,
    KvQuotaExceeded,
    KvUnavailable,
)
from chalicelib.kv.service import KvEntry, KvPage, KvService, OperationBudget
from chalicelib.tenancy import InstallScope

__all__ = [
    "MAX_CORE_REQUEST_BYTES",
    "WIT_CASES",
    "KvAccess",
    "KvDeleteRequest",
    "KvGetRequest",
    "KvListRequest",
    "KvRequest",
    "KvSetRequest",
    "parse_core_request",
    "wit_case",
]

MAX_CORE_REQUEST_BYTES = 128 * 1024
"""A set of the largest value (64 KiB, base64) and the longest key fits with room to spare."""

WIT_CASES: Mapping[type[KvError], str] = {
    KvDenied: "denied",
    KvNotFound: "not-found",
    KvInvalid: "invalid",
    KvConflict: "conflict",
    KvQuotaExceeded: "quota-exceeded",
    KvUnavailable: "unavailable",
}
"""Each KV error's case of the WIT ``kv-error`` variant (DESIGN §6b); a test holds it to the WIT text."""

_WITH_MESSAGE = frozenset({"invalid", "quota-exceeded", "unavailable"})


def wit_case(error: KvError) -> tuple[str, str | None]:
    """The ``kv-error`` case for ``error`` and its payload (``None`` for the cases without one)."""
    case = WIT_CASES.get(type(error), "unavailable")
    return case, (error.message if case in _WITH_MESSAGE else None)


# --- typed requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KvGetRequest:
    key: str


@dataclass(frozen=True)
class KvSetRequest:
    key: str
    value: bytes = field(repr=False)
    if_revision: int | None = None


@dataclass(frozen=True)
class KvDeleteRequest:
    key: str


@dataclass(frozen=True)
class KvListRequest:
    prefix: str = ""
    cursor: str | None = None
    limit: int = 0


KvRequest = KvGetRequest | KvSetRequest | KvDeleteRequest | KvListRequest

_FIELDS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    # op -> (required fields, optional fields); any other field must be absent or null
    "get": (frozenset({"key"}), frozenset()),
    "set": (frozenset({"key", "value_b64"}), frozenset({"if_revision"})),
    "delete": (frozenset({"key"}), frozenset()),
    "list": (frozenset(), frozenset({"prefix", "cursor", "limit"})),
}
_ALL_FIELDS = frozenset({"op", "key", "value_b64", "if_revision", "prefix", "cursor", "limit"})


def parse_core_request(raw: bytes) -> KvRequest:
    """The typed request in a guest's ``ext.kv`` bytes; :class:`KvInvalid` naming what is wrong.

    Fields an operation does not use may be absent or ``null``; unknown fields are refused.
    """
    if len(raw) > MAX_CORE_REQUEST_BYTES:
        raise KvInvalid(f"a KV request must be at most {MAX_CORE_REQUEST_BYTES} bytes of JSON")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KvInvalid(f"a KV request must be a JSON object: {exc}") from None
    if not isinstance(document, dict):
        raise KvInvalid("a KV request must be a JSON object")
    unknown = sorted(set(document) - _ALL_FIELDS)
    if unknown:
        raise KvInvalid(f"unknown field{'s' if len(unknown) > 1 else ''} in the KV request: {', '.join(unknown)}")
    op = document.get("op")
    if not isinstance(op, str) or op not in _FIELDS:
        raise KvInvalid('"op" must be one of "get", "set", "delete", "list"')
    required, optional = _FIELDS[op]
    present = {name for name, value in document.items() if value is not None and name != "op"}
    missing = sorted(required - present)
    if missing:
        raise KvInvalid(f'"{op}" needs "{missing[0]}"')
    extra = sorted(present - required - optional)
    if extra:
        raise KvInvalid(f'"{op}" does not take "{extra[0]}"')
    if op == "list":
        return KvListRequest(
            prefix=_text(document, "prefix", ""),
            cursor=_text(document, "cursor", None),
            limit=_count(document.get("limit")),
        )
    key = _text(document, "key", "")
    if op == "get":
        return KvGetRequest(key)
    if op == "delete":
        return KvDeleteRequest(key)
    return KvSetRequest(key, _base64(document["value_b64"]), _revision(document.get("if_revision")))


def _text(document: Mapping[str, Any], name: str, default: Any) -> Any:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise KvInvalid(f'"{name}" must be a string')
    return value


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KvInvalid('"limit" must be a non-negative integer')
    return value


def _revision(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise KvInvalid('"if_revision" must be null or an integer from 0 to 2**64 - 1')
    return value


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise KvInvalid('"value_b64" must be a base64 string')
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KvInvalid('"value_b64" is not standard base64') from None


# --- one call's access ----------------------------------------------------------------------------


class KvAccess:
    """What one call of one install may do with KV: its scope, its grant, its operation budget.

    Every operation checks the grant first (:class:`KvDenied`, the budget untouched), then spends one
    operation of the budget (:class:`KvQuotaExceeded` past it), then asks the service.
    """

    def __init__(self, service: KvService, scope: InstallScope, budget: OperationBudget, *, allowed: bool) -> None:
        self._service = service
        self._scope = scope
        self._budget = budget
        self._allowed = allowed

    def _admit(self) -> None:
        if not self._allowed:
            raise KvDenied("the install was not granted cap:storage.kv")
        self._budget.spend()

    def get(self, key: str) -> KvEntry:
        self._admit()
        return self._service.get(self._scope, key)

    def set(self, key: str, value: bytes, if_revision: int | None = None) -> int:
        self._admit()
        return self._service.set(self._scope, key, value, if_revision)

    def delete(self, key: str) -> bool:
        self._admit()
        return self._service.delete(self._scope, key)

    def list(self, prefix: str = "", cursor: str | None = None, limit: int = 0) -> KvPage:
        self._admit()
        return self._service.list(self._scope, prefix, cursor, limit)
