"""The runner's HTTP mode on 127.0.0.1: auth, routes, error mapping, logs, and the ``python -m`` entry point."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from chalicelib.errors import SettingsInvalid
from chalicelib.logs import LOGGER, JsonFormatter, log_event
from runner_container.engine import WasmEngine
from runner_container.server import MAX_BODY_BYTES, RunnerHTTPServer, make_server
from runner_container.service import RunnerService
from tests.integration.runner_fixtures import (
    EXAMPLE,
    EXAMPLE_NAME,
    REPO,
    RunnerEnv,
    example_bundle,
    execute_payload,
    runner_env,
    wat_bundle,
)

TOKEN = "test-runner-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RunnerEnv]:
    with runner_env(tmp_path, RUNNER_AUTH_TOKEN=TOKEN) as created:
        yield created


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Client:
    """Raw HTTP to the runner: http.client sends paths exactly as given (no dot-segment cleanup)."""

    port: int

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()


@contextmanager
def serving(server: RunnerHTTPServer) -> Iterator[Client]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Client(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def service(env: RunnerEnv, engine: WasmEngine) -> RunnerService:
    return env.service(engine)


@pytest.fixture
def client(service: RunnerService) -> Iterator[Client]:
    with serving(make_server(service, "127.0.0.1", 0)) as running:
        yield running


@pytest.fixture
def hello(env: RunnerEnv) -> str:
    return env.publish(example_bundle())


def greeting(reply: Reply) -> Any:
    return json.loads(base64.b64decode(reply.json()["body_b64"]))


# --- execute and precompile ------------------------------------------------------------------------


def test_healthz_answers_only_ok_to_anyone(client: Client) -> None:
    reply = client.request("GET", "/healthz")

    assert reply.status == 200
    assert reply.json() == {"status": "ok"}
    assert reply.headers["cache-control"] == "no-store"


def test_healthz_with_the_token_adds_the_engine_fingerprint_and_cache(client: Client, engine: WasmEngine) -> None:
    reply = client.request("GET", "/healthz", headers=AUTH)

    assert reply.status == 200
    assert reply.json()["status"] == "ok"
    assert reply.json()["fingerprint"] == engine.fingerprint
    assert set(reply.json()["cache"]) >= {"entries", "bytes", "max_bytes"}


def test_healthz_with_a_wrong_token_says_only_ok(client: Client) -> None:
    reply = client.request("GET", "/healthz", headers={"Authorization": "Bearer wrong"})

    assert (reply.status, reply.json()) == (200, {"status": "ok"})


def test_the_log_lines_are_only_for_the_token_and_only_of_the_asked_tenant(
    client: Client, request: pytest.FixtureRequest
) -> None:
    level = LOGGER.level
    request.addfinalizer(lambda: LOGGER.setLevel(level))
    LOGGER.setLevel(logging.INFO)
    log_event("runner.call", extension="com.example.hello", tenant="t1", request_id="r1", outcome="ok")
    log_event("runner.call", extension="com.example.hello", tenant="t2", request_id="r2", outcome="ok")
    path = "/v1/logs?extension=com.example.hello&tenant=t1"

    refused = client.request("GET", path, headers={"Authorization": "Bearer wrong"})
    assert (refused.status, refused.json()["error"]["code"]) == (401, "UNAUTHENTICATED")
    answer = client.request("GET", path, headers=AUTH)
    assert answer.status == 200
    assert [record["request_id"] for record in answer.json()["records"]] == ["r1"]
    after = client.request("GET", f"{path}&after={answer.json()['cursor']}", headers=AUTH)
    assert after.json()["records"] == []
    missing = client.request("GET", "/v1/logs?extension=com.example.hello", headers=AUTH)
    assert (missing.status, missing.json()["error"]["code"]) == (400, "BAD_REQUEST")


def test_execute_with_the_token_runs_the_example_guest(client: Client, hello: str) -> None:
    reply = client.request("POST", "/v1/execute", execute_payload(hello, query={"name": "Ada"}), AUTH)

    assert reply.status == 200
    assert greeting(reply) == {"message": "Hello, Ada!"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}],
    ids=["missing", "wrong", "other-scheme", "longer"],
)
def test_execute_without_the_right_token_is_401(client: Client, hello: str, headers: dict[str, str]) -> None:
    reply = client.request("POST", "/v1/execute", execute_payload(hello), headers)

    assert reply.status == 401
    assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
    assert reply.headers["connection"] == "close"


def test_precompile_without_the_token_is_401(client: Client, hello: str) -> None:
    assert client.request("POST", "/v1/precompile", {"content_hash": hello}).status == 401


def test_precompile_writes_the_cwasm_to_s3(client: Client, env: RunnerEnv, engine: WasmEngine, hello: str) -> None:
    reply = client.request("POST", "/v1/precompile", {"content_hash": hello}, AUTH)

    assert reply.status == 200
    assert reply.json()["compiled"] is True
    assert env.object_exists(env.store.precompiled_key(hello, engine.fingerprint))


def test_errors_carry_their_code_status_and_the_callers_request_id(client: Client) -> None:
    payload = execute_payload("sha256:" + "a" * 64)
    payload["content_hash"] = "md5:abc"

    reply = client.request("POST", "/v1/execute", payload, {**AUTH, "X-Request-Id": "trace-42"})

    assert reply.status == 400
    assert reply.json() == {
        "error": {
            "code": "BAD_REQUEST",
            "message": "content_hash must be 'sha256:' and 64 lowercase hex digits",
            "request_id": "trace-42",
        }
    }
    assert reply.headers["x-request-id"] == "trace-42"
    assert reply.headers["cache-control"] == "no-store"


def test_an_extension_timeout_maps_to_504(client: Client, env: RunnerEnv) -> None:
    loop = env.publish(wat_bundle("infinite_loop.wat", name="com.acme.loop", limits={"timeout_ms": 50}))

    reply = client.request("POST", "/v1/execute", execute_payload(loop, extension="com.acme.loop"), AUTH)

    assert reply.status == 504
    assert reply.json()["error"]["code"] == "EXTENSION_TIMEOUT"


def test_a_body_over_the_cap_is_refused_before_it_is_read(client: Client) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    try:
        connection.putrequest("POST", "/v1/execute")
        connection.putheader("Authorization", AUTH["Authorization"])
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 413
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_400(client: Client, body: bytes) -> None:
    reply = client.request("POST", "/v1/execute", body, {**AUTH, "Content-Type": "application/json"})

    assert reply.status == 400
    assert reply.json()["error"]["code"] == "BAD_REQUEST"


def test_unknown_routes_and_wrong_methods_get_json_errors(client: Client) -> None:
    missing = client.request("GET", "/v2/nothing")
    wrong_method = client.request("GET", "/v1/execute", headers=AUTH)

    assert (missing.status, missing.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert (wrong_method.status, wrong_method.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert wrong_method.headers["allow"] == "POST"


def test_a_connection_is_kept_alive_between_requests(client: Client, hello: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    try:
        statuses = []
        for _ in range(3):
            connection.request("POST", "/v1/execute", body=json.dumps(execute_payload(hello)), headers=AUTH)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()

    assert statuses == [200, 200, 200]


# --- UI assets -------------------------------------------------------------------------------------


def test_ui_assets_are_served_publicly_with_their_headers(client: Client, hello: str) -> None:
    path = f"/ext-ui/{EXAMPLE_NAME}/{hello}/index.html"

    reply = client.request("GET", path)
    cached = client.request("GET", path, headers={"If-None-Match": reply.headers["etag"]})
    head = client.request("HEAD", path)

    assert reply.status == 200
    assert reply.body == (EXAMPLE / "ui" / "index.html").read_bytes()
    assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in reply.headers
    assert (cached.status, cached.body) == (304, b"")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", str(len(reply.body)))


@pytest.mark.parametrize("asset", ["../manifest.json", "%2e%2e/manifest.json", "..%2f..%2fmanifest.json", "a\\..\\b"])
def test_ui_path_traversal_is_400_over_http(client: Client, hello: str, asset: str) -> None:
    reply = client.request("GET", f"/ext-ui/{EXAMPLE_NAME}/{hello}/{asset}")

    assert reply.status == 400
    assert reply.headers["cache-control"] == "no-store"


# --- logs and start-up ---------------------------------------------------------------------------


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def ext_log() -> Iterator[Collected]:
    """The records of the platform's ``ext`` logger, which need not propagate to pytest's handler."""
    collected = Collected()
    level = LOGGER.level
    LOGGER.addHandler(collected)
    LOGGER.setLevel(logging.INFO)
    yield collected
    LOGGER.removeHandler(collected)
    LOGGER.setLevel(level)


def test_each_request_logs_one_line_with_its_fields(client: Client, hello: str, ext_log: Collected) -> None:
    client.request("POST", "/v1/execute", execute_payload(hello), {**AUTH, "X-Request-Id": "log-1"})

    # The server logs the request once its answer is sent, so the line may trail the answer a little.
    deadline = time.monotonic() + 10
    while not any(record.getMessage() == "runner.request" for record in ext_log.records):
        assert time.monotonic() < deadline, "no runner.request line"
        time.sleep(0.01)
    requests = [record for record in ext_log.records if record.getMessage() == "runner.request"]
    assert len(requests) == 1
    line = json.loads(JsonFormatter().format(requests[0]))
    assert {key: line[key] for key in ("method", "path", "status", "content_hash", "request_id")} == {
        "method": "POST",
        "path": "/v1/execute",
        "status": 200,
        "content_hash": hello,
        "request_id": "log-1",
    }
    assert line["duration_ms"] >= 0


def test_the_server_refuses_to_start_without_a_token(env: RunnerEnv, engine: WasmEngine) -> None:
    tokenless = env.service(engine, runner_auth_token="")

    with pytest.raises(SettingsInvalid, match="RUNNER_AUTH_TOKEN"):
        make_server(tokenless, "127.0.0.1", 0)


def test_the_insecure_dev_flag_serves_execute_without_a_token(env: RunnerEnv, engine: WasmEngine, hello: str) -> None:
    tokenless = env.service(engine, runner_auth_token="")

    with serving(make_server(tokenless, "127.0.0.1", 0, insecure_no_auth=True)) as running:
        reply = running.request("POST", "/v1/execute", execute_payload(hello))

    assert reply.status == 200


def runner_process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNNER_", "STORAGE_"))}
    environment.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        # Never contacted: /healthz needs no S3.
        STORAGE_S3_ENDPOINT="http://127.0.0.1:9",
        RUNNER_CACHE_DIR=str(tmp_path / "process-cache"),
        **extra,
    )
    return environment


def listening_line(stderr: IO[str]) -> dict[str, Any]:
    """The runner's "listening" log line; every line before it must be JSON too."""
    for _ in range(20):
        line = json.loads(stderr.readline())
        if line["event"] == "runner.listening":
            return dict(line)
    raise AssertionError("the runner never logged that it is listening")


def test_python_m_runner_container_serves_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "runner_container", "--host", "127.0.0.1", "--port", "0"]
    environment = runner_process_env(tmp_path, RUNNER_AUTH_TOKEN=TOKEN)
    with subprocess.Popen(command, cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            port = int(listening_line(process.stderr)["url"].rsplit(":", 1)[1])
            health = Client(port).request("GET", "/healthz")
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(15)
            rest = process.stderr.read()
        finally:
            process.kill()

    assert health.status == 200
    assert returncode == 0
    assert [json.loads(line)["event"] for line in rest.splitlines()][-1] == "runner.stopped"


def test_python_m_runner_container_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runner_container", "--port", "0"],
        cwd=REPO,
        env=runner_process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("error: SETTINGS_INVALID: RUNNER_AUTH_TOKEN is empty")
