"""The gateway, end to end: API (chalice.test) → a real runner over HTTP → real guests."""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.bundles.pack import pack_project
from chalicelib.config import load_settings
from runner_container.server import make_server
from runner_container.service import build_service
from tests.bundle_factory import bundle, good_files, manifest_bytes, wasm
from tests.integration.stack import AwsStack, auth, fresh_rate_window, publish

ROOT = Path(__file__).resolve().parents[2]
WAT = ROOT / "tests" / "fixtures" / "wat"


def fixed_response_guest(response: dict[str, Any], code: int = 0) -> bytes:
    """A guest that answers every call with ``response`` (and returns ``code``)."""
    text = json.dumps(response).replace("\\", "\\\\").replace('"', '\\"')
    size = len(json.dumps(response).encode())
    return wasm(
        f"""(module (memory (export "memory") 1)
        (data (i32.const 1024) "{text}")
        (func (export "alloc") (param i32) (result i32) i32.const 8192)
        (func (export "handler") (param i32 i32 i32) (result i32)
          (i32.store (local.get 2) (i32.const 1024))
          (i32.store offset=4 (local.get 2) (i32.const {size}))
          i32.const {code}))"""
    )


@pytest.fixture
def gateway_stack(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[AwsStack]:
    token = secrets.token_urlsafe(16)
    monkeypatch.setenv("RUNNER_AUTH_TOKEN", token)
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "runner-cache"))
    server = make_server(build_service(load_settings(dict(os.environ))), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RUNNER_BASE_URL", server.url)
    monkeypatch.setenv("RUNNER_PUBLIC_BASE", server.url)
    yield request.getfixturevalue("stack")
    server.shutdown()


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
    assert answer.headers["Cache-Control"] == "no-store"


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
