"""Per-install key-value storage (``cap:storage.kv``, DESIGN §6c) on DynamoDB.

One namespace per :class:`~chalicelib.tenancy.InstallScope` (tenant, extension): every version of the
install shares it, and it outlives disable, upgrade, rollback and a plain uninstall; only :meth:`purge`
deletes it.

Quotas stay exact under any concurrency, without a read-modify-write race: a write that changes the
install's sums puts or deletes the entry **and** adds its delta to the install's usage item in one
``TransactWriteItems``.  The entry's condition pins the revision that was read (so the delta is the
true one), and the usage item's condition keeps the sums within quota *after* the delta, evaluated
by DynamoDB at commit.  A write whose delta is zero (same size, same key) is one conditional put.
If another write got in between, the transaction is cancelled and the operation starts again from a
fresh read.  The usage item is contended by every write of an install that changes its size, so one
install sustains a few hundred such writes a second; other installs are unaffected.

Revisions are ``max(previous + 1, now in microseconds)``: they grow with every write of a key and are
not reused when a key is deleted and written again, so a compare-and-set cannot mistake a new value
for an old one (unless the clock steps back by more than the time since the old write).

Stages: ``kv.get``, ``kv.set``, ``kv.delete``, ``kv.list``, ``kv.usage`` (logged at DEBUG: a call may
make a hundred), ``kv.purge`` (INFO).  Keys and values are never logged.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.dynamo import condition_failed, response_code
from chalicelib.errors import KvConflict, KvError, KvInvalid, KvNotFound, KvQuotaExceeded, KvUnavailable
from chalicelib.kv.models import USAGE_KEY, KvEntryModel, KvModels, KvUsageModel, usage_partition
from chalicelib.logs import stage, stage_at
from chalicelib.tenancy import InstallScope

__all__ = [
    "KvEntry",
    "KvLimits",
    "KvPage",
    "KvService",
    "KvUsage",
    "OperationBudget",
]

MiB = 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_U64 = 2**64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ATTEMPTS = 12
_PURGE_BATCH = 99
"""Entries deleted per purge transaction; with the usage update, DynamoDB's limit of 100 items."""
_CURSOR_PREFIX = "k1."

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KvLimits:
    """The limits of DESIGN §6c; every one is checked before DynamoDB is asked anything that would break it."""

    max_key_bytes: int = 512
    max_value_bytes: int = 64 * 1024
    max_keys: int = 10_000
    max_bytes: int = 32 * MiB
    """Keys (UTF-8) plus values, summed over the install's entries."""
    max_operations: int = 100
    """KV operations in one call of the extension (see :class:`OperationBudget`)."""
    max_page: int = 1000


class OperationBudget:
    """The KV operations one call of an extension may still make; the runner makes one per call."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._spent = 0
        self._lock = threading.Lock()

    @property
    def spent(self) -> int:
        return self._spent

    def spend(self) -> None:
        """Count one operation; :class:`KvQuotaExceeded` once the call has made ``limit``."""
        with self._lock:
            if self._spent >= self._limit:
                raise KvQuotaExceeded(f"a call may make at most {self._limit} KV operations")
            self._spent += 1


@dataclass(frozen=True)
class KvEntry:
    """A stored value and its revision."""

    value: bytes = field(repr=False)
    revision: int

    def to_json(self) -> dict[str, Any]:
        return {"value_b64": base64.b64encode(self.value).decode("ascii"), "revision": self.revision}


@dataclass(frozen=True)
class KvPage:
    """Keys in order, and the cursor of the next page (``None`` on the last page)."""

    keys: tuple[str, ...]
    cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "cursor": self.cursor}


@dataclass(frozen=True)
class KvUsage:
    """What an install stores, against its quota."""

    keys: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"keys": self.keys, "bytes": self.bytes}


@dataclass(frozen=True)
class _Seen:
    """What a write read of the entry it replaces."""

    revision: int
    size: int


class KvService:
    """Get, set, delete and list in one install's namespace; usage and purge for the platform.

    Methods take the scope first; the caller (the runner's host function, an admin route) has
    already decided the scope may be used.  Every limit raises its :class:`KvError`; a DynamoDB
    failure is :class:`KvUnavailable`.
    """

    def __init__(self, models: KvModels, clock: Clock = _utc_now, limits: KvLimits | None = None) -> None:
        self._models = models
        self._clock = clock
        self.limits = limits or KvLimits()

    # --- reads ------------------------------------------------------------------------------

    def get(self, scope: InstallScope, key: str) -> KvEntry:
        """The value under ``key`` (one strongly consistent GetItem); :class:`KvNotFound` when there is none."""
        self._check_key(key)
        entries = self._models.entries
        with stage_at(logging.DEBUG, "kv.get", tenant=scope.tenant, extension=scope.extension):
            try:
                item = _unavailable_on_failure(entries.get, scope.key, key, consistent_read=True)
            except entries.DoesNotExist:
                raise KvNotFound("no value is stored under this key") from None
            return KvEntry(value=item.value or b"", revision=int(item.revision))

    def list(self, scope: InstallScope, prefix: str = "", cursor: str | None = None, limit: int = 0) -> KvPage:
        """Keys starting with ``prefix``, in key order, after ``cursor``.

        ``limit`` is the page size: 1 to :attr:`KvLimits.max_page`; 0 or more gives the largest page.
        The page carries a cursor exactly when more keys follow.
        """
        self._check_prefix(prefix)
        after = self._decode_cursor(cursor, prefix) if cursor is not None else None
        size = self.limits.max_page if limit <= 0 else min(limit, self.limits.max_page)
        entries = self._models.entries
        with stage_at(logging.DEBUG, "kv.list", tenant=scope.tenant, extension=scope.extension) as learned:
            start = {"ns": {"S": scope.key}, "key": {"S": after}} if after is not None else None
            # One key more than the page: it says whether a next page exists without a last, empty one.
            found = _unavailable_on_failure(
                lambda: [
                    item.key
                    for item in entries.query(
                        scope.key,
                        range_key_condition=entries.key.startswith(prefix) if prefix else None,
                        consistent_read=True,
                        limit=size + 1,
                        last_evaluated_key=start,
                        attributes_to_get=["key"],
                    )
                ]
            )
            learned["keys"] = min(len(found), size)
            more = len(found) > size
            keys = tuple(found[:size])
            return KvPage(keys=keys, cursor=_encode_cursor(keys[-1]) if more else None)

    def usage(self, scope: InstallScope) -> KvUsage:
        """The install's stored keys and bytes (zero for an install that never stored anything)."""
        usage = self._models.usage
        with stage_at(logging.DEBUG, "kv.usage", tenant=scope.tenant, extension=scope.extension):
            try:
                item = _unavailable_on_failure(usage.get, usage_partition(scope.key), USAGE_KEY, consistent_read=True)
            except usage.DoesNotExist:
                return KvUsage(keys=0, bytes=0)
            return KvUsage(keys=int(item.stored_keys), bytes=int(item.stored_bytes))

    # --- writes -------------------------------------------------------------------------------

    def set(self, scope: InstallScope, key: str, value: bytes, if_revision: int | None = None) -> int:
        """Store ``value`` under ``key``; returns the new revision.

        ``if_revision``: ``None`` writes unconditionally, ``0`` only when the key is absent, ``n`` only
        when the key's revision is ``n`` (:class:`KvConflict` otherwise).  :class:`KvQuotaExceeded`
        when the install's keys or bytes would go past their quota.
        """
        size = len(self._check_key(key)) + self._check_value(value)
        _check_revision(if_revision)
        with stage_at(logging.DEBUG, "kv.set", tenant=scope.tenant, extension=scope.extension) as learned:
            for attempt in range(_ATTEMPTS):
                seen = self._seen(scope, key)
                _check_expected(if_revision, seen)
                revision = max((seen.revision + 1) if seen else 0, _micros(self._clock()))
                keys_delta, bytes_delta = (0 if seen else 1), size - (seen.size if seen else 0)
                self._check_quota(keys_delta, bytes_delta)
                if self._write(scope, key, value, revision, size, seen, keys_delta, bytes_delta):
                    learned["attempts"] = attempt + 1
                    return revision
                _back_off(attempt)
            raise KvUnavailable("the key kept changing while it was written; retry")

    def delete(self, scope: InstallScope, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        self._check_key(key)
        entries, usage = self._models.entries, self._models.usage
        with stage_at(logging.DEBUG, "kv.delete", tenant=scope.tenant, extension=scope.extension):
            for attempt in range(_ATTEMPTS):
                seen = self._seen(scope, key)
                if seen is None:
                    return False
                try:
                    with TransactWrite(connection=self._models.connection) as transaction:
                        transaction.delete(entries(scope.key, key), condition=entries.revision == seen.revision)
                        transaction.update(
                            usage(usage_partition(scope.key), USAGE_KEY),
                            actions=[usage.stored_keys.add(-1), usage.stored_bytes.add(-seen.size)],
                        )
                    return True
                except TransactWriteError as exc:
                    _raise_unless_cancelled(exc)
                _back_off(attempt)
            raise KvUnavailable("the key kept changing while it was deleted; retry")

    def purge(self, scope: InstallScope) -> int:
        """Delete every entry of the install and its usage item; returns how many keys were removed.

        For ``DELETE /installs/{extension}?purge=true``, after the install is gone.  Entries go in
        transactions of up to 99 with the matching usage update, so the sums stay exact even if a
        call still running writes meanwhile; :class:`KvUnavailable` if writes keep arriving.
        """
        removed = 0
        rounds = self.limits.max_keys // _PURGE_BATCH + _ATTEMPTS
        with stage("kv.purge", tenant=scope.tenant, extension=scope.extension) as learned:
            for attempt in range(rounds):
                batch = self._purge_batch(scope)
                if batch:
                    removed += self._purge_entries(scope, batch)
                elif self._purge_usage(scope):
                    learned["keys"] = removed
                    return removed
                else:
                    _back_off(attempt)
            raise KvUnavailable("writes kept arriving while the install's KV data was purged; retry")

    # --- steps --------------------------------------------------------------------------------

    def _seen(self, scope: InstallScope, key: str) -> _Seen | None:
        entries = self._models.entries
        try:
            item = _unavailable_on_failure(
                entries.get, scope.key, key, consistent_read=True, attributes_to_get=["revision", "size"]
            )
        except entries.DoesNotExist:
            return None
        return _Seen(revision=int(item.revision), size=int(item.size))

    def _check_quota(self, keys_delta: int, bytes_delta: int) -> None:
        """Refuse early what no state of the install could take; the transaction checks the rest."""
        if keys_delta > self.limits.max_keys or bytes_delta > self.limits.max_bytes:
            raise KvQuotaExceeded(self._quota_message())

    def _quota_message(self) -> str:
        return (
            f"the install may store at most {self.limits.max_keys} keys and {self.limits.max_bytes} bytes "
            "(keys plus values); delete some first"
        )

    def _write(
        self,
        scope: InstallScope,
        key: str,
        value: bytes,
        revision: int,
        size: int,
        seen: _Seen | None,
        keys_delta: int,
        bytes_delta: int,
    ) -> bool:
        """One attempt; ``False`` when the entry changed since ``seen`` was read."""
        entries, usage = self._models.entries, self._models.usage
        item = entries(scope.key, key, value=value or None, revision=revision, size=size)
        unchanged = entries.ns.does_not_exist() if seen is None else entries.revision == seen.revision
        if keys_delta == 0 and bytes_delta == 0:
            try:
                _unavailable_on_failure(item.save, condition=unchanged)
                return True
            except PynamoDBException as exc:
                if condition_failed(exc):
                    return False
                raise
        quota = self._quota_condition(usage, keys_delta, bytes_delta)
        try:
            with TransactWrite(connection=self._models.connection) as transaction:
                transaction.save(item, condition=unchanged)
                transaction.update(
                    usage(usage_partition(scope.key), USAGE_KEY),
                    actions=[usage.stored_keys.add(keys_delta), usage.stored_bytes.add(bytes_delta)],
                    condition=quota,
                )
            return True
        except TransactWriteError as exc:
            _raise_unless_cancelled(exc)
            entry_reason, usage_reason = [*exc.cancellation_reasons, None, None][:2]
            if _failed(usage_reason) and not _failed(entry_reason):
                raise KvQuotaExceeded(self._quota_message()) from None
            return False

    def _quota_condition(self, usage: type[KvUsageModel], keys_delta: int, bytes_delta: int) -> Condition | None:
        """The sums stay within quota after adding the deltas (only the sums that grow are checked)."""
        condition: Condition | None = None
        if keys_delta > 0:
            keys_fit = usage.stored_keys.does_not_exist() | (usage.stored_keys <= self.limits.max_keys - keys_delta)
            condition = keys_fit
        if bytes_delta > 0:
            bytes_fit = usage.stored_bytes.does_not_exist() | (
                usage.stored_bytes <= self.limits.max_bytes - bytes_delta
            )
            condition = bytes_fit if condition is None else condition & bytes_fit
        return condition

    def _purge_batch(self, scope: InstallScope) -> builtins.list[KvEntryModel]:
        entries = self._models.entries
        batch: builtins.list[KvEntryModel] = _unavailable_on_failure(
            lambda: builtins.list(
                entries.query(
                    scope.key,
                    consistent_read=True,
                    limit=_PURGE_BATCH,
                    attributes_to_get=["key", "revision", "size"],
                )
            )
        )
        return batch

    def _purge_entries(self, scope: InstallScope, batch: builtins.list[KvEntryModel]) -> int:
        entries, usage = self._models.entries, self._models.usage
        try:
            with TransactWrite(connection=self._models.connection) as transaction:
                for item in batch:
                    transaction.delete(entries(scope.key, item.key), condition=entries.revision == item.revision)
                freed = sum(int(item.size) for item in batch)
                transaction.update(
                    usage(usage_partition(scope.key), USAGE_KEY),
                    actions=[usage.stored_keys.add(-len(batch)), usage.stored_bytes.add(-freed)],
                )
        except TransactWriteError as exc:
            _raise_unless_cancelled(exc)
            return 0
        return len(batch)

    def _purge_usage(self, scope: InstallScope) -> bool:
        """Delete the usage item once it counts nothing; ``False`` when a write added an entry meanwhile."""
        usage = self._models.usage
        empty = (usage.stored_keys.does_not_exist() | (usage.stored_keys == 0)) & (
            usage.stored_bytes.does_not_exist() | (usage.stored_bytes == 0)
        )
        try:
            _unavailable_on_failure(usage(usage_partition(scope.key), USAGE_KEY).delete, condition=empty)
        except PynamoDBException as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    # --- validation ------------------------------------------------------------------------------

    def _check_key(self, key: Any) -> bytes:
        if not isinstance(key, str):
            raise KvInvalid("a key must be a string")
        encoded = _utf8(key, "key")
        if not 1 <= len(encoded) <= self.limits.max_key_bytes:
            raise KvInvalid(
                f"a key must be 1 to {self.limits.max_key_bytes} bytes of UTF-8; this one is {len(encoded)}"
            )
        if _CONTROL.search(key):
            raise KvInvalid("a key must not hold control characters")
        return encoded

    def _check_prefix(self, prefix: Any) -> None:
        if not isinstance(prefix, str):
            raise KvInvalid("a prefix must be a string")
        encoded = _utf8(prefix, "prefix")
        if len(encoded) > self.limits.max_key_bytes:
            raise KvInvalid(f"a prefix must be at most {self.limits.max_key_bytes} bytes of UTF-8")
        if _CONTROL.search(prefix):
            raise KvInvalid("a prefix must not hold control characters")

    def _check_value(self, value: Any) -> int:
        if not isinstance(value, bytes):
            raise KvInvalid("a value must be bytes")
        if len(value) > self.limits.max_value_bytes:
            raise KvInvalid(f"a value must be at most {self.limits.max_value_bytes} bytes; this one is {len(value)}")
        return len(value)

    def _decode_cursor(self, cursor: Any, prefix: str) -> str:
        if not isinstance(cursor, str) or not cursor.startswith(_CURSOR_PREFIX):
            raise KvInvalid("the cursor is not one a list returned")
        body = cursor[len(_CURSOR_PREFIX) :]
        try:
            key = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        except (binascii.Error, ValueError):
            raise KvInvalid("the cursor is not one a list returned") from None
        try:
            self._check_key(key)
        except KvInvalid:
            raise KvInvalid("the cursor is not one a list returned") from None
        if not key.startswith(prefix):
            raise KvInvalid("the cursor belongs to a list with another prefix")
        return key


def _encode_cursor(key: str) -> str:
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise KvInvalid(f"a {what} must be valid UTF-8 text (it holds a lone surrogate)") from None


def _check_revision(if_revision: Any) -> None:
    if if_revision is None:
        return
    if isinstance(if_revision, bool) or not isinstance(if_revision, int) or not 0 <= if_revision < _U64:
        raise KvInvalid("if_revision must be an integer from 0 to 2**64 - 1")


def _check_expected(if_revision: int | None, seen: _Seen | None) -> None:
    if if_revision is None:
        return
    if if_revision == 0 and seen is not None:
        raise KvConflict("a value is already stored under this key (if_revision 0 writes only absent keys)")
    if if_revision > 0 and (seen is None or seen.revision != if_revision):
        raise KvConflict(f"the key's revision is not {if_revision}: it changed or is absent")


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _failed(reason: Any) -> bool:
    return reason is not None and reason.code == "ConditionalCheckFailed"


def _raise_unless_cancelled(exc: TransactWriteError) -> None:
    """A cancelled transaction is retried by the caller; anything else means DynamoDB failed."""
    if response_code(exc) != "TransactionCanceledException":
        raise KvUnavailable(f"KV storage failed: {response_code(exc) or 'no response'}") from exc


def _unavailable_on_failure(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call``, with a DynamoDB failure other than a failed condition or a missing item reported as KvUnavailable."""
    try:
        return call(*args, **kwargs)
    except (KvError, DoesNotExist):
        raise
    except PynamoDBException as exc:
        if condition_failed(exc):
            raise
        raise KvUnavailable(f"KV storage failed: {response_code(exc) or 'no response'}") from exc


def _back_off(attempt: int) -> None:
    """Full jitter, capped at about 0.2 s: contention on one install's usage item clears in milliseconds."""
    time.sleep(random.uniform(0, min(0.2, 0.004 * 2**attempt)))  # noqa: S311 - jitter, not security
