"""The running ``extctl dev``'s URLs and token, so commands in another terminal find them without exports.

``extctl dev`` writes them (mode 0600: the file holds an admin token of the local stack) and removes
them when it stops; :class:`~extctl.api.ApiClient` reads them when neither ``--api``/``EXT_API_URL`` nor
``--token``/``EXT_TOKEN`` is given.  A file left by a stack that died is ignored (its process is gone).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DevSession", "clear_session", "read_session", "session_path", "write_session"]


@dataclass(frozen=True)
class DevSession:
    api: str
    runner: str
    token: str
    pid: int


def session_path() -> Path:
    """``$EXTCTL_STATE_DIR/dev.json``, by default under ``$XDG_STATE_HOME`` (``~/.local/state``)/extctl."""
    base = os.environ.get("EXTCTL_STATE_DIR")
    if base:
        return Path(base) / "dev.json"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "extctl" / "dev.json"


def write_session(session: DevSession) -> Path:
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(session), handle)
    os.replace(temp, path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_session() -> DevSession | None:
    """The running stack's session, or None (no file, an unreadable one, or its process is gone)."""
    try:
        data = json.loads(session_path().read_text("utf-8"))
        session = DevSession(
            api=str(data["api"]), runner=str(data["runner"]), token=str(data["token"]), pid=int(data["pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return session if _alive(session.pid) else None


def clear_session(pid: int) -> None:
    """Remove the session file if it is still ``pid``'s (another stack may have started since)."""
    current = read_session()
    if current is not None and current.pid == pid:
        session_path().unlink(missing_ok=True)
