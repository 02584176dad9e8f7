"""`extctl dev`'s servers as clients meet them: bursts of connections, restarts on the same ports, and
a log a person can read (issue 14, items 1, 5 and 6)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.admin_ui import ASSETS
from chalicelib.auth import issue_token
from chalicelib.errors import UsageError
from devstack.ports import ensure_free, free_port

pytestmark = pytest.mark.xdist_group("dev-servers")

EXTCTL = str(Path(sys.executable).parent / "extctl")
BURST = 200
CLIENT_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
"""A client gives up after this long: a stalled connection counts as failed, not as slow."""
HUMAN_LINES = (
    "installed com.example.hello@",
    "tokens: HS256 with EXT_AUTH_SECRET",
    "ready; press Ctrl-C to stop",
    "stopping…",
)
"""How the lines `extctl dev` itself prints on stderr start; every other line of its log is a JSON record."""


@dataclass
class Dev:
    process: subprocess.Popen[str]
    log: Path
    urls: dict[str, str]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # With PYTHONFAULTHANDLER (start_dev sets it) SIGABRT writes every thread's stack to the log.
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=30)
            pytest.fail(f"extctl dev did not stop within {STOP_TIMEOUT_S} s:\n{self.log.read_text()[-30000:]}")

    def lines(self) -> list[str]:
        return self.log.read_text("utf-8", errors="replace").splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines() if line.startswith("{")]


def free_ports() -> int:
    """A port P with P, P+1 and P+2 free: `extctl dev --port P` uses all three."""
    return next(port for port in iter(free_port, None) if port + 2 < 65536 and _ports_free_from(port, 3))


def _ports_free_from(port: int, count: int) -> bool:
    try:
        for offset in range(count):
            ensure_free(port + offset)
    except UsageError:
        return False
    return True


def start_dev(workdir: Path, port: int, env: dict[str, str] | None = None, *, example: bool = False) -> Dev:
    """`extctl dev --port PORT` (``--no-example`` unless ``example``), once it printed its URLs (stderr
    goes to a log file)."""
    log = workdir / f"dev-{time.monotonic_ns()}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [EXTCTL, "dev", "--port", str(port), *(() if example else ("--no-example",))],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            env={**os.environ, "TMPDIR": str(workdir), "PYTHONFAULTHANDLER": "1", **(env or {})},
        )
    urls = {"moto": f"http://127.0.0.1:{port + 2}"}
    assert process.stdout is not None
    while len(urls) < 5:
        line = process.stdout.readline()
        if not line:
            break
        key, _, value = line.strip().partition("=")
        urls[key] = value
    if len(urls) < 5:
        process.wait(timeout=60)
        pytest.fail(f"extctl dev did not start (exit {process.returncode}):\n{log.read_text()}")
    # It prints its URLs just before it takes over SIGTERM (to stop cleanly): wait until it has.
    assert _wait_for(lambda: "ready; press Ctrl-C to stop" in log.read_text("utf-8", errors="replace"), 60)
    return Dev(process, log, urls)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    # DEBUG shows the lines a client's disconnect leaves, so the log test knows when they were handled.
    started = start_dev(tmp_path_factory.mktemp("dev-servers"), free_ports(), env={"LOG_LEVEL": "DEBUG"}, example=True)
    yield started
    if started.process.poll() is None:
        started.stop()


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


def _get(address: tuple[str, int], path: str) -> str:
    """One request on a new connection; returns the status line, or why there was none."""
    try:
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT_S) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {address[0]}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError as exc:
        return type(exc).__name__
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def _burst(address: tuple[str, int], paths: list[str], clients: int) -> dict[str, int]:
    """``clients`` connections opened at once, each with one request for the next of ``paths`` in turn;
    how many got which answer."""
    barrier = threading.Barrier(clients)
    outcomes: list[str] = []
    lock = threading.Lock()

    def client(path: str) -> None:
        barrier.wait()
        outcome = _get(address, path)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=client, args=(paths[n % len(paths)],)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT_S * 2)
    counted: dict[str, int] = {}
    for outcome in outcomes:
        counted[outcome] = counted.get(outcome, 0) + 1
    return counted


ADMIN_UI = ["/admin", *(f"/admin/{asset}" for asset in ASSETS if asset != "index.html")]
"""The admin page and its assets, as a browser loading it asks for them at once."""
EXAMPLE = "com.example.hello"
EXAMPLE_UI = ("index.html", "app.js", "style.css")
"""The example extension's UI, which `extctl dev` installs."""


def example_ui(dev: Dev) -> list[str]:
    """The example's UI paths on the runner, loaded once (as a browser loads the page before its assets)."""
    headers = {"Authorization": f"Bearer {dev.urls['EXT_TOKEN']}"}
    url = f"{dev.urls['EXT_API_URL']}/extensions/{EXAMPLE}/versions/1.0.0"
    version = requests.get(url, headers=headers, timeout=30)
    version.raise_for_status()
    paths = [f"/ext-ui/{EXAMPLE}/{version.json()['content_hash']}/{asset}" for asset in EXAMPLE_UI]
    assert _get(_address(dev.urls["EXT_RUNNER_URL"]), paths[0]).endswith(" 200 OK")
    return paths


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "paths", "status"),
    [
        ("EXT_API_URL", ["/healthz"], "200 OK"),
        ("EXT_API_URL", ADMIN_UI, "200 OK"),
        ("EXT_RUNNER_URL", ["/healthz"], "200 OK"),
        ("EXT_RUNNER_URL", "example-ui", "200 OK"),
        ("moto", ["/ext-local-bundles?location"], "200 OK"),
    ],
    ids=["api", "admin-ui", "runner", "ext-ui", "moto"],
)
def test_every_server_answers_a_burst_of_200_connections_without_a_reset(
    dev: Dev, server: str, paths: list[str] | str, status: str
) -> None:
    outcomes = _burst(_address(dev.urls[server]), example_ui(dev) if paths == "example-ui" else list(paths), BURST)

    answered = sum(count for outcome, count in outcomes.items() if outcome.endswith(f" {status}"))
    assert answered == BURST, outcomes


def _reset_mid_request(address: tuple[str, int]) -> None:
    """A client that sends half a request, then resets the connection (as a closed browser tab does)."""
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_client_disconnects_and_aws_traffic_leave_the_dev_log_readable(dev: Dev) -> None:
    for server in ("EXT_API_URL", "EXT_RUNNER_URL"):
        _reset_mid_request(_address(dev.urls[server]))

    def disconnects_logged() -> set[str]:
        return {
            record["event"]
            for record in dev.records()
            if record.get("outcome") == "client_disconnected" and record["level"] == "debug"
        }

    # The pump polls SQS meanwhile: moto serves a request every second.
    _wait_for(lambda: disconnects_logged() == {"api.connection_error", "runner.connection_error"}, 60)
    lines = dev.lines()

    assert [line for line in lines if not line.startswith(("{", *HUMAN_LINES))] == []
    assert [record for record in dev.records() if record["level"] in ("error", "critical")] == []
    assert disconnects_logged() == {"api.connection_error", "runner.connection_error"}


def test_dev_restarts_at_once_on_ports_its_last_run_left_in_time_wait(tmp_path: Path) -> None:
    port = free_ports()
    first = start_dev(tmp_path, port)
    # Each server closes these connections first, so it is the side left with them in TIME_WAIT.
    for url in (first.urls["EXT_API_URL"], first.urls["EXT_RUNNER_URL"], first.urls["moto"]):
        assert _get(_address(url), "/healthz").startswith("HTTP/1.")
    assert first.stop() == 0

    second = start_dev(tmp_path, port)

    assert second.urls["EXT_API_URL"] == f"http://127.0.0.1:{port}"
    assert second.stop() == 0


def test_dev_refuses_a_port_really_in_use_with_a_usage_error(tmp_path: Path) -> None:
    port = free_ports()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port + 1))
        busy.listen()

        ran = subprocess.run(
            [EXTCTL, "dev", "--no-example", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert ran.returncode == 1
    assert ran.stdout == ""
    assert ran.stderr.strip().splitlines()[-1] == (
        f"error: USAGE: port {port + 1} on 127.0.0.1 is in use; stop what uses it or pass another --port"
    )
    assert "Traceback" not in ran.stderr


def test_dev_takes_ext_auth_secret_from_the_environment_so_tokens_of_any_tenant_work(tmp_path: Path) -> None:
    secret = "a-secret-this-test-chose-0123456789"
    dev = start_dev(tmp_path, free_ports(), env={"EXT_AUTH_SECRET": secret})
    try:
        api = dev.urls["EXT_API_URL"]
        minted = issue_token(secret, sub="tester", tenant="globex", roles=["user"], ttl_seconds=600)
        forged = issue_token("some-other-secret-0123456789abcdef", sub="x", tenant="globex", roles=["user"])

        mine = requests.get(f"{api}/installs", headers={"Authorization": f"Bearer {minted}"}, timeout=30)
        refused = requests.get(f"{api}/installs", headers={"Authorization": f"Bearer {forged}"}, timeout=30)
        as_user = requests.post(
            f"{api}/installs", json={"extension": EXAMPLE}, headers={"Authorization": f"Bearer {minted}"}, timeout=30
        )
    finally:
        assert dev.stop() == 0

    assert mine.status_code == 200, mine.text
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHENTICATED"
    # The token's role holds: a user of tenant globex is not an admin.
    assert as_user.status_code == 403, as_user.text
    assert "tokens: HS256 with EXT_AUTH_SECRET from the environment" in dev.lines()
