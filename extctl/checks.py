"""``extctl verify``: every check finalize runs, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalicelib.bundles.signing import SignatureEnvelope, TrustBundle, verify_signature
from chalicelib.bundles.verify import verify_file
from chalicelib.config import load_settings
from chalicelib.errors import SignatureInvalid

__all__ = ["verify_offline"]

_MAX_SIGNATURE_FILE = 16 * 1024


def _read_envelope(path: Path) -> SignatureEnvelope:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_SIGNATURE_FILE + 1)
    except FileNotFoundError:
        raise SignatureInvalid(f"signature file {path} does not exist") from None
    return SignatureEnvelope.parse(raw)


def verify_offline(bundle: Path, *, signature: Path | None, trust_bundle: str | None) -> dict[str, Any]:
    """Verify ``bundle`` (and its signature) and describe it as JSON-ready data.

    Without an explicit ``signature``, ``BUNDLE.sig`` is used when it exists.
    With a trust bundle, a missing or bad signature fails (fail closed).
    """
    trust = TrustBundle.load(trust_bundle) if trust_bundle else None
    verified = verify_file(bundle, load_settings().bundle_limits)
    sig_path = signature or bundle.with_name(bundle.name + ".sig")
    envelope = _read_envelope(sig_path) if signature is not None or sig_path.exists() else None
    check = verify_signature(verified.content_hash, verified.manifest.name, envelope, trust)
    return {
        "valid": True,
        "content_hash": verified.content_hash,
        "size": verified.compressed_size,
        "unpacked_size": verified.unpacked_size,
        "manifest": dict(verified.manifest.raw),
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in verified.files],
        "signature": {"status": check.status.value, "key_id": check.key_id, "key_label": check.key_label},
    }
