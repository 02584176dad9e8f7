"""A tenant's installs: every key holds the tenant, every change is checked against a revision.

An install's ``config`` always fits the ``config_schema`` of the version it runs: installing, changing
the config, upgrading and rolling back all validate the config that the install will have against the
target version's schema (``CONFIG_INVALID`` naming the field), inside the same revision-checked write.
An upgrade to a version whose schema the current config breaks is refused; send the new config with it
(``PATCH /installs/{name}`` with ``{version, config}``: :meth:`InstallService.update` checks the config
against the version it will run, in the one write that switches both).

The routes parse their bodies into :class:`InstallRequest`, :class:`InstallChange` and
:class:`RollbackRequest`.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib.bundles.config_schema import validate_config
from chalicelib.dynamo import condition_failed
from chalicelib.errors import (
    BadRequest,
    InstallConfigInvalid,
    NotInstalled,
    StorageError,
)
from chalicelib.registry.models import WRITE_ATTEMPTS, InstallModel, Models, storage_errors
from chalicelib.registry.records import (
    HISTORY_LIMIT,
    MAX_CONFIG_BYTES,
    Clock,
    HistoryEntry,
    InstallRecord,
    VersionRecord,
    plain_json,
    utc_now,
)
from chalicelib.registry.service import RegistryService

__all__ = ["InstallChange", "InstallRequest", "InstallService", "RollbackRequest"]

_CHANGE_FIELDS = frozenset({"enabled", "version", "config"})


def _validated_config(config: Any) -> dict[str, Any]:
    """``config`` as a plain JSON object of at most 16 KiB; :class:`BadRequest` otherwise.

    Whether it fits a version's ``config_schema`` is the service's to check, against the version the
    install will run.
    """
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


@dataclass(frozen=True)
class InstallRequest:
    """``POST /installs``: ``{"extension", "version", "config"?}``.

    ``config`` is the config the install runs the version with (checked against its ``config_schema``
    by :meth:`InstallService.install`, in the write that installs); without it a new install starts
    from ``{}`` and an existing one keeps its config.
    """

    extension: str
    version: str
    config: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> InstallRequest:
        """Read the body; :class:`BadRequest` names the field that is wrong (``config``: not a JSON object)."""
        return cls(
            extension=_string_field(body, "extension"),
            version=_string_field(body, "version"),
            config=_validated_config(body["config"]) if "config" in body else None,
        )


@dataclass(frozen=True)
class InstallChange:
    """``PATCH /installs/{name}``: one or more of ``enabled``, ``version`` and ``config``.

    ``version`` may be any published version (an upgrade) or one from the install's history (a rollback);
    ``config``, sent with it, is the config the install runs that version with.
    """

    enabled: bool | None = None
    version: str | None = None
    config: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> InstallChange:
        """Read the body; :class:`BadRequest` for an empty body, an unknown field or a field of the wrong type."""
        unknown = set(body) - _CHANGE_FIELDS
        if unknown or not body:
            raise BadRequest(
                "send one or more of `enabled`, `version`, `config`" + (f" (not {sorted(unknown)})" if unknown else "")
            )
        enabled = body.get("enabled")
        if "enabled" in body and not isinstance(enabled, bool):
            raise BadRequest("`enabled` must be true or false")
        return cls(
            enabled=enabled,
            version=_string_field(body, "version") if "version" in body else None,
            config=_validated_config(body["config"]) if "config" in body else None,
        )


@dataclass(frozen=True)
class RollbackRequest:
    """``POST /installs/{name}/rollback``: ``{"version"?}``, the version from history (default: the latest)."""

    version: str | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> RollbackRequest:
        """Read the body; :class:`BadRequest` for a ``version`` that is not a non-empty string."""
        return cls(version=_string_field(body, "version") if body.get("version") is not None else None)


def _string_field(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"`{field}` must be a non-empty string")
    return value


def _fitted_config(target: VersionRecord, config: Mapping[str, Any], kept: bool) -> None:
    """Raise ``CONFIG_INVALID`` unless ``config`` fits ``target``'s ``config_schema``.

    ``kept``: the config is the install's current one, carried over to ``target``; the message then
    says so, since the caller did not send it.
    """
    try:
        validate_config(target.manifest.get("config_schema"), config)
    except InstallConfigInvalid as exc:
        if not kept:
            raise
        raise InstallConfigInvalid(
            f"{exc.message} (the install's current config does not fit the config_schema of "
            f"{target.name}@{target.version}; send a config that does with the version)",
            **exc.details,
        ) from None


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

    @storage_errors
    def install(self, tenant: str, name: str, version: str, by: str | None = None, config: Any = None) -> InstallRecord:
        """Install ``name@version`` for ``tenant`` (enabled, granted the version's capabilities).

        ``config`` (default: ``{}`` for a new install, the current config over an existing one) must
        fit the version's ``config_schema`` (:class:`InstallConfigInvalid`).  Installing over an
        existing install switches its version, as :meth:`upgrade` does.  Raises :class:`NotFound`
        when the version was never published.
        """
        target = self._registry.get_version(name, version)
        given = _validated_config(config) if config is not None else None
        for _ in range(WRITE_ATTEMPTS):
            current = self._read(tenant, name)
            if current is not None:
                switched = self._switch(current, target, by, given)
                if switched is not None:
                    return switched
                continue
            created = self._create(tenant, target, by, given if given is not None else {})
            if created is not None:
                return created
        raise StorageError(f"could not install {name} for this tenant: concurrent changes kept conflicting")

    @storage_errors
    def list(self, tenant: str) -> builtins.list[InstallRecord]:
        """``tenant``'s installs, by extension name."""
        return [InstallRecord.from_item(item) for item in self._models.installs.query(tenant, consistent_read=True)]

    @storage_errors
    def get(self, tenant: str, name: str) -> InstallRecord:
        """``tenant``'s install of ``name``; raises :class:`NotInstalled`."""
        return InstallRecord.from_item(self._load(tenant, name))

    @storage_errors
    def set_enabled(self, tenant: str, name: str, enabled: bool) -> InstallRecord:
        installs = self._models.installs
        return self._update_existing(tenant, name, [installs.enabled.set(enabled)])

    @storage_errors
    def set_config(self, tenant: str, name: str, config: Any) -> InstallRecord:
        """Replace the install's config.

        It must be a JSON object of at most 16 KiB (:class:`BadRequest`) that fits the installed
        version's ``config_schema`` (:class:`InstallConfigInvalid`); the write is conditional on the
        version it was checked against.
        """
        parsed = _validated_config(config)
        installs = self._models.installs
        for _ in range(WRITE_ATTEMPTS):
            current = self._load(tenant, name)
            _fitted_config(self._registry.get_version(name, current.version), parsed, kept=False)
            actions: builtins.list[Action] = [
                installs.config.set(parsed),
                installs.updated_at.set(self._clock()),
                installs.revision.add(1),
            ]
            try:
                current.update(actions=actions, condition=installs.revision == current.revision)
            except PynamoDBException as exc:
                if condition_failed(exc):
                    continue
                raise
            self._changed(tenant, name)
            return InstallRecord.from_item(current)
        raise StorageError(
            f"could not change the config of {name} for this tenant: concurrent changes kept conflicting"
        )

    def update(self, tenant: str, name: str, change: InstallChange, by: str | None = None) -> InstallRecord:
        """Apply ``change`` to ``tenant``'s install of ``name``; raises :class:`NotInstalled`.

        A ``version`` in the install's history is a :meth:`rollback` to it, any other an :meth:`upgrade`;
        a ``config`` sent with it goes into the same write and must fit that version's ``config_schema``
        (the current config need not).  A ``config`` alone is :meth:`set_config`.  ``enabled`` comes last.
        """
        record = self.get(tenant, name)
        if change.version is not None:
            in_history = any(entry.version == change.version for entry in record.history)
            switch = self.rollback if in_history else self.upgrade
            record = switch(tenant, name, change.version, by=by, config=change.config)
        elif change.config is not None:
            record = self.set_config(tenant, name, change.config)
        if change.enabled is not None:
            record = self.set_enabled(tenant, name, change.enabled)
        return record

    @storage_errors
    def upgrade(self, tenant: str, name: str, version: str, by: str | None = None, config: Any = None) -> InstallRecord:
        """Switch the install to ``version`` (any published one), remembering the current one in history.

        The install's config (``config`` when given, else the current one) must fit the target's
        ``config_schema``: an upgrade the current config does not fit is refused with
        :class:`InstallConfigInvalid` unless it brings a config that does.
        """
        target = self._registry.get_version(name, version)
        given = _validated_config(config) if config is not None else None
        for _ in range(WRITE_ATTEMPTS):
            switched = self._switch(self._load(tenant, name), target, by, given)
            if switched is not None:
                return switched
        raise StorageError(f"could not upgrade {name} for this tenant: concurrent changes kept conflicting")

    @storage_errors
    def rollback(
        self, tenant: str, name: str, version: str | None = None, by: str | None = None, config: Any = None
    ) -> InstallRecord:
        """Switch back to ``version`` from the install's history, or to the most recent earlier version.

        The version being left goes on top of the history, so rolling back twice
        returns to where it started.  Raises :class:`BadRequest` when there is no
        such earlier version, and :class:`InstallConfigInvalid` when the config (``config``
        when given, else the current one) does not fit that version's ``config_schema``.
        """
        given = _validated_config(config) if config is not None else None
        for _ in range(WRITE_ATTEMPTS):
            current = self._load(tenant, name)
            history = [HistoryEntry.from_item(entry) for entry in current.history]
            candidates = [entry for entry in history if version is None or entry.version == version]
            if not candidates and version is None:
                raise BadRequest(f"the install of {name} has no earlier version to roll back to")
            if not candidates:
                raise BadRequest(f"version {version} is not in the install history of {name}")
            target = self._registry.get_version(name, candidates[0].version)
            switched = self._switch(current, target, by, given)
            if switched is not None:
                return switched
        raise StorageError(f"could not roll back {name} for this tenant: concurrent changes kept conflicting")

    @storage_errors
    def uninstall(self, tenant: str, name: str) -> None:
        """Remove ``tenant``'s install of ``name``; raises :class:`NotInstalled`."""
        installs = self._models.installs
        try:
            installs(tenant, name).delete(condition=installs.name.exists())
        except PynamoDBException as exc:
            if not condition_failed(exc):
                raise
            raise NotInstalled(f"extension {name!r} is not installed") from None
        self._changed(tenant, name)

    def _create(
        self, tenant: str, target: VersionRecord, by: str | None, config: dict[str, Any]
    ) -> InstallRecord | None:
        _fitted_config(target, config, kept=False)
        installs = self._models.installs
        now = self._clock()
        item = installs(
            tenant,
            target.name,
            install_id=str(uuid.uuid4()),
            version=target.version,
            content_hash=target.content_hash,
            enabled=True,
            config=config,
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
            if condition_failed(exc):
                return None
            raise
        self._changed(tenant, target.name)
        return InstallRecord.from_item(item)

    def _switch(
        self, current: InstallModel, target: VersionRecord, by: str | None, config: dict[str, Any] | None
    ) -> InstallRecord | None:
        """Move ``current`` to ``target``, and to ``config`` when given.

        ``None`` when the row changed since it was read.
        """
        same_version = current.version == target.version and current.content_hash == target.content_hash
        if same_version and config is None:
            return InstallRecord.from_item(current)
        _fitted_config(target, config if config is not None else plain_json(current.config), kept=config is None)
        installs = self._models.installs
        now = self._clock()
        actions: builtins.list[Action] = [installs.updated_at.set(now), installs.revision.add(1)]
        if config is not None:
            actions.append(installs.config.set(config))
        if not same_version:
            actions += self._version_actions(current, target, by, now)
        try:
            current.update(actions=actions, condition=installs.revision == current.revision)
        except PynamoDBException as exc:
            if condition_failed(exc):
                return None
            raise
        self._changed(current.tenant, current.name)
        return InstallRecord.from_item(current)

    def _version_actions(
        self, current: InstallModel, target: VersionRecord, by: str | None, now: datetime
    ) -> builtins.list[Action]:
        """What moving ``current`` to ``target`` writes: the version, its grants, and the history."""
        installs = self._models.installs
        left = HistoryEntry(current.version, current.content_hash, current.installed_at, current.installed_by)
        kept = [
            entry
            for entry in (HistoryEntry.from_item(item) for item in current.history)
            if entry.version not in {target.version, current.version}
        ]
        history = [left, *kept][:HISTORY_LIMIT]
        return [
            installs.version.set(target.version),
            installs.content_hash.set(target.content_hash),
            installs.granted_capabilities.set(list(target.capabilities)),
            installs.history.set([entry.to_item() for entry in history]),
            installs.installed_at.set(now),
            installs.installed_by.set(by) if by is not None else installs.installed_by.remove(),
        ]

    def _update_existing(self, tenant: str, name: str, actions: Sequence[Action]) -> InstallRecord:
        installs = self._models.installs
        item = installs(tenant, name)
        try:
            item.update(
                actions=[*actions, installs.updated_at.set(self._clock()), installs.revision.add(1)],
                condition=installs.name.exists(),
            )
        except PynamoDBException as exc:
            if not condition_failed(exc):
                raise
            raise NotInstalled(f"extension {name!r} is not installed") from None
        self._changed(tenant, name)
        return InstallRecord.from_item(item)

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
