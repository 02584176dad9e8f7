"""Upload sessions: created at initiate, claimed and settled by finalize (a conditional write), or aborted."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib.dynamo import condition_failed
from chalicelib.errors import (
    UploadConflict,
    UploadExpired,
    UploadNotFound,
)
from chalicelib.registry.models import WRITE_ATTEMPTS, Models, storage_errors
from chalicelib.registry.records import (
    Claim,
    ClaimKind,
    Clock,
    UploadSession,
    UploadState,
    iso_utc,
    plain_json,
    utc_now,
)

__all__ = ["UploadService"]

_UPLOAD_RETENTION = timedelta(days=7)
"""How long an upload record outlives its session, so replays still get their answer."""


class UploadService:
    """Upload sessions: created at initiate, claimed and settled by finalize, or aborted."""

    def __init__(self, models: Models, clock: Clock = utc_now) -> None:
        self._models = models
        self._clock = clock

    @storage_errors
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
            if not condition_failed(exc):
                raise
            raise UploadConflict(f"upload {upload_id} exists already") from None
        return UploadSession.from_item(item)

    @storage_errors
    def get(self, upload_id: str, tenant: str) -> UploadSession:
        """The session, if ``tenant`` owns it; otherwise :class:`UploadNotFound` (never "forbidden")."""
        session = self._find(upload_id)
        if session is None or session.tenant != tenant:
            raise UploadNotFound(f"upload {upload_id} does not exist")
        return session

    @storage_errors
    def claim_for_finalize(self, upload_id: str, now: datetime, lease_seconds: int) -> Claim:
        """Take the right to finalize, once.

        A ``pending`` session (or one whose finalize lease is older than
        ``lease_seconds``) becomes ``finalizing`` under a fresh claim id: that caller
        finalizes.  A finalized or failed session returns its stored outcome.
        Raises :class:`UploadNotFound`, :class:`UploadExpired`, or
        :class:`UploadConflict` (aborted, or another finalize holds the lease).
        """
        uploads = self._models.uploads
        for _ in range(WRITE_ATTEMPTS):
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
                return Claim(ClaimKind.ACQUIRED, UploadSession.from_item(item))
            except PynamoDBException as exc:
                if not condition_failed(exc):
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
            raise UploadExpired(f"upload {upload_id} expired at {iso_utc(session.expires_at)}; start a new upload")
        if session.state is UploadState.FINALIZING and session.finalize_started_at is not None:
            lease_end = session.finalize_started_at + timedelta(seconds=lease_seconds)
            if lease_end > now:
                retry_after = max(1, math.ceil((lease_end - now).total_seconds()))
                raise UploadConflict(f"upload {upload_id} is being finalized already", retry_after=retry_after)
        return None

    @storage_errors
    def complete(self, upload_id: str, result: Mapping[str, Any], *, claim_id: str | None = None) -> UploadSession:
        """Store the finalize ``result`` and mark the session ``finalized``.

        With ``claim_id`` only the holder of that claim may complete.  Completing a
        session that is finalized already keeps (and returns) the first result.
        """
        uploads = self._models.uploads
        actions: list[Action] = [
            uploads.state.set(str(UploadState.FINALIZED)),
            uploads.result.set(plain_json(result)),
            uploads.updated_at.set(self._clock()),
        ]
        settled = self._settle(upload_id, actions, {UploadState.FINALIZING}, claim_id)
        if settled.state is not UploadState.FINALIZED:
            raise UploadConflict(f"upload {upload_id} is {settled.state}, so it cannot be completed")
        return settled

    @storage_errors
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

    @storage_errors
    def set_signature(self, upload_id: str, signature: str) -> UploadSession:
        """Attach the signature envelope to a ``pending`` session; otherwise return it unchanged."""
        uploads = self._models.uploads
        actions: list[Action] = [uploads.signature.set(signature), uploads.updated_at.set(self._clock())]
        return self._settle(upload_id, actions, {UploadState.PENDING}, None)

    @storage_errors
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
            if not condition_failed(exc):
                raise

    @storage_errors
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
            if not condition_failed(exc):
                raise
            raise UploadConflict(f"upload {upload_id} changed state while aborting; retry") from None
        return UploadSession.from_item(item)

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
            if not condition_failed(exc):
                raise
            stored = self._find(upload_id)
            if stored is None:
                raise UploadNotFound(f"upload {upload_id} does not exist") from None
            return stored
        return UploadSession.from_item(item)

    def _find(self, upload_id: str) -> UploadSession | None:
        uploads = self._models.uploads
        try:
            return UploadSession.from_item(uploads.get(upload_id, consistent_read=True))
        except uploads.DoesNotExist:
            return None
