"""The ``sha256:<64 lowercase hex digits>`` form of content hashes and signing key ids."""

from __future__ import annotations

import re

__all__ = ["CONTENT_HASH_RE", "DIGEST_RULE", "format_content_hash"]

CONTENT_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
"""A content hash or key id, whole (use ``fullmatch``)."""
DIGEST_RULE = "'sha256:' followed by 64 lowercase hex digits"
""":data:`CONTENT_HASH_RE` in words, for messages."""


def format_content_hash(hex_digest: str) -> str:
    """The content hash of a sha256 hex digest."""
    return f"sha256:{hex_digest}"
