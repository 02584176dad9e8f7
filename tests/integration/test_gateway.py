"""The gateway, end to end: API (chalice.test) → a real runner over HTTP → real guests."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.auth import Identity
from chalicelib.bundles.pack import pack_project
from chalicelib.config import load_settings
from chalicelib.errors import ExtError, RunnerBusy
from chalicelib.gateway.service import GatewayRequest
from runner_container.server import RunnerHTTPServer, make_server
from runner_container.service import build_service
from tests.bundle_factory import (
    TYPE_MISMATCH_WAT,
    bundle,
    fixed_response_guest,
    good_files,
    manifest_bytes,
    slow_to_compile_wasm,
    wasm,
)
from tests.integration.fake_lambda import FakeLambda, runner_answer, throttled
from tests.integration.stack import AwsStack, auth, fresh_rate_window, publish

ROOT = Path(__file__).resolve().parents[2]
WAT = ROOT / "tests" / "fixtures" / "wat"


@pytest.fixture
def runner_server(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[RunnerHTTPServer]:
    """The runner in HTTP mode, with the settings of the environment the test set up."""
    token = secrets.token_urlsafe(16)
    monkeypatch.setenv("RUNNER_AUTH_TOKEN", token)
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "runner-cache"))
    server = make_server(build_service(load_settings(dict(os.environ))), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RUNNER_BASE_URL", server.url)
    monkeypatch.setenv("RUNNER_PUBLIC_BASE", server.url)
    yield server
    server.shutdown()


@pytest.fixture
def gateway_stack(runner_server: RunnerHTTPServer, request: pytest.FixtureRequest) -> AwsStack:
    stack: AwsStack = request.getfixturevalue("stack")
    return stack


def install(stack: AwsStack, data: bytes, tenant: str = "acme") -> dict[str, Any]:
    result = publish(stack, data, tenant=tenant)
    assert result.status_code == 200, result.json
    answer = stack.call(
        "POST", "/installs", {"extension": result.json["extension"], "version": result.json["version"]}, auth(tenant)
    )
    assert answer.status_code == 201, answer.json
    return dict(result.json)


@pytest.fixture
def hello(gateway_stack: AwsStack, tmp_path: Path) -> AwsStack:
    packed = pack_project(ROOT / "examples" / "hello", tmp_path / "hello.tar.zst")
    install(gateway_stack, packed.output.read_bytes())
    return gateway_stack


def call(
    stack: AwsStack, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    """One call as a client retrying ``503 EXTENSION_NOT_READY`` makes it (its code may still compile)."""
    deadline = time.monotonic() + 60
    while True:
        answer = send(stack, method, path, body, headers)
        if answer.status_code != 503 or json.loads(answer.body)["error"]["code"] != "EXTENSION_NOT_READY":
            return answer
        assert time.monotonic() < deadline, "the extension's code never compiled"
        time.sleep(0.2)


def send(
    stack: AwsStack, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    """One call, answered as it comes."""
    chosen = {**auth(), **(headers or {})}
    if body is None:
        chosen.pop("Content-Type", None)
    return getattr(stack.client.http, method.lower())(path, headers=chosen, body=body)


def test_a_call_reaches_the_guest_and_its_answer_comes_back(hello: AwsStack) -> None:
    answer = call(hello, "GET", "/api/ext/com.example.hello/hello?name=Ada")
    assert answer.status_code == 200, answer.body
    assert json.loads(answer.body) == {"message": "Hello, Ada!"}
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in answer.headers["Content-Security-Policy"]


def test_bodies_of_any_type_pass_through(hello: AwsStack) -> None:
    answer = call(hello, "POST", "/api/ext/com.example.hello/echo", b"ping", {"Content-Type": "text/plain"})
    assert answer.status_code == 200
    assert answer.body == b"ping"
    assert answer.headers["Content-Type"].startswith("text/plain")


def test_the_context_names_the_tenant_and_version(hello: AwsStack) -> None:
    answer = call(hello, "GET", "/api/ext/com.example.hello/info")
    assert json.loads(answer.body) == {"extension": "com.example.hello", "version": "1.0.0", "tenant": "acme"}


def test_another_tenant_cannot_call_this_tenants_install(hello: AwsStack) -> None:
    answer = call(hello, "GET", "/api/ext/com.example.hello/hello", headers=auth("globex"))
    assert answer.status_code == 404
    assert json.loads(answer.body)["error"]["code"] == "NOT_INSTALLED"


def test_a_disabled_install_is_not_installed_until_enabled(hello: AwsStack) -> None:
    hello.call("PATCH", "/installs/com.example.hello", {"enabled": False})
    answer = call(hello, "GET", "/api/ext/com.example.hello/hello")
    assert answer.status_code == 404 and json.loads(answer.body)["error"]["code"] == "NOT_INSTALLED"
    hello.call("PATCH", "/installs/com.example.hello", {"enabled": True})
    assert call(hello, "GET", "/api/ext/com.example.hello/hello").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/ext/com.example.hello/nothing"),
        ("DELETE", "/api/ext/com.example.hello/hello"),
        ("GET", "/api/ext/com.example.hello"),
    ],
)
def test_undeclared_endpoints_are_404(hello: AwsStack, method: str, path: str) -> None:
    answer = call(hello, method, path)
    assert answer.status_code == 404
    error = json.loads(answer.body)["error"]
    assert error["code"] == "ENDPOINT_NOT_FOUND" and error["request_id"]


def test_calls_need_a_token(hello: AwsStack) -> None:
    answer = hello.client.http.get("/api/ext/com.example.hello/hello")
    assert answer.status_code == 401
    assert json.loads(answer.body)["error"]["code"] == "UNAUTHENTICATED"


def test_an_oversize_body_is_413(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("EXT_GATEWAY_MAX_BODY_BYTES", "16")
    stack: AwsStack = request.getfixturevalue("hello")
    answer = call(stack, "POST", "/api/ext/com.example.hello/echo", b"x" * 17, {"Content-Type": "text/plain"})
    assert answer.status_code == 413
    assert json.loads(answer.body)["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_calls_are_rate_limited_per_tenant_and_extension(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("EXT_GATEWAY_RATE_LIMIT_PER_MINUTE", "2")
    stack: AwsStack = request.getfixturevalue("hello")
    fresh_rate_window()
    codes = [call(stack, "GET", "/api/ext/com.example.hello/hello").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def _guest_bundle(module: bytes, *, version: str = "1.0.0", **manifest: Any) -> bytes:
    files = good_files(version=version, **manifest)
    files["dist/main.wasm"] = module
    return bundle(files)


def test_a_guest_past_its_deadline_is_504(gateway_stack: AwsStack) -> None:
    module = (WAT / "infinite_loop.wat").read_text()
    install(gateway_stack, _guest_bundle(wasm(module), limits={"timeout_ms": 50}))
    answer = call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello")
    assert answer.status_code == 504
    assert json.loads(answer.body)["error"]["code"] == "EXTENSION_TIMEOUT"


def test_a_failing_guest_is_502(gateway_stack: AwsStack) -> None:
    install(gateway_stack, _guest_bundle(fixed_response_guest({"status": 200, "headers": {}}, code=1)))
    answer = call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello")
    assert answer.status_code == 502
    assert json.loads(answer.body)["error"]["code"] == "EXTENSION_FAILED"


def test_only_allowlisted_headers_reach_the_guest(gateway_stack: AwsStack) -> None:
    install(gateway_stack, _guest_bundle(wasm((WAT / "echo.wat").read_text())))
    answer = call(
        gateway_stack,
        "GET",
        "/api/ext/com.acme.tools/hello?x=1&x=2&y=%20z",
        headers={
            "Cookie": "session=secret",
            "Accept": "application/json",
            "X-Forwarded-For": "10.0.0.1",
            "X-Custom": "1",
            "Accept-Language": "fr",
        },
    )
    seen = json.loads(answer.body)
    assert seen["http"]["headers"] == {"accept": "application/json", "accept-language": "fr"}
    assert seen["http"]["query"] == {"x": "1", "y": " z"}
    assert seen["http"]["path"] == "/hello"
    assert seen["endpoint"] == {"method": "GET", "path": "/hello", "handler": "hello", "params": {}}
    assert seen["context"]["tenant_id"] == "acme"
    assert set(seen["context"]) == {
        "request_id",
        "tenant_id",
        "extension_id",
        "install_id",
        "version",
        "content_hash",
        "config",
    }


def test_only_allowlisted_headers_come_back(gateway_stack: AwsStack) -> None:
    body = base64.b64encode(b"{}").decode()
    response = {
        "status": 201,
        "headers": {
            "content-type": "application/json",
            "set-cookie": "a=b",
            "x-ext-trace": "t1",
            "access-control-allow-origin": "*",
            "cache-control": "no-store",
        },
        "body_b64": body,
    }
    install(gateway_stack, _guest_bundle(fixed_response_guest(response)))
    answer = call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello")
    assert answer.status_code == 201
    names = {k.lower() for k in answer.headers}
    assert "set-cookie" not in names and "access-control-allow-origin" not in names
    assert answer.headers["X-Ext-Trace"] == "t1"
    assert answer.headers["Cache-Control"] == "private, no-store"


@pytest.mark.parametrize(
    ("sent", "delivered"),
    [
        (None, "private"),
        ("public, max-age=3600", "private, max-age=3600"),
        ("max-age=60, s-maxage=600, proxy-revalidate", "private, max-age=60"),
        ("PUBLIC, Immutable", "private, immutable"),
        ("private, no-cache", "private, no-cache"),
    ],
)
def test_answers_to_authenticated_calls_are_never_stored_by_shared_caches(
    gateway_stack: AwsStack, sent: str | None, delivered: str
) -> None:
    # One user's answer in a CDN or proxy cache would be served to the next caller of the same URL.
    headers = {"content-type": "text/plain"} if sent is None else {"content-type": "text/plain", "cache-control": sent}
    response = {"status": 200, "headers": headers, "body_b64": base64.b64encode(b"mine").decode()}
    install(gateway_stack, _guest_bundle(fixed_response_guest(response)))

    answer = call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello")

    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == delivered


class ScriptedRunner(BaseHTTPRequestHandler):
    """Stands in for the runner's HTTP mode: every execute gets the answer the server holds, as a
    compromised or buggy runner could send it."""

    server: Any

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(self.server.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_header_names_that_are_not_tokens_never_come_back_even_from_the_runner(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    runner = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedRunner)
    runner.answer = {  # type: ignore[attr-defined]
        "status": 200,
        "headers": {
            "content-type": "application/json",
            "x-ext-ok": "1",
            "x-ext-split\n": "1",
            "x-ext-sp ace": "1",
            "content-type\r": "text/html",
        },
        "body_b64": base64.b64encode(b"{}").decode(),
    }
    thread = threading.Thread(target=runner.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RUNNER_BASE_URL", f"http://127.0.0.1:{runner.server_address[1]}")
    monkeypatch.setenv("RUNNER_AUTH_TOKEN", "t")
    try:
        stack: AwsStack = request.getfixturevalue("stack")
        install(stack, _guest_bundle(fixed_response_guest({"status": 200})))
        answer = call(stack, "GET", "/api/ext/com.acme.tools/hello")
    finally:
        runner.shutdown()
        runner.server_close()
    assert answer.status_code == 200, answer.body
    names = {name.lower() for name in answer.headers}
    assert "x-ext-ok" in names
    assert not {"x-ext-split\n", "x-ext-sp ace", "content-type\r"} & names


def test_deep_paths_and_params_are_routed(gateway_stack: AwsStack) -> None:
    endpoints = [{"method": "GET", "path": "/a/:one/b/:two/c/d/e/f/g/h/i/j", "handler": "deep"}]
    data = _guest_bundle(wasm((WAT / "echo.wat").read_text()), api={"endpoints": endpoints})
    install(gateway_stack, data)
    answer = call(gateway_stack, "GET", "/api/ext/com.acme.tools/a/x%2Fy/b/2/c/d/e/f/g/h/i/j")
    assert answer.status_code == 200, answer.body
    seen = json.loads(answer.body)
    assert seen["endpoint"]["params"] == {"one": "x/y", "two": "2"}


def test_a_literal_segment_wins_over_a_param_whatever_the_declared_order(gateway_stack: AwsStack) -> None:
    endpoints = [
        {"method": "GET", "path": "/items/:id", "handler": "item"},
        {"method": "GET", "path": "/items/new", "handler": "form"},
        {"method": "POST", "path": "/items/:id", "handler": "save"},
    ]
    install(gateway_stack, _guest_bundle(wasm((WAT / "echo.wat").read_text()), api={"endpoints": endpoints}))
    form = json.loads(call(gateway_stack, "GET", "/api/ext/com.acme.tools/items/new").body)["endpoint"]
    item = json.loads(call(gateway_stack, "GET", "/api/ext/com.acme.tools/items/a%20b").body)["endpoint"]
    assert (form["handler"], form["params"]) == ("form", {})
    assert (item["handler"], item["params"]) == ("item", {"id": "a b"})
    answer = call(gateway_stack, "DELETE", "/api/ext/com.acme.tools/items/42")
    assert answer.status_code == 404
    assert json.loads(answer.body)["error"]["message"].endswith("(it accepts GET, POST there)")


def test_config_reaches_the_guest(gateway_stack: AwsStack) -> None:
    install(gateway_stack, _guest_bundle(wasm((WAT / "echo.wat").read_text())))
    gateway_stack.call("PATCH", "/installs/com.acme.tools", {"config": {"greeting": "bonjour"}})
    seen = json.loads(call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello").body)
    assert seen["context"]["config"] == {"greeting": "bonjour"}


def test_upgrade_and_rollback_change_what_answers(gateway_stack: AwsStack) -> None:
    one = {"status": 200, "headers": {"content-type": "text/plain"}, "body_b64": base64.b64encode(b"v1").decode()}
    two = {**one, "body_b64": base64.b64encode(b"v2").decode()}
    install(gateway_stack, _guest_bundle(fixed_response_guest(one)))
    publish(
        gateway_stack,
        bundle(
            {
                **good_files(version="2.0.0"),
                "dist/main.wasm": fixed_response_guest(two),
                "manifest.json": manifest_bytes(version="2.0.0"),
            }
        ),
    )
    assert call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello").body == b"v1"
    gateway_stack.call("PATCH", "/installs/com.acme.tools", {"version": "2.0.0"})
    assert call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello").body == b"v2"
    gateway_stack.call("POST", "/installs/com.acme.tools/rollback", {})
    assert call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello").body == b"v1"


@pytest.mark.parametrize(
    ("content_type", "delivered"),
    [("image/png", "image/png"), ("application/x-custom", "application/octet-stream")],
)
def test_binary_answers_arrive_as_bytes(gateway_stack: AwsStack, content_type: str, delivered: str) -> None:
    raw = bytes(range(256))
    response = {"status": 200, "headers": {"content-type": content_type}, "body_b64": base64.b64encode(raw).decode()}
    install(gateway_stack, _guest_bundle(fixed_response_guest(response)))
    answer = call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello", headers={"Accept": "*/*"})
    assert answer.status_code == 200
    assert answer.body == raw
    assert answer.headers["Content-Type"] == delivered


# --- compile state, deadlines and capacity (issue 9, item 1) ------------------------------------------


def error_of(answer: Any) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(answer.body)["error"]
    return error


def test_a_call_while_its_code_compiles_is_503_not_ready_then_502_naming_why_it_failed(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("RUNNER_INLINE_COMPILE_MAX_BYTES", "1024")
    monkeypatch.setenv("RUNNER_COMPILE_TIMEOUT_MS", "2000")
    stack: AwsStack = request.getfixturevalue("gateway_stack")
    # 300 KB that take ~11 s and ~540 MB to compile unbounded; the job may take 2 s.
    install(stack, _guest_bundle(slow_to_compile_wasm(100_000)))

    first = send(stack, "GET", "/api/ext/com.acme.tools/hello")

    assert first.status_code == 503, first.body
    assert error_of(first)["code"] == "EXTENSION_NOT_READY"
    assert int(first.headers["Retry-After"]) >= 1
    settled = call(stack, "GET", "/api/ext/com.acme.tools/hello")
    assert settled.status_code == 502
    assert error_of(settled)["code"] == "EXTENSION_FAILED"
    assert "did not compile: compiling took longer than 2 s" in error_of(settled)["message"]


def test_code_that_does_not_compile_is_502_at_once_on_every_call_and_compiled_once(
    gateway_stack: AwsStack, runner_server: RunnerHTTPServer
) -> None:
    install(gateway_stack, _guest_bundle(wasm(TYPE_MISMATCH_WAT)))

    answers = [call(gateway_stack, "GET", "/api/ext/com.acme.tools/hello") for _ in range(3)]

    assert [a.status_code for a in answers] == [502, 502, 502]
    assert all(error_of(a)["code"] == "EXTENSION_FAILED" for a in answers)
    messages = [error_of(a)["message"] for a in answers]
    assert all("did not compile" in message and "type mismatch" in message for message in messages)
    assert runner_server.service.health()["cache"]["compiles"] == 1


def test_the_runner_stops_at_the_gateways_deadline_and_says_so(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("EXT_GATEWAY_TIMEOUT_MS", "3000")
    stack: AwsStack = request.getfixturevalue("gateway_stack")
    install(stack, _guest_bundle(wasm((WAT / "infinite_loop.wat").read_text()), limits={"timeout_ms": 20_000}))

    answer = call(stack, "GET", "/api/ext/com.acme.tools/hello")

    assert answer.status_code == 504
    # The runner's own answer (its limit was cut to the gateway's), not the gateway giving up on it.
    stopped = re.search(r"exceeded its time limit of (\d+) ms", error_of(answer)["message"])
    assert stopped is not None, error_of(answer)["message"]
    assert int(stopped.group(1)) < 3000


def _loop_and_echo(stack: AwsStack, tenants: tuple[str, ...]) -> None:
    """acme installs a guest that loops for 4 s; every tenant in ``tenants`` installs an echo guest."""
    loop = wasm((WAT / "infinite_loop.wat").read_text())
    install(stack, _guest_bundle(loop, name="com.acme.loop", limits={"timeout_ms": 4000}))
    publish(stack, _guest_bundle(wasm((WAT / "echo.wat").read_text()), name="com.acme.echo"))
    for tenant in tenants:
        answer = stack.call("POST", "/installs", {"extension": "com.acme.echo", "version": "1.0.0"}, auth(tenant))
        assert answer.status_code == 201, answer.json
        assert call(stack, "GET", "/api/ext/com.acme.echo/hello", headers=auth(tenant)).status_code == 200
    # Compile the loop too, so the slow call below spends its time running, not compiling.
    assert call(stack, "GET", "/api/ext/com.acme.loop/hello").status_code == 504


def _slow_call_in_background(stack: AwsStack) -> threading.Thread:
    """acme's call of the loop guest (it runs 4 s), made on another thread straight into the gateway service."""
    import app as app_module

    def run() -> None:
        request = GatewayRequest("com.acme.loop", "GET", "/hello", {}, {}, b"", "slow-call")
        while True:
            try:
                app_module.services().gateway.handle(Identity("alice", "acme", frozenset({"admin"})), request)
            except RunnerBusy:
                # An echo call held the slot just then: this one must get in and hold it. A pause, as a
                # client would take: spinning spends the tenant's rate limit (600 a minute) in moments.
                time.sleep(0.05)
            except ExtError:
                return

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _first_refusal(stack: AwsStack, slow: threading.Thread, tenant: str = "acme") -> Any:
    """Call the echo guest until an answer is not 200, or the slow call ends; that answer, or None."""
    while slow.is_alive():
        answer = send(stack, "GET", "/api/ext/com.acme.echo/hello", headers=auth(tenant))
        if answer.status_code != 200:
            return answer
    return None


def test_a_tenant_over_its_concurrency_cap_gets_503_runner_busy_and_other_tenants_are_served(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("EXT_GATEWAY_TENANT_CONCURRENCY", "1")
    stack: AwsStack = request.getfixturevalue("gateway_stack")
    _loop_and_echo(stack, ("acme", "globex"))

    slow = _slow_call_in_background(stack)
    refused = _first_refusal(stack, slow)
    other_tenant = send(stack, "GET", "/api/ext/com.acme.echo/hello", headers=auth("globex"))
    slow.join()

    assert refused is not None, "acme ran a second call beside the first"
    assert (refused.status_code, error_of(refused)["code"]) == (503, "RUNNER_BUSY")
    assert refused.headers["Retry-After"] == "1"
    assert other_tenant.status_code == 200
    assert send(stack, "GET", "/api/ext/com.acme.echo/hello").status_code == 200


def test_a_runner_at_its_call_limit_is_503_runner_busy_with_retry_after(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("RUNNER_MAX_CONCURRENT_CALLS", "1")
    stack: AwsStack = request.getfixturevalue("gateway_stack")
    _loop_and_echo(stack, ("acme",))

    slow = _slow_call_in_background(stack)
    refused = _first_refusal(stack, slow)
    slow.join()

    assert refused is not None, "the runner ran a second call beside the first"
    assert (refused.status_code, error_of(refused)["code"]) == (503, "RUNNER_BUSY")
    assert refused.headers["Retry-After"] == "1"


@pytest.fixture
def lambda_stack(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[AwsStack, FakeLambda]]:
    """The API as deployed in AWS, invoking a runner function and a compile function (a stand-in)."""
    with FakeLambda().running() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
        monkeypatch.setenv("RUNNER_FUNCTION_NAME", "ext-runner")
        monkeypatch.setenv("RUNNER_COMPILE_FUNCTION_NAME", "ext-compiler")
        monkeypatch.setenv("EXT_GATEWAY_TIMEOUT_MS", "4000")
        yield request.getfixturevalue("stack"), fake


def test_publishing_asks_the_compile_function_not_the_runner(lambda_stack: tuple[AwsStack, FakeLambda]) -> None:
    stack, fake = lambda_stack

    result = install(stack, _guest_bundle(wasm((WAT / "echo.wat").read_text())))

    assert [(i.function, i.payload) for i in fake.invoked("Event")] == [
        ("ext-compiler", {"action": "precompile", "content_hash": result["content_hash"]})
    ]


def test_publishing_without_a_compile_function_asks_for_no_job_and_never_the_runner(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    with FakeLambda().running() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
        monkeypatch.setenv("RUNNER_FUNCTION_NAME", "ext-runner")
        stack: AwsStack = request.getfixturevalue("stack")

        install(stack, _guest_bundle(wasm((WAT / "echo.wat").read_text())))

        assert fake.invoked("Event") == []


def test_lambda_throttling_is_503_runner_busy_never_500(lambda_stack: tuple[AwsStack, FakeLambda]) -> None:
    stack, fake = lambda_stack
    install(stack, _guest_bundle(wasm((WAT / "echo.wat").read_text())))
    fake.answers.append(throttled())

    answer = send(stack, "GET", "/api/ext/com.acme.tools/hello")

    assert (answer.status_code, error_of(answer)["code"]) == (503, "RUNNER_BUSY")
    assert answer.headers["Retry-After"] == "1"


def test_the_runners_not_ready_answer_reaches_the_client_with_its_retry_after(
    lambda_stack: tuple[AwsStack, FakeLambda],
) -> None:
    stack, fake = lambda_stack
    install(stack, _guest_bundle(wasm((WAT / "echo.wat").read_text())))
    error = {"code": "EXTENSION_NOT_READY", "message": "its code is being compiled", "request_id": "r"}
    fake.answers.append(runner_answer({"ok": False, "error": error, "status": 503, "retry_after": 7}))

    answer = send(stack, "GET", "/api/ext/com.acme.tools/hello")

    assert (answer.status_code, error_of(answer)["code"]) == (503, "EXTENSION_NOT_READY")
    assert answer.headers["Retry-After"] == "7"
    executed = fake.invoked("RequestResponse")[-1].payload
    assert 0 < executed["deadline_ms"] < 4000
    assert executed["deadline_at_ms"] > time.time() * 1000 - 4000
