"""``extctl dev --watch DIR``: on every change of DIR, rebuild, repack, republish and reinstall it.

One round (:meth:`ProjectWatcher.publish`), each stage raising a typed error that the round reports and
survives:

1. build the guest in the project's language (:func:`extctl.build.build_project`: C, Python or JS);
2. pack it as a fresh dev version, ``<version>-dev.<n>`` (a SemVer prerelease, so it sorts below the
   release it leads to), without touching the project's manifest, and verify it as finalize will;
3. sign it with the stack's key, when the stack has a trust bundle;
4. publish it through the API and install it in the developer's tenant.

Changes are found by polling the project's file times and sizes (``dist/``, ``node_modules/``, hidden
files and bundles aside), which needs no dependency and sees an editor's atomic save as one change; a
change waits until the files stop moving, so a save of many files is one round.  Each round prints one
line: the outcome and the time it took.  A round whose sources did not change (a touched file) is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from chalicelib.errors import ExtError, UsageError
from extctl.api import ApiClient

__all__ = ["DevLoop", "ProjectWatcher", "Round", "dev_version", "start_dev_loop"]

POLL_INTERVAL_S = 0.1
SETTLE_S = 0.05
_IGNORED_DIRS = frozenset({"dist", "node_modules", "__pycache__", "target", "build"})
_IGNORED_SUFFIXES = (".tar.zst", ".sig", ".tmp", ".swp", "~")

Snapshot = dict[str, tuple[int, int]]


def dev_version(version: str, n: int) -> str:
    """``version`` as its ``n``-th dev build: ``1.2.0`` → ``1.2.0-dev.n``, ``1.2.0-rc.1`` → ``1.2.0-rc.1.dev.n``."""
    core = version.split("+", 1)[0]
    return f"{core}.dev.{n}" if "-" in core else f"{core}-dev.{n}"


def snapshot(project: Path) -> Snapshot:
    """Each watched file's (mtime_ns, size), by path relative to ``project``."""
    found: Snapshot = {}
    for root, dirs, files in os.walk(project):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _IGNORED_DIRS]
        for name in files:
            if name.startswith(".") or name.endswith(_IGNORED_SUFFIXES):
                continue
            path = Path(root) / name
            try:
                info = path.stat()
            except FileNotFoundError:
                continue  # removed while we looked: the next poll sees it gone
            found[path.relative_to(project).as_posix()] = (info.st_mtime_ns, info.st_size)
    return found


@dataclass(frozen=True)
class Round:
    """What one round did: ``ok``, the version it installed (or the error), and how long it took."""

    ok: bool
    seconds: float
    version: str | None = None
    content_hash: str | None = None
    ui_url: str | None = None
    error: str | None = None

    def line(self, name: str, at: datetime) -> str:
        clock = at.strftime("%H:%M:%S")
        if not self.ok:
            return f"[{clock}] {name}: {self.error} ({self.seconds:.2f} s); still watching"
        ui = f"; UI {self.ui_url}" if self.ui_url else ""
        return f"[{clock}] {name}@{self.version} installed in {self.seconds:.2f} s{ui}"


class ProjectWatcher:
    """Rebuilds and republishes one project through ``api``; :meth:`run` polls until ``stop`` is set."""

    def __init__(self, project: Path, api: ApiClient, *, runner_url: str, key: Path | None = None) -> None:
        if not (project / "manifest.json").is_file():
            raise UsageError(f"--watch {project}: no manifest.json there (make one with `extctl init`)")
        self.project = project
        self._api = api
        self._runner_url = runner_url.rstrip("/")
        self._key = key
        self._builds = 0
        self._published_digest: str | None = None

    @property
    def name(self) -> str:
        try:
            return str(json.loads((self.project / "manifest.json").read_text("utf-8"))["name"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.project.name

    def publish(self) -> Round | None:
        """One round; None when the bundle's sources are what was last published."""
        started = time.perf_counter()
        try:
            return self._publish(started)
        except ExtError as exc:
            return Round(ok=False, seconds=time.perf_counter() - started, error=f"{exc.code}: {exc.message}")
        except OSError as exc:
            error = f"IO_ERROR: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            return Round(ok=False, seconds=time.perf_counter() - started, error=error)

    def _publish(self, started: float) -> Round | None:
        from chalicelib.bundles.manifest import Manifest
        from chalicelib.bundles.pack import collect_members
        from extctl.build import build_project

        build_project(self.project)
        manifest = Manifest.parse((self.project / "manifest.json").read_bytes())
        members = collect_members(self.project)
        digest = _digest(members)
        if digest == self._published_digest:
            return None
        self._builds += 1
        version = dev_version(manifest.version, self._builds)
        with tempfile.TemporaryDirectory(prefix="extctl-watch-") as tmp:
            bundle, content_hash = self._pack(members, version, Path(tmp))
            result = self._upload(bundle, content_hash)
        self._api.post("/installs", {"extension": result["extension"], "version": result["version"]})
        self._published_digest = digest
        ui = manifest.ui.entry if manifest.ui is not None else None
        ui_url = None
        if ui is not None:
            ui_path = str(PurePosixPath(ui).relative_to("ui"))
            ui_url = f"{self._runner_url}/ext-ui/{manifest.name}/{content_hash}/{ui_path}"
        return Round(True, time.perf_counter() - started, version, content_hash, ui_url)

    def _pack(self, members: list[Any], version: str, tmp: Path) -> tuple[Path, str]:
        """The bundle of ``members`` with the manifest's version set to ``version``, verified."""
        from chalicelib.bundles.pack import Member, write_bundle
        from chalicelib.bundles.verify import verify_file
        from chalicelib.config import load_settings

        document = json.loads((self.project / "manifest.json").read_text("utf-8"))
        document["version"] = version
        manifest = tmp / "manifest.json"
        manifest.write_text(json.dumps(document, indent=2), "utf-8")
        chosen = [Member(m.path, manifest) if m.path == "manifest.json" else m for m in members]
        bundle = tmp / "bundle.tar.zst"
        with bundle.open("wb") as handle:
            write_bundle(chosen, handle)
        verified = verify_file(bundle, load_settings().bundle_limits)
        return bundle, verified.content_hash

    def _upload(self, bundle: Path, content_hash: str) -> dict[str, Any]:
        from extctl.publish import publish_bundle

        if self._key is not None:
            from chalicelib.bundles.signing import load_private_key, sign_content_hash

            envelope = sign_content_hash(content_hash, load_private_key(self._key.read_bytes()))
            bundle.with_name(bundle.name + ".sig").write_text(envelope.to_json(), "utf-8")
        return dict(publish_bundle(self._api, bundle).result)

    def run(self, stop: threading.Event, report: Callable[[str], None]) -> None:
        """Publish now, then again after every change, until ``stop`` is set; ``report`` gets each line."""
        self._report(self.publish(), report)
        seen = snapshot(self.project)
        while not stop.wait(POLL_INTERVAL_S):
            current = snapshot(self.project)
            if current == seen:
                continue
            # Let a save of several files (or a formatter running after it) finish first.
            while not stop.wait(SETTLE_S):
                settled = snapshot(self.project)
                if settled == current:
                    break
                current = settled
            seen = current
            self._report(self.publish(), report)

    def _report(self, outcome: Round | None, report: Callable[[str], None]) -> None:
        if outcome is not None:
            report(outcome.line(self.name, datetime.now()))


def _digest(members: list[Any]) -> str:
    """What the bundle holds, version aside: paths and contents of its files."""
    digest = hashlib.sha256()
    for member in members:
        digest.update(member.path.encode("utf-8") + b"\0")
        if member.source is not None:
            digest.update(member.source.read_bytes())
    return digest.hexdigest()


class DevLoop:
    """What ``extctl dev`` runs beside the stack: its session file and, with ``--watch``, the watcher."""

    def __init__(self, api: str, runner: str, token: str) -> None:
        self._api, self._runner, self._token = api, runner, token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, watch: Path | None, key: Path | None, report: Callable[[str], None]) -> None:
        from extctl.session import DevSession, write_session

        write_session(DevSession(api=self._api, runner=self._runner, token=self._token, pid=os.getpid()))
        if watch is None:
            return
        watcher = ProjectWatcher(watch, ApiClient(self._api, self._token), runner_url=self._runner, key=key)
        self._thread = threading.Thread(target=watcher.run, args=(self._stop, report), name="extctl-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        from extctl.session import clear_session

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        clear_session(os.getpid())


def start_dev_loop(urls: Any, watch: Path | None, key: Path | None, report: Callable[[str], None]) -> DevLoop:
    """Record the stack's session and, with ``watch``, start watching that project; stop it with ``stop()``."""
    loop = DevLoop(urls.api, urls.runner, urls.token)
    loop.start(watch, key, report)
    return loop
