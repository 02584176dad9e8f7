"""The ``sha256:<64 lowercase hex digits>`` form of content hashes and signing key ids."""

from __future__ import annotations

import re

__all__ = ["CONTENT_HASH_RE", "DIGEST_RULE", "HEX_DIGEST_RE", "format_content_hash", "hex_digest_of"]

HEX_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
"""A bare sha256 hex digest, whole (use ``fullmatch``)."""
CONTENT_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
"""A content hash or key id, whole (use ``fullmatch``)."""
DIGEST_RULE = "'sha256:' followed by 64 lowercase hex digits"
""":data:`CONTENT_HASH_RE` in words, for messages."""


def format_content_hash(hex_digest: str) -> str:
    """The content hash of a sha256 hex digest."""
    return f"sha256:{hex_digest}"


def hex_digest_of(value: str, *, bare_ok: bool = False) -> str | None:
    """The 64 hex digits of the content hash ``value`` (also of a bare digest when ``bare_ok``); None when
    ``value`` is neither."""
    if CONTENT_HASH_RE.fullmatch(value):
        return value.removeprefix("sha256:")
    return value if bare_ok and HEX_DIGEST_RE.fullmatch(value) else None
