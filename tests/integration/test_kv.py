"""Per-install KV storage against a moto server: the §6c limits, compare-and-set, paging, purge, both
ABIs' shapes, and exact quotas under concurrent writers."""

from __future__ import annotations

import base64
import itertools
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.config import load_settings
from chalicelib.errors import KvConflict, KvDenied, KvInvalid, KvNotFound, KvQuotaExceeded, KvUnavailable
from chalicelib.kv import (
    KvAccess,
    KvLimits,
    KvModels,
    KvService,
    KvUsage,
    OperationBudget,
    create_kv_table,
    make_kv_models,
)
from chalicelib.tenancy import InstallScope
from devstack.aws import aws_environment
from runner_container.host_services import core_kv_answer
from runner_container.state import InstallKv

EXTENSION = "com.acme.sync"
_tenants = itertools.count()


class TickingClock:
    """A clock that moves one millisecond each time it is read."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(milliseconds=1)
            return self.now


@pytest.fixture(scope="module")
def models(moto_server: str) -> Iterator[KvModels]:
    # The local stack's moto server applies each DynamoDB request as one step, as DynamoDB does.
    with aws_environment(moto_server):
        bound = make_kv_models(load_settings({"KV_TABLE_NAME": "kv-it"}))
        create_kv_table(bound)
        yield bound


@pytest.fixture
def scope(models: KvModels) -> Iterator[InstallScope]:
    """A tenant of its own for each test, so tests never see each other's keys.

    Purged afterwards: moto copies a whole table for every transaction, so a table that keeps
    growing slows every later write.
    """
    fresh = InstallScope(f"t{next(_tenants)}", EXTENSION)
    yield fresh
    KvService(models).purge(fresh)


def service_with(models: KvModels, **limits: int) -> KvService:
    return KvService(models, TickingClock(), KvLimits(**limits))


@pytest.fixture
def kv(models: KvModels) -> KvService:
    return KvService(models, TickingClock())


def stored_sums(models: KvModels, scope: InstallScope) -> KvUsage:
    """The sums recomputed from the entries themselves (values read back, not the recorded sizes)."""
    items = list(models.entries.query(scope.key, consistent_read=True))
    total = sum(len(item.key.encode()) + len(item.value or b"") for item in items)
    assert all(int(item.size) == len(item.key.encode()) + len(item.value or b"") for item in items)
    return KvUsage(keys=len(items), bytes=total)


# --- get, set, delete -------------------------------------------------------------------------------


def test_a_value_reads_back_with_its_revision_and_every_write_raises_the_revision(
    kv: KvService, scope: InstallScope
) -> None:
    first = kv.set(scope, "cursor", b"\x00\xffbinary")
    assert kv.get(scope, "cursor").value == b"\x00\xffbinary"
    assert kv.get(scope, "cursor").revision == first
    second = kv.set(scope, "cursor", b"next")
    assert second > first
    assert (kv.get(scope, "cursor").value, kv.get(scope, "cursor").revision) == (b"next", second)


def test_an_empty_value_is_a_value(kv: KvService, scope: InstallScope) -> None:
    kv.set(scope, "empty", b"")
    assert kv.get(scope, "empty").value == b""
    assert kv.usage(scope) == KvUsage(keys=1, bytes=len("empty"))


def test_a_missing_key_is_not_found(kv: KvService, scope: InstallScope) -> None:
    with pytest.raises(KvNotFound):
        kv.get(scope, "nothing")


def test_delete_says_whether_the_key_existed_and_frees_its_quota(kv: KvService, scope: InstallScope) -> None:
    kv.set(scope, "a", b"12345")
    assert kv.usage(scope) == KvUsage(keys=1, bytes=6)
    assert kv.delete(scope, "a") is True
    assert kv.delete(scope, "a") is False
    assert kv.usage(scope) == KvUsage(keys=0, bytes=0)
    with pytest.raises(KvNotFound):
        kv.get(scope, "a")


def test_a_key_written_again_after_a_delete_never_gets_an_earlier_revision(kv: KvService, scope: InstallScope) -> None:
    revisions = [kv.set(scope, "k", b"1"), kv.set(scope, "k", b"2")]
    kv.delete(scope, "k")
    revisions.append(kv.set(scope, "k", b"3"))
    assert revisions == sorted(set(revisions))


# --- compare-and-set ---------------------------------------------------------------------------------


def test_if_revision_zero_writes_only_an_absent_key(kv: KvService, scope: InstallScope) -> None:
    kv.set(scope, "lock", b"me", if_revision=0)
    with pytest.raises(KvConflict, match="already stored"):
        kv.set(scope, "lock", b"you", if_revision=0)
    assert kv.get(scope, "lock").value == b"me"


def test_if_revision_n_writes_only_over_revision_n(kv: KvService, scope: InstallScope) -> None:
    revision = kv.set(scope, "n", b"1")
    newer = kv.set(scope, "n", b"2", if_revision=revision)
    with pytest.raises(KvConflict):
        kv.set(scope, "n", b"3", if_revision=revision)
    with pytest.raises(KvConflict):
        kv.set(scope, "absent", b"3", if_revision=revision)
    assert kv.get(scope, "n").revision == newer
    assert kv.get(scope, "n").value == b"2"


@pytest.mark.parametrize("bad", [-1, 2**64, True, 1.0, "1"])
def test_if_revision_must_be_a_u64(kv: KvService, scope: InstallScope, bad: Any) -> None:
    with pytest.raises(KvInvalid, match="if_revision"):
        kv.set(scope, "k", b"v", if_revision=bad)


# --- the limits of §6c --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "1 to 512 bytes"),
        ("k" * 513, "1 to 512 bytes of UTF-8; this one is 513"),
        ("é" * 257, "this one is 514"),
        ("a\nb", "control characters"),
        ("a\x00", "control characters"),
        ("a\x7f", "control characters"),
        ("a\x85", "control characters"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_keys_are_1_to_512_bytes_of_utf8_without_control_characters(
    kv: KvService, scope: InstallScope, key: str, message: str
) -> None:
    for attempt in (lambda: kv.set(scope, key, b"v"), lambda: kv.get(scope, key), lambda: kv.delete(scope, key)):
        with pytest.raises(KvInvalid, match=message):
            attempt()


def test_the_longest_key_and_value_fit(kv: KvService, scope: InstallScope) -> None:
    key = "é" * 256  # 512 bytes
    kv.set(scope, key, b"v" * 65536)
    assert len(kv.get(scope, key).value) == 65536
    with pytest.raises(KvInvalid, match="at most 65536 bytes; this one is 65537"):
        kv.set(scope, "k", b"v" * 65537)


def test_the_key_quota_is_exact_and_an_overwrite_at_the_quota_still_works(
    models: KvModels, scope: InstallScope
) -> None:
    kv = service_with(models, max_keys=3)
    for name in ("a", "b", "c"):
        kv.set(scope, name, b"1")
    with pytest.raises(KvQuotaExceeded, match="at most 3 keys"):
        kv.set(scope, "d", b"1")
    kv.set(scope, "a", b"22")
    kv.delete(scope, "b")
    kv.set(scope, "d", b"1")
    assert kv.usage(scope) == stored_sums(models, scope) == KvUsage(keys=3, bytes=7)


def test_the_byte_quota_counts_keys_and_values_exactly(models: KvModels, scope: InstallScope) -> None:
    kv = service_with(models, max_bytes=20)
    kv.set(scope, "a", b"x" * 9)  # 10 bytes
    kv.set(scope, "b", b"x" * 9)  # 20 bytes: exactly the quota
    with pytest.raises(KvQuotaExceeded, match="20 bytes"):
        kv.set(scope, "a", b"x" * 10)
    with pytest.raises(KvQuotaExceeded):
        kv.set(scope, "c", b"")
    kv.set(scope, "a", b"x")  # shrinking is always allowed
    assert kv.usage(scope) == stored_sums(models, scope) == KvUsage(keys=2, bytes=12)


def test_a_call_may_make_at_most_100_operations_and_a_denied_call_spends_none(
    kv: KvService, scope: InstallScope
) -> None:
    budget = OperationBudget(kv.limits.max_operations)
    denied = KvAccess(kv, scope, budget, allowed=False)
    with pytest.raises(KvDenied, match=r"cap:storage\.kv"):
        denied.get("k")
    access = KvAccess(kv, scope, budget, allowed=True)
    access.set("k", b"v")
    for _ in range(98):
        access.get("k")
    access.list()
    assert budget.spent == 100
    with pytest.raises(KvQuotaExceeded, match="at most 100 KV operations"):
        access.get("k")


# --- list ---------------------------------------------------------------------------------------------


def test_list_pages_through_a_prefix_in_key_order(models: KvModels, scope: InstallScope) -> None:
    kv = service_with(models, max_page=3)
    names = ["a/2", "a/10", "a/1", "b/1", "a/é", "a/z", "a/Z", "a"]
    for name in names:
        kv.set(scope, name, b"")
    expected = sorted((n for n in names if n.startswith("a/")), key=lambda n: n.encode())

    pages, cursor = [], None
    while True:
        page = kv.list(scope, "a/", cursor, limit=50)
        pages.append(page.keys)
        cursor = page.cursor
        if cursor is None:
            break

    assert [len(keys) for keys in pages] == [3, 3]
    assert [key for keys in pages for key in keys] == expected
    assert kv.list(scope).keys == ("a", "a/1", "a/10")
    assert kv.list(scope, "c/").keys == ()
    assert kv.list(scope, "", limit=2).keys == ("a", "a/1")


def test_a_page_that_ends_the_listing_has_no_cursor(models: KvModels, scope: InstallScope) -> None:
    kv = service_with(models, max_page=2)
    kv.set(scope, "x1", b"")
    kv.set(scope, "x2", b"")
    assert kv.list(scope).cursor is None


@pytest.mark.parametrize("cursor", ["", "k1.", "k1.!!!", "nonsense", "k1." + "gA"])
def test_a_cursor_the_service_did_not_make_is_invalid(kv: KvService, scope: InstallScope, cursor: str) -> None:
    with pytest.raises(KvInvalid, match="cursor"):
        kv.list(scope, "", cursor)


def test_a_cursor_from_another_prefix_is_refused(models: KvModels, scope: InstallScope) -> None:
    kv = service_with(models, max_page=1)
    kv.set(scope, "a1", b"")
    kv.set(scope, "a2", b"")
    cursor = kv.list(scope, "a").cursor
    assert cursor is not None
    with pytest.raises(KvInvalid, match="another prefix"):
        kv.list(scope, "b", cursor)


# --- isolation, purge, failure -----------------------------------------------------------------------


def test_each_tenant_and_extension_has_its_own_namespace(kv: KvService, scope: InstallScope) -> None:
    other_tenant = InstallScope(scope.tenant + "x", scope.extension)
    other_extension = InstallScope(scope.tenant, "com.acme.other")
    kv.set(scope, "shared-name", b"mine")

    for other in (other_tenant, other_extension):
        with pytest.raises(KvNotFound):
            kv.get(other, "shared-name")
        assert kv.list(other).keys == ()
        assert kv.delete(other, "shared-name") is False
        kv.set(other, "shared-name", b"theirs")
        assert kv.purge(other) == 1
    assert kv.get(scope, "shared-name").value == b"mine"
    assert kv.usage(scope) == KvUsage(keys=1, bytes=len("shared-name") + 4)


def test_purge_deletes_every_key_and_the_usage_and_the_namespace_starts_again_empty(
    models: KvModels, kv: KvService, scope: InstallScope
) -> None:
    for index in range(120):  # more than one purge transaction
        kv.set(scope, f"key-{index:03d}", b"v" * (index % 7))
    neighbour = InstallScope(scope.tenant, "com.acme.neighbour")
    kv.set(neighbour, "stays", b"1")

    assert kv.purge(scope) == 120

    assert list(models.entries.query(scope.key)) == []
    assert kv.usage(scope) == KvUsage(keys=0, bytes=0)
    assert kv.get(neighbour, "stays").value == b"1"
    assert kv.purge(neighbour) == 1
    assert kv.purge(scope) == 0
    kv.set(scope, "again", b"1")
    assert kv.usage(scope) == KvUsage(keys=1, bytes=6)


def test_a_storage_failure_is_unavailable(scope: InstallScope) -> None:
    missing = make_kv_models(load_settings({"KV_TABLE_NAME": "kv-never-created"}))
    kv = KvService(missing, TickingClock())
    for attempt in (
        lambda: kv.get(scope, "k"),
        lambda: kv.set(scope, "k", b"v"),
        lambda: kv.delete(scope, "k"),
        lambda: kv.list(scope),
        lambda: kv.purge(scope),
    ):
        with pytest.raises(KvUnavailable, match="ResourceNotFoundException"):
            attempt()


# --- the core ABI ---------------------------------------------------------------------------------------


def core(access: KvAccess, raw: bytes) -> dict[str, Any]:
    """The ``ext.kv`` answer the runner gives a guest, checked against its return code (0 ok, 1 refused)."""
    code, answer = core_kv_answer(InstallKv(access), raw)
    body: dict[str, Any] = json.loads(answer)
    assert code == (1 if "error" in body else 0)
    return body


def call(access: KvAccess, **request: Any) -> dict[str, Any]:
    return core(access, json.dumps(request).encode())


def test_the_core_abi_round_trips_every_operation(kv: KvService, scope: InstallScope) -> None:
    access = KvAccess(kv, scope, OperationBudget(100), allowed=True)
    value = base64.b64encode(b"\x01\x02").decode()

    revision = call(access, op="set", key="k", value_b64=value, if_revision=0)["revision"]
    assert call(access, op="get", key="k") == {"value_b64": value, "revision": revision}
    assert call(access, op="set", key="k", value_b64=value, if_revision=revision)["revision"] > revision
    assert call(access, op="list", prefix="", cursor=None, limit=10) == {"keys": ["k"], "cursor": None}
    assert call(access, op="delete", key="k") == {"deleted": True}
    assert call(access, op="get", key="k") == {
        "error": {"code": "KV_NOT_FOUND", "message": "no value is stored under this key"}
    }


def test_the_core_abi_answers_refusals_as_errors_never_raising(kv: KvService, scope: InstallScope) -> None:
    denied = KvAccess(kv, scope, OperationBudget(100), allowed=False)
    assert call(denied, op="get", key="k")["error"]["code"] == "KV_DENIED"
    access = KvAccess(kv, scope, OperationBudget(100), allowed=True)
    call(access, op="set", key="k", value_b64="", if_revision=None)
    assert call(access, op="set", key="k", value_b64="", if_revision=0)["error"]["code"] == "KV_CONFLICT"
    assert call(access, op="set", key="k" * 600, value_b64="")["error"]["code"] == "KV_INVALID"
    assert core(access, b"{not json")["error"]["code"] == "KV_INVALID"


# --- concurrency ----------------------------------------------------------------------------------------


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.mark.slow
def test_quotas_hold_and_sums_stay_exact_under_concurrent_writers(models: KvModels, scope: InstallScope) -> None:
    limits = {"max_keys": 12, "max_bytes": 600}
    kv = service_with(models, **limits)
    keys = [f"k{index:02d}" for index in range(30)]
    stop = threading.Event()
    observed: list[KvUsage] = []

    def watch() -> None:
        while not stop.is_set():
            observed.append(kv.usage(scope))

    def writer(seed: int) -> Counter[str]:
        rng = random.Random(seed)
        outcomes: Counter[str] = Counter()
        for _ in range(40):
            key = rng.choice(keys)
            try:
                if rng.random() < 0.7:
                    kv.set(scope, key, b"x" * rng.randint(0, 90))
                    outcomes["set"] += 1
                else:
                    outcomes["deleted" if kv.delete(scope, key) else "absent"] += 1
            except KvQuotaExceeded:
                outcomes["quota"] += 1
        return outcomes

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = in_threads(8, writer)
    finally:
        stop.set()
        watcher.join(timeout=30)

    assert not [result for result in results if isinstance(result, Exception)], results
    final = kv.usage(scope)
    assert final == stored_sums(models, scope)
    assert [u for u in [*observed, final] if u.keys > limits["max_keys"] or u.bytes > limits["max_bytes"]] == []
    totals: Counter[str] = sum(results, Counter())
    assert totals["set"] > 0 and totals["deleted"] > 0 and totals["quota"] > 0, totals


@pytest.mark.slow
def test_compare_and_set_loses_no_increment_under_concurrent_writers(kv: KvService, scope: InstallScope) -> None:
    def increment(_: int) -> int:
        conflicts = 0
        for _ in range(12):
            while True:
                try:
                    entry = kv.get(scope, "counter")
                    current, revision = int(entry.value), entry.revision
                except KvNotFound:
                    current, revision = 0, 0
                try:
                    kv.set(scope, "counter", str(current + 1).encode(), if_revision=revision)
                    break
                except KvConflict:
                    conflicts += 1
        return conflicts

    results = in_threads(6, increment)

    assert not [result for result in results if isinstance(result, Exception)], results
    assert int(kv.get(scope, "counter").value) == 72
    assert sum(results) > 0  # the writers did collide; each collision was a conflict, not a lost update
