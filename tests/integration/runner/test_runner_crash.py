"""Crash consistency of the runner: the HTTP runner, a real process, is killed (SIGKILL) in the middle of a
call and at each stage of a cache fill, then started again on the same cache dir and port.

As in ``tests/integration/test_finalize_crash.py`` there is no test seam: the kill lands at a stage's log
line (the runner logs the end of each stage of a load at ``DEBUG``) or a moment after it, which is what a
crash is.  What the platform promises, and these tests check:

- mid-call: the caller gets the contract's error (``503 RUNNER_BUSY`` with ``Retry-After``) well before the
  call's deadline, and the same while the runner is down; once it is back, the same call answers as it did
  before the crash;
- mid-fill: the restarted runner starts, never uses what the killed one left half-made (its first call
  answers right), keeps no scratch file, and every entry it keeps is whole;
- a compiler child does not outlive the runner that started it: nothing it would have written lands in
  the cache after the crash.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.storage.s3 import make_s3_client
from chalicelib.storage.store import S3BundleStore
from devstack.ports import free_port
from tests.bundle_factory import bundle, fixed_response_guest, good_files, wasm
from tests.integration.runner_fixtures import REPO, RunnerEnv, execute_payload
from tests.integration.stack import AwsStack, auth, publish

TOKEN = "crash-test-runner-token"
_WAIT_S = 60.0
"""Bound on waits for a process to start or a log line to come (never reached when things work)."""


def fixed_guest(text: str) -> bytes:
    """A ``wasm-core@1`` guest answering every call ``200`` with the body ``text``."""
    body = base64.b64encode(text.encode()).decode()
    return fixed_response_guest({"status": 200, "headers": {"content-type": "text/plain"}, "body_b64": body})


LOOPING_GUEST = """(module
  (import "ext" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "looping")
  (func (export "alloc") (param i32) (result i32) i32.const 8192)
  (func (export "handler") (param i32 i32 i32) (result i32)
    (call $log (i32.const 1) (i32.const 1024) (i32.const 7))
    (loop $forever (br $forever))
    i32.const 0))"""
"""Says so in its log as soon as it runs, then never returns: the call is in flight once the line is out."""


def guest_bundle(name: str, code: bytes, **manifest: Any) -> bytes:
    files = good_files(name=name, **manifest)
    files["dist/main.wasm"] = code
    return bundle(files)


# --- the runner as a process -------------------------------------------------------------------------


class RunnerProcess:
    """``python -m runner_container`` on ``port``; its JSON log lines are collected as they come.

    ``kill_at``: the reader SIGKILLs the process as soon as it reads a line with that event.
    """

    def __init__(self, env: dict[str, str], port: int, *, kill_at: str | None = None) -> None:
        self.port = port
        self.lines: list[dict[str, Any]] = []
        self._kill_at = kill_at
        self._changed = threading.Condition()
        self._ended = False
        command = [sys.executable, "-m", "runner_container", "--host", "127.0.0.1", "--port", str(port)]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, name="runner-log", daemon=True).start()
        self.wait_for("runner.listening")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": None, "text": raw}
            if self._kill_at is not None and line.get("event") == self._kill_at:
                self.process.send_signal(signal.SIGKILL)
                self._kill_at = None
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, event: str, *alternatives: tuple[str, str, object]) -> dict[str, Any]:
        """The first line with ``event``, or with one of the ``alternatives`` (event, field, value); fails if
        the process ends or nothing comes within the bound."""

        def matches(line: dict[str, Any]) -> bool:
            wanted = [(event, "event", event), *alternatives]
            return any(line.get("event") == name and line.get(key) == value for name, key, value in wanted)

        def found() -> dict[str, Any] | None:
            return next((line for line in self.lines if matches(line)), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._ended, timeout=_WAIT_S)
            line = found()
        assert line is not None, f"the runner never logged {event}: {self.lines[-5:]}"
        return line

    def died(self) -> int:
        """The exit status once the process is gone (``-SIGKILL`` after a kill)."""
        return self.process.wait(_WAIT_S)

    def execute(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=_WAIT_S)
        try:
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            connection.request("POST", "/v1/execute", body=json.dumps(payload).encode(), headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(_WAIT_S)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def runners() -> Iterator[list[RunnerProcess]]:
    """Every runner process a test starts, stopped at its end."""
    started: list[RunnerProcess] = []
    yield started
    for runner in started:
        runner.stop()


def runner_env(stack_env: dict[str, str], cache: Path) -> dict[str, str]:
    """The environment of a runner process on the test's moto server, logging at ``DEBUG``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNNER_", "STORAGE_", "EXT_"))}
    return {**inherited, **stack_env, "RUNNER_AUTH_TOKEN": TOKEN, "RUNNER_CACHE_DIR": str(cache), "LOG_LEVEL": "DEBUG"}


def start(runners: list[RunnerProcess], env: dict[str, str], port: int, kill_at: str | None = None) -> RunnerProcess:
    runner = RunnerProcess(env, port, kill_at=kill_at)
    runners.append(runner)
    return runner


# --- the cache on disk ---------------------------------------------------------------------------------


def scratch_files(cache: Path) -> list[str]:
    """What a load or compile in progress writes: anything under ``.incoming/`` and any ``*.tmp`` file."""
    found = [str(p.relative_to(cache)) for p in (cache / ".incoming").rglob("*")]
    found += [str(p.relative_to(cache)) for p in cache.rglob("*.tmp")]
    return sorted(found)


def broken_entries(cache: Path) -> list[str]:
    """Entries that are not whole: an index that does not parse or name the entry, or a file it lists
    whose bytes differ (a code entry holds ``manifest.json`` and every ``.wasm``)."""
    broken = []
    for entry in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            index = json.loads((entry / "index.json").read_bytes())
            assert index["content_hash"] == f"sha256:{entry.name.removesuffix('.ui')}"
            for name, listed in index["files"].items():
                path = entry / "bundle" / name
                if name == "manifest.json" or name.endswith(".wasm") or path.exists():
                    assert hashlib.sha256(path.read_bytes()).hexdigest() == listed["sha256"], name
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            broken.append(f"{entry.name}: {type(exc).__name__} {exc}")
    return broken


def attempt(runner: RunnerProcess, payload: dict[str, Any]) -> None:
    """A call to a runner about to be killed: it may answer first (``503 EXTENSION_NOT_READY`` when its code
    compiles in a job rather than in the call) or not at all; the kill is what matters."""
    with contextlib.suppress(ConnectionError, http.client.HTTPException):
        runner.execute(payload)


def answer_of(reply: tuple[int, dict[str, Any]]) -> tuple[int, int, str]:
    """The runner's status, the guest's status and its body."""
    status, data = reply
    if status != 200:
        return status, 0, json.dumps(data)
    return status, data["status"], base64.b64decode(data["body_b64"]).decode()


# --- killed mid-call -------------------------------------------------------------------------------------


@pytest.fixture
def gateway_port(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """The port the runner will listen on, given to the gateway before the app reads its settings."""
    port = free_port()
    monkeypatch.setenv("RUNNER_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("RUNNER_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("EXT_GATEWAY_TIMEOUT_MS", "30000")
    return port


def install(stack: AwsStack, data: bytes) -> None:
    result = publish(stack, data)
    assert result.status_code == 200, result.json
    body = {"extension": result.json["extension"], "version": result.json["version"]}
    answer = stack.call("POST", "/installs", body)
    assert answer.status_code == 201, answer.json


def gateway_call(stack: AwsStack, path: str) -> Any:
    """One call through the gateway, retried while its code compiles (``503 EXTENSION_NOT_READY``)."""
    for _ in range(100):
        answer = stack.client.http.get(path, headers=auth())
        if answer.status_code != 503 or json.loads(answer.body)["error"]["code"] != "EXTENSION_NOT_READY":
            return answer
        time.sleep(0.2)
    raise AssertionError("the extension's code never compiled")


def assert_runner_busy(answer: Any) -> None:
    """The contract's answer for a runner that is not there: 503 RUNNER_BUSY with a retry hint."""
    body = json.loads(answer.body)
    assert answer.status_code == 503, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == "RUNNER_BUSY"
    assert body["error"]["request_id"]
    assert int(answer.headers["Retry-After"]) >= 1


def test_a_runner_killed_during_a_call_answers_runner_busy_and_the_same_call_works_once_it_is_back(
    gateway_port: int, stack_env: dict[str, str], runners: list[RunnerProcess], tmp_path: Path, request: Any
) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    env = runner_env(stack_env, tmp_path / "cache")
    runner = start(runners, env, gateway_port, kill_at="runner.guest_log")
    install(stack, guest_bundle("com.acme.fixed", fixed_guest("still here")))
    install(stack, guest_bundle("com.acme.loop", wasm(LOOPING_GUEST), capabilities=["cap:log.emit"]))
    before = gateway_call(stack, "/api/ext/com.acme.fixed/hello")
    assert (before.status_code, before.body) == (200, b"still here")

    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(gateway_call(stack, "/api/ext/com.acme.loop/hello")))
    caller.start()
    # The guest logs, then loops: the reader kills the runner at that line, with the call in flight.
    assert runner.died() == -signal.SIGKILL
    caller.join(_WAIT_S)
    assert not caller.is_alive(), "the caller still waits for a runner that is gone"
    assert_runner_busy(answers[0])
    assert_runner_busy(gateway_call(stack, "/api/ext/com.acme.fixed/hello"))

    start(runners, env, gateway_port)
    after = gateway_call(stack, "/api/ext/com.acme.fixed/hello")
    assert (after.status_code, after.body, after.headers["Content-Type"]) == (
        before.status_code,
        before.body,
        before.headers["Content-Type"],
    )
    assert scratch_files(tmp_path / "cache") == []
    assert broken_entries(tmp_path / "cache") == []


# --- killed mid-fill ---------------------------------------------------------------------------------------

# The stages of a cold call, in order: the bundle unpacked and verified in .incoming/, its index written
# there, the entry renamed into place; the compiler child started, its artifact written in .incoming/, the
# artifact renamed next to the bundle (then loaded and uploaded to the store).
FILL_STAGES = [
    "runner.bundle_unpacked",
    "runner.bundle_indexed",
    "runner.bundle_fetched",
    "runner.compile_started",
    "runner.module_compiled",
    "runner.module_installed",
]


def store_of(stack: AwsStack, root: Path) -> RunnerEnv:
    s3 = make_s3_client(stack.settings)
    return RunnerEnv(root, stack.settings, s3, S3BundleStore.from_settings(stack.settings, s3))


def test_a_runner_killed_at_each_stage_of_a_cache_fill_in_turn_restarts_on_what_it_left_and_answers_right(
    stack: AwsStack, stack_env: dict[str, str], runners: list[RunnerProcess], tmp_path: Path
) -> None:
    """A crash loop: each start finds what the last crash left, checks it, and is killed one stage further."""
    text = "filled in the end"
    content_hash = store_of(stack, tmp_path).publish(guest_bundle("com.acme.fill", fixed_guest(text)))
    payload = execute_payload(content_hash, extension="com.acme.fill")
    cache, port = tmp_path / "cache", free_port()
    env = runner_env(stack_env, cache)

    left_behind, reached = {}, []
    for kill_at in FILL_STAGES:
        killed = start(runners, env, port, kill_at=kill_at)
        left_behind[kill_at] = (scratch_files(cache), broken_entries(cache))
        attempt(killed, payload)
        # A kill lands at its line or a moment after: past the next stage, the next start skips that one and
        # the call completes (then this test kills the runner, a crash after the fill).
        if killed.wait_for(kill_at, ("runner.call", "status", 200))["event"] == kill_at:
            reached.append(kill_at)
        killed.stop()
        assert killed.died() == -signal.SIGKILL, kill_at

    restarted = start(runners, env, port)
    left_behind["end"] = (scratch_files(cache), broken_entries(cache))
    assert left_behind == dict.fromkeys([*FILL_STAGES, "end"], ([], []))
    assert reached[0] == FILL_STAGES[0], reached
    assert answer_of(restarted.execute(payload)) == (200, 200, text)
    # The last crash came after the compiled code was in place: the restarted runner loads it, compiling nothing.
    assert not any(line.get("event") == "runner.module_compiled" for line in restarted.lines)
    assert (scratch_files(cache), broken_entries(cache)) == ([], [])


def test_a_runner_killed_while_it_downloads_compiled_code_restarts_and_answers_right(
    stack: AwsStack, stack_env: dict[str, str], runners: list[RunnerProcess], tmp_path: Path
) -> None:
    text = "compiled elsewhere"
    content_hash = store_of(stack, tmp_path).publish(guest_bundle("com.acme.stored", fixed_guest(text)))
    payload = execute_payload(content_hash, extension="com.acme.stored")
    first = start(runners, runner_env(stack_env, tmp_path / "first"), free_port())
    assert answer_of(first.execute(payload)) == (200, 200, text)
    first.wait_for("runner.module_compiled")

    # Another runner finds the compiled code in the store: right after the bundle is in place it downloads it.
    cache, port = tmp_path / "cache", free_port()
    env = runner_env(stack_env, cache)
    killed = start(runners, env, port, kill_at="runner.bundle_fetched")
    attempt(killed, payload)
    killed.wait_for("runner.bundle_fetched")
    assert killed.died() == -signal.SIGKILL

    restarted = start(runners, env, port)
    assert scratch_files(cache) == []
    assert broken_entries(cache) == []
    assert answer_of(restarted.execute(payload)) == (200, 200, text)
    assert not any(line.get("event") == "runner.module_compiled" for line in restarted.lines)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_compiler_child_does_not_outlive_the_runner_that_started_it(
    stack: AwsStack, stack_env: dict[str, str], runners: list[RunnerProcess], tmp_path: Path
) -> None:
    content_hash = store_of(stack, tmp_path).publish(guest_bundle("com.acme.orphan", fixed_guest("orphan")))
    cache = tmp_path / "cache"
    killed = start(runners, runner_env(stack_env, cache), free_port(), kill_at="runner.compile_started")
    attempt(killed, execute_payload(content_hash, extension="com.acme.orphan"))
    child = int(killed.wait_for("runner.compile_started")["pid"])
    assert killed.died() == -signal.SIGKILL

    deadline = time.monotonic() + _WAIT_S
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    # Had the child gone on compiling, its artifact would now sit in the dead runner's .incoming/, where
    # nothing clears it until a runner starts on this cache dir again.
    assert [p.name for p in (cache / ".incoming").glob("*.cwasm")] == []
