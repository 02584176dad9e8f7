"""The README's "Your own extension in five commands", run as written (the README block is the source).

Each command runs in bash, in the clone, as a person would type it; the long-running one (terminal 1)
runs in the background until its first round is installed, then the next runs in "terminal 2".  Two
substitutions, both outside what the block promises: ``$REPO_URL`` is this checkout (the clone is of its
committed HEAD), and ``make venv``, the toolchain install the issue excludes from the time, links this test
run's virtualenv instead of installing one.  The test prints the time from the clone to the answer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- author-quickstart:start -->\n```sh\n(.*?)```\n<!-- author-quickstart:end -->", re.S)
LINE = re.compile(r"^(?P<command>.*?)\s+#\s(?P<comment>.*)$")
DEFAULT_PORTS = (8700, 8701, 8702)


def quickstart() -> list[tuple[str, str]]:
    """The block's commands with their comments."""
    block = BLOCK.search((ROOT / "README.md").read_text())
    assert block, "README.md has no author-quickstart block"
    found = [LINE.match(line) for line in block.group(1).splitlines() if line.strip()]
    assert all(found), "every line of the block is a command and its comment"
    return [(m.group("command"), m.group("comment")) for m in found if m]


def bash(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command!r} failed:\n{done.stdout}\n{done.stderr}"
    return done


def ports_free() -> bool:
    from devstack.ports import ensure_free

    try:
        for port in DEFAULT_PORTS:
            ensure_free(port)
    except Exception:
        return False
    return True


def test_the_readme_gets_an_author_from_a_clone_to_their_extension_in_five_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None]
) -> None:
    commands = quickstart()
    assert len(commands) <= 5
    clone, venv, init, dev, call = (command for command, _ in commands)
    assert clone.startswith('git clone "$REPO_URL" ext-platform && cd ext-platform')
    assert venv == "make venv"
    assert "keeps running" in commands[3][1]
    env = {k: v for k, v in os.environ.items() if k not in ("EXT_API_URL", "EXT_TOKEN", "VIRTUAL_ENV")}
    env.update(REPO_URL=str(ROOT), TMPDIR=str(tmp_path), EXTCTL_STATE_DIR=str(tmp_path / "state"))

    started = time.perf_counter()
    bash(clone, tmp_path, env)
    checkout = tmp_path / "ext-platform"
    venv_started = time.perf_counter()
    (checkout / ".venv").symlink_to(Path(sys.executable).parent.parent)
    venv_s = time.perf_counter() - venv_started
    bash(init, checkout, env)
    # Another stack on this machine may hold the default ports: then let this one pick free ones.
    dev_command = dev if ports_free() else f"{dev} --port 0"
    log = tmp_path / "terminal-1.log"
    with log.open("w") as terminal:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {dev_command}"], cwd=checkout, env=env, stdout=terminal, stderr=terminal
        )
    try:
        deadline = time.monotonic() + 240
        installed: list[str] = []
        while not installed and time.monotonic() < deadline and process.poll() is None:
            installed = [line for line in log.read_text().splitlines() if " installed in " in line and "dev." in line]
            time.sleep(0.1)
        assert installed, log.read_text()[-4000:]
        answer = bash(call, checkout, env)
        total_s = time.perf_counter() - started - venv_s
        assert json.loads(answer.stdout) == {"message": "Hello, you!"}
        assert re.search(r"^HTTP 200 \(\d+ ms, request id [0-9a-f-]+\)$", answer.stderr, re.M)
        ui = requests.get(installed[0].split("; UI ", 1)[1], timeout=30)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()[-4000:]
    record_property("quickstart_s", round(total_s, 1))
    with capsys.disabled():
        print(f"\nREADME quickstart: clone → own extension answering: {total_s:.1f} s (make venv excluded)")
