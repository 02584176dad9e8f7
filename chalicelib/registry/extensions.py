"""Extension names, their owners and their published versions (one transaction per publish).

Who may publish a new version of a name (docs/signing.md, "Who owns a name"):

- **without a trust bundle** (local development) the first tenant to publish a name owns it, with the
  manifest's ``publisher``; another tenant, or another ``publisher``, gets ``NAME_OWNED``;
- **with a trust bundle** a name belongs to the *trusted publisher* whose key signed its first version
  (the key's ``# publisher:`` annotation, else the key itself), whichever tenant uploaded it: any tenant may
  upload a bundle that publisher signed, and no key of another publisher may publish under the name;
- a name a tenant claimed before (signed versions, but before ownership followed keys) passes to the
  publisher its versions were signed for at that publisher's next version (an audited ``name.adopt``);
- an operator can move a name to another owner (:meth:`RegistryService.transfer`, audited ``name.transfer``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from enum import Enum
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.bundles.signing import TrustBundle
from chalicelib.errors import (
    BadRequest,
    NameOwned,
    NotFound,
    StorageError,
    VersionExists,
)
from chalicelib.logs import log_event
from chalicelib.registry.models import (
    AuditModel,
    ExtensionModel,
    Models,
    VersionModel,
    semver_sort_key,
)
from chalicelib.registry.records import (
    _ATTEMPTS,
    Actor,
    AuditEvent,
    Clock,
    ExistingState,
    ExtensionRecord,
    Owner,
    RegisterOutcome,
    VersionRecord,
    _audit_event,
    _extension_record,
    _plain,
    _storage_errors,
    _version_record,
    utc_now,
)

__all__ = ["RegistryService", "TransferRequest"]

_MAX_REASON_CHARS = 1000
# The syntax of a token's ``tenant`` claim (chalicelib/auth.py).
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class _Decision(Enum):
    """What registering a version does to its name's row."""

    CLAIM = "claim"
    """The name is free: the publishing owner takes it."""
    KEEP = "keep"
    """The name is already the publishing owner's."""
    ADOPT = "adopt"
    """A tenant-owned name passes to the trusted publisher its versions were signed for."""


@dataclass(frozen=True)
class _Claimant:
    """Who is publishing: the uploading tenant, the manifest's ``publisher``, and the trusted publisher whose
    key signed the bundle (None without a trust bundle)."""

    tenant: str
    publisher: str
    trusted_publisher: str | None

    @property
    def owner(self) -> Owner:
        if self.trusted_publisher is not None:
            return Owner(publisher=self.trusted_publisher)
        return Owner(tenant=self.tenant)


@dataclass(frozen=True)
class TransferRequest:
    """``POST /extensions/{name}/transfer``: the new owner and why."""

    to: Owner
    reason: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> TransferRequest:
        """Read ``{"to_publisher" | "to_tenant": …, "reason": …}``; :class:`BadRequest` names what is wrong."""
        unknown = sorted(set(body) - {"to_publisher", "to_tenant", "reason"})
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)}; send to_publisher or to_tenant, and reason")
        targets = {field: body[field] for field in ("to_publisher", "to_tenant") if field in body}
        if len(targets) != 1:
            raise BadRequest("send exactly one of `to_publisher` and `to_tenant`")
        ((field, target),) = targets.items()
        if not isinstance(target, str) or not target:
            raise BadRequest(f"`{field}` must be a non-empty string")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("`reason` is required: say why the name changes hands (it is kept in the audit log)")
        if len(reason) > _MAX_REASON_CHARS:
            raise BadRequest(f"`reason` is longer than {_MAX_REASON_CHARS} characters")
        if field == "to_tenant" and not _TENANT.fullmatch(target):
            raise BadRequest(f"`to_tenant` {target[:70]!r} is not a tenant id")
        owner = Owner(publisher=target) if field == "to_publisher" else Owner(tenant=target)
        return cls(to=owner, reason=reason.strip())


class RegistryService:
    """Extension names, their owners, and their published versions.

    ``trust`` is the trust bundle finalize verifies against (None: local development); with one, names
    belong to trusted publishers rather than tenants (see the module's docstring).
    """

    def __init__(self, models: Models, clock: Clock = utc_now, trust: TrustBundle | None = None) -> None:
        self._models = models
        self._clock = clock
        self._trust = trust

    @_storage_errors
    def find_extension(self, name: str) -> ExtensionRecord | None:
        item = self._read_extension(name)
        return _extension_record(item) if item is not None else None

    def get_extension(self, name: str) -> ExtensionRecord:
        """The extension ``name``; raises :class:`NotFound` when nobody published it."""
        record = self.find_extension(name)
        if record is None:
            raise NotFound(f"extension {name!r} does not exist")
        return record

    @_storage_errors
    def list_extensions(self, tenant: str | None = None) -> list[ExtensionRecord]:
        """Every extension (or those ``tenant`` owns), by name."""
        extensions = self._models.extensions
        condition = extensions.owner_tenant == tenant if tenant is not None else None
        records = [_extension_record(item) for item in extensions.scan(filter_condition=condition)]
        return sorted(records, key=lambda record: record.name)

    @_storage_errors
    def list_versions(self, name: str) -> list[VersionRecord]:
        """The versions of ``name``, highest SemVer precedence first; :class:`NotFound` for an unknown name."""
        self.get_extension(name)
        return _highest_first(_version_record(item) for item in self._models.versions.query(name, consistent_read=True))

    @_storage_errors
    def versions_by_extension(self) -> dict[str, list[VersionRecord]]:
        """Every published version, by extension name, each list highest SemVer precedence first.

        One consistent Scan of the versions table (DynamoDB answers it a page at a
        time), however many extensions there are; a name without versions is absent.
        """
        grouped: dict[str, list[VersionRecord]] = {}
        for item in self._models.versions.scan(consistent_read=True):
            grouped.setdefault(item.name, []).append(_version_record(item))
        return {name: _highest_first(versions) for name, versions in grouped.items()}

    @_storage_errors
    def find_version(self, name: str, version: str) -> VersionRecord | None:
        item = self._read_version(name, version)
        return _version_record(item) if item is not None else None

    def get_version(self, name: str, version: str) -> VersionRecord:
        """``name@version``; raises :class:`NotFound` when it was never published."""
        record = self.find_version(name, version)
        if record is None:
            raise NotFound(f"version {version!r} of extension {name!r} does not exist")
        return record

    @_storage_errors
    def find_by_hash(self, content_hash: str) -> VersionRecord | None:
        """The version whose bundle has ``content_hash``, if any.

        A bundle holds its own manifest, so one hash is at most one (name, version).
        This reads a global secondary index, which may lag a just-registered
        version by a moment.
        """
        for item in self._models.versions.by_hash.query(content_hash, limit=1):
            return _version_record(item)
        return None

    def existing_state(self, name: str, version: str, content_hash: str) -> ExistingState:
        """``"new"`` when ``name@version`` is free, ``"same"`` when it holds this hash, else ``"conflict"``."""
        existing = self.find_version(name, version)
        if existing is None:
            return "new"
        return "same" if existing.content_hash == content_hash else "conflict"

    @_storage_errors
    def check_name_owner(self, name: str, tenant: str, publisher: str, *, trusted_publisher: str | None = None) -> None:
        """Raise :class:`NameOwned` unless ``tenant`` may publish under ``name``: the name is free, or its owner
        is ``trusted_publisher`` (the signing key's publisher, with a trust bundle) or else ``tenant`` with
        the manifest's ``publisher``."""
        self._decide(self._read_extension(name), name, _Claimant(tenant, publisher, trusted_publisher))

    @_storage_errors
    def register_version(
        self, record: VersionRecord, tenant: str, key_id: str | None, *, trusted_publisher: str | None = None
    ) -> RegisterOutcome:
        """Record ``record`` and claim or update its extension row, in one transaction.

        Returns ``"created"``, or ``"already"`` when the same (name, version) holds the
        same content hash.  Raises :class:`VersionExists` when it holds another hash and
        :class:`NameOwned` when another owner holds the name (see :meth:`check_name_owner`).
        """
        claimant = _Claimant(tenant, record.publisher, trusted_publisher)
        for attempt in range(_ATTEMPTS):
            extension = self._read_extension(record.name)
            decision = self._decide(extension, record.name, claimant)
            try:
                with TransactWrite(connection=self._models.connection) as transaction:
                    self._write_extension(transaction, extension, record, claimant, decision, key_id)
                    transaction.save(self._version_item(record), condition=self._models.versions.name.does_not_exist())
                    if decision is _Decision.ADOPT and extension is not None:
                        transaction.save(*self._adoption_audit(extension, record, claimant))
                if decision is _Decision.ADOPT:
                    log_event("registry.name_adopted", extension=record.name, publisher=trusted_publisher)
                return "created"
            except TransactWriteError as exc:
                if exc.cause_response_code != "TransactionCanceledException":
                    raise
            outcome = self._settle(record, claimant)
            if outcome is not None:
                return outcome
            # The extension row moved under us (a concurrent publish): back off briefly, then retry.
            time.sleep(0.02 * (attempt + 1))
        raise StorageError(f"could not register {record.name}@{record.version}: concurrent publishes kept conflicting")

    def _settle(self, record: VersionRecord, claimant: _Claimant) -> RegisterOutcome | None:
        """After a cancelled transaction: the final answer, or ``None`` to try again."""
        self._decide(self._read_extension(record.name), record.name, claimant)
        state = self.existing_state(record.name, record.version, record.content_hash)
        if state == "same":
            return "already"
        if state == "conflict":
            raise VersionExists(
                f"{record.name}@{record.version} is already published with another content hash; "
                "publish a new version instead"
            )
        return None

    # --- ownership ----------------------------------------------------------------------

    def _decide(self, existing: ExtensionModel | None, name: str, claimant: _Claimant) -> _Decision:
        """What publishing under ``name`` does to its row; :class:`NameOwned` when ``claimant`` may not."""
        if existing is None:
            return _Decision.CLAIM
        owner = _owner_of(existing)
        if owner.publisher is not None:
            if claimant.trusted_publisher == owner.publisher:
                return _Decision.KEEP
            raise NameOwned(_publisher_owned(name, owner.publisher, claimant.trusted_publisher))
        if claimant.trusted_publisher is None:
            _check_tenant_owner(existing, name, claimant)
            return _Decision.KEEP
        # A trust bundle decides, but a tenant claimed the name: the publisher its versions were signed for
        # takes it over; if none of its signing keys is trusted any more, only the owning tenant may.
        signed_for = {self._trust.publisher_of(key_id) for key_id in existing.key_ids or ()} if self._trust else set()
        signed_for.discard(None)
        if claimant.trusted_publisher in signed_for:
            return _Decision.ADOPT
        if signed_for:
            raise NameOwned(
                _publisher_owned(name, ", ".join(sorted(str(p) for p in signed_for)), claimant.trusted_publisher)
            )
        _check_tenant_owner(existing, name, claimant)
        return _Decision.ADOPT

    def _write_extension(
        self,
        transaction: TransactWrite,
        existing: ExtensionModel | None,
        record: VersionRecord,
        claimant: _Claimant,
        decision: _Decision,
        key_id: str | None,
    ) -> None:
        extensions = self._models.extensions
        now = self._clock()
        sort_key = semver_sort_key(record.version)
        if existing is None:
            owner = claimant.owner
            item = extensions(
                record.name,
                publisher=record.publisher,
                owner_tenant=owner.tenant,
                owner_publisher=owner.publisher,
                key_ids={key_id} if key_id else None,
                latest_version=record.version,
                latest_version_sort=sort_key,
                created_at=now,
                updated_at=now,
            )
            transaction.save(item, condition=extensions.name.does_not_exist())
            return
        actions: list[Action] = [extensions.updated_at.set(now)]
        owner = _owner_of(existing)
        # Every change is conditional on the owner read by _decide: an ownership change in between cancels it.
        condition = _owner_is(extensions, owner)
        if decision is _Decision.ADOPT and claimant.trusted_publisher is not None:
            actions += [extensions.owner_publisher.set(claimant.trusted_publisher), extensions.owner_tenant.remove()]
        elif owner.tenant is not None:
            condition &= extensions.publisher == record.publisher
        if key_id:
            actions.append(extensions.key_ids.add({key_id}))
        current = existing.latest_version_sort
        if current is None or sort_key > current:
            actions += [
                extensions.latest_version.set(record.version),
                extensions.latest_version_sort.set(sort_key),
                extensions.publisher.set(record.publisher),
            ]
            # Only move "latest" from the value we read, so a concurrent higher version is never overwritten.
            condition &= (
                extensions.latest_version_sort == current
                if current is not None
                else extensions.latest_version_sort.does_not_exist()
            )
        transaction.update(extensions(record.name), actions=actions, condition=condition)

    def _adoption_audit(
        self, existing: ExtensionModel, record: VersionRecord, claimant: _Claimant
    ) -> tuple[AuditModel, Condition]:
        reason = (
            f"{record.name}@{record.version} was published signed for publisher {claimant.trusted_publisher!r}; "
            "with a trust bundle, names belong to the publisher whose keys sign them"
        )
        event = self._event(
            record.name, "name.adopt", record.created_by, _owner_of(existing), claimant.owner, reason, None
        )
        return self._audit_item(event), self._models.audit.subject.does_not_exist()

    # --- transfers and the audit log ------------------------------------------------------------

    @_storage_errors
    def transfer(
        self, name: str, request: TransferRequest, *, actor: Actor, request_id: str | None = None
    ) -> tuple[ExtensionRecord, AuditEvent]:
        """Give ``name`` to ``request.to`` and record who did it, when, from whom and why, in one transaction.

        With a trust bundle the new owner must be one of its publishers; without one, a tenant.  Raises
        :class:`NotFound` for an unknown name and :class:`BadRequest` for an owner that cannot hold it.
        """
        self._check_new_owner(request.to)
        extensions = self._models.extensions
        for attempt in range(_ATTEMPTS):
            existing = self._read_extension(name)
            if existing is None:
                raise NotFound(f"extension {name!r} does not exist")
            before = _owner_of(existing)
            if before == request.to:
                raise BadRequest(f"extension {name!r} already belongs to {before}")
            event = self._event(name, "name.transfer", actor, before, request.to, request.reason, request_id)
            actions: list[Action] = [extensions.updated_at.set(event.at)]
            actions += [
                extensions.owner_tenant.set(request.to.tenant)
                if request.to.tenant is not None
                else extensions.owner_tenant.remove(),
                extensions.owner_publisher.set(request.to.publisher)
                if request.to.publisher is not None
                else extensions.owner_publisher.remove(),
            ]
            try:
                with TransactWrite(connection=self._models.connection) as transaction:
                    transaction.update(extensions(name), actions=actions, condition=_owner_is(extensions, before))
                    transaction.save(self._audit_item(event), condition=self._models.audit.subject.does_not_exist())
            except TransactWriteError as exc:
                if exc.cause_response_code != "TransactionCanceledException":
                    raise
                # The owner changed under us (a publish adopting the name, another transfer): read again.
                time.sleep(0.02 * (attempt + 1))
                continue
            log_event(
                "registry.name_transferred",
                extension=name,
                from_owner=str(before),
                to_owner=str(request.to),
                actor_tenant=actor.tenant,
                actor_sub=actor.sub,
            )
            return self.get_extension(name), event
        raise StorageError(f"could not transfer {name}: concurrent changes kept conflicting")

    @_storage_errors
    def audit_events(self, name: str) -> list[AuditEvent]:
        """Every recorded change of ``name``'s owner, oldest first; :class:`NotFound` for an unknown name."""
        self.get_extension(name)
        items = self._models.audit.query(_subject(name), consistent_read=True)
        return [_audit_event(item) for item in items]

    def _check_new_owner(self, owner: Owner) -> None:
        if self._trust is None:
            if owner.tenant is None:
                raise BadRequest("without a trust bundle names belong to tenants: send `to_tenant`")
            return
        if owner.publisher is None:
            raise BadRequest("with a trust bundle names belong to publishers: send `to_publisher`")
        if owner.publisher not in self._trust.publishers:
            known = ", ".join(sorted(self._trust.publishers))
            raise BadRequest(
                f"no key of the trust bundle signs for publisher {owner.publisher!r}; its publishers: {known}"
            )

    def _event(
        self,
        name: str,
        action: str,
        actor: Actor,
        before: Owner,
        after: Owner,
        reason: str,
        request_id: str | None,
    ) -> AuditEvent:
        at = self._clock()
        return AuditEvent(
            subject=_subject(name),
            # Fixed width (microseconds always present), so the sort key's string order is time order.
            event_id=f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}#{uuid.uuid4().hex}",
            action=action,
            at=at,
            actor=actor,
            from_owner=before,
            to_owner=after,
            reason=reason,
            request_id=request_id,
        )

    def _audit_item(self, event: AuditEvent) -> AuditModel:
        return self._models.audit(
            event.subject,
            event.event_id,
            action=event.action,
            at=event.at,
            actor={"tenant": event.actor.tenant, "sub": event.actor.sub},
            from_owner=event.from_owner.to_json(),
            to_owner=event.to_owner.to_json(),
            reason=event.reason,
            request_id=event.request_id,
        )

    def _version_item(self, record: VersionRecord) -> VersionModel:
        return self._models.versions(
            record.name,
            record.version,
            version_sort=semver_sort_key(record.version),
            publisher=record.publisher,
            content_hash=record.content_hash,
            runtime=record.runtime,
            entry=record.entry,
            ui=_plain(record.ui) if record.ui is not None else None,
            endpoints=_plain(record.endpoints),
            capabilities=list(record.capabilities),
            egress=list(record.egress),
            size=record.size,
            signature=_plain(record.signature) if record.signature is not None else None,
            signature_status=str(record.signature_status),
            key_id=record.key_id,
            manifest=_plain(record.manifest),
            created_at=record.created_at,
            created_by={"tenant": record.created_by.tenant, "sub": record.created_by.sub},
        )

    def _read_extension(self, name: str) -> ExtensionModel | None:
        extensions = self._models.extensions
        try:
            return extensions.get(name, consistent_read=True)
        except extensions.DoesNotExist:
            return None

    def _read_version(self, name: str, version: str) -> VersionModel | None:
        versions = self._models.versions
        try:
            return versions.get(name, version, consistent_read=True)
        except versions.DoesNotExist:
            return None


def _highest_first(versions: Iterable[VersionRecord]) -> list[VersionRecord]:
    return sorted(versions, key=lambda v: (semver_sort_key(v.version), v.version), reverse=True)


def _subject(name: str) -> str:
    return f"extension:{name}"


def _owner_of(item: ExtensionModel) -> Owner:
    # pynamodb types nullable attributes as never None: the record's fields say what they hold.
    return _extension_record(item).owner


def _owner_is(extensions: type[ExtensionModel], owner: Owner) -> Condition:
    """The condition that the row's owner is still ``owner``, as read."""
    condition: Condition
    if owner.tenant is not None:
        condition = (extensions.owner_tenant == owner.tenant) & extensions.owner_publisher.does_not_exist()
    else:
        condition = (extensions.owner_publisher == str(owner.publisher)) & extensions.owner_tenant.does_not_exist()
    return condition


def _publisher_owned(name: str, owner: str, signer: str | None) -> str:
    if signer is None:
        return (
            f"extension name {name!r} belongs to publisher {owner!r}; "
            "only bundles signed by its keys, verified against a trust bundle, may publish under it"
        )
    return (
        f"extension name {name!r} belongs to publisher {owner!r}, and this bundle is signed for publisher "
        f"{signer!r}; an operator can transfer the name"
    )


def _check_tenant_owner(existing: ExtensionModel, name: str, claimant: _Claimant) -> None:
    if existing.owner_tenant != claimant.tenant:
        raise NameOwned(f"extension name {name!r} belongs to another publisher")
    if existing.publisher != claimant.publisher:
        raise NameOwned(
            f"extension name {name!r} is published as {existing.publisher!r}; "
            f"a new version cannot change the publisher to {claimant.publisher!r}"
        )
