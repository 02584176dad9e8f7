"""Registry v2 services against the local stack's moto server (each DynamoDB request atomic, as DynamoDB applies it)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pynamodb.signals import pre_dynamodb_send

from chalicelib.bundles.signing import NamePattern, TrustBundle, TrustedKey, key_id_for
from chalicelib.config import load_settings
from chalicelib.errors import (
    BadRequest,
    NameOwned,
    NotFound,
    NotInstalled,
    RateLimited,
    RunnerBusy,
    UploadConflict,
    UploadExpired,
    UploadNotFound,
    VersionExists,
)
from chalicelib.registry import (
    Actor,
    ClaimKind,
    ConcurrencyLimiter,
    InstallService,
    Owner,
    RateLimiter,
    RegistryService,
    SignatureStatus,
    TransferRequest,
    UploadService,
    UploadState,
    VersionRecord,
    create_tables,
    make_models,
    new_upload_id,
)
from chalicelib.registry.ratelimit import lease_batch
from devstack.aws import aws_environment

T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)
NAME = "com.acme.tickets"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def models(moto_server):
    # One set of tables per module: creating them is the slow part.  The concurrency tests below race
    # real requests against the server; it applies each DynamoDB request as one step, as DynamoDB does.
    with aws_environment(moto_server):
        bound = make_models(load_settings({"REGISTRY_TABLE_PREFIX": "test-"}))
        create_tables(bound)
        yield bound


@pytest.fixture(autouse=True)
def _empty_tables(models):
    yield
    for model in models.all():
        with model.batch_write() as batch:
            for item in model.scan():
                batch.delete(item)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(models, clock):
    return RegistryService(models, clock)


@pytest.fixture
def installs(models, registry, clock):
    return InstallService(models, registry, clock)


@pytest.fixture
def uploads(models, clock):
    return UploadService(models, clock)


def manifest(version: str = "1.0.0", name: str = NAME, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "publisher": "Acme",
        "version": version,
        "runtime": "wasm-core@1",
        "capabilities": ["cap:log.emit", "cap:http.fetch"],
        "egress": ["api.acme.test"],
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Tickets"}}},
        "api": {"endpoints": [{"method": "GET", "path": "/tickets/:id", "handler": "get_ticket"}]},
        **extra,
    }


def version_record(version: str = "1.0.0", digest: str = "aa", tenant: str = "acme", **extra: Any) -> VersionRecord:
    return VersionRecord.from_manifest(
        manifest(version, **extra),
        content_hash="sha256:" + (digest * 64)[:64],
        size=1234,
        signature={"format": "ext-bundle-signature/v1", "key_id": "sha256:" + "k" * 64, "signature": "c2ln"},
        signature_status=SignatureStatus.VERIFIED,
        key_id="sha256:" + "k" * 64,
        created_at=T0,
        created_by=Actor(tenant=tenant, sub="dev@acme"),
    )


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at once; each result is the return value or the raised exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# --- registry -----------------------------------------------------------------------------


def test_the_first_version_claims_the_name_for_its_tenant(registry):
    assert registry.register_version(version_record(), "acme", "sha256:key1") == "created"

    extension = registry.get_extension(NAME)
    assert (extension.owner_tenant, extension.publisher, extension.latest_version) == ("acme", "Acme", "1.0.0")
    assert extension.key_ids == frozenset({"sha256:key1"})
    assert "owner_tenant" not in extension.to_json()


def test_a_version_reads_back_as_it_was_registered(registry):
    record = version_record()
    registry.register_version(record, "acme", record.key_id)

    stored = registry.get_version(NAME, "1.0.0")

    assert stored == record
    assert stored.entry == "dist/main.wasm"
    assert stored.ui == {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Tickets"}}}
    assert stored.endpoints == ({"method": "GET", "path": "/tickets/:id", "handler": "get_ticket"},)
    assert stored.to_json()["signature_status"] == "verified"


def test_existing_state_tells_new_same_and_conflict_apart(registry):
    record = version_record()
    registry.register_version(record, "acme", None)

    assert registry.existing_state(NAME, "1.0.1", record.content_hash) == "new"
    assert registry.existing_state(NAME, "1.0.0", record.content_hash) == "same"
    assert registry.existing_state(NAME, "1.0.0", "sha256:" + "b" * 64) == "conflict"


def test_registering_the_same_version_and_hash_again_is_already(registry):
    registry.register_version(version_record(), "acme", None)

    assert registry.register_version(version_record(), "acme", None) == "already"


def test_a_version_names_its_upload_and_that_upload_registering_it_again_is_resumed(registry):
    # Issue 14: a finalize cut off after the registry write retries; it must tell its own version from another's.
    upload_id, other = new_upload_id(), new_upload_id()
    assert registry.register_version(replace(version_record(), upload_id=upload_id), "acme", None) == "created"

    assert registry.get_version(NAME, "1.0.0").upload_id == upload_id
    assert "upload_id" not in registry.get_version(NAME, "1.0.0").to_json()
    assert registry.register_version(replace(version_record(), upload_id=upload_id), "acme", None) == "resumed"
    assert registry.register_version(replace(version_record(), upload_id=other), "acme", None) == "already"
    assert registry.register_version(version_record(), "acme", None) == "already"
    with pytest.raises(VersionExists):
        registry.register_version(replace(version_record(digest="bb"), upload_id=upload_id), "acme", None)


def test_a_version_stored_before_upload_ids_reads_back_and_no_upload_resumes_it(registry, models):
    record = version_record()
    registry.register_version(replace(record, upload_id=new_upload_id()), "acme", None)
    # The item as the code before issue 14 wrote it: no upload_id attribute at all.
    models.versions.get(NAME, "1.0.0").update(actions=[models.versions.upload_id.remove()])

    assert registry.get_version(NAME, "1.0.0") == record
    assert registry.register_version(replace(record, upload_id=new_upload_id()), "acme", None) == "already"
    assert registry.register_version(record, "acme", None) == "already"


def test_registering_the_same_version_with_another_hash_is_version_exists(registry):
    registry.register_version(version_record(digest="aa"), "acme", None)

    with pytest.raises(VersionExists, match="another content hash"):
        registry.register_version(version_record(digest="bb"), "acme", None)
    assert registry.get_version(NAME, "1.0.0").content_hash == "sha256:" + "a" * 64


def test_another_tenant_cannot_publish_under_an_owned_name(registry):
    registry.register_version(version_record(), "acme", None)

    with pytest.raises(NameOwned, match="belongs to another publisher"):
        registry.check_name_owner(NAME, "globex", "Acme")
    with pytest.raises(NameOwned, match="belongs to another publisher"):
        registry.register_version(version_record("2.0.0", tenant="globex"), "globex", None)
    assert registry.find_version(NAME, "2.0.0") is None


def test_another_tenant_publishing_the_very_same_bundle_is_still_name_owned(registry):
    registry.register_version(version_record(), "acme", None)

    with pytest.raises(NameOwned):
        registry.register_version(version_record(tenant="globex"), "globex", None)


def test_the_owner_cannot_change_the_publisher_of_a_name(registry):
    registry.register_version(version_record(), "acme", None)

    with pytest.raises(NameOwned, match="cannot change the publisher"):
        registry.register_version(version_record("1.1.0", publisher="Acme Corp"), "acme", None)


def test_a_free_name_passes_the_owner_check(registry):
    registry.check_name_owner("com.free.name", "anyone", "Anyone")


# --- ownership with a trust bundle: names belong to publishers (issue 9, item 3) ----------------


ACME_KEY = ed25519.Ed25519PrivateKey.generate().public_key()
EVIL_KEY = ed25519.Ed25519PrivateKey.generate().public_key()
TRUST = TrustBundle(
    (
        TrustedKey.for_key(ACME_KEY, (NamePattern.parse("com.acme.*"),), publisher="acme"),
        TrustedKey.for_key(EVIL_KEY, (NamePattern.parse("com.evil.*"),), publisher="evilcorp"),
    )
)


@pytest.fixture
def trusted(models, clock):
    """The registry of a deployment with a trust bundle."""
    return RegistryService(models, clock, TRUST)


def test_with_a_trust_bundle_the_first_signed_version_gives_the_name_to_its_publisher_not_its_tenant(trusted):
    assert trusted.register_version(version_record(tenant="evil"), "evil", None, trusted_publisher="acme") == "created"

    extension = trusted.get_extension(NAME)
    assert (extension.owner_publisher, extension.owner_tenant) == ("acme", None)
    assert extension.to_json()["owner_publisher"] == "acme"
    assert trusted.list_extensions("evil") == []


def test_a_publisher_owned_name_takes_its_publishers_versions_from_any_tenant_and_no_other_publishers(trusted):
    trusted.register_version(version_record(tenant="evil"), "evil", None, trusted_publisher="acme")

    trusted.check_name_owner(NAME, "acme", "Acme Corp", trusted_publisher="acme")
    renamed = version_record("1.1.0", digest="bb", publisher="Acme Corp")
    assert trusted.register_version(renamed, "acme", None, trusted_publisher="acme") == "created"
    with pytest.raises(
        NameOwned, match="belongs to publisher 'acme', and this bundle is signed for publisher 'evilcorp'"
    ):
        trusted.register_version(version_record("1.2.0", digest="cc"), "evil", None, trusted_publisher="evilcorp")
    with pytest.raises(NameOwned, match="only bundles signed by its keys"):
        trusted.check_name_owner(NAME, "acme", "Acme Corp")
    assert trusted.get_extension(NAME).publisher == "Acme Corp"


def test_a_name_squatted_before_passes_to_the_publisher_its_versions_were_signed_for(registry, trusted):
    # Before ownership followed keys: tenant "evil" uploaded Acme's signed bundle first and owned the name.
    registry.register_version(version_record(tenant="evil"), "evil", key_id_for(ACME_KEY))
    assert registry.get_extension(NAME).owner_tenant == "evil"
    with pytest.raises(NameOwned):
        trusted.check_name_owner(NAME, "evil", "Acme", trusted_publisher="evilcorp")

    record = version_record("1.1.0", digest="bb")
    assert trusted.register_version(record, "acme", key_id_for(ACME_KEY), trusted_publisher="acme") == "created"

    extension = trusted.get_extension(NAME)
    assert (extension.owner_publisher, extension.owner_tenant, extension.latest_version) == ("acme", None, "1.1.0")
    [event] = trusted.audit_events(NAME)
    assert (event.action, event.actor, event.from_owner, event.to_owner) == (
        "name.adopt",
        Actor("acme", "dev@acme"),
        Owner(tenant="evil"),
        Owner(publisher="acme"),
    )


def test_a_tenant_owned_name_without_trusted_signatures_passes_only_from_its_own_tenant(registry, trusted):
    registry.register_version(version_record(), "acme", None)

    with pytest.raises(NameOwned, match="belongs to another publisher"):
        trusted.register_version(version_record("1.1.0", digest="bb"), "globex", None, trusted_publisher="acme")
    trusted.register_version(version_record("1.1.0", digest="bb"), "acme", None, trusted_publisher="acme")

    assert trusted.get_extension(NAME).owner == Owner(publisher="acme")
    assert [event.action for event in trusted.audit_events(NAME)] == ["name.adopt"]


def test_re_registering_identical_bytes_under_a_trust_bundle_changes_nothing(trusted, clock):
    trusted.register_version(version_record(), "acme", None, trusted_publisher="acme")
    before = trusted.get_extension(NAME)
    clock.advance(60)

    assert trusted.register_version(version_record(tenant="evil"), "evil", None, trusted_publisher="acme") == "already"

    assert trusted.get_extension(NAME) == before
    assert trusted.get_version(NAME, "1.0.0").created_by == Actor("acme", "dev@acme")


def test_a_transfer_moves_the_name_and_records_who_when_from_to_and_why(trusted, clock):
    trusted.register_version(version_record(), "acme", None, trusted_publisher="acme")
    clock.advance(3600)
    request = TransferRequest.parse({"to_publisher": "evilcorp", "reason": "  court order 7  "})

    extension, event = trusted.transfer(NAME, request, actor=Actor("ops", "olivia"), request_id="req-9")

    assert extension.owner == Owner(publisher="evilcorp")
    assert trusted.audit_events(NAME) == [event]
    assert event.to_json() == {
        "subject": f"extension:{NAME}",
        "event_id": event.event_id,
        "action": "name.transfer",
        "at": "2026-11-26T13:00:30Z",
        "actor": {"tenant": "ops", "sub": "olivia"},
        "from": {"publisher": "acme"},
        "to": {"publisher": "evilcorp"},
        "reason": "court order 7",
        "request_id": "req-9",
    }
    trusted.register_version(version_record("1.1.0", digest="bb"), "evil", None, trusted_publisher="evilcorp")
    with pytest.raises(NameOwned):
        trusted.check_name_owner(NAME, "acme", "Acme", trusted_publisher="acme")


def test_a_transfer_is_refused_for_unknown_names_owners_that_cannot_hold_it_and_no_change(registry, trusted):
    trusted.register_version(version_record(), "acme", None, trusted_publisher="acme")
    actor = Actor("ops", "olivia")
    to = TransferRequest.parse

    with pytest.raises(NotFound):
        trusted.transfer("com.acme.nothing", to({"to_publisher": "acme", "reason": "r"}), actor=actor)
    with pytest.raises(BadRequest, match="already belongs to publisher 'acme'"):
        trusted.transfer(NAME, to({"to_publisher": "acme", "reason": "r"}), actor=actor)
    with pytest.raises(BadRequest, match="its publishers: acme, evilcorp"):
        trusted.transfer(NAME, to({"to_publisher": "nobody", "reason": "r"}), actor=actor)
    with pytest.raises(BadRequest, match="send `to_publisher`"):
        trusted.transfer(NAME, to({"to_tenant": "globex", "reason": "r"}), actor=actor)
    with pytest.raises(BadRequest, match="send `to_tenant`"):
        registry.transfer(NAME, to({"to_publisher": "acme", "reason": "r"}), actor=actor)
    assert trusted.audit_events(NAME) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reason": "r"}, "exactly one of"),
        ({"to_publisher": "a", "to_tenant": "b", "reason": "r"}, "exactly one of"),
        ({"to_publisher": "a"}, "`reason` is required"),
        ({"to_publisher": "a", "reason": "   "}, "`reason` is required"),
        ({"to_publisher": "a", "reason": "x" * 1001}, "longer than 1000"),
        ({"to_tenant": "no spaces", "reason": "r"}, "is not a tenant id"),
        ({"to_publisher": 7, "reason": "r"}, "must be a non-empty string"),
        ({"to_publisher": "a", "reason": "r", "force": True}, "unknown field(s) force"),
    ],
)
def test_a_malformed_transfer_request_is_a_bad_request(body, message):
    with pytest.raises(BadRequest) as caught:
        TransferRequest.parse(body)
    assert message in caught.value.message


def test_audit_events_read_back_in_time_order_within_one_second(trusted, clock):
    trusted.register_version(version_record(), "acme", None, trusted_publisher="acme")
    actor = Actor("ops", "olivia")
    clock.now = T0.replace(microsecond=0)
    trusted.transfer(NAME, TransferRequest.parse({"to_publisher": "evilcorp", "reason": "first"}), actor=actor)
    clock.now = T0.replace(microsecond=500)
    trusted.transfer(NAME, TransferRequest.parse({"to_publisher": "acme", "reason": "second"}), actor=actor)

    assert [event.reason for event in trusted.audit_events(NAME)] == ["first", "second"]


def test_concurrent_transfers_each_leave_one_audit_event_and_the_last_owner_wins(trusted):
    trusted.register_version(version_record(), "acme", None, trusted_publisher="acme")
    actor = Actor("ops", "olivia")

    results = in_threads(
        lambda: trusted.transfer(NAME, TransferRequest.parse({"to_publisher": "evilcorp", "reason": "a"}), actor=actor),
        lambda: trusted.transfer(NAME, TransferRequest.parse({"to_publisher": "evilcorp", "reason": "b"}), actor=actor),
    )

    moved = [result for result in results if not isinstance(result, Exception)]
    assert len(moved) == 1
    assert any(isinstance(result, BadRequest) for result in results)
    assert [event.reason for event in trusted.audit_events(NAME)] == [moved[0][1].reason]


def test_latest_version_follows_semver_not_publish_order(registry):
    for version in ("1.2.0", "1.10.0", "1.9.0", "2.0.0-rc.1"):
        registry.register_version(version_record(version, digest=version.replace(".", "")), "acme", None)

    assert registry.get_extension(NAME).latest_version == "2.0.0-rc.1"
    assert [v.version for v in registry.list_versions(NAME)] == ["2.0.0-rc.1", "1.10.0", "1.9.0", "1.2.0"]


def test_signing_keys_accumulate_on_the_extension(registry):
    registry.register_version(version_record("1.0.0", digest="a1"), "acme", "sha256:key1")
    registry.register_version(version_record("1.0.1", digest="a2"), "acme", "sha256:key2")
    registry.register_version(version_record("1.0.2", digest="a3"), "acme", None)

    assert registry.get_extension(NAME).key_ids == frozenset({"sha256:key1", "sha256:key2"})


def test_a_version_is_found_by_its_content_hash(registry):
    record = version_record()
    registry.register_version(record, "acme", None)

    assert registry.find_by_hash(record.content_hash) == record
    assert registry.find_by_hash("sha256:" + "f" * 64) is None


def test_extensions_can_be_listed_for_everyone_or_one_owner(registry):
    registry.register_version(version_record(name="com.acme.b"), "acme", None)
    registry.register_version(version_record(name="com.acme.a", digest="ab"), "acme", None)
    registry.register_version(version_record(name="com.globex.c", digest="ac", tenant="globex"), "globex", None)

    assert [e.name for e in registry.list_extensions()] == ["com.acme.a", "com.acme.b", "com.globex.c"]
    assert [e.name for e in registry.list_extensions("globex")] == ["com.globex.c"]


@contextmanager
def dynamodb_calls() -> Iterator[list[str]]:
    """The DynamoDB operations pynamodb sends meanwhile (its public ``pre_dynamodb_send`` signal)."""
    seen: list[str] = []

    def record(_connection: Any, operation_name: str, **_: Any) -> None:
        seen.append(operation_name)

    pre_dynamodb_send.connect(record)
    try:
        yield seen
    finally:
        pre_dynamodb_send.disconnect(record)


@pytest.mark.parametrize("extensions", [1, 6])
def test_the_versions_of_every_extension_come_from_one_scan(registry, extensions):
    names = [f"com.acme.e{index}" for index in range(extensions)]
    for index, name in enumerate(names):
        for version in ("1.9.0", "1.10.0", "2.0.0-rc.1"):
            digest = f"{index:02x}" + version.replace(".", "").replace("-rc", "")
            registry.register_version(version_record(version, digest=digest, name=name), "acme", None)

    with dynamodb_calls() as calls:
        grouped = registry.versions_by_extension()

    assert calls == ["Scan"]
    assert grouped == {name: registry.list_versions(name) for name in names}
    assert [v.version for v in grouped[names[0]]] == ["2.0.0-rc.1", "1.10.0", "1.9.0"]


def test_unknown_names_and_versions_are_not_found(registry):
    with pytest.raises(NotFound):
        registry.get_extension("com.nobody.x")
    with pytest.raises(NotFound):
        registry.list_versions("com.nobody.x")
    with pytest.raises(NotFound):
        registry.get_version("com.nobody.x", "1.0.0")


def test_concurrent_registers_of_the_same_bundle_create_it_once(registry):
    results = in_threads(*(lambda: registry.register_version(version_record(), "acme", None) for _ in range(2)))

    assert sorted(results) == ["already", "created"]


def test_concurrent_registers_of_one_version_with_different_bundles_let_one_win(registry):
    results = in_threads(
        lambda: registry.register_version(version_record(digest="aa"), "acme", None),
        lambda: registry.register_version(version_record(digest="bb"), "acme", None),
    )

    assert "created" in results
    assert any(isinstance(result, VersionExists) for result in results)


def test_concurrent_registers_of_two_versions_keep_the_higher_one_latest(registry):
    results = in_threads(
        lambda: registry.register_version(version_record("1.1.0", digest="bb"), "acme", None),
        lambda: registry.register_version(version_record("1.0.0", digest="aa"), "acme", None),
    )

    assert results == ["created", "created"]
    assert registry.get_extension(NAME).latest_version == "1.1.0"


# --- installs -----------------------------------------------------------------------------


@pytest.fixture
def published(registry):
    for version, digest in (("1.0.0", "a1"), ("1.1.0", "a2"), ("2.0.0", "a3")):
        registry.register_version(
            version_record(version, digest=digest, capabilities=["cap:log.emit"] if version == "2.0.0" else []),
            "acme",
            None,
        )
    return registry


def test_installing_enables_the_version_with_its_capabilities(installs, published):
    record = installs.install("t1", NAME, "2.0.0", by="admin@t1")

    assert (record.version, record.enabled, record.config, record.history) == ("2.0.0", True, {}, ())
    assert record.granted_capabilities == ("cap:log.emit",)
    assert record.content_hash == published.get_version(NAME, "2.0.0").content_hash
    assert installs.get("t1", NAME) == record
    assert [i.name for i in installs.list("t1")] == [NAME]


def test_installing_an_unpublished_version_is_not_found(installs, published):
    with pytest.raises(NotFound):
        installs.install("t1", NAME, "9.9.9")
    with pytest.raises(NotInstalled):
        installs.get("t1", NAME)


def test_installs_can_be_disabled_and_enabled(installs, published, clock):
    installs.install("t1", NAME, "1.0.0")
    clock.advance(5)

    disabled = installs.set_enabled("t1", NAME, False)

    assert disabled.enabled is False
    assert disabled.updated_at == clock.now
    assert installs.get("t1", NAME).enabled is False
    assert installs.set_enabled("t1", NAME, True).enabled is True


def test_upgrading_keeps_the_previous_version_in_history(installs, published, clock):
    first = installs.install("t1", NAME, "1.0.0", by="alice")
    installs.set_config("t1", NAME, {"board": 7})
    clock.advance(60)

    upgraded = installs.upgrade("t1", NAME, "1.1.0", by="bob")

    assert upgraded.version == "1.1.0"
    assert upgraded.install_id == first.install_id
    assert upgraded.config == {"board": 7}
    assert [(h.version, h.at, h.by) for h in upgraded.history] == [("1.0.0", T0, "alice")]


def test_installing_over_an_install_behaves_like_an_upgrade(installs, published):
    installs.install("t1", NAME, "1.0.0")

    record = installs.install("t1", NAME, "2.0.0")

    assert record.version == "2.0.0"
    assert [h.version for h in record.history] == ["1.0.0"]


def test_rollback_returns_to_the_most_recent_earlier_version(installs, published):
    installs.install("t1", NAME, "1.0.0")
    installs.upgrade("t1", NAME, "1.1.0")
    installs.upgrade("t1", NAME, "2.0.0")

    rolled = installs.rollback("t1", NAME)

    assert rolled.version == "1.1.0"
    assert rolled.granted_capabilities == ()
    assert [h.version for h in rolled.history] == ["2.0.0", "1.0.0"]
    assert installs.rollback("t1", NAME).version == "2.0.0"


def test_rollback_to_a_named_version_from_history(installs, published):
    installs.install("t1", NAME, "1.0.0")
    installs.upgrade("t1", NAME, "1.1.0")
    installs.upgrade("t1", NAME, "2.0.0")

    assert installs.rollback("t1", NAME, "1.0.0").version == "1.0.0"
    with pytest.raises(BadRequest, match=r"3\.0\.0 is not in the install history"):
        installs.rollback("t1", NAME, "3.0.0")


def test_rollback_without_history_is_a_bad_request(installs, published):
    installs.install("t1", NAME, "1.0.0")

    with pytest.raises(BadRequest, match="has no earlier version"):
        installs.rollback("t1", NAME)


def test_history_is_capped_at_twenty_entries(installs, registry):
    for minor in range(23):
        registry.register_version(version_record(f"1.{minor}.0", digest=f"{minor:02d}"), "acme", None)
    installs.install("t1", NAME, "1.0.0")
    for minor in range(1, 23):
        installs.upgrade("t1", NAME, f"1.{minor}.0")

    history = installs.get("t1", NAME).history

    assert len(history) == 20
    assert history[0].version == "1.21.0"


def test_config_must_be_a_small_json_object(installs, published):
    installs.install("t1", NAME, "1.0.0")

    assert installs.set_config("t1", NAME, {"nested": {"list": [1, 2.5, None, True]}}).config == {
        "nested": {"list": [1, 2.5, None, True]}
    }
    with pytest.raises(BadRequest, match="JSON object"):
        installs.set_config("t1", NAME, ["not", "an", "object"])
    with pytest.raises(BadRequest, match="at most 16384 bytes"):
        installs.set_config("t1", NAME, {"big": "x" * 16384})
    with pytest.raises(BadRequest, match="JSON object"):
        installs.set_config("t1", NAME, {"nan": float("nan")})


def test_uninstalling_removes_the_install_once(installs, published):
    installs.install("t1", NAME, "1.0.0")

    installs.uninstall("t1", NAME)

    with pytest.raises(NotInstalled):
        installs.get("t1", NAME)
    with pytest.raises(NotInstalled):
        installs.uninstall("t1", NAME)


def test_another_tenant_neither_sees_nor_touches_an_install(installs, published):
    installs.install("tenant-a", NAME, "1.0.0")

    with pytest.raises(NotInstalled):
        installs.get("tenant-b", NAME)
    with pytest.raises(NotInstalled):
        installs.set_enabled("tenant-b", NAME, False)
    with pytest.raises(NotInstalled):
        installs.set_config("tenant-b", NAME, {"x": 1})
    with pytest.raises(NotInstalled):
        installs.upgrade("tenant-b", NAME, "2.0.0")
    with pytest.raises(NotInstalled):
        installs.uninstall("tenant-b", NAME)
    assert installs.list("tenant-b") == []
    untouched = installs.get("tenant-a", NAME)
    assert (untouched.version, untouched.enabled, untouched.config) == ("1.0.0", True, {})


# --- uploads ------------------------------------------------------------------------------


def new_session(uploads: UploadService, tenant: str = "acme", ttl: int = 3600):
    upload_id = new_upload_id()
    return uploads.create(
        upload_id=upload_id,
        tenant=tenant,
        sub="dev@acme",
        staging_key=f"staging/{tenant}/{upload_id}/bundle.tar.zst",
        declared_size=1234,
        declared_sha256="ab" * 32,
        ttl_seconds=ttl,
    )


def test_a_new_session_is_pending_and_readable_by_its_tenant(uploads):
    session = new_session(uploads)

    stored = uploads.get(session.upload_id, "acme")

    assert stored == session
    assert stored.state is UploadState.PENDING
    assert stored.expires_at == T0 + timedelta(hours=1)


def test_another_tenants_session_is_not_found(uploads):
    session = new_session(uploads)

    with pytest.raises(UploadNotFound):
        uploads.get(session.upload_id, "globex")
    with pytest.raises(UploadNotFound):
        uploads.get("no-such-upload", "acme")
    with pytest.raises(UploadNotFound):
        uploads.abort(session.upload_id, "globex")


def test_an_upload_id_cannot_be_created_twice(uploads):
    session = new_session(uploads)

    with pytest.raises(UploadConflict):
        uploads.create(
            upload_id=session.upload_id,
            tenant="acme",
            sub="x",
            staging_key="k",
            declared_size=1,
            ttl_seconds=60,
        )


def test_only_one_of_two_concurrent_claims_wins(uploads):
    session = new_session(uploads)

    results = in_threads(*(lambda: uploads.claim_for_finalize(session.upload_id, T0, 300) for _ in range(2)))

    acquired = [r for r in results if not isinstance(r, Exception) and r.kind is ClaimKind.ACQUIRED]
    refused = [r for r in results if isinstance(r, UploadConflict)]
    assert len(acquired) == 1
    assert len(refused) == 1
    assert refused[0].details["retry_after"] == 300


def test_a_claim_replayed_after_complete_returns_the_stored_result(uploads, clock):
    session = new_session(uploads)
    claim = uploads.claim_for_finalize(session.upload_id, T0, 300)
    result = {"content_hash": "sha256:" + "a" * 64, "extension": NAME, "version": "1.0.0", "status": "finalized"}
    uploads.complete(session.upload_id, result, claim_id=claim.claim_id)

    replay = uploads.claim_for_finalize(session.upload_id, T0 + timedelta(days=2), 300)

    assert replay.kind is ClaimKind.FINALIZED
    assert replay.claim_id is None
    assert replay.session.result == result


def test_a_second_complete_keeps_the_first_result(uploads):
    session = new_session(uploads)
    claim = uploads.claim_for_finalize(session.upload_id, T0, 300)
    uploads.complete(session.upload_id, {"version": "1.0.0"}, claim_id=claim.claim_id)

    again = uploads.complete(session.upload_id, {"version": "other"})

    assert again.result == {"version": "1.0.0"}


def test_an_expired_lease_lets_a_retry_reclaim(uploads):
    session = new_session(uploads)
    first = uploads.claim_for_finalize(session.upload_id, T0, 300)

    with pytest.raises(UploadConflict, match="being finalized already"):
        uploads.claim_for_finalize(session.upload_id, T0 + timedelta(seconds=299), 300)
    second = uploads.claim_for_finalize(session.upload_id, T0 + timedelta(seconds=301), 300)

    assert second.kind is ClaimKind.ACQUIRED
    assert second.claim_id != first.claim_id
    with pytest.raises(UploadConflict, match="cannot be completed"):
        uploads.complete(session.upload_id, {"late": True}, claim_id=first.claim_id)
    assert uploads.complete(session.upload_id, {"ok": True}, claim_id=second.claim_id).state is UploadState.FINALIZED


def test_a_released_claim_can_be_taken_at_once(uploads):
    session = new_session(uploads)
    claim = uploads.claim_for_finalize(session.upload_id, T0, 300)

    uploads.release(session.upload_id, claim.claim_id)

    assert uploads.claim_for_finalize(session.upload_id, T0, 300).kind is ClaimKind.ACQUIRED


def test_a_failed_finalize_is_replayed_as_its_error(uploads):
    session = new_session(uploads)
    claim = uploads.claim_for_finalize(session.upload_id, T0, 300)
    uploads.fail(session.upload_id, "HASH_MISMATCH", "sha256 differs from the declared one", claim_id=claim.claim_id)

    replay = uploads.claim_for_finalize(session.upload_id, T0, 300)

    assert replay.kind is ClaimKind.FAILED
    assert (replay.session.error_code, replay.session.error_message) == (
        "HASH_MISMATCH",
        "sha256 differs from the declared one",
    )


def test_an_expired_session_cannot_be_claimed(uploads):
    session = new_session(uploads, ttl=900)

    with pytest.raises(UploadExpired):
        uploads.claim_for_finalize(session.upload_id, T0 + timedelta(seconds=901), 300)


def test_an_aborted_session_cannot_be_claimed_and_abort_is_idempotent(uploads):
    session = new_session(uploads)

    aborted = uploads.abort(session.upload_id, "acme")

    assert aborted.state is UploadState.ABORTED
    assert uploads.abort(session.upload_id, "acme").state is UploadState.ABORTED
    with pytest.raises(UploadConflict, match="aborted"):
        uploads.claim_for_finalize(session.upload_id, T0, 300)


def test_a_finalized_session_cannot_be_aborted(uploads):
    session = new_session(uploads)
    claim = uploads.claim_for_finalize(session.upload_id, T0, 300)
    uploads.complete(session.upload_id, {"ok": True}, claim_id=claim.claim_id)

    with pytest.raises(UploadConflict, match="can no longer be aborted"):
        uploads.abort(session.upload_id, "acme")


def test_claiming_an_unknown_upload_is_not_found(uploads):
    with pytest.raises(UploadNotFound):
        uploads.claim_for_finalize("nope", T0, 300)


# --- rate limits --------------------------------------------------------------------------


def test_the_rate_limiter_refuses_the_call_after_the_limit_with_retry_after(models):
    limiter = RateLimiter(models)
    for _ in range(3):
        limiter.hit("upload#acme", 3, T0)

    with pytest.raises(RateLimited) as refused:
        limiter.hit("upload#acme", 3, T0)

    assert refused.value.details["retry_after"] == 30
    limiter.hit("upload#globex", 3, T0)


def test_a_new_minute_starts_a_new_window(models):
    limiter = RateLimiter(models)
    for _ in range(2):
        limiter.hit("upload#acme", 2, T0)

    limiter.hit("upload#acme", 2, T0 + timedelta(seconds=30))


def test_two_limiters_sharing_a_table_never_admit_more_than_the_limit_per_window(models):
    """Issue 14 item 2: real threads on two instances race for one window; leases never overshoot."""
    limit, batch = 200, lease_batch(200)
    instances = [RateLimiter(models), RateLimiter(models)]
    admitted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def caller(limiter: RateLimiter) -> None:
        barrier.wait()
        for _ in range(60):
            try:
                limiter.hit("gateway#acme#x", limit, T0)
            except RateLimited:
                with lock:
                    refused.append(1)
            else:
                with lock:
                    admitted.append(1)

    threads = [threading.Thread(target=caller, args=(instances[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(admitted) + len(refused) == 480
    # Never more than the limit; at most one unused batch per instance short of it.
    assert limit - 2 * (batch - 1) <= len(admitted) <= limit
    assert models.ratelimits.get(f"gateway#acme#x#{int(T0.timestamp()) // 60}").hits <= limit


def test_calls_within_a_lease_and_refusals_once_full_write_nothing(models):
    limiter = RateLimiter(models)
    limit = 100
    with dynamodb_calls() as seen:
        for _ in range(limit):
            limiter.hit("gateway#acme#y", limit, T0)
    assert seen.count("UpdateItem") == limit // lease_batch(limit)
    with dynamodb_calls() as seen, pytest.raises(RateLimited):
        limiter.hit("gateway#acme#y", limit, T0)
    assert seen.count("UpdateItem") <= 1
    with dynamodb_calls() as seen:
        for _ in range(20):
            with pytest.raises(RateLimited):
                limiter.hit("gateway#acme#y", limit, T0)
    assert seen == []


def test_a_lease_ends_with_its_window(models):
    limiter, other = RateLimiter(models), RateLimiter(models)
    limiter.hit("upload#acme", 40, T0)  # leases 2 of the window's 40
    for _ in range(38):
        other.hit("upload#acme", 40, T0)
    with pytest.raises(RateLimited):
        other.hit("upload#acme", 40, T0)
    limiter.hit("upload#acme", 40, T0)  # the second call of its lease
    with pytest.raises(RateLimited):
        limiter.hit("upload#acme", 40, T0)
    # The next minute is a new window: what was leased before counts for nothing.
    limiter.hit("upload#acme", 40, T0 + timedelta(seconds=60))


def test_a_limit_of_zero_is_unlimited(models):
    limiter = RateLimiter(models)

    for _ in range(50):
        limiter.hit("upload#acme", 0, T0)


# --- calls in flight per tenant -------------------------------------------------------------------


class SecondsClock:
    """Unix seconds that tests move by hand."""

    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


def test_a_tenant_gets_at_most_cap_slots_and_a_slot_given_back_is_free_again(models):
    clock = SecondsClock()
    first, second = ConcurrencyLimiter(models, clock, memo_s=0), ConcurrencyLimiter(models, clock, memo_s=0)

    with first.slot("acme", 2, 15), second.slot("acme", 2, 15):
        with pytest.raises(RunnerBusy) as refused, first.slot("acme", 2, 15):
            pass
        with second.slot("globex", 2, 15):
            pass
    with first.slot("acme", 2, 15):
        pass

    assert refused.value.details["retry_after"] == 1


def test_a_slot_left_by_a_dead_instance_frees_itself_when_its_lease_ends(models):
    clock = SecondsClock()
    dead = ConcurrencyLimiter(models, clock, memo_s=0)
    alive = ConcurrencyLimiter(models, clock, memo_s=0)
    held = dead.slot("acme", 1, 15)
    held.__enter__()  # an instance that took the slot and never came back

    with pytest.raises(RunnerBusy), alive.slot("acme", 1, 15):
        pass
    clock.now += 16
    with alive.slot("acme", 1, 15):
        pass


def test_an_instance_that_found_a_tenant_full_refuses_for_a_moment_without_asking_again(models):
    clock = SecondsClock()
    holder, limiter = ConcurrencyLimiter(models, clock), ConcurrencyLimiter(models, clock, memo_s=0.5)

    with holder.slot("acme", 1, 15), pytest.raises(RunnerBusy), limiter.slot("acme", 1, 15):
        pass
    # The slot is free now, but this instance saw it full a moment ago.
    with pytest.raises(RunnerBusy), limiter.slot("acme", 1, 15):
        pass
    clock.now += 0.6
    with limiter.slot("acme", 1, 15):
        pass


def test_a_slot_this_instance_gives_back_ends_its_memory_of_the_tenant_being_full(models):
    clock = SecondsClock()
    limiter = ConcurrencyLimiter(models, clock, memo_s=0.5)

    with limiter.slot("acme", 1, 15), pytest.raises(RunnerBusy), limiter.slot("acme", 1, 15):
        pass
    # This instance freed the slot itself: it knows the tenant is no longer full.
    with limiter.slot("acme", 1, 15):
        pass


def test_a_cap_of_zero_takes_no_slot(models):
    limiter = ConcurrencyLimiter(models)

    with limiter.slot("acme", 0, 15), limiter.slot("acme", 0, 15):
        pass

    assert models.ratelimits.count() == 0
