"""Extension names, their owners and their published versions (one transaction per publish)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.errors import (
    NameOwned,
    NotFound,
    StorageError,
    VersionExists,
)
from chalicelib.registry.models import (
    ExtensionModel,
    Models,
    VersionModel,
    semver_sort_key,
)
from chalicelib.registry.records import (
    _ATTEMPTS,
    Clock,
    ExistingState,
    ExtensionRecord,
    RegisterOutcome,
    VersionRecord,
    _extension_record,
    _plain,
    _storage_errors,
    _version_record,
    utc_now,
)

__all__ = ["RegistryService"]


class RegistryService:
    """Extension names, their owners, and their published versions."""

    def __init__(self, models: Models, clock: Clock = utc_now) -> None:
        self._models = models
        self._clock = clock

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
    def check_name_owner(self, name: str, tenant: str, publisher: str) -> None:
        """Raise :class:`NameOwned` unless ``name`` is free or already ``tenant``'s as ``publisher``."""
        _check_owner(self._read_extension(name), name, tenant, publisher)

    @_storage_errors
    def register_version(self, record: VersionRecord, tenant: str, key_id: str | None) -> RegisterOutcome:
        """Record ``record`` and claim or update its extension row, in one transaction.

        Returns ``"created"``, or ``"already"`` when the same (name, version) holds the
        same content hash.  Raises :class:`VersionExists` when it holds another hash and
        :class:`NameOwned` when another tenant or publisher owns the name.
        """
        for attempt in range(_ATTEMPTS):
            extension = self._read_extension(record.name)
            _check_owner(extension, record.name, tenant, record.publisher)
            try:
                with TransactWrite(connection=self._models.connection) as transaction:
                    self._write_extension(transaction, extension, record, tenant, key_id)
                    transaction.save(self._version_item(record), condition=self._models.versions.name.does_not_exist())
                return "created"
            except TransactWriteError as exc:
                if exc.cause_response_code != "TransactionCanceledException":
                    raise
            outcome = self._settle(record, tenant)
            if outcome is not None:
                return outcome
            # The extension row moved under us (a concurrent publish): back off briefly, then retry.
            time.sleep(0.02 * (attempt + 1))
        raise StorageError(f"could not register {record.name}@{record.version}: concurrent publishes kept conflicting")

    def _settle(self, record: VersionRecord, tenant: str) -> RegisterOutcome | None:
        """After a cancelled transaction: the final answer, or ``None`` to try again."""
        _check_owner(self._read_extension(record.name), record.name, tenant, record.publisher)
        state = self.existing_state(record.name, record.version, record.content_hash)
        if state == "same":
            return "already"
        if state == "conflict":
            raise VersionExists(
                f"{record.name}@{record.version} is already published with another content hash; "
                "publish a new version instead"
            )
        return None

    def _write_extension(
        self,
        transaction: TransactWrite,
        existing: ExtensionModel | None,
        record: VersionRecord,
        tenant: str,
        key_id: str | None,
    ) -> None:
        extensions = self._models.extensions
        now = self._clock()
        sort_key = semver_sort_key(record.version)
        if existing is None:
            item = extensions(
                record.name,
                publisher=record.publisher,
                owner_tenant=tenant,
                key_ids={key_id} if key_id else None,
                latest_version=record.version,
                latest_version_sort=sort_key,
                created_at=now,
                updated_at=now,
            )
            transaction.save(item, condition=extensions.name.does_not_exist())
            return
        actions: list[Action] = [extensions.updated_at.set(now)]
        condition: Condition = (extensions.owner_tenant == tenant) & (extensions.publisher == record.publisher)
        if key_id:
            actions.append(extensions.key_ids.add({key_id}))
        current = existing.latest_version_sort
        if current is None or sort_key > current:
            actions += [extensions.latest_version.set(record.version), extensions.latest_version_sort.set(sort_key)]
            # Only move "latest" from the value we read, so a concurrent higher version is never overwritten.
            condition &= (
                extensions.latest_version_sort == current
                if current is not None
                else extensions.latest_version_sort.does_not_exist()
            )
        transaction.update(extensions(record.name), actions=actions, condition=condition)

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


def _check_owner(existing: ExtensionModel | None, name: str, tenant: str, publisher: str) -> None:
    if existing is None:
        return
    if existing.owner_tenant != tenant:
        raise NameOwned(f"extension name {name!r} belongs to another publisher")
    if existing.publisher != publisher:
        raise NameOwned(
            f"extension name {name!r} is published as {existing.publisher!r}; "
            f"a new version cannot change the publisher to {publisher!r}"
        )
