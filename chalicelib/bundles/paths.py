"""Bundle member paths: one normal form, and every unsafe spelling refused.

A member path is relative, UTF-8, ``/``-separated, with no empty, ``.`` or ``..``
segments, no backslashes and no control or bidirectional-override characters.
Archives made by standard tools (``tar -C dir -cf - .``) prefix members with
``./``; that prefix is stripped, and the root ``./`` entry is not a member.
"""

from __future__ import annotations

import unicodedata

from chalicelib.errors import BundleUnsafePath

__all__ = ["ROOT", "collision_key", "normalize_member_path"]

ROOT = ""
"""What the archive root (``.`` or ``./``) normalizes to; callers skip it."""

# C0 and C1 controls, DEL, and the bidi controls that make a name display as
# something other than what it is ("Trojan Source").
_FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20)]
    + [chr(0x7F)]
    + [chr(c) for c in range(0x80, 0xA0)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\ufeff"]
)


def normalize_member_path(raw: str, *, max_bytes: int = 240, max_depth: int = 16) -> str:
    """Return the normal form of ``raw`` or raise ``BUNDLE_UNSAFE_PATH``.

    A single trailing ``/`` (a directory) is dropped; the root (``.``, ``./``)
    normalizes to :data:`ROOT`.

    >>> normalize_member_path("./ui/index.html")
    'ui/index.html'
    >>> normalize_member_path("./")
    ''
    """
    shown = repr(raw[:80])
    if "\\" in raw:
        raise BundleUnsafePath(f"path {shown} contains a backslash")
    bad = next((c for c in raw if c in _FORBIDDEN), None)
    if bad is not None:
        raise BundleUnsafePath(f"path {shown} contains the control character U+{ord(bad):04X}")
    if raw.startswith("/"):
        raise BundleUnsafePath(f"path {shown} is absolute")
    path = raw[2:] if raw.startswith("./") else raw
    if path in ("", ".", "./"):
        return ROOT
    if path.endswith("/"):
        path = path[:-1]
    segments = path.split("/")
    for segment in segments:
        if segment == "":
            raise BundleUnsafePath(f"path {shown} has an empty segment")
        if segment in (".", ".."):
            raise BundleUnsafePath(f"path {shown} has a {segment!r} segment")
    size = len(path.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise BundleUnsafePath(f"path {shown} is {size} bytes long (limit {max_bytes})")
    if len(segments) > max_depth:
        raise BundleUnsafePath(f"path {shown} is {len(segments)} levels deep (limit {max_depth})")
    return path


def collision_key(path: str) -> str:
    """Two members with the same key would land on one file somewhere.

    Unicode-equivalent spellings (NFC) and case variants collide on common
    file systems (macOS, Windows), so they count as duplicates.
    """
    return unicodedata.normalize("NFC", path).casefold()
