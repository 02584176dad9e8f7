"""``extctl publish``: verify locally, initiate, upload (resumably), finalize.

1. verify the bundle offline (the same checks finalize runs) and read its signature;
2. resume a pending upload of the same bytes to the same API if one is recorded,
   else initiate a new one;
3. upload: one PUT, or multipart parts in parallel, each retried with backoff;
   parts S3 already holds are skipped on resume;
4. finalize (retried while another finalize holds the session);
5. forget the resume record.

An interrupted publish keeps its record in ``$XDG_CACHE_HOME/extctl/uploads/``, so
running the same command again continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.bundles.signing import SignatureEnvelope
from chalicelib.bundles.verify import VerifiedBundle, verify_file
from chalicelib.config import load_settings
from chalicelib.errors import ExtError, SignatureInvalid
from extctl.api import ApiClient, with_retries

__all__ = ["PublishResult", "Progress", "publish_bundle", "state_dir"]

Progress = Callable[[int], None]
"""Called with the number of bytes just uploaded."""

_PARALLEL_PARTS = 4


@dataclass(frozen=True)
class PublishResult:
    result: dict[str, Any]
    resumed: bool
    uploaded_bytes: int


def state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "extctl" / "uploads"


def _state_file(api: ApiClient, content_hash: str) -> Path:
    api_id = hashlib.sha256(api.base_url.encode()).hexdigest()[:12]
    return state_dir() / f"{api_id}-{content_hash.split(':')[1]}.json"


def _read_signature(path: Path) -> SignatureEnvelope:
    try:
        return SignatureEnvelope.parse(path.read_bytes()[: 16 * 1024 + 1])
    except FileNotFoundError:
        raise SignatureInvalid(f"signature file {path} does not exist") from None


def _load_resume(api: ApiClient, state: Path, size: int) -> dict[str, Any] | None:
    """The pending session recorded for these bytes, with fresh URLs, if it can go on."""
    try:
        recorded = json.loads(state.read_text("utf-8"))
        described: dict[str, Any] = api.get(f"/ext-bundles/uploads/{recorded['upload_id']}")
    except (OSError, ValueError, KeyError, ExtError):
        state.unlink(missing_ok=True)
        return None
    if described.get("state") == "finalized" or (
        described.get("state") == "pending" and described.get("method") == "MULTIPART" and described["size"] == size
    ):
        return described
    state.unlink(missing_ok=True)
    return None


def _upload_parts(
    api: ApiClient, bundle: Path, target: Mapping[str, Any], held: list[dict[str, Any]], progress: Progress
) -> list[dict[str, Any]]:
    part_size = int(target["part_size"])

    def send(part: Mapping[str, Any]) -> dict[str, Any]:
        number = int(part["part_number"])
        with bundle.open("rb") as handle:
            handle.seek((number - 1) * part_size)
            data = handle.read(part_size)
        etag = with_retries(lambda: api.put_bytes(part["url"], data, {}))
        progress(len(data))
        return {"part_number": number, "etag": etag}

    done = [{"part_number": p["part_number"], "etag": p["etag"]} for p in held]
    pool = ThreadPoolExecutor(max_workers=_PARALLEL_PARTS, thread_name_prefix="part")
    try:
        futures = [pool.submit(send, part) for part in target["parts"]]
        for future in as_completed(futures):
            done.append(future.result())
    finally:
        # On an error or Ctrl-C, parts not yet started stay for the resumed run.
        pool.shutdown(wait=True, cancel_futures=True)
    return sorted(done, key=lambda p: int(p["part_number"]))


def publish_bundle(
    api: ApiClient,
    bundle: Path,
    *,
    signature: Path | None = None,
    progress: Progress = lambda _: None,
    on_total: Callable[[int, int], None] = lambda _total, _done: None,
) -> PublishResult:
    """Publish ``bundle`` and return finalize's answer.

    ``on_total(total, already_uploaded)`` is called once the upload plan is known,
    so a progress bar can start where a resumed upload left off.
    """
    verified: VerifiedBundle = verify_file(bundle, load_settings().bundle_limits)
    sig_path = signature or bundle.with_name(bundle.name + ".sig")
    envelope = _read_signature(sig_path) if signature is not None or sig_path.exists() else None
    size, digest = verified.compressed_size, verified.hex_digest
    state = _state_file(api, verified.content_hash)
    target = _load_resume(api, state, size)
    resumed = target is not None
    if target is not None and target.get("state") == "finalized":
        state.unlink(missing_ok=True)
        on_total(size, size)
        return PublishResult(result=dict(target["result"]), resumed=True, uploaded_bytes=0)
    if target is None:
        body: dict[str, Any] = {"size": size, "sha256": digest}
        if envelope is not None:
            body["signature"] = envelope.to_dict()
        target = with_retries(lambda: api.post("/ext-bundles/initiate-upload", body))
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"upload_id": target["upload_id"], "bundle": str(bundle)}), "utf-8")
    held = list(target.get("uploaded_parts", []))
    already = sum(int(p.get("size") or 0) for p in held)
    on_total(size, already)
    finalize: dict[str, Any] = {"upload_id": target["upload_id"]}
    if envelope is not None:
        finalize["signature"] = envelope.to_dict()
    if target["method"] == "PUT":
        data = bundle.read_bytes()
        with_retries(lambda: api.put_bytes(target["url"], data, target["headers"]))
        progress(len(data))
    else:
        finalize["parts"] = _upload_parts(api, bundle, target, held, progress)
    result = with_retries(lambda: api.post("/ext-bundles/finalize", finalize), attempts=8)
    state.unlink(missing_ok=True)
    return PublishResult(result=dict(result), resumed=resumed, uploaded_bytes=size - already)
