"""Registry v2 records: the frozen values the services return, never pynamodb items.

Each record that is stored has ``from_item``, the one place its item's attributes are read; the
services write items from records.  :func:`plain_json` and :func:`iso_utc` are how records (and the
services writing them) turn map attributes and times into JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pynamodb.attributes import MapAttribute

from chalicelib.bundles.signing import SignatureStatus
from chalicelib.registry.models import (
    AuditModel,
    ExtensionModel,
    InstallModel,
    UploadModel,
    VersionModel,
)

__all__ = [
    "DEFAULT_ENTRY",
    "HISTORY_LIMIT",
    "MAX_CONFIG_BYTES",
    "Actor",
    "AuditEvent",
    "Claim",
    "ClaimKind",
    "Clock",
    "ExistingState",
    "ExtensionRecord",
    "ExtensionView",
    "HistoryEntry",
    "InstallRecord",
    "Owner",
    "RegisterOutcome",
    "SignatureStatus",
    "UploadSession",
    "UploadState",
    "VersionRecord",
    "iso_utc",
    "new_upload_id",
    "plain_json",
    "utc_now",
]

DEFAULT_ENTRY = "dist/main.wasm"
HISTORY_LIMIT = 20
MAX_CONFIG_BYTES = 16 * 1024

Clock = Callable[[], datetime]
ExistingState = Literal["same", "conflict", "new"]
RegisterOutcome = Literal["created", "resumed", "already"]
"""``created``: this call registered the version; ``resumed``: an earlier attempt of the same upload did (a
finalize cut off after the registry write); ``already``: another upload did, with the same content hash."""


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


def plain_json(value: Any) -> Any:
    """A JSON-shaped copy of ``value``: pynamodb maps become dicts, tuples become lists."""
    if isinstance(value, MapAttribute):
        value = value.attribute_values
    if isinstance(value, Mapping):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    return value


def iso_utc(moment: datetime) -> str:
    """``moment`` in ISO 8601, UTC, with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who acted: the tenant and the token subject."""

    tenant: str
    sub: str


@dataclass(frozen=True)
class Owner:
    """Who holds an extension name: a tenant (names published without a trust bundle) or a trusted publisher
    (names published under one: the ``# publisher:`` of the signing key, else its key id).  Exactly one is set."""

    tenant: str | None = None
    publisher: str | None = None

    def __post_init__(self) -> None:
        if (self.tenant is None) == (self.publisher is None):
            raise ValueError("an owner is either a tenant or a publisher")

    def to_json(self) -> dict[str, str]:
        """``{"tenant": …}`` or ``{"publisher": …}``."""
        return {"tenant": self.tenant} if self.tenant is not None else {"publisher": str(self.publisher)}

    @classmethod
    def from_json(cls, data: Any) -> Owner:
        plain = plain_json(data)
        return cls(tenant=plain.get("tenant"), publisher=plain.get("publisher"))

    def __str__(self) -> str:
        return f"tenant {self.tenant!r}" if self.tenant is not None else f"publisher {self.publisher!r}"


@dataclass(frozen=True)
class ExtensionRecord:
    """An extension name, its owner (``owner_tenant`` or ``owner_publisher``) and its highest version."""

    name: str
    publisher: str
    owner_tenant: str | None
    key_ids: frozenset[str]
    latest_version: str | None
    created_at: datetime
    updated_at: datetime
    owner_publisher: str | None = None

    @property
    def owner(self) -> Owner:
        return Owner(tenant=self.owner_tenant, publisher=self.owner_publisher)

    def to_json(self) -> dict[str, Any]:
        """The public view: the owning publisher is shown, an owning tenant's id stays private."""
        return {
            "name": self.name,
            "publisher": self.publisher,
            "owner_publisher": self.owner_publisher,
            "latest_version": self.latest_version,
            "key_ids": sorted(self.key_ids),
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
        }

    @classmethod
    def from_item(cls, item: ExtensionModel) -> ExtensionRecord:
        """The record of a stored item."""
        return cls(
            name=item.name,
            publisher=item.publisher,
            owner_tenant=item.owner_tenant,
            key_ids=frozenset(item.key_ids or ()),
            latest_version=item.latest_version,
            created_at=item.created_at,
            updated_at=item.updated_at,
            owner_publisher=item.owner_publisher,
        )


@dataclass(frozen=True)
class AuditEvent:
    """A change of a name's owner: what, when, by whom, from whom to whom, and why."""

    subject: str
    event_id: str
    action: str
    at: datetime
    actor: Actor
    from_owner: Owner
    to_owner: Owner
    reason: str
    request_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "event_id": self.event_id,
            "action": self.action,
            "at": iso_utc(self.at),
            "actor": {"tenant": self.actor.tenant, "sub": self.actor.sub},
            "from": self.from_owner.to_json(),
            "to": self.to_owner.to_json(),
            "reason": self.reason,
            "request_id": self.request_id,
        }

    @classmethod
    def from_item(cls, item: AuditModel) -> AuditEvent:
        """The record of a stored item."""
        actor = plain_json(item.actor)
        return cls(
            subject=item.subject,
            event_id=item.event_id,
            action=item.action,
            at=item.at,
            actor=Actor(tenant=actor["tenant"], sub=actor["sub"]),
            from_owner=Owner.from_json(item.from_owner),
            to_owner=Owner.from_json(item.to_owner),
            reason=item.reason,
            request_id=item.request_id,
        )


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
    upload_id: str | None = None
    """The upload session that registered this version; ``None`` for versions registered before issue 14 (and
    for records not made by an upload), which no finalize can then claim as its own."""

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
        upload_id: str | None = None,
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
            ui=plain_json(manifest["ui"]) if manifest.get("ui") is not None else None,
            endpoints=tuple(plain_json(endpoint) for endpoint in api.get("endpoints", ())),
            capabilities=tuple(manifest.get("capabilities", ())),
            egress=tuple(manifest.get("egress", ())),
            size=size,
            signature=plain_json(signature) if signature is not None else None,
            signature_status=signature_status,
            key_id=key_id,
            manifest=plain_json(manifest),
            created_at=created_at,
            created_by=created_by,
            upload_id=upload_id,
        )

    def to_json(self) -> dict[str, Any]:
        """The public view of the version (without who published it, or from which upload)."""
        return {
            "name": self.name,
            "version": self.version,
            "publisher": self.publisher,
            "content_hash": self.content_hash,
            "runtime": self.runtime,
            "entry": self.entry,
            "ui": plain_json(self.ui),
            "endpoints": plain_json(self.endpoints),
            "capabilities": list(self.capabilities),
            "egress": list(self.egress),
            # What an admin fills in for an install: the admin UI's config form and secrets list.
            "config_schema": plain_json(self.manifest.get("config_schema")),
            "secrets": [plain_json(spec) for spec in self.manifest.get("secrets", ())],
            "size": self.size,
            "signature_status": str(self.signature_status),
            "key_id": self.key_id,
            "created_at": iso_utc(self.created_at),
        }

    @classmethod
    def from_item(cls, item: VersionModel) -> VersionRecord:
        """The record of a stored item."""
        created_by = plain_json(item.created_by)
        return cls(
            name=item.name,
            version=item.version,
            publisher=item.publisher,
            content_hash=item.content_hash,
            runtime=item.runtime,
            entry=item.entry,
            ui=plain_json(item.ui) if item.ui is not None else None,
            endpoints=tuple(plain_json(item.endpoints)),
            capabilities=tuple(item.capabilities),
            egress=tuple(item.egress),
            size=int(item.size),
            signature=plain_json(item.signature) if item.signature is not None else None,
            signature_status=SignatureStatus(item.signature_status),
            key_id=item.key_id,
            manifest=plain_json(item.manifest),
            created_at=item.created_at,
            created_by=Actor(tenant=created_by["tenant"], sub=created_by["sub"]),
            upload_id=item.upload_id,
        )


@dataclass(frozen=True)
class ExtensionView:
    """An extension as one tenant sees it: ``owned`` when that tenant owns the name, and its versions
    (highest first) when they were asked for."""

    extension: ExtensionRecord
    owned: bool
    versions: tuple[VersionRecord, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        answer = {**self.extension.to_json(), "owned": self.owned}
        if self.versions is not None:
            answer["versions"] = [version.to_json() for version in self.versions]
        return answer


@dataclass(frozen=True)
class HistoryEntry:
    """A version a tenant had installed before: what, since when, by whom."""

    version: str
    content_hash: str
    at: datetime
    by: str | None

    def to_item(self) -> dict[str, Any]:
        return {"version": self.version, "content_hash": self.content_hash, "at": iso_utc(self.at), "by": self.by}

    @classmethod
    def from_item(cls, item: Any) -> HistoryEntry:
        data = plain_json(item)
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
            "config": plain_json(self.config),
            "granted_capabilities": list(self.granted_capabilities),
            "history": [entry.to_item() for entry in self.history],
            "installed_at": iso_utc(self.installed_at),
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
        }

    @classmethod
    def from_item(cls, item: InstallModel) -> InstallRecord:
        """The record of a stored item."""
        return cls(
            tenant=item.tenant,
            name=item.name,
            install_id=item.install_id,
            version=item.version,
            content_hash=item.content_hash,
            enabled=bool(item.enabled),
            config=plain_json(item.config),
            granted_capabilities=tuple(item.granted_capabilities),
            history=tuple(HistoryEntry.from_item(entry) for entry in item.history),
            installed_at=item.installed_at,
            installed_by=item.installed_by,
            created_at=item.created_at,
            updated_at=item.updated_at,
        )


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

    @classmethod
    def from_item(cls, item: UploadModel) -> UploadSession:
        """The record of a stored item."""
        return cls(
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
            result=plain_json(item.result) if item.result is not None else None,
            error_code=item.error_code,
            error_message=item.error_message,
            claim_id=item.claim_id,
            created_at=item.created_at,
            updated_at=item.updated_at,
            finalize_started_at=item.finalize_started_at,
            expires_at=item.expires_at,
        )


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an upload for finalize (see :class:`ClaimKind`)."""

    kind: ClaimKind
    session: UploadSession

    @property
    def claim_id(self) -> str | None:
        return self.session.claim_id if self.kind is ClaimKind.ACQUIRED else None
