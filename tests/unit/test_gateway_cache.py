"""The gateway's install cache: fresh within its TTL, dropped at once on local writes."""

from __future__ import annotations

from typing import Any, cast

from chalicelib.gateway.service import _InstallCache
from chalicelib.registry import InstallService


class CountingInstalls:
    def __init__(self) -> None:
        self.reads = 0

    def get(self, tenant: str, name: str) -> Any:
        self.reads += 1
        return (tenant, name, self.reads)


def cache(ttl: float, now: list[float]) -> tuple[_InstallCache, CountingInstalls]:
    installs = CountingInstalls()
    return _InstallCache(cast(InstallService, installs), ttl, clock=lambda: now[0]), installs


def test_reads_within_the_ttl_reuse_the_record() -> None:
    now = [100.0]
    subject, installs = cache(1.0, now)
    first = subject.get("acme", "com.acme.x")
    now[0] += 0.5
    assert subject.get("acme", "com.acme.x") == first
    assert installs.reads == 1
    now[0] += 0.6
    assert subject.get("acme", "com.acme.x") != first
    assert installs.reads == 2


def test_forget_drops_the_record_at_once_and_only_that_one() -> None:
    now = [0.0]
    subject, installs = cache(60.0, now)
    subject.get("acme", "a")
    subject.get("acme", "b")
    subject.forget("acme", "a")
    subject.get("acme", "a")
    subject.get("acme", "b")
    assert installs.reads == 3


def test_tenants_never_share_entries() -> None:
    subject, _ = cache(60.0, [0.0])
    assert cast(Any, subject.get("acme", "x"))[0] == "acme"
    assert cast(Any, subject.get("globex", "x"))[0] == "globex"


def test_a_zero_ttl_reads_every_time() -> None:
    subject, installs = cache(0.0, [0.0])
    subject.get("acme", "x")
    subject.get("acme", "x")
    assert installs.reads == 2
