"""The upload pipeline: initiate → (the client uploads to S3) → finalize, or abort.

``initiate`` checks the declared size and signature, records a session and hands
out presigned URLs: one PUT below the multipart threshold, presigned parts above.

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
7. register the version in one DynamoDB transaction;
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
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.auth import Identity
from chalicelib.bundles.publication import PublishRecord
from chalicelib.bundles.signing import SignatureCheck, SignatureEnvelope, TrustBundle, verify_signature
from chalicelib.bundles.verify import VerifiedBundle, verify_bundle
from chalicelib.config import Settings
from chalicelib.errors import (
    BadRequest,
    BundleCorrupt,
    BundleTooLarge,
    ExtError,
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
from chalicelib.storage.presign import (
    UploadedPart,
    abort_multipart,
    complete_multipart,
    create_multipart,
    list_parts,
    part_layout,
    presign_parts,
    presign_put,
)
from chalicelib.storage.store import (
    BUNDLE_OBJECT,
    ENTRY_OBJECT,
    MANIFEST_OBJECT,
    PUBLISH_RECORD_OBJECT,
    SIGNATURE_OBJECT,
    S3BundleStore,
)

__all__ = ["UploadPipeline", "staging_key_parts"]

_SHA256 = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
_FINALIZE_LEASE_SECONDS = 300
_FINALIZE_WAIT_SECONDS = 20.0
_MAX_PARTS = 10_000
MiB = 1024 * 1024


@dataclass(frozen=True)
class _Staged:
    session: UploadSession
    claim_id: str | None


def staging_key_parts(key: str, staging_prefix: str) -> tuple[str, str] | None:
    """``(tenant, upload_id)`` of a staging key, or ``None`` for any other key."""
    match = re.fullmatch(re.escape(staging_prefix) + r"([^/]+)/([^/]+)/bundle\.tar\.zst", key)
    return (match.group(1), match.group(2)) if match else None


def _declared_sha256(value: Any) -> str | None:
    if value is None:
        return None
    match = _SHA256.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadRequest("`sha256` must be 64 lowercase hex characters (optionally prefixed with sha256:)")
    return match.group(1)


def _envelope(value: Any) -> SignatureEnvelope | None:
    if value is None:
        return None
    if not isinstance(value, (str, Mapping)):
        raise BadRequest("`signature` must be the signature envelope (a JSON object or its text)")
    return SignatureEnvelope.parse(value)


def _size(value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest("`size` must be the bundle's size in bytes, a positive integer")
    if value > limit:
        raise BundleTooLarge(f"the bundle is {value} bytes; the limit is {limit} bytes")
    return value


def _parts(value: Any) -> list[UploadedPart] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, Mapping) for p in value):
        raise BadRequest("`parts` must be a list of {part_number, etag}")
    parts = []
    for item in value:
        number, etag = item.get("part_number"), item.get("etag")
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(etag, str):
            raise BadRequest("each part needs an integer `part_number` and a string `etag`")
        parts.append(UploadedPart(part_number=number, etag=etag))
    return parts


class UploadPipeline:
    """Initiate, finalize and abort uploads; collaborators are passed in."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: S3BundleStore,
        s3: Any,
        presign_client: Any,
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
        self._s3 = s3
        self._presign = presign_client
        self._registry = registry
        self._uploads = uploads
        self._limiter = limiter
        self._trust = trust
        self._clock = clock
        self._on_published = on_published
        self._request_finalize = request_finalize

    # --- initiate ---------------------------------------------------------------------

    def initiate(self, identity: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        """Start an upload session and return where and how to upload."""
        identity.require_admin()
        self._rate_limit(identity)
        size = _size(body.get("size"), self._settings.bundle_limits.max_compressed_bytes)
        sha256 = _declared_sha256(body.get("sha256"))
        envelope = _envelope(body.get("signature"))
        upload_id = new_upload_id()
        key = self._store.staging_key(identity.tenant, upload_id)
        ttl = self._settings.upload_url_ttl_seconds
        answer: dict[str, Any] = {"upload_id": upload_id, "size": size}
        multipart_id = part_size = None
        if size <= self._settings.upload_multipart_threshold_bytes:
            request = presign_put(self._presign, self._store.bucket, key, size, sha256, ttl)
            answer.update(method="PUT", url=request.url, headers=dict(request.headers))
            expires_at = request.expires_at
        else:
            part_size = self._part_size(size)
            multipart_id = create_multipart(self._s3, self._store.bucket, key)
            layout = part_layout(size, part_size)
            urls = presign_parts(self._presign, self._store.bucket, key, multipart_id, layout, ttl)
            answer.update(
                method="MULTIPART",
                part_size=part_size,
                parts=[{"part_number": p.part_number, "url": p.url} for p in urls],
                headers={},
            )
            expires_at = self._clock() + timedelta(seconds=ttl)
        self._uploads.create(
            upload_id=upload_id,
            tenant=identity.tenant,
            sub=identity.sub,
            staging_key=key,
            declared_size=size,
            declared_sha256=sha256,
            signature=envelope.to_json() if envelope else None,
            multipart_upload_id=multipart_id,
            part_size=part_size,
            ttl_seconds=self._settings.upload_session_ttl_seconds,
        )
        answer["expires_at"] = expires_at.isoformat()
        log_event("upload.initiate", tenant=identity.tenant, upload_id=upload_id, size=size, method=answer["method"])
        return answer

    def _part_size(self, size: int) -> int:
        smallest = math.ceil(size / _MAX_PARTS / MiB) * MiB
        return int(max(self._settings.upload_part_bytes, smallest))

    def describe(self, identity: Identity, upload_id: str) -> dict[str, Any]:
        """The session's state; for a pending multipart upload, the parts S3 holds and
        fresh URLs for the rest, so an interrupted upload resumes instead of restarting."""
        identity.require_admin()
        session = self._uploads.get(upload_id, identity.tenant)
        answer: dict[str, Any] = {
            "upload_id": session.upload_id,
            "state": str(session.state),
            "size": session.declared_size,
            "sha256": session.declared_sha256,
            "expires_at": session.expires_at.isoformat(),
        }
        if session.state is UploadState.FINALIZED:
            answer["result"] = dict(session.result or {})
        if session.state is UploadState.FAILED:
            answer["error"] = {"code": session.error_code, "message": session.error_message}
        if session.multipart_upload_id and session.state is UploadState.PENDING and session.part_size:
            held = list_parts(self._s3, self._store.bucket, session.staging_key, session.multipart_upload_id)
            layout = part_layout(session.declared_size, session.part_size)
            held_numbers = {p.part_number for p in held}
            missing = [p for p in layout if p.part_number not in held_numbers]
            ttl = self._settings.upload_url_ttl_seconds
            mpu = session.multipart_upload_id
            urls = (
                presign_parts(self._presign, self._store.bucket, session.staging_key, mpu, missing, ttl)
                if missing
                else []
            )
            answer.update(
                method="MULTIPART",
                part_size=session.part_size,
                uploaded_parts=[{"part_number": p.part_number, "etag": p.etag, "size": p.size} for p in held],
                parts=[{"part_number": p.part_number, "url": p.url} for p in urls],
            )
        return answer

    # --- finalize ---------------------------------------------------------------------

    def finalize(self, identity: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /ext-bundles/finalize``: waits briefly for a concurrent finalize."""
        upload_id = self._admin_upload_id(identity, body)
        session = self._uploads.get(upload_id, identity.tenant)
        parts = _parts(body.get("parts"))
        envelope = _envelope(body.get("signature"))
        if self._request_finalize is not None:
            return self._finalize_by_worker(session, parts, envelope)
        deadline = time.monotonic() + _FINALIZE_WAIT_SECONDS
        while True:
            try:
                return self._finalize(session, parts, envelope)
            except UploadConflict as exc:
                if "retry_after" not in exc.details or time.monotonic() > deadline:
                    raise
            time.sleep(0.25)

    def _finalize_by_worker(
        self, session: UploadSession, parts: Sequence[UploadedPart] | None, envelope: SignatureEnvelope | None
    ) -> dict[str, Any]:
        """``FINALIZE_MODE=queue``: get the upload ready, hand it to the worker, wait for its answer.

        The route only touches ``staging/`` (complete the multipart upload, record the
        signature); the worker, which alone may write the store, does the rest.
        """
        if session.state is UploadState.PENDING:
            if envelope is not None:
                session = self._uploads.set_signature(session.upload_id, envelope.to_json())
            self._complete_multipart(session, parts)
            if self._store.head(session.staging_key) is None:
                raise UploadConflict("nothing has been uploaded for this session yet; upload the bundle, then finalize")
            assert self._request_finalize is not None
            self._request_finalize(session.staging_key)
        deadline = time.monotonic() + _FINALIZE_WAIT_SECONDS
        while True:
            current = self._uploads.get(session.upload_id, session.tenant)
            if current.state is UploadState.FINALIZED:
                return dict(current.result or {})
            if current.state is UploadState.FAILED:
                raise error_for_code(current.error_code or "INTERNAL", current.error_message or "")
            if current.state is UploadState.ABORTED:
                raise UploadConflict(f"upload {session.upload_id} was aborted")
            if time.monotonic() > deadline:
                raise UploadConflict(f"upload {session.upload_id} is still being finalized; retry", retry_after=2)
            time.sleep(0.2)

    def finalize_staging_object(self, key: str, *, requested: bool = False) -> dict[str, Any] | None:
        """The worker: finalize the session a staging object belongs to.

        ``requested`` marks an explicit finalize handed over by the route; without it
        this is an S3 notification.  Returns ``None`` for keys that are not staging
        uploads, unknown sessions, and notifications that must wait for the explicit
        finalize (no signature yet while a trust bundle is configured).  Raises
        ``UploadConflict`` while another finalize holds the session, so the queue
        delivers the message again later.
        """
        parts = staging_key_parts(key, self._settings.staging_prefix)
        if parts is None:
            log_event("upload.event.ignored", key=key, reason="not a staging upload")
            return None
        tenant, upload_id = parts
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
    ) -> dict[str, Any]:
        claim = self._uploads.claim_for_finalize(session.upload_id, self._clock(), _FINALIZE_LEASE_SECONDS)
        if claim.kind is ClaimKind.FINALIZED:
            return dict(claim.session.result or {})
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
        stored = self._uploads.complete(session.upload_id, result, claim_id=staged.claim_id)
        self._discard_staging(staged.session)
        if result["status"] == "finalized" and self._on_published is not None:
            self._on_published(result["content_hash"])
        return dict(stored.result or result)

    def _run_stages(
        self,
        staged: _Staged,
        parts: Sequence[UploadedPart] | None,
        envelope: SignatureEnvelope | None,
        learned: dict[str, Any],
    ) -> dict[str, Any]:
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
            # completes the store.
            with stage("finalize.register", **ids):
                outcome = self._register(session, verified, chosen, check)
            if state == "new" or not self._store.exists(self._store.object_key(verified.content_hash, BUNDLE_OBJECT)):
                with stage("finalize.store", **ids):
                    self._store_publish_record(verified, check, checked_at)
                    self._store_canonical(session, etag, verified, chosen if check.key_id else None, Path(scratch))
        status = "already_finalized" if state == "same" or outcome == "already" else "finalized"
        return {
            "upload_id": session.upload_id,
            "content_hash": verified.content_hash,
            "extension": manifest.name,
            "version": manifest.version,
            "status": status,
            "signature_status": str(check.status),
            "key_id": check.key_id,
            "size": verified.compressed_size,
        }

    def _complete_multipart(self, session: UploadSession, parts: Sequence[UploadedPart] | None) -> None:
        if not session.multipart_upload_id or not session.part_size:
            return
        if self._store.head(session.staging_key) is not None:
            return  # completed by an earlier attempt that crashed before recording it
        bucket, key, mpu = self._store.bucket, session.staging_key, session.multipart_upload_id
        held = list(parts) if parts is not None else list_parts(self._s3, bucket, key, mpu)
        expected = len(part_layout(session.declared_size, session.part_size))
        if len(held) != expected:
            raise UploadConflict(f"the upload has {len(held)} of its {expected} parts; upload the rest, then finalize")
        complete_multipart(self._s3, bucket, key, mpu, held)

    def _check_size(self, session: UploadSession) -> str:
        info = self._store.head(session.staging_key)
        if info is None:
            raise UploadConflict("nothing has been uploaded for this session yet; upload the bundle, then finalize")
        if info.size > session.declared_size:
            raise BundleTooLarge(f"{info.size} bytes were uploaded but {session.declared_size} were declared")
        if info.size < session.declared_size:
            raise BundleCorrupt(f"the upload is incomplete: {info.size} of the declared {session.declared_size} bytes")
        return info.etag

    def _verify(self, session: UploadSession, etag: str, scratch: Path) -> VerifiedBundle:
        expected = f"sha256:{session.declared_sha256}" if session.declared_sha256 else None
        stream = self._store.open_stream(session.staging_key, if_match=etag)
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
                abort_multipart(self._s3, self._store.bucket, session.staging_key, session.multipart_upload_id)
            self._store.delete(session.staging_key)
        except ExtError as exc:
            log_event("upload.cleanup_failed", upload_id=session.upload_id, outcome=exc.code, message=exc.message)

    # --- abort ------------------------------------------------------------------------

    def abort(self, identity: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        """Abort the caller's own upload: the session first, so no finalize can start, then storage."""
        upload_id = self._admin_upload_id(identity, body)
        session = self._uploads.abort(upload_id, identity.tenant)
        self._discard_staging(session)
        log_event("upload.abort", tenant=identity.tenant, upload_id=upload_id)
        return {"upload_id": upload_id, "status": "aborted"}

    def _admin_upload_id(self, identity: Identity, body: Mapping[str, Any]) -> str:
        """The checks every upload-session route starts with: admin, rate limit, an ``upload_id``."""
        identity.require_admin()
        self._rate_limit(identity)
        upload_id = body.get("upload_id")
        if not isinstance(upload_id, str) or not upload_id:
            raise BadRequest("`upload_id` is required")
        return upload_id

    def _rate_limit(self, identity: Identity) -> None:
        self._limiter.hit(f"upload#{identity.tenant}", self._settings.upload_rate_limit_per_minute, self._clock())
