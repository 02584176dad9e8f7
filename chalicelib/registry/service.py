"""Registry v2 services: published versions, tenant installs, upload sessions, rate limits.

Each service takes its models (from :func:`~chalicelib.registry.models.make_models`)
and a clock, so tests run them against moto without patching.  Results are frozen
records, never pynamodb items.

Concurrency is settled by DynamoDB conditions, not by reading first:

- a version is registered in one transaction with its extension row; the same
  (name, version) again is ``"already"`` when the content hash matches and
  :class:`VersionExists` when it does not (STYLE 7);
- finalize is claimed with a conditional write (``pending`` → ``finalizing``, or a
  stale lease taken over), and a replay gets the stored result (STYLE 8);
- install rows change only under a revision check, and every key holds the tenant.
"""

from __future__ import annotations

import builtins
import functools
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, ParamSpec, TypeVar

from pynamodb.attributes import MapAttribute
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.bundles.signing import SignatureStatus
from chalicelib.errors import (
    BadRequest,
    NameOwned,
    NotFound,
    NotInstalled,
    RateLimited,
    StorageError,
    UploadConflict,
    UploadExpired,
    UploadNotFound,
    VersionExists,
)
from chalicelib.registry.models import (
    ExtensionModel,
    InstallModel,
    Models,
    UploadModel,
    VersionModel,
    semver_sort_key,
)

__all__ = [
    "DEFAULT_ENTRY",
    "HISTORY_LIMIT",
    "MAX_CONFIG_BYTES",
    "Actor",
    "Claim",
    "ClaimKind",
    "Clock",
    "ExistingState",
    "ExtensionRecord",
    "HistoryEntry",
    "InstallRecord",
    "InstallService",
    "RateLimiter",
    "RegisterOutcome",
    "RegistryService",
    "SignatureStatus",
    "UploadService",
    "UploadSession",
    "UploadState",
    "VersionRecord",
    "new_upload_id",
    "utc_now",
]

DEFAULT_ENTRY = "dist/main.wasm"
HISTORY_LIMIT = 20
MAX_CONFIG_BYTES = 16 * 1024
_ATTEMPTS = 5
_UPLOAD_RETENTION = timedelta(days=7)
"""How long an upload record outlives its session, so replays still get their answer."""

Clock = Callable[[], datetime]
ExistingState = Literal["same", "conflict", "new"]
RegisterOutcome = Literal["created", "already"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the default clock)."""
    return datetime.now(UTC)


def new_upload_id() -> str:
    """A fresh, unguessable upload session id."""
    return uuid.uuid4().hex


class UploadState(StrEnum):
    """The life of an upload session."""

    PENDING = "pending"
    FINALIZING = "finalizing"
    FINALIZED = "finalized"
    FAILED = "failed"
    ABORTED = "aborted"


class ClaimKind(StrEnum):
    """What :meth:`UploadService.claim_for_finalize` found."""

    ACQUIRED = "acquired"
    """The caller holds the lease and must finalize, then ``complete`` or ``fail``."""
    FINALIZED = "finalized"
    """An earlier finalize succeeded; ``session.result`` is its answer."""
    FAILED = "failed"
    """An earlier finalize failed; ``session.error_code`` and ``error_message`` say why."""


def _storage_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report DynamoDB failures nobody handled as :class:`StorageError` (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except PynamoDBException as exc:
            raise StorageError(f"registry unavailable: {exc.cause_response_code or exc}") from exc

    return wrapper


def _condition_failed(exc: PynamoDBException) -> bool:
    return exc.cause_response_code == "ConditionalCheckFailedException"


def _plain(value: Any) -> Any:
    """A JSON-shaped copy of ``value``: pynamodb maps become dicts, tuples become lists."""
    if isinstance(value, MapAttribute):
        value = value.attribute_values
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who acted: the tenant and the token subject."""

    tenant: str
    sub: str


@dataclass(frozen=True)
class ExtensionRecord:
    """An extension name, its owner and its highest version."""

    name: str
    publisher: str
    owner_tenant: str
    key_ids: frozenset[str]
    latest_version: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The public view (the owner's tenant id stays private)."""
        return {
            "name": self.name,
            "publisher": self.publisher,
            "latest_version": self.latest_version,
            "key_ids": sorted(self.key_ids),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True)
class VersionRecord:
    """One published, immutable version of an extension."""

    name: str
    version: str
    publisher: str
    content_hash: str
    runtime: str
    entry: str | None
    ui: Mapping[str, Any] | None
    endpoints: tuple[Mapping[str, Any], ...]
    capabilities: tuple[str, ...]
    egress: tuple[str, ...]
    size: int
    signature: Mapping[str, Any] | None
    signature_status: SignatureStatus
    key_id: str | None
    manifest: Mapping[str, Any]
    created_at: datetime
    created_by: Actor

    @classmethod
    def from_manifest(
        cls,
        manifest: Mapping[str, Any],
        *,
        content_hash: str,
        size: int,
        signature: Mapping[str, Any] | None,
        signature_status: SignatureStatus,
        key_id: str | None,
        created_at: datetime,
        created_by: Actor,
    ) -> VersionRecord:
        """The record of a validated manifest (DESIGN §4) and what finalize learnt about its bundle."""
        api = manifest.get("api") or {}
        return cls(
            name=manifest["name"],
            version=manifest["version"],
            publisher=manifest["publisher"],
            content_hash=content_hash,
            runtime=manifest["runtime"],
            entry=manifest.get("entry") or (DEFAULT_ENTRY if "api" in manifest else None),
            ui=_plain(manifest["ui"]) if manifest.get("ui") is not None else None,
            endpoints=tuple(_plain(endpoint) for endpoint in api.get("endpoints", ())),
            capabilities=tuple(manifest.get("capabilities", ())),
            egress=tuple(manifest.get("egress", ())),
            size=size,
            signature=_plain(signature) if signature is not None else None,
            signature_status=signature_status,
            key_id=key_id,
            manifest=_plain(manifest),
            created_at=created_at,
            created_by=created_by,
        )

    def to_json(self) -> dict[str, Any]:
        """The public view of the version (without who published it)."""
        return {
            "name": self.name,
            "version": self.version,
            "publisher": self.publisher,
            "content_hash": self.content_hash,
            "runtime": self.runtime,
            "entry": self.entry,
            "ui": _plain(self.ui),
            "endpoints": _plain(self.endpoints),
            "capabilities": list(self.capabilities),
            "egress": list(self.egress),
            "size": self.size,
            "signature_status": str(self.signature_status),
            "key_id": self.key_id,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class HistoryEntry:
    """A version a tenant had installed before: what, since when, by whom."""

    version: str
    content_hash: str
    at: datetime
    by: str | None

    def to_item(self) -> dict[str, Any]:
        return {"version": self.version, "content_hash": self.content_hash, "at": _iso(self.at), "by": self.by}

    @classmethod
    def from_item(cls, item: Any) -> HistoryEntry:
        data = _plain(item)
        return cls(
            version=data["version"],
            content_hash=data["content_hash"],
            at=datetime.fromisoformat(data["at"]),
            by=data.get("by"),
        )


@dataclass(frozen=True)
class InstallRecord:
    """A tenant's install of one extension."""

    tenant: str
    name: str
    install_id: str
    version: str
    content_hash: str
    enabled: bool
    config: Mapping[str, Any]
    granted_capabilities: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    installed_at: datetime
    installed_by: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "extension": self.name,
            "install_id": self.install_id,
            "version": self.version,
            "content_hash": self.content_hash,
            "enabled": self.enabled,
            "config": _plain(self.config),
            "granted_capabilities": list(self.granted_capabilities),
            "history": [entry.to_item() for entry in self.history],
            "installed_at": _iso(self.installed_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True)
class UploadSession:
    """An upload session as stored."""

    upload_id: str
    tenant: str
    sub: str
    staging_key: str
    declared_size: int
    declared_sha256: str | None
    signature: str | None
    multipart_upload_id: str | None
    part_size: int | None
    state: UploadState
    result: Mapping[str, Any] | None
    error_code: str | None
    error_message: str | None
    claim_id: str | None
    created_at: datetime
    updated_at: datetime
    finalize_started_at: datetime | None
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an upload for finalize (see :class:`ClaimKind`)."""

    kind: ClaimKind
    session: UploadSession

    @property
    def claim_id(self) -> str | None:
        return self.session.claim_id if self.kind is ClaimKind.ACQUIRED else None


# --- item → record ----------------------------------------------------------------------


def _extension_record(item: ExtensionModel) -> ExtensionRecord:
    return ExtensionRecord(
        name=item.name,
        publisher=item.publisher,
        owner_tenant=item.owner_tenant,
        key_ids=frozenset(item.key_ids or ()),
        latest_version=item.latest_version,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


def _version_record(item: VersionModel) -> VersionRecord:
    created_by = _plain(item.created_by)
    return VersionRecord(
        name=item.name,
        version=item.version,
        publisher=item.publisher,
        content_hash=item.content_hash,
        runtime=item.runtime,
        entry=item.entry,
        ui=_plain(item.ui) if item.ui is not None else None,
        endpoints=tuple(_plain(item.endpoints)),
        capabilities=tuple(item.capabilities),
        egress=tuple(item.egress),
        size=int(item.size),
        signature=_plain(item.signature) if item.signature is not None else None,
        signature_status=SignatureStatus(item.signature_status),
        key_id=item.key_id,
        manifest=_plain(item.manifest),
        created_at=item.created_at,
        created_by=Actor(tenant=created_by["tenant"], sub=created_by["sub"]),
    )


def _install_record(item: InstallModel) -> InstallRecord:
    return InstallRecord(
        tenant=item.tenant,
        name=item.name,
        install_id=item.install_id,
        version=item.version,
        content_hash=item.content_hash,
        enabled=bool(item.enabled),
        config=_plain(item.config),
        granted_capabilities=tuple(item.granted_capabilities),
        history=tuple(HistoryEntry.from_item(entry) for entry in item.history),
        installed_at=item.installed_at,
        installed_by=item.installed_by,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


def _upload_session(item: UploadModel) -> UploadSession:
    return UploadSession(
        upload_id=item.upload_id,
        tenant=item.tenant,
        sub=item.sub,
        staging_key=item.staging_key,
        declared_size=int(item.declared_size),
        declared_sha256=item.declared_sha256,
        signature=item.signature,
        multipart_upload_id=item.multipart_upload_id,
        part_size=int(item.part_size) if item.part_size is not None else None,
        state=UploadState(item.state),
        result=_plain(item.result) if item.result is not None else None,
        error_code=item.error_code,
        error_message=item.error_message,
        claim_id=item.claim_id,
        created_at=item.created_at,
        updated_at=item.updated_at,
        finalize_started_at=item.finalize_started_at,
        expires_at=item.expires_at,
    )


# --- registry -----------------------------------------------------------------------------


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
        versions = [_version_record(item) for item in self._models.versions.query(name, consistent_read=True)]
        return sorted(versions, key=lambda v: (semver_sort_key(v.version), v.version), reverse=True)

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


# --- installs -----------------------------------------------------------------------------


def _validated_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise BadRequest("config must be a JSON object")
    try:
        encoded = json.dumps(config, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"config must be a JSON object: {exc}") from None
    if len(encoded.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise BadRequest(f"config must be at most {MAX_CONFIG_BYTES} bytes as JSON")
    parsed: dict[str, Any] = json.loads(encoded)
    return parsed


class InstallService:
    """A tenant's installs.  Every method takes the tenant, and every key holds it."""

    def __init__(
        self,
        models: Models,
        registry: RegistryService,
        clock: Clock = utc_now,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._models = models
        self._registry = registry
        self._clock = clock
        self._on_change = on_change

    def _changed(self, tenant: str, name: str) -> None:
        """Tell the observer (the gateway's install cache) that ``tenant``'s ``name`` changed."""
        if self._on_change is not None:
            self._on_change(tenant, name)

    @_storage_errors
    def install(self, tenant: str, name: str, version: str, by: str | None = None) -> InstallRecord:
        """Install ``name@version`` for ``tenant`` (enabled, granted the version's capabilities).

        Installing over an existing install switches its version, as :meth:`upgrade`
        does.  Raises :class:`NotFound` when the version was never published.
        """
        target = self._registry.get_version(name, version)
        for _ in range(_ATTEMPTS):
            current = self._read(tenant, name)
            if current is not None:
                switched = self._switch(current, target, by)
                if switched is not None:
                    return switched
                continue
            created = self._create(tenant, target, by)
            if created is not None:
                return created
        raise StorageError(f"could not install {name} for this tenant: concurrent changes kept conflicting")

    @_storage_errors
    def list(self, tenant: str) -> builtins.list[InstallRecord]:
        """``tenant``'s installs, by extension name."""
        return [_install_record(item) for item in self._models.installs.query(tenant, consistent_read=True)]

    @_storage_errors
    def get(self, tenant: str, name: str) -> InstallRecord:
        """``tenant``'s install of ``name``; raises :class:`NotInstalled`."""
        return _install_record(self._load(tenant, name))

    @_storage_errors
    def set_enabled(self, tenant: str, name: str, enabled: bool) -> InstallRecord:
        installs = self._models.installs
        return self._update_existing(tenant, name, [installs.enabled.set(enabled)])

    @_storage_errors
    def set_config(self, tenant: str, name: str, config: Any) -> InstallRecord:
        """Replace the install's config; it must be a JSON object of at most 16 KiB (:class:`BadRequest`)."""
        installs = self._models.installs
        return self._update_existing(tenant, name, [installs.config.set(_validated_config(config))])

    @_storage_errors
    def upgrade(self, tenant: str, name: str, version: str, by: str | None = None) -> InstallRecord:
        """Switch the install to ``version`` (any published one), remembering the current one in history."""
        target = self._registry.get_version(name, version)
        for _ in range(_ATTEMPTS):
            switched = self._switch(self._load(tenant, name), target, by)
            if switched is not None:
                return switched
        raise StorageError(f"could not upgrade {name} for this tenant: concurrent changes kept conflicting")

    @_storage_errors
    def rollback(self, tenant: str, name: str, version: str | None = None, by: str | None = None) -> InstallRecord:
        """Switch back to ``version`` from the install's history, or to the most recent earlier version.

        The version being left goes on top of the history, so rolling back twice
        returns to where it started.  Raises :class:`BadRequest` when there is no
        such earlier version.
        """
        for _ in range(_ATTEMPTS):
            current = self._load(tenant, name)
            history = [HistoryEntry.from_item(entry) for entry in current.history]
            candidates = [entry for entry in history if version is None or entry.version == version]
            if not candidates and version is None:
                raise BadRequest(f"the install of {name} has no earlier version to roll back to")
            if not candidates:
                raise BadRequest(f"version {version} is not in the install history of {name}")
            target = self._registry.get_version(name, candidates[0].version)
            switched = self._switch(current, target, by)
            if switched is not None:
                return switched
        raise StorageError(f"could not roll back {name} for this tenant: concurrent changes kept conflicting")

    @_storage_errors
    def uninstall(self, tenant: str, name: str) -> None:
        """Remove ``tenant``'s install of ``name``; raises :class:`NotInstalled`."""
        installs = self._models.installs
        try:
            installs(tenant, name).delete(condition=installs.name.exists())
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            raise NotInstalled(f"extension {name!r} is not installed") from None
        self._changed(tenant, name)

    def _create(self, tenant: str, target: VersionRecord, by: str | None) -> InstallRecord | None:
        installs = self._models.installs
        now = self._clock()
        item = installs(
            tenant,
            target.name,
            install_id=str(uuid.uuid4()),
            version=target.version,
            content_hash=target.content_hash,
            enabled=True,
            config={},
            granted_capabilities=list(target.capabilities),
            history=[],
            installed_at=now,
            installed_by=by,
            created_at=now,
            updated_at=now,
            revision=0,
        )
        try:
            item.save(condition=installs.name.does_not_exist())
        except PynamoDBException as exc:
            if _condition_failed(exc):
                return None
            raise
        self._changed(tenant, target.name)
        return _install_record(item)

    def _switch(self, current: InstallModel, target: VersionRecord, by: str | None) -> InstallRecord | None:
        """Move ``current`` to ``target``; ``None`` when the row changed since it was read."""
        if current.version == target.version and current.content_hash == target.content_hash:
            return _install_record(current)
        installs = self._models.installs
        now = self._clock()
        left = HistoryEntry(current.version, current.content_hash, current.installed_at, current.installed_by)
        kept = [
            entry
            for entry in (HistoryEntry.from_item(item) for item in current.history)
            if entry.version not in {target.version, current.version}
        ]
        history = [left, *kept][:HISTORY_LIMIT]
        actions: list[Action] = [
            installs.version.set(target.version),
            installs.content_hash.set(target.content_hash),
            installs.granted_capabilities.set(list(target.capabilities)),
            installs.history.set([entry.to_item() for entry in history]),
            installs.installed_at.set(now),
            installs.installed_by.set(by) if by is not None else installs.installed_by.remove(),
            installs.updated_at.set(now),
            installs.revision.add(1),
        ]
        try:
            current.update(actions=actions, condition=installs.revision == current.revision)
        except PynamoDBException as exc:
            if _condition_failed(exc):
                return None
            raise
        self._changed(current.tenant, current.name)
        return _install_record(current)

    def _update_existing(self, tenant: str, name: str, actions: Sequence[Action]) -> InstallRecord:
        installs = self._models.installs
        item = installs(tenant, name)
        try:
            item.update(
                actions=[*actions, installs.updated_at.set(self._clock()), installs.revision.add(1)],
                condition=installs.name.exists(),
            )
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            raise NotInstalled(f"extension {name!r} is not installed") from None
        self._changed(tenant, name)
        return _install_record(item)

    def _read(self, tenant: str, name: str) -> InstallModel | None:
        installs = self._models.installs
        try:
            return installs.get(tenant, name, consistent_read=True)
        except installs.DoesNotExist:
            return None

    def _load(self, tenant: str, name: str) -> InstallModel:
        item = self._read(tenant, name)
        if item is None:
            raise NotInstalled(f"extension {name!r} is not installed")
        return item


# --- uploads ------------------------------------------------------------------------------


class UploadService:
    """Upload sessions: created at initiate, claimed and settled by finalize, or aborted."""

    def __init__(self, models: Models, clock: Clock = utc_now) -> None:
        self._models = models
        self._clock = clock

    @_storage_errors
    def create(
        self,
        *,
        upload_id: str,
        tenant: str,
        sub: str,
        staging_key: str,
        declared_size: int,
        ttl_seconds: int,
        declared_sha256: str | None = None,
        signature: str | None = None,
        multipart_upload_id: str | None = None,
        part_size: int | None = None,
    ) -> UploadSession:
        """Record a new ``pending`` session that expires after ``ttl_seconds``."""
        uploads = self._models.uploads
        now = self._clock()
        expires_at = now + timedelta(seconds=ttl_seconds)
        item = uploads(
            upload_id,
            tenant=tenant,
            sub=sub,
            staging_key=staging_key,
            declared_size=declared_size,
            declared_sha256=declared_sha256,
            signature=signature,
            multipart_upload_id=multipart_upload_id,
            part_size=part_size,
            state=str(UploadState.PENDING),
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            ttl=expires_at + _UPLOAD_RETENTION,
        )
        try:
            item.save(condition=uploads.upload_id.does_not_exist())
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            raise UploadConflict(f"upload {upload_id} exists already") from None
        return _upload_session(item)

    @_storage_errors
    def get(self, upload_id: str, tenant: str) -> UploadSession:
        """The session, if ``tenant`` owns it; otherwise :class:`UploadNotFound` (never "forbidden")."""
        session = self._find(upload_id)
        if session is None or session.tenant != tenant:
            raise UploadNotFound(f"upload {upload_id} does not exist")
        return session

    @_storage_errors
    def claim_for_finalize(self, upload_id: str, now: datetime, lease_seconds: int) -> Claim:
        """Take the right to finalize, once.

        A ``pending`` session (or one whose finalize lease is older than
        ``lease_seconds``) becomes ``finalizing`` under a fresh claim id: that caller
        finalizes.  A finalized or failed session returns its stored outcome.
        Raises :class:`UploadNotFound`, :class:`UploadExpired`, or
        :class:`UploadConflict` (aborted, or another finalize holds the lease).
        """
        uploads = self._models.uploads
        for _ in range(_ATTEMPTS):
            item = uploads(upload_id)
            stale_before = now - timedelta(seconds=lease_seconds)
            claimable = (uploads.state == str(UploadState.PENDING)) | (
                (uploads.state == str(UploadState.FINALIZING)) & (uploads.finalize_started_at < stale_before)
            )
            try:
                item.update(
                    actions=[
                        uploads.state.set(str(UploadState.FINALIZING)),
                        uploads.finalize_started_at.set(now),
                        uploads.claim_id.set(uuid.uuid4().hex),
                        uploads.updated_at.set(now),
                    ],
                    condition=uploads.upload_id.exists() & (uploads.expires_at > now) & claimable,
                )
                return Claim(ClaimKind.ACQUIRED, _upload_session(item))
            except PynamoDBException as exc:
                if not _condition_failed(exc):
                    raise
            claim = self._unclaimable(upload_id, now, lease_seconds)
            if claim is not None:
                return claim
        raise UploadConflict(f"upload {upload_id} kept changing state; retry the finalize")

    def _unclaimable(self, upload_id: str, now: datetime, lease_seconds: int) -> Claim | None:
        """Why a claim failed: a stored outcome, an error, or ``None`` when it is claimable again."""
        session = self._find(upload_id)
        if session is None:
            raise UploadNotFound(f"upload {upload_id} does not exist")
        if session.state is UploadState.FINALIZED:
            return Claim(ClaimKind.FINALIZED, session)
        if session.state is UploadState.FAILED:
            return Claim(ClaimKind.FAILED, session)
        if session.state is UploadState.ABORTED:
            raise UploadConflict(f"upload {upload_id} was aborted")
        if session.expired(now):
            raise UploadExpired(f"upload {upload_id} expired at {_iso(session.expires_at)}; start a new upload")
        if session.state is UploadState.FINALIZING and session.finalize_started_at is not None:
            lease_end = session.finalize_started_at + timedelta(seconds=lease_seconds)
            if lease_end > now:
                retry_after = max(1, math.ceil((lease_end - now).total_seconds()))
                raise UploadConflict(f"upload {upload_id} is being finalized already", retry_after=retry_after)
        return None

    @_storage_errors
    def complete(self, upload_id: str, result: Mapping[str, Any], *, claim_id: str | None = None) -> UploadSession:
        """Store the finalize ``result`` and mark the session ``finalized``.

        With ``claim_id`` only the holder of that claim may complete.  Completing a
        session that is finalized already keeps (and returns) the first result.
        """
        uploads = self._models.uploads
        actions: list[Action] = [
            uploads.state.set(str(UploadState.FINALIZED)),
            uploads.result.set(_plain(result)),
            uploads.updated_at.set(self._clock()),
        ]
        settled = self._settle(upload_id, actions, {UploadState.FINALIZING}, claim_id)
        if settled.state is not UploadState.FINALIZED:
            raise UploadConflict(f"upload {upload_id} is {settled.state}, so it cannot be completed")
        return settled

    @_storage_errors
    def fail(self, upload_id: str, code: str, message: str, *, claim_id: str | None = None) -> UploadSession:
        """Record why finalize rejected the upload (``failed`` is final; replays get this error)."""
        uploads = self._models.uploads
        actions: list[Action] = [
            uploads.state.set(str(UploadState.FAILED)),
            uploads.error_code.set(code),
            uploads.error_message.set(message),
            uploads.updated_at.set(self._clock()),
        ]
        settled = self._settle(upload_id, actions, {UploadState.PENDING, UploadState.FINALIZING}, claim_id)
        if settled.state is not UploadState.FAILED:
            raise UploadConflict(f"upload {upload_id} is {settled.state}, so it cannot be failed")
        return settled

    @_storage_errors
    def set_signature(self, upload_id: str, signature: str) -> UploadSession:
        """Attach the signature envelope to a ``pending`` session; otherwise return it unchanged."""
        uploads = self._models.uploads
        actions: list[Action] = [uploads.signature.set(signature), uploads.updated_at.set(self._clock())]
        return self._settle(upload_id, actions, {UploadState.PENDING}, None)

    @_storage_errors
    def release(self, upload_id: str, claim_id: str) -> None:
        """Give a claim back after a transient error, so a retry need not wait for the lease."""
        uploads = self._models.uploads
        try:
            uploads(upload_id).update(
                actions=[
                    uploads.state.set(str(UploadState.PENDING)),
                    uploads.finalize_started_at.remove(),
                    uploads.claim_id.remove(),
                    uploads.updated_at.set(self._clock()),
                ],
                condition=(uploads.state == str(UploadState.FINALIZING)) & (uploads.claim_id == claim_id),
            )
        except PynamoDBException as exc:
            # A claim that was taken over or settled is no longer ours to give back.
            if not _condition_failed(exc):
                raise

    @_storage_errors
    def abort(self, upload_id: str, tenant: str) -> UploadSession:
        """Mark ``tenant``'s session ``aborted`` (idempotent) and return it, so the caller can clean staging.

        Raises :class:`UploadNotFound` for another tenant's session and
        :class:`UploadConflict` once it is finalized or while it is being finalized.
        """
        uploads = self._models.uploads
        session = self.get(upload_id, tenant)
        if session.state is UploadState.ABORTED:
            return session
        if session.state in {UploadState.FINALIZED, UploadState.FINALIZING}:
            raise UploadConflict(f"upload {upload_id} is {session.state} and can no longer be aborted")
        item = uploads(upload_id)
        try:
            item.update(
                actions=[uploads.state.set(str(UploadState.ABORTED)), uploads.updated_at.set(self._clock())],
                condition=(uploads.tenant == tenant) & uploads.state.is_in(session.state.value),
            )
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            raise UploadConflict(f"upload {upload_id} changed state while aborting; retry") from None
        return _upload_session(item)

    def _settle(
        self, upload_id: str, actions: Sequence[Action], from_states: set[UploadState], claim_id: str | None
    ) -> UploadSession:
        """Apply ``actions`` if the session is in ``from_states`` (under ``claim_id``); else return it as stored."""
        uploads = self._models.uploads
        condition = uploads.upload_id.exists() & uploads.state.is_in(*(state.value for state in from_states))
        if claim_id is not None:
            condition &= uploads.claim_id == claim_id
        item = uploads(upload_id)
        try:
            item.update(actions=list(actions), condition=condition)
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            stored = self._find(upload_id)
            if stored is None:
                raise UploadNotFound(f"upload {upload_id} does not exist") from None
            return stored
        return _upload_session(item)

    def _find(self, upload_id: str) -> UploadSession | None:
        uploads = self._models.uploads
        try:
            return _upload_session(uploads.get(upload_id, consistent_read=True))
        except uploads.DoesNotExist:
            return None


# --- rate limits --------------------------------------------------------------------------


class RateLimiter:
    """Fixed one-minute windows counted atomically in DynamoDB."""

    def __init__(self, models: Models) -> None:
        self._models = models

    @_storage_errors
    def hit(self, key: str, limit_per_minute: int, now: datetime) -> None:
        """Count one call for ``key`` (e.g. ``upload#<tenant>``) in the minute of ``now``.

        Raises :class:`RateLimited` with ``retry_after`` seconds (until the window
        ends) once ``limit_per_minute`` calls were counted; 0 means unlimited.
        """
        if limit_per_minute <= 0:
            return
        limits = self._models.ratelimits
        window = int(now.timestamp()) // 60
        window_end = datetime.fromtimestamp((window + 1) * 60, UTC)
        try:
            limits(f"{key}#{window}").update(
                actions=[limits.hits.add(1), limits.ttl.set(window_end + timedelta(minutes=1))],
                condition=limits.hits.does_not_exist() | (limits.hits < limit_per_minute),
            )
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            retry_after = max(1, math.ceil((window_end - now).total_seconds()))
            raise RateLimited(
                f"rate limit of {limit_per_minute} calls per minute reached; retry in {retry_after} s",
                retry_after=retry_after,
            ) from None
