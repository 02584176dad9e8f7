"""The upload pipeline: initiate → (the client uploads to S3) → finalize, or abort.

``initiate`` checks the declared size, records a session and hands out presigned
URLs: one PUT below the multipart threshold, presigned parts above.

The routes authorize the caller and parse the body (:mod:`chalicelib.uploads.messages`); the pipeline
takes the uploader as an :class:`~chalicelib.registry.Actor` and typed requests, reaches storage only
through the protocols of :mod:`chalicelib.storage` (bundle store, staging, multipart, signer), and
answers with frozen results.

``finalize`` is one function behind both ``POST /ext-bundles/finalize`` and the S3
ObjectCreated event (S3 → SQS → worker).  Its stages:

1. claim the session with a conditional write (a replay returns the stored
   result or error; a concurrent finalize is waited for or retried);
2. complete the multipart upload, if any;
3. compare the real object size with the declared one;
4. verify the bundle in one streaming pass (hash, archive, manifest, wasm);
5. check the signature against ``SIGNING_TRUST_BUNDLE`` (fail closed when set), at the clock's time;
6. check name ownership (by the signing key's publisher when a trust bundle is set, else by tenant) and
   whether the version exists (same | conflict | new);
7. register the version in one DynamoDB transaction, naming the upload, so a retry of a finalize cut off
   after this write finds its own version (``resumed``) and answers ``finalized`` as an uninterrupted run;
8. write the publish record (``published.json``: when the signature was checked, which the runner checks
   certificates against), the manifest, signature and entry to ``sha256/<hex>/``, then the bundle (for a
   version found the same, only when the bundle is not there yet);
9. record the result, delete staging, and ask the runner to precompile.

A rejection at stages 3–7 records its code on the session, deletes staging and
leaves nothing under ``sha256/`` or in the registry: in particular the loser of
a race for a version stores nothing, so ``sha256/`` holds registered versions
only.  A transient failure (storage, a crash) releases the claim, so a retry
completes the work (a registered version's missing objects included).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.bundles.publication import PublishRecord
from chalicelib.bundles.signing import SignatureCheck, SignatureEnvelope, TrustBundle, verify_signature
from chalicelib.bundles.verify import VerifiedBundle, verify_bundle
from chalicelib.config import Settings
from chalicelib.errors import (
    BundleCorrupt,
    BundleTooLarge,
    ExtError,
    Internal,
    StorageError,
    UploadConflict,
    UploadNotFound,
    VersionExists,
    error_for_code,
)
from chalicelib.logs import log_event, stage
from chalicelib.registry import (
    Actor,
    ClaimKind,
    RateLimiter,
    RegistryService,
    UploadService,
    UploadSession,
    UploadState,
    VersionRecord,
    new_upload_id,
)
from chalicelib.storage.multipart import MAX_PARTS, MultipartUploads, UploadedPart, part_layout
from chalicelib.storage.presign import UploadSigner
from chalicelib.storage.store import (
    BUNDLE_OBJECT,
    ENTRY_OBJECT,
    MANIFEST_OBJECT,
    PUBLISH_RECORD_OBJECT,
    SIGNATURE_OBJECT,
    BundleStore,
    StagingArea,
)
from chalicelib.uploads.messages import (
    AbortRequest,
    AbortResult,
    FinalizeRequest,
    FinalizeResult,
    InitiateRequest,
    UploadStatus,
    UploadTarget,
)

__all__ = ["UploadPipeline"]

_FINALIZE_LEASE_SECONDS = 300
_FINALIZE_WAIT_SECONDS = 20.0
_MIB = 1024 * 1024


@dataclass(frozen=True)
class _Staged:
    session: UploadSession
    claim_id: str | None


class UploadPipeline:
    """Initiate, finalize and abort uploads; collaborators are passed in.

    Every method trusts its caller to have authorized ``uploader`` (an admin of its tenant).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: BundleStore,
        staging: StagingArea,
        multipart: MultipartUploads,
        signer: UploadSigner,
        registry: RegistryService,
        uploads: UploadService,
        limiter: RateLimiter,
        trust: TrustBundle | None,
        clock: Callable[[], datetime],
        on_published: Callable[[str], None] | None = None,
        request_finalize: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._staging = staging
        self._multipart = multipart
        self._signer = signer
        self._registry = registry
        self._uploads = uploads
        self._limiter = limiter
        self._trust = trust
        self._clock = clock
        self._on_published = on_published
        self._request_finalize = request_finalize

    # --- initiate ---------------------------------------------------------------------

    def initiate(self, uploader: Actor, request: InitiateRequest) -> UploadTarget:
        """Start an upload session and return where and how to upload."""
        self._rate_limit(uploader)
        limit = self._settings.bundle_limits.max_compressed_bytes
        if request.size > limit:
            raise BundleTooLarge(f"the bundle is {request.size} bytes; the limit is {limit} bytes")
        upload_id = new_upload_id()
        key = self._staging.staging_key(uploader.tenant, upload_id)
        ttl = self._settings.upload_url_ttl_seconds
        multipart_id = part_size = None
        if request.size <= self._settings.upload_multipart_threshold_bytes:
            put = self._signer.presign_put(key, request.size, request.sha256, ttl)
            target = UploadTarget(upload_id, request.size, "PUT", put.expires_at, url=put.url, headers=put.headers)
        else:
            part_size = self._part_size(request.size)
            multipart_id = self._multipart.create(key)
            urls = self._signer.presign_parts(key, multipart_id, part_layout(request.size, part_size), ttl)
            expires_at = self._clock() + timedelta(seconds=ttl)
            target = UploadTarget(
                upload_id, request.size, "MULTIPART", expires_at, part_size=part_size, parts=tuple(urls)
            )
        self._uploads.create(
            upload_id=upload_id,
            tenant=uploader.tenant,
            sub=uploader.sub,
            staging_key=key,
            declared_size=request.size,
            declared_sha256=request.sha256,
            signature=request.signature.to_json() if request.signature else None,
            multipart_upload_id=multipart_id,
            part_size=part_size,
            ttl_seconds=self._settings.upload_session_ttl_seconds,
        )
        log_event(
            "upload.initiate", tenant=uploader.tenant, upload_id=upload_id, size=request.size, method=target.method
        )
        return target

    def _part_size(self, size: int) -> int:
        smallest = math.ceil(size / MAX_PARTS / _MIB) * _MIB
        return int(max(self._settings.upload_part_bytes, smallest))

    def describe(self, uploader: Actor, upload_id: str) -> UploadStatus:
        """The session's state; for a pending multipart upload, the parts S3 holds and
        fresh URLs for the rest, so an interrupted upload resumes instead of restarting."""
        session = self._uploads.get(upload_id, uploader.tenant)
        status = UploadStatus(
            upload_id=session.upload_id,
            state=session.state,
            size=session.declared_size,
            sha256=session.declared_sha256,
            expires_at=session.expires_at,
            result=_stored_result(session) if session.state is UploadState.FINALIZED else None,
            error_code=session.error_code,
            error_message=session.error_message,
        )
        if not (session.multipart_upload_id and session.state is UploadState.PENDING and session.part_size):
            return status
        mpu = session.multipart_upload_id
        held = self._multipart.list_parts(session.staging_key, mpu)
        held_numbers = {p.part_number for p in held}
        missing = [
            p for p in part_layout(session.declared_size, session.part_size) if p.part_number not in held_numbers
        ]
        ttl = self._settings.upload_url_ttl_seconds
        urls = self._signer.presign_parts(session.staging_key, mpu, missing, ttl) if missing else []
        return replace(status, part_size=session.part_size, uploaded_parts=tuple(held), parts=tuple(urls))

    # --- finalize ---------------------------------------------------------------------

    def finalize(self, uploader: Actor, request: FinalizeRequest) -> FinalizeResult:
        """``POST /ext-bundles/finalize``: waits briefly for a concurrent finalize."""
        self._rate_limit(uploader)
        session = self._uploads.get(request.upload_id, uploader.tenant)
        if self._request_finalize is not None:
            return self._finalize_by_worker(session, request.parts, request.signature)
        deadline = time.monotonic() + _FINALIZE_WAIT_SECONDS
        while True:
            try:
                return self._finalize(session, request.parts, request.signature)
            except UploadConflict as exc:
                if "retry_after" not in exc.details or time.monotonic() > deadline:
                    raise
            time.sleep(0.25)

    def _finalize_by_worker(
        self, session: UploadSession, parts: Sequence[UploadedPart] | None, envelope: SignatureEnvelope | None
    ) -> FinalizeResult:
        """``FINALIZE_MODE=queue``: get the upload ready, hand it to the worker, wait for its answer.

        The route only touches ``staging/`` (complete the multipart upload, record the
        signature); the worker, which alone may write the store, does the rest.
        """
        if session.state is UploadState.PENDING:
            if envelope is not None:
                session = self._uploads.set_signature(session.upload_id, envelope.to_json())
            self._complete_multipart(session, parts)
            if self._staging.head(session.staging_key) is None:
                raise UploadConflict("nothing has been uploaded for this session yet; upload the bundle, then finalize")
            assert self._request_finalize is not None
            self._request_finalize(session.staging_key)
        deadline = time.monotonic() + _FINALIZE_WAIT_SECONDS
        while True:
            current = self._uploads.get(session.upload_id, session.tenant)
            if current.state is UploadState.FINALIZED:
                return _stored_result(current)
            if current.state is UploadState.FAILED:
                raise error_for_code(current.error_code or "INTERNAL", current.error_message or "")
            if current.state is UploadState.ABORTED:
                raise UploadConflict(f"upload {session.upload_id} was aborted")
            if time.monotonic() > deadline:
                raise UploadConflict(f"upload {session.upload_id} is still being finalized; retry", retry_after=2)
            time.sleep(0.2)

    def finalize_staging_object(self, key: str, *, requested: bool = False) -> FinalizeResult | None:
        """The worker: finalize the session a staging object belongs to.

        ``requested`` marks an explicit finalize handed over by the route; without it
        this is an S3 notification.  Returns ``None`` for keys that are not staging
        uploads, unknown sessions, and notifications that must wait for the explicit
        finalize (no signature yet while a trust bundle is configured).  Raises
        ``UploadConflict`` while another finalize holds the session, so the queue
        delivers the message again later.
        """
        owner = self._staging.upload_of(key)
        if owner is None:
            log_event("upload.event.ignored", key=key, reason="not a staging upload")
            return None
        tenant, upload_id = owner
        try:
            session = self._uploads.get(upload_id, tenant)
        except UploadNotFound:
            log_event("upload.event.ignored", key=key, reason="no such upload session")
            return None
        waiting = session.signature is None and self._trust is not None and session.state is UploadState.PENDING
        if waiting and not requested:
            log_event("upload.event.deferred", tenant=tenant, upload_id=upload_id, reason="awaiting signature")
            return None
        try:
            return self._finalize(session, None, None)
        except UploadConflict as exc:
            if "retry_after" in exc.details:
                raise
            log_event("upload.event.ignored", tenant=tenant, upload_id=upload_id, reason=exc.message)
            return None
        except StorageError:
            raise
        except ExtError:
            return None  # a rejection, recorded on the session: the event is done

    def _finalize(
        self, session: UploadSession, parts: Sequence[UploadedPart] | None, envelope: SignatureEnvelope | None
    ) -> FinalizeResult:
        claim = self._uploads.claim_for_finalize(session.upload_id, self._clock(), _FINALIZE_LEASE_SECONDS)
        if claim.kind is ClaimKind.FINALIZED:
            return _stored_result(claim.session)
        if claim.kind is ClaimKind.FAILED:
            raise error_for_code(claim.session.error_code or "INTERNAL", claim.session.error_message or "")
        staged = _Staged(session=claim.session, claim_id=claim.claim_id)
        fields = {"tenant": session.tenant, "upload_id": session.upload_id}
        try:
            with stage("upload.finalize", **fields) as learned:
                result = self._run_stages(staged, parts, envelope, learned)
        except (StorageError, UploadConflict):
            self._release(staged)
            raise
        except ExtError as exc:
            self._uploads.fail(session.upload_id, exc.code, exc.message, claim_id=staged.claim_id)
            self._discard_staging(staged.session)
            raise
        except BaseException:
            self._release(staged)
            raise
        # The stored result is the answer: if a lease ran out and two finalizes both
        # got this far, the session keeps the first one's, and both callers return it.
        stored = self._uploads.complete(session.upload_id, result.to_json(), claim_id=staged.claim_id)
        self._discard_staging(staged.session)
        if result.status == "finalized" and self._on_published is not None:
            self._on_published(result.content_hash)
        return _stored_result(stored)

    def _run_stages(
        self,
        staged: _Staged,
        parts: Sequence[UploadedPart] | None,
        envelope: SignatureEnvelope | None,
        learned: dict[str, Any],
    ) -> FinalizeResult:
        session = staged.session
        ids = {"tenant": session.tenant, "upload_id": session.upload_id}
        with stage("finalize.receive", **ids):
            self._complete_multipart(session, parts)
            etag = self._check_size(session)
        with tempfile.TemporaryDirectory(prefix="finalize-") as scratch:
            with stage("finalize.verify", **ids) as found:
                verified = self._verify(session, etag, Path(scratch))
                found["content_hash"] = learned["content_hash"] = verified.content_hash
            ids["content_hash"] = verified.content_hash
            manifest = verified.manifest
            with stage("finalize.signature", **ids) as found:
                chosen = envelope or (SignatureEnvelope.parse(session.signature) if session.signature else None)
                checked_at = self._clock()
                check = verify_signature(verified.content_hash, manifest.name, chosen, self._trust, now=checked_at)
                found["signature_status"] = str(check.status)
            with stage("finalize.ownership", **ids):
                self._registry.check_name_owner(
                    manifest.name, session.tenant, manifest.publisher, trusted_publisher=check.publisher
                )
                state = self._registry.existing_state(manifest.name, manifest.version, verified.content_hash)
                if state == "conflict":
                    raise VersionExists(
                        f"{manifest.name}@{manifest.version} is already published with different content; "
                        "publish a new version"
                    )
            # Register, then store: the registry decides which upload gets the version, so the loser of a
            # race stores nothing, and everything under sha256/ (which /ext-ui/ serves) is a registered
            # version.  The bundle is stored last: present, it means the whole hash is.  A finalize cut off in
            # between leaves a registered version not yet stored; its retry finds the version the same and
            # completes the store.  The version item names this upload (same transaction), so that retry
            # answers as the uninterrupted run would have: ``finalized``, not another upload's ``already_finalized``.
            with stage("finalize.register", **ids) as found:
                outcome = found["registered"] = self._register(session, verified, chosen, check)
            if state == "new" or not self._store.exists(self._store.object_key(verified.content_hash, BUNDLE_OBJECT)):
                with stage("finalize.store", **ids):
                    self._store_publish_record(verified, check, checked_at)
                    self._store_canonical(session, etag, verified, chosen if check.key_id else None, Path(scratch))
        return FinalizeResult(
            upload_id=session.upload_id,
            content_hash=verified.content_hash,
            extension=manifest.name,
            version=manifest.version,
            status="already_finalized" if outcome == "already" else "finalized",
            signature_status=str(check.status),
            key_id=check.key_id,
            size=verified.compressed_size,
        )

    def _complete_multipart(self, session: UploadSession, parts: Sequence[UploadedPart] | None) -> None:
        if not session.multipart_upload_id or not session.part_size:
            return
        if self._staging.head(session.staging_key) is not None:
            return  # completed by an earlier attempt that crashed before recording it
        key, mpu = session.staging_key, session.multipart_upload_id
        held = list(parts) if parts is not None else self._multipart.list_parts(key, mpu)
        expected = len(part_layout(session.declared_size, session.part_size))
        if len(held) != expected:
            raise UploadConflict(f"the upload has {len(held)} of its {expected} parts; upload the rest, then finalize")
        self._multipart.complete(key, mpu, held)

    def _check_size(self, session: UploadSession) -> str:
        info = self._staging.head(session.staging_key)
        if info is None:
            raise UploadConflict("nothing has been uploaded for this session yet; upload the bundle, then finalize")
        if info.size > session.declared_size:
            raise BundleTooLarge(f"{info.size} bytes were uploaded but {session.declared_size} were declared")
        if info.size < session.declared_size:
            raise BundleCorrupt(f"the upload is incomplete: {info.size} of the declared {session.declared_size} bytes")
        return info.etag

    def _verify(self, session: UploadSession, etag: str, scratch: Path) -> VerifiedBundle:
        expected = f"sha256:{session.declared_sha256}" if session.declared_sha256 else None
        stream = self._staging.open_stream(session.staging_key, if_match=etag)
        try:
            return verify_bundle(
                stream,  # type: ignore[arg-type]
                self._settings.bundle_limits,
                expected_hash=expected,
                extract_to=scratch,
                extract_filter=lambda path: path.endswith(".wasm"),
            )
        finally:
            stream.close()

    def _store_canonical(
        self,
        session: UploadSession,
        etag: str,
        verified: VerifiedBundle,
        envelope: SignatureEnvelope | None,
        scratch: Path,
    ) -> None:
        content_hash = verified.content_hash
        store = self._store
        store.put_immutable(
            store.object_key(content_hash, MANIFEST_OBJECT), verified.manifest_bytes, "application/json"
        )
        if envelope is not None:
            signature = envelope.to_json().encode()
            store.put_immutable(store.object_key(content_hash, SIGNATURE_OBJECT), signature, "application/json")
        if verified.manifest.needs_entry:
            with (scratch / verified.manifest.entry).open("rb") as entry:
                store.put_immutable(store.object_key(content_hash, ENTRY_OBJECT), entry, "application/wasm")
        # Last: the runner loads a hash by this object, so its presence means the others are there too.
        store.put_bundle_from_staging(session.staging_key, content_hash, source_etag=etag)

    def _store_publish_record(self, verified: VerifiedBundle, check: SignatureCheck, checked_at: datetime) -> None:
        """Write ``published.json`` once: a record left by an earlier attempt (or a concurrent finalize of the
        same bytes) keeps its time, which is also one at which the signature was checked."""
        key = self._store.object_key(verified.content_hash, PUBLISH_RECORD_OBJECT)
        if self._store.head(key) is not None:
            return
        record = PublishRecord(
            content_hash=verified.content_hash,
            extension=verified.manifest.name,
            version=verified.manifest.version,
            published_at=checked_at,
            signature_status=check.status,
            key_id=check.key_id,
        )
        try:
            self._store.put_immutable(key, record.to_json(), "application/json")
        except StorageError:
            if self._store.head(key) is None:
                raise

    def _register(
        self,
        session: UploadSession,
        verified: VerifiedBundle,
        envelope: SignatureEnvelope | None,
        check: SignatureCheck,
    ) -> str:
        record = VersionRecord.from_manifest(
            verified.manifest.raw,
            content_hash=verified.content_hash,
            size=verified.compressed_size,
            signature=envelope.to_dict() if envelope is not None and check.key_id else None,
            signature_status=check.status,
            key_id=check.key_id,
            created_at=self._clock(),
            created_by=Actor(tenant=session.tenant, sub=session.sub),
            upload_id=session.upload_id,
        )
        return self._registry.register_version(record, session.tenant, check.key_id, trusted_publisher=check.publisher)

    def _release(self, staged: _Staged) -> None:
        if staged.claim_id is None:
            return
        try:
            self._uploads.release(staged.session.upload_id, staged.claim_id)
        except ExtError as exc:
            log_event("upload.release_failed", upload_id=staged.session.upload_id, outcome=exc.code)

    def _discard_staging(self, session: UploadSession) -> None:
        """Delete the staging object and any multipart state; failures only log (lifecycle rules clean up)."""
        try:
            if session.multipart_upload_id:
                self._multipart.abort(session.staging_key, session.multipart_upload_id)
            self._staging.delete(session.staging_key)
        except ExtError as exc:
            log_event("upload.cleanup_failed", upload_id=session.upload_id, outcome=exc.code, message=exc.message)

    # --- abort ------------------------------------------------------------------------

    def abort(self, uploader: Actor, request: AbortRequest) -> AbortResult:
        """Abort the uploader's own upload: the session first, so no finalize can start, then storage."""
        self._rate_limit(uploader)
        session = self._uploads.abort(request.upload_id, uploader.tenant)
        self._discard_staging(session)
        log_event("upload.abort", tenant=uploader.tenant, upload_id=request.upload_id)
        return AbortResult(request.upload_id)

    def _rate_limit(self, uploader: Actor) -> None:
        self._limiter.hit(f"upload#{uploader.tenant}", self._settings.upload_rate_limit_per_minute, self._clock())


def _stored_result(session: UploadSession) -> FinalizeResult:
    """The result a finalized session stored: every later finalize of it answers with exactly this."""
    if session.result is None:
        raise Internal(f"upload {session.upload_id} is finalized but has no stored result")
    return FinalizeResult.from_json(session.result)
