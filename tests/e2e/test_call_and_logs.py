"""`extctl call` and `extctl logs` against the local stack, through the console script, as an author uses
them: the body on stdout and the status on stderr, the platform's error codes, the install's log lines
with their request ids, levels and times, `--follow`, and a C guest's trap explained by its backtrace
(function names included) in the logs and on the caller's terminal, never in the HTTP answer."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from chalicelib.auth import issue_token
from devstack.stack import LocalStack, StackConfig, StackUrls
from extctl.api import ApiClient
from extctl.build import build_project
from extctl.publish import publish_bundle
from extctl.session import DevSession, write_session
from tests.e2e.test_first_run import EXTCTL

ROOT = Path(__file__).resolve().parents[2]
NAME = "com.acme.loop"
STATUS_LINE = re.compile(r"^HTTP (\d{3}) \((\d+) ms, request id ([0-9a-f-]{36})\)$", re.M)
TRAP = """__attribute__((noinline)) static void crash_on_purpose(void)
{
    __builtin_trap();
}

/* GET /hello?name=Ada: greets"""


def trapping_example(directory: Path) -> Path:
    """The C example as com.acme.loop, whose /hello?name=crash traps in a function of its own."""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    shutil.copytree(ROOT / "examples" / "hello", directory, ignore=shutil.ignore_patterns("dist"))
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, "name": NAME}))
    main = directory / "src" / "main.c"
    source = main.read_text().replace("/* GET /hello?name=Ada: greets", TRAP, 1)
    source = source.replace(
        "    if (name.len == 0) {",
        "    if (name.len == 5 && name.ptr[0] == 'c') {\n        crash_on_purpose();\n    }\n    if (name.len == 0) {",
        1,
    )
    main.write_text(source)
    build_project(directory)
    return directory


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackUrls]]:
    from chalicelib.bundles.pack import pack_project

    work = tmp_path_factory.mktemp("call-and-logs")
    project = trapping_example(work / "loop")
    stack = LocalStack(StackConfig(cache_dir=work / "runner-cache"))
    urls = stack.start()
    api = ApiClient(urls.api, urls.token)
    bundle = pack_project(project, work / "bundle.tar.zst").output
    published = publish_bundle(api, bundle).result
    api.post("/installs", {"extension": NAME, "version": published["version"]})
    yield stack, urls
    stack.stop()


@pytest.fixture
def urls(local: tuple[LocalStack, StackUrls]) -> StackUrls:
    return local[1]


def extctl(*args: str, urls: StackUrls, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXT_API_URL": urls.api, "EXT_TOKEN": token or urls.token}
    done = subprocess.run([EXTCTL, *args], capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_call_prints_the_body_on_stdout_and_the_status_on_stderr(urls: StackUrls) -> None:
    done = extctl("call", NAME, "/hello?name=Ada", urls=urls)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"message": "Hello, Ada!"}
    status = STATUS_LINE.search(done.stderr)
    assert status is not None, done.stderr
    assert status.group(1) == "200"


def test_call_sends_the_method_the_body_from_a_file_and_the_headers(urls: StackUrls, tmp_path: Path) -> None:
    payload = tmp_path / "body.bin"
    payload.write_bytes(b"\x00\x01binary\xff")
    done = subprocess.run(
        [EXTCTL, "call", NAME, "/echo", "-X", "POST", "-d", f"@{payload}", "-H", "Content-Type: image/png"],
        capture_output=True,
        timeout=120,
        env={**os.environ, "EXT_API_URL": urls.api, "EXT_TOKEN": urls.token},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload.read_bytes()


def test_call_exits_1_with_the_platform_error_code(urls: StackUrls) -> None:
    done = extctl("call", NAME, "/nowhere", urls=urls)
    assert done.returncode == 1
    assert "HTTP 404 (" in done.stderr
    assert f"error: ENDPOINT_NOT_FOUND: {NAME} has no endpoint for GET /nowhere" in done.stderr


def test_a_malformed_header_is_a_usage_error(urls: StackUrls) -> None:
    done = extctl("call", NAME, "/hello", "-H", "no colon", urls=urls)
    assert done.returncode == 1
    assert "error: USAGE: -H 'no colon' is not 'Name: value'" in done.stderr


def test_a_trap_shows_its_backtrace_to_the_caller_but_the_answer_keeps_only_the_code(urls: StackUrls) -> None:
    done = extctl("call", NAME, "/hello?name=crash", urls=urls)
    assert done.returncode == 1
    assert "HTTP 502 (" in done.stderr
    assert (
        "error: EXTENSION_FAILED: extension trapped: wasm trap: wasm `unreachable` instruction executed" in done.stderr
    )
    backtrace = done.stderr.split("wasm backtrace (innermost first):\n", 1)[1].splitlines()
    assert backtrace[0].strip().startswith("crash_on_purpose @ 0x")
    assert backtrace[1].strip().startswith("handler @ 0x")

    answer = requests.get(
        f"{urls.api}/api/ext/{NAME}/hello?name=crash", headers={"Authorization": f"Bearer {urls.token}"}, timeout=30
    )
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "EXTENSION_FAILED"
    assert answer.json()["error"]["request_id"] == answer.headers["X-Request-Id"]
    assert "crash_on_purpose" not in answer.text
    assert "backtrace" not in answer.text


def test_logs_show_each_call_with_its_request_id_level_and_time(urls: StackUrls) -> None:
    called = extctl("call", NAME, "/hello?name=Grace", urls=urls)
    status = STATUS_LINE.search(called.stderr)
    assert status is not None
    request_id = status.group(3)

    done = extctl("logs", NAME, urls=urls)
    assert done.returncode == 0, done.stderr
    mine = [line for line in done.stdout.splitlines() if request_id in line]
    assert len(mine) == 2, done.stdout  # the guest's own line and the call's
    assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO  ", line) for line in mine)
    assert mine[0].endswith(f"{request_id} GET /hello")
    assert re.search(r"call 1\.0\.0 → 200 \([\d.]+ ms\)$", mine[1])

    as_json = extctl("logs", NAME, "--json", "--request-id", request_id, urls=urls)
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(line["kind"], line["level"], line["request_id"]) for line in lines] == [
        ("log", "info", request_id),
        ("call", "info", request_id),
    ]
    assert lines[1]["outcome"] == "ok" and lines[1]["status"] == 200 and lines[1]["version"] == "1.0.0"


def test_a_trap_is_in_the_logs_with_its_backtrace(urls: StackUrls) -> None:
    answer = requests.get(
        f"{urls.api}/api/ext/{NAME}/hello?name=crash", headers={"Authorization": f"Bearer {urls.token}"}, timeout=30
    )
    request_id = answer.headers["X-Request-Id"]
    done = extctl("logs", NAME, "--json", "--request-id", request_id, urls=urls)
    call = [json.loads(line) for line in done.stdout.splitlines()][-1]
    assert (call["kind"], call["level"], call["outcome"]) == ("call", "warn", "EXTENSION_FAILED")
    assert call["backtrace"][0].startswith("crash_on_purpose @ 0x")


def test_another_tenant_sees_none_of_the_lines(local: tuple[LocalStack, StackUrls]) -> None:
    stack, urls = local
    extctl("call", NAME, "/hello", urls=urls)
    other = issue_token(
        str(stack.settings.ext_auth_secret), sub="mallory", tenant="other", roles=["admin", "user"], ttl_seconds=600
    )
    done = extctl("logs", NAME, urls=urls, token=other)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_logs_follow_prints_new_lines_until_ctrl_c(urls: StackUrls) -> None:
    env = {**os.environ, "EXT_API_URL": urls.api, "EXT_TOKEN": urls.token}
    follower = subprocess.Popen(
        [EXTCTL, "logs", NAME, "--follow", "--json", "--since", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # No pause: the call's lines may come in the follower's first pages or later; Ctrl-C ends either quietly.
        answer = requests.get(
            f"{urls.api}/api/ext/{NAME}/hello?name=Follow",
            headers={"Authorization": f"Bearer {urls.token}"},
            timeout=30,
        )
        request_id = answer.headers["X-Request-Id"]
        assert follower.stdout is not None
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.get("kind") == "call" for line in seen):
            line = json.loads(follower.stdout.readline())
            if line["request_id"] == request_id:
                seen.append(line)
        assert [line["kind"] for line in seen] == ["log", "call"]
    finally:
        follower.send_signal(signal.SIGINT)
        _, errors = follower.communicate(timeout=30)
    assert follower.returncode == 0, errors
    assert "Traceback" not in errors


def test_without_a_url_or_token_the_running_dev_stacks_are_used(
    urls: StackUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("EXT_API_URL", "EXT_TOKEN")}
    env["EXTCTL_STATE_DIR"] = str(state)
    missing = subprocess.run([EXTCTL, "call", NAME, "/hello"], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 1
    assert "error: USAGE: no API URL" in missing.stderr

    monkeypatch.setenv("EXTCTL_STATE_DIR", str(state))
    write_session(DevSession(api=urls.api, runner=urls.runner, token=urls.token, pid=os.getpid()))
    assert (state / "dev.json").stat().st_mode & 0o777 == 0o600
    found = subprocess.run([EXTCTL, "call", NAME, "/hello"], capture_output=True, text=True, env=env, timeout=60)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {"message": "Hello, world!"}


class _Teapot(BaseHTTPRequestHandler):
    """Answers as the gateway does when the extension itself says 418: the extension's body, not an error."""

    def do_GET(self) -> None:
        body = b"short and stout"
        self.send_response(418)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", "req-teapot")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_the_extensions_own_error_answer_is_printed_and_exits_1() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teapot)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "EXT_API_URL": f"http://127.0.0.1:{server.server_address[1]}", "EXT_TOKEN": "t"}
        done = subprocess.run([EXTCTL, "call", NAME, "/brew"], capture_output=True, text=True, env=env, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    assert done.stdout == "short and stout"
    assert re.search(r"^HTTP 418 \(\d+ ms, request id req-teapot\)$", done.stderr, re.M)
    assert "error: HTTP_418: the extension answered 418" in done.stderr
