"""The author's loop: from saving a one-line change to the new answer through the gateway.

``watch_edit_to_answer_s``: ``extctl dev --watch``'s watcher (:class:`extctl.watch.ProjectWatcher`, the
code the command runs) on a copy of the C example, on the local stack; each edit changes the greeting, and
the clock runs from the write until the gateway answers with the new one (polled every 20 ms).  The
median of a few edits; the Python and JS templates once each, when their toolchains are here.  Each
round's own time (change seen → installed), from the watcher's lines, is reported beside it.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
EDITS = 5
_POLL_S = 0.02
_TIMEOUT_S = 180.0


def _project(source: Path, work: Path, name: str) -> Path:
    project = work / name
    shutil.copytree(source, project, ignore=shutil.ignore_patterns("dist", "node_modules", "__pycache__"))
    if source.name == "hello":
        shutil.copytree(source / "dist", project / "dist")
    manifest = json.loads((project / "manifest.json").read_text())
    (project / "manifest.json").write_text(json.dumps({**manifest, "name": name}, indent=2))
    return project


def _greeting_file(project: Path) -> Path:
    """The source file holding the greeting."""
    for path in sorted((project / "src").rglob("*")):
        if path.is_file() and "Hello, " in path.read_text(errors="replace"):
            return path
    raise RuntimeError(f"no greeting in {project}/src")


def _edit_to_answer(path: Path, previous: str, word: str, url: str, token: str) -> float:
    """Seconds from writing ``word`` in place of ``previous`` to an answer through the gateway holding it."""
    # The last occurrence: the code's; a comment above it may quote the greeting too.
    head, found, tail = path.read_text().rpartition(previous)
    if not found:
        raise RuntimeError(f"{previous!r} is not in {path}")
    started = time.perf_counter()
    path.write_text(head + word + tail)
    deadline = started + _TIMEOUT_S
    answer = None
    while time.perf_counter() < deadline:
        answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if answer.status_code == 200 and word in answer.text:
            return time.perf_counter() - started
        if answer.status_code == 502:  # the new version fails: waiting longer will not help
            break
        time.sleep(_POLL_S)
    last = f"{answer.status_code} {answer.text[:200]}" if answer is not None else "nothing"
    raise RuntimeError(f"{url} never answered with {word!r}; last: {last}")


def _measure(source: Path, work: Path, name: str, urls: Any, edits: int) -> dict[str, Any]:
    from extctl.api import ApiClient
    from extctl.watch import ProjectWatcher

    project = _project(source, work, name)
    greeting = _greeting_file(project)
    lines: list[str] = []
    stop = threading.Event()
    watcher = ProjectWatcher(project, ApiClient(urls.api, urls.token), runner_url=urls.runner)
    thread = threading.Thread(target=watcher.run, args=(stop, lines.append), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _TIMEOUT_S
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        if not lines or " installed in " not in lines[0]:
            raise RuntimeError(f"{name}: the first round failed: {lines}")
        url = f"{urls.api}/api/ext/{name}/hello?name=Ada"
        times, previous = [], "Hello, "
        for n in range(edits):
            word = f"Hi{n}, "
            times.append(_edit_to_answer(greeting, previous, word, url, urls.token))
            previous = word
    finally:
        stop.set()
        thread.join(timeout=60)
    rounds = [float(line.split(" installed in ", 1)[1].split(" s", 1)[0]) for line in lines if " installed in " in line]
    return {
        "edit_to_answer_s": round(statistics.median(times), 3),
        "runs": [round(t, 3) for t in times],
        "rounds_s": rounds[1:],
    }


def run() -> dict[str, Any]:
    from devstack.stack import LocalStack, StackConfig

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        work = Path(tmp)
        # Polling the gateway every 20 ms would hit its rate limit (600 a minute): off, as in the runner suite.
        limits_off = {"EXT_GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "EXT_GATEWAY_TENANT_CONCURRENCY": "0"}
        stack = LocalStack(StackConfig(cache_dir=work / "cache", settings=limits_off))
        urls = stack.start()
        try:
            c = _measure(ROOT / "examples" / "hello", work, "com.bench.loopc", urls, EDITS)
            results["watch_edit_to_answer_s"] = c["edit_to_answer_s"]
            results["watch_edit_to_answer_c_runs_s"] = c["runs"]
            results["watch_round_c_s"] = c["rounds_s"]
            for language in ("python", "js"):
                try:
                    other = _measure(
                        ROOT / "examples" / f"hello-{language}", work, f"com.bench.loop{language}", urls, 1
                    )
                except Exception as exc:  # a missing toolchain: report why, keep the C figure
                    results[f"watch_edit_to_answer_{language}_s"] = f"skipped: {type(exc).__name__}: {exc}"[:300]
                else:
                    results[f"watch_edit_to_answer_{language}_s"] = other["edit_to_answer_s"]
        finally:
            stack.stop()
    results["target_c_s"] = 3.0
    return results
