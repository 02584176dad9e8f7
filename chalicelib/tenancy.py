"""Who owns a piece of extension state: one tenant's install of one extension.

KV entries and secrets are keyed by an :class:`InstallScope`, never by an install id, so they outlive
an uninstall (a reinstall finds them) and are shared by every version of the install.  The scope's
:attr:`~InstallScope.key` is the one string the tables use; it is unambiguous because neither a tenant
id nor an extension name can hold ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chalicelib.errors import BadRequest

__all__ = ["EXTENSION_NAME", "TENANT_ID", "InstallScope", "is_extension_name"]

TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A token's ``tenant`` claim (``chalicelib.auth`` accepts nothing else)."""

EXTENSION_NAME = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+")
"""A manifest ``name`` (the schema's pattern; a test holds the two together), at most 128 characters."""

_MAX_NAME = 128


def is_extension_name(name: str) -> bool:
    """Whether ``name`` is one an extension can have (so state may exist under it)."""
    return len(name) <= _MAX_NAME and EXTENSION_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class InstallScope:
    """One tenant's install of one extension, whatever its version: the owner of KV data and secrets."""

    tenant: str
    extension: str

    def __post_init__(self) -> None:
        if not TENANT_ID.fullmatch(self.tenant):
            raise BadRequest(f"{self.tenant[:80]!r} is not a tenant id")
        if not is_extension_name(self.extension):
            raise BadRequest(f"{self.extension[:140]!r} is not an extension name")

    @property
    def key(self) -> str:
        """``tenant/extension``: the partition of this install's state."""
        return f"{self.tenant}/{self.extension}"
