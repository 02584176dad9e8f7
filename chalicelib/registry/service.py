"""The registry of extensions: their names and owners, and their published versions.

A version is registered in one DynamoDB transaction with its extension's row, under the ownership rules
of :mod:`chalicelib.registry.ownership`; transfers and adoptions of a name write their audit event in the
same transaction as the change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import UTC

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.bundles.signing import TrustBundle
from chalicelib.dynamo import response_code
from chalicelib.errors import BadRequest, NotFound, StorageError, VersionExists
from chalicelib.logs import log_event
from chalicelib.registry.models import (
    WRITE_ATTEMPTS,
    AuditModel,
    ExtensionModel,
    Models,
    VersionModel,
    semver_sort_key,
    storage_errors,
)
from chalicelib.registry.ownership import Claimant, Decision, TransferRequest, check_new_owner, decide, owner_is
from chalicelib.registry.records import (
    Actor,
    AuditEvent,
    Clock,
    ExistingState,
    ExtensionRecord,
    ExtensionView,
    Owner,
    RegisterOutcome,
    VersionRecord,
    plain_json,
    utc_now,
)

__all__ = ["RegistryService"]


class RegistryService:
    """Extension names, their owners, and their published versions.

    ``trust`` is the trust bundle finalize verifies against (None: local development); with one, names
    belong to trusted publishers rather than tenants (see the module's docstring).
    """

    def __init__(self, models: Models, clock: Clock = utc_now, trust: TrustBundle | None = None) -> None:
        self._models = models
        self._clock = clock
        self._trust = trust

    @storage_errors
    def find_extension(self, name: str) -> ExtensionRecord | None:
        item = self._read_extension(name)
        return ExtensionRecord.from_item(item) if item is not None else None

    def get_extension(self, name: str) -> ExtensionRecord:
        """The extension ``name``; raises :class:`NotFound` when nobody published it."""
        record = self.find_extension(name)
        if record is None:
            raise NotFound(f"extension {name!r} does not exist")
        return record

    @storage_errors
    def list_extensions(self, tenant: str | None = None) -> list[ExtensionRecord]:
        """Every extension (or those ``tenant`` owns), by name."""
        extensions = self._models.extensions
        condition = extensions.owner_tenant == tenant if tenant is not None else None
        records = [ExtensionRecord.from_item(item) for item in extensions.scan(filter_condition=condition)]
        return sorted(records, key=lambda record: record.name)

    def catalog(self, viewer_tenant: str, *, with_versions: bool = False) -> list[ExtensionView]:
        """Every extension as ``viewer_tenant`` sees it, by name; with ``with_versions``, each with its versions."""
        extensions = self.list_extensions()
        if not with_versions:
            return [ExtensionView(extension, extension.owner_tenant == viewer_tenant) for extension in extensions]
        # Read after the extensions: a version is written in one transaction with its extension, so every
        # extension listed finds all of its versions here.
        versions = self.versions_by_extension()
        return [
            ExtensionView(extension, extension.owner_tenant == viewer_tenant, tuple(versions.get(extension.name, ())))
            for extension in extensions
        ]

    def describe(self, name: str, viewer_tenant: str) -> ExtensionView:
        """The extension ``name`` as ``viewer_tenant`` sees it, with its versions; :class:`NotFound` if unknown."""
        extension = self.get_extension(name)
        versions = self.list_versions(name)
        return ExtensionView(extension, extension.owner_tenant == viewer_tenant, tuple(versions))

    @storage_errors
    def list_versions(self, name: str) -> list[VersionRecord]:
        """The versions of ``name``, highest SemVer precedence first; :class:`NotFound` for an unknown name."""
        self.get_extension(name)
        return _highest_first(
            VersionRecord.from_item(item) for item in self._models.versions.query(name, consistent_read=True)
        )

    @storage_errors
    def versions_by_extension(self) -> dict[str, list[VersionRecord]]:
        """Every published version, by extension name, each list highest SemVer precedence first.

        One consistent Scan of the versions table (DynamoDB answers it a page at a
        time), however many extensions there are; a name without versions is absent.
        """
        grouped: dict[str, list[VersionRecord]] = {}
        for item in self._models.versions.scan(consistent_read=True):
            grouped.setdefault(item.name, []).append(VersionRecord.from_item(item))
        return {name: _highest_first(versions) for name, versions in grouped.items()}

    @storage_errors
    def find_version(self, name: str, version: str) -> VersionRecord | None:
        item = self._read_version(name, version)
        return VersionRecord.from_item(item) if item is not None else None

    def get_version(self, name: str, version: str) -> VersionRecord:
        """``name@version``; raises :class:`NotFound` when it was never published."""
        record = self.find_version(name, version)
        if record is None:
            raise NotFound(f"version {version!r} of extension {name!r} does not exist")
        return record

    @storage_errors
    def find_by_hash(self, content_hash: str) -> VersionRecord | None:
        """The version whose bundle has ``content_hash``, if any.

        A bundle holds its own manifest, so one hash is at most one (name, version).
        This reads a global secondary index, which may lag a just-registered
        version by a moment.
        """
        for item in self._models.versions.by_hash.query(content_hash, limit=1):
            return VersionRecord.from_item(item)
        return None

    def existing_state(self, name: str, version: str, content_hash: str) -> ExistingState:
        """``"new"`` when ``name@version`` is free, ``"same"`` when it holds this hash, else ``"conflict"``."""
        existing = self.find_version(name, version)
        if existing is None:
            return "new"
        return "same" if existing.content_hash == content_hash else "conflict"

    @storage_errors
    def check_name_owner(self, name: str, tenant: str, publisher: str, *, trusted_publisher: str | None = None) -> None:
        """Raise :class:`NameOwned` unless ``tenant`` may publish under ``name``: the name is free, or its owner
        is ``trusted_publisher`` (the signing key's publisher, with a trust bundle) or else ``tenant`` with
        the manifest's ``publisher``."""
        self._decide(self._read_extension(name), name, Claimant(tenant, publisher, trusted_publisher))

    @storage_errors
    def register_version(
        self, record: VersionRecord, tenant: str, key_id: str | None, *, trusted_publisher: str | None = None
    ) -> RegisterOutcome:
        """Record ``record`` and claim or update its extension row, in one transaction.

        The version item names ``record.upload_id``, written in the same transaction, so a retry of that
        upload can tell the version it registered from another upload's.  Returns ``"created"``;
        ``"resumed"`` when the same (name, version) holds the same content hash registered by the same
        (non-``None``) upload id; ``"already"`` when it holds the same content hash from another upload or a
        record that names none (registered before issue 14).  Raises :class:`VersionExists` when it holds
        another hash and :class:`NameOwned` when another owner holds the name (see :meth:`check_name_owner`).
        """
        claimant = Claimant(tenant, record.publisher, trusted_publisher)
        for attempt in range(WRITE_ATTEMPTS):
            extension = self._read_extension(record.name)
            decision = self._decide(extension, record.name, claimant)
            try:
                with TransactWrite(connection=self._models.connection) as transaction:
                    self._write_extension(transaction, extension, record, claimant, decision, key_id)
                    transaction.save(self._version_item(record), condition=self._models.versions.name.does_not_exist())
                    if decision is Decision.ADOPT and extension is not None:
                        transaction.save(*self._adoption_audit(extension, record, claimant))
                if decision is Decision.ADOPT:
                    log_event("registry.name_adopted", extension=record.name, publisher=trusted_publisher)
                return "created"
            except TransactWriteError as exc:
                if response_code(exc) != "TransactionCanceledException":
                    raise
            outcome = self._settle(record, claimant)
            if outcome is not None:
                return outcome
            # The extension row moved under us (a concurrent publish): back off briefly, then retry.
            time.sleep(0.02 * (attempt + 1))
        raise StorageError(f"could not register {record.name}@{record.version}: concurrent publishes kept conflicting")

    def _settle(self, record: VersionRecord, claimant: Claimant) -> RegisterOutcome | None:
        """After a cancelled transaction: the final answer, or ``None`` to try again."""
        self._decide(self._read_extension(record.name), record.name, claimant)
        existing = self.find_version(record.name, record.version)
        if existing is None:
            return None
        if existing.content_hash == record.content_hash:
            mine = record.upload_id is not None and existing.upload_id == record.upload_id
            return "resumed" if mine else "already"
        raise VersionExists(
            f"{record.name}@{record.version} is already published with another content hash; "
            "publish a new version instead"
        )

    # --- ownership ----------------------------------------------------------------------

    def _decide(self, existing: ExtensionModel | None, name: str, claimant: Claimant) -> Decision:
        return decide(_record_of(existing), name, claimant, self._trust)

    def _write_extension(
        self,
        transaction: TransactWrite,
        existing: ExtensionModel | None,
        record: VersionRecord,
        claimant: Claimant,
        decision: Decision,
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
        condition = owner_is(extensions, owner)
        if decision is Decision.ADOPT and claimant.trusted_publisher is not None:
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
        self, existing: ExtensionModel, record: VersionRecord, claimant: Claimant
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

    @storage_errors
    def transfer(
        self, name: str, request: TransferRequest, *, actor: Actor, request_id: str | None = None
    ) -> tuple[ExtensionRecord, AuditEvent]:
        """Give ``name`` to ``request.to`` and record who did it, when, from whom and why, in one transaction.

        With a trust bundle the new owner must be one of its publishers; without one, a tenant.  Raises
        :class:`NotFound` for an unknown name and :class:`BadRequest` for an owner that cannot hold it.
        """
        check_new_owner(request.to, self._trust)
        extensions = self._models.extensions
        for attempt in range(WRITE_ATTEMPTS):
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
                    transaction.update(extensions(name), actions=actions, condition=owner_is(extensions, before))
                    transaction.save(self._audit_item(event), condition=self._models.audit.subject.does_not_exist())
            except TransactWriteError as exc:
                if response_code(exc) != "TransactionCanceledException":
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

    @storage_errors
    def audit_events(self, name: str) -> list[AuditEvent]:
        """Every recorded change of ``name``'s owner, oldest first; :class:`NotFound` for an unknown name."""
        self.get_extension(name)
        items = self._models.audit.query(_subject(name), consistent_read=True)
        return [AuditEvent.from_item(item) for item in items]

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
            ui=plain_json(record.ui) if record.ui is not None else None,
            endpoints=plain_json(record.endpoints),
            capabilities=list(record.capabilities),
            egress=list(record.egress),
            size=record.size,
            signature=plain_json(record.signature) if record.signature is not None else None,
            signature_status=str(record.signature_status),
            key_id=record.key_id,
            manifest=plain_json(record.manifest),
            created_at=record.created_at,
            created_by={"tenant": record.created_by.tenant, "sub": record.created_by.sub},
            upload_id=record.upload_id,
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
    return ExtensionRecord.from_item(item).owner


def _record_of(item: ExtensionModel | None) -> ExtensionRecord | None:
    return ExtensionRecord.from_item(item) if item is not None else None
