"""Ports on 127.0.0.1: a free one for a server, and a clear refusal of a busy one."""

from __future__ import annotations

import socket

from chalicelib.errors import UsageError

__all__ = ["ensure_free", "free_port"]


def free_port() -> int:
    """A port nothing listens on right now (another process may take it before the caller binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_free(port: int) -> None:
    """Refuse a busy port up front, with a message a person can act on.

    Busy means something listens on it.  Connections a stopped server left in TIME_WAIT do not count:
    the servers bind with ``SO_REUSEADDR`` (as the standard library's HTTP servers do), so this check
    does too, and a restart on the same ports succeeds at once.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"port {port} on 127.0.0.1 is in use; stop what uses it or pass another --port") from None
