"""RunnerService.execute end to end (moto S3, real wasmtime, the example guest) and the Lambda entry point."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.errors import BadRequest, EndpointNotFound, ExtensionTimeout, HashMismatch
from chalicelib.logs import LOGGER
from chalicelib.storage.store import BUNDLE_OBJECT
from runner_container import lambda_handler
from runner_container.engine import WasmEngine
from runner_container.lambda_handler import FunctionRole, RunnerLambda
from runner_container.service import RunnerService
from tests.integration.runner_fixtures import (
    BUCKET,
    EXAMPLE_NAME,
    RunnerEnv,
    example_bundle,
    execute_payload,
    runner_env,
    ui_bundle,
    wat_bundle,
)


@pytest.fixture
def service(env: RunnerEnv, engine: WasmEngine) -> RunnerService:
    return env.service(engine)


def body_json(response: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(response["body_b64"]))


# --- execute -----------------------------------------------------------------------------------


def test_the_example_guest_greets_ada_through_execute(env: RunnerEnv, service: RunnerService) -> None:
    content_hash = env.publish(example_bundle())

    response = service.execute(execute_payload(content_hash, query={"name": "Ada"})).to_dict()

    assert response["status"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert body_json(response) == {"message": "Hello, Ada!"}
    assert response["duration_ms"] > 0
    assert isinstance(response["logs"], list)


def test_the_example_guest_echoes_a_posted_body(env: RunnerEnv, service: RunnerService) -> None:
    content_hash = env.publish(example_bundle())

    response = service.execute(execute_payload(content_hash, method="POST", path="/echo", body=b'{"n":1}'))

    assert response.status == 200
    assert b'{"n":1}' in base64.b64decode(response.body_b64)


def test_a_manifest_timeout_stops_an_infinite_loop_and_the_runner_keeps_serving(
    env: RunnerEnv, service: RunnerService
) -> None:
    loop = env.publish(wat_bundle("infinite_loop.wat", name="com.acme.loop", limits={"timeout_ms": 50}))
    hello = env.publish(example_bundle())
    service.execute(execute_payload(hello))

    # The error names the limit that applied: the manifest's 50 ms, not the 5 s default.
    with pytest.raises(ExtensionTimeout, match="limit of 50 ms"):
        service.execute(execute_payload(loop, extension="com.acme.loop"))
    assert service.execute(execute_payload(hello, query={"name": "again"})).status == 200


@pytest.mark.parametrize(
    ("manifest_capabilities", "granted", "expected_status"),
    [
        (["cap:http.fetch"], ("cap:http.fetch",), 202),
        (["cap:http.fetch"], (), 201),
        (["cap:log.emit"], ("cap:http.fetch",), 201),
    ],
    ids=["granted-and-declared", "declared-not-granted", "granted-not-declared"],
)
def test_a_capability_needs_both_the_install_grant_and_the_manifest(
    env: RunnerEnv,
    service: RunnerService,
    manifest_capabilities: list[str],
    granted: tuple[str, ...],
    expected_status: int,
) -> None:
    # The proxy guest answers 200 + http_fetch's code: 1 is "denied" (no capability), 2 "failed" (it was
    # allowed to try; its request has no url).
    proxy = env.publish(wat_bundle("http_fetch_proxy.wat", name="com.acme.proxy", capabilities=manifest_capabilities))

    response = service.execute(execute_payload(proxy, extension="com.acme.proxy", granted=granted))

    assert response.status == expected_status


def test_the_bundle_must_be_the_extension_the_gateway_named(env: RunnerEnv, service: RunnerService) -> None:
    content_hash = env.publish(example_bundle())

    with pytest.raises(BadRequest, match=r"not 'com\.acme\.other'"):
        service.execute(execute_payload(content_hash, extension="com.acme.other"))


def test_a_bundle_without_api_cannot_be_executed(env: RunnerEnv, service: RunnerService) -> None:
    content_hash = env.publish(ui_bundle())

    with pytest.raises(EndpointNotFound):
        service.execute(execute_payload(content_hash, extension="com.acme.tools"))


def test_a_tampered_bundle_is_refused_by_execute(env: RunnerEnv, service: RunnerService) -> None:
    content_hash = env.publish(example_bundle())
    env.overwrite(env.store.object_key(content_hash, BUNDLE_OBJECT), ui_bundle(EXAMPLE_NAME))

    with pytest.raises(HashMismatch):
        service.execute(execute_payload(content_hash))


def _without(payload: dict[str, Any], *path: str) -> dict[str, Any]:
    target = payload
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return payload


def _with(payload: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return payload


GOOD_HASH = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_with(execute_payload(GOOD_HASH), "sha256:ABC", "content_hash"), "content_hash"),
        (_without(execute_payload(GOOD_HASH), "extension"), "extension"),
        (_with(execute_payload(GOOD_HASH), "cap:http.fetch", "granted_capabilities"), "granted_capabilities"),
        (_without(execute_payload(GOOD_HASH), "request", "context"), "request.context"),
        (_with(execute_payload(GOOD_HASH), [], "request", "endpoint"), "request.endpoint"),
        (_without(execute_payload(GOOD_HASH), "request", "http", "method"), "request.http.method"),
        (_with(execute_payload(GOOD_HASH), "hello", "request", "http", "path"), "request.http.path"),
        (_with(execute_payload(GOOD_HASH), {"x": 1}, "request", "http", "headers"), "request.http.headers"),
        (_with(execute_payload(GOOD_HASH), 5, "request", "http", "body_b64"), "request.http.body_b64"),
    ],
)
def test_a_malformed_payload_is_a_bad_request_naming_the_field(
    service: RunnerService, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        service.execute(payload)


def test_health_reports_the_engine_fingerprint(service: RunnerService, engine: WasmEngine) -> None:
    health = service.health()

    assert health["status"] == "ok"
    assert health["fingerprint"] == engine.fingerprint


# --- Lambda mode -------------------------------------------------------------------------------


@pytest.fixture
def app(service: RunnerService) -> RunnerLambda:
    return RunnerLambda(lambda: service)


@pytest.fixture
def compiler_app(service: RunnerService) -> RunnerLambda:
    return RunnerLambda(lambda: service, role=FunctionRole.COMPILER)


CONTEXT = SimpleNamespace(aws_request_id="lambda-req-1")


def test_an_execute_invoke_returns_the_guest_response(env: RunnerEnv, app: RunnerLambda) -> None:
    content_hash = env.publish(example_bundle())

    answer = app({"action": "execute", **execute_payload(content_hash, query={"name": "Ada"})}, CONTEXT)

    assert answer["ok"] is True
    assert body_json(answer["response"]) == {"message": "Hello, Ada!"}


def test_a_failing_invoke_returns_the_error_code_and_status(env: RunnerEnv, app: RunnerLambda) -> None:
    loop = env.publish(wat_bundle("infinite_loop.wat", name="com.acme.loop", limits={"timeout_ms": 50}))

    answer = app({"action": "execute", **execute_payload(loop, extension="com.acme.loop")}, CONTEXT)

    assert answer == {
        "ok": False,
        "error": {
            "code": "EXTENSION_TIMEOUT",
            "message": "extension exceeded its time limit of 50 ms",
            "request_id": "lambda-req-1",
        },
        "status": 504,
    }


def test_a_precompile_invoke_of_the_compile_function_stores_the_cwasm(
    env: RunnerEnv, compiler_app: RunnerLambda, engine: WasmEngine
) -> None:
    content_hash = env.publish(example_bundle())

    answer = compiler_app({"action": "precompile", "content_hash": content_hash}, CONTEXT)

    assert answer["ok"] is True
    assert answer["response"]["compiled"] is True
    assert env.object_exists(env.store.precompiled_key(content_hash, engine.fingerprint))


def test_the_runner_function_refuses_compile_jobs_and_the_compile_function_refuses_calls(
    env: RunnerEnv, app: RunnerLambda, compiler_app: RunnerLambda, engine: WasmEngine
) -> None:
    content_hash = env.publish(example_bundle())

    precompile = app({"action": "precompile", "content_hash": content_hash}, CONTEXT)
    execute = compiler_app({"action": "execute", **execute_payload(content_hash)}, CONTEXT)

    assert (precompile["ok"], precompile["error"]["code"]) == (False, "BAD_REQUEST")
    assert "compiler function" in precompile["error"]["message"]
    assert (execute["ok"], execute["error"]["code"]) == (False, "BAD_REQUEST")
    assert not env.object_exists(env.store.precompiled_key(content_hash, engine.fingerprint))


def test_a_storage_failure_in_an_invoke_answers_a_generic_message(env: RunnerEnv, app: RunnerLambda) -> None:
    env.client.delete_bucket(Bucket=env.settings.storage_s3_bucket)

    answer = app({"action": "execute", **execute_payload("sha256:" + "ab" * 32)}, CONTEXT)

    assert (answer["ok"], answer["status"], answer["error"]["code"]) == (False, 503, "STORAGE_ERROR")
    assert "sha256/" not in answer["error"]["message"] and "NoSuchBucket" not in answer["error"]["message"]
    assert "lambda-req-1" in answer["error"]["message"]


def test_health_over_a_function_url_says_only_ok(app: RunnerLambda) -> None:
    answer = app(function_url_event("/healthz"), CONTEXT)

    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"status": "ok"}


@pytest.mark.parametrize("event", [{"action": "explode"}, {"nothing": 1}, ["not", "a", "mapping"]])
def test_an_unknown_invoke_is_a_bad_request(app: RunnerLambda, event: Any) -> None:
    answer = app(event, CONTEXT)

    assert answer["ok"] is False
    assert answer["error"]["code"] == "BAD_REQUEST"
    assert answer["status"] == 400


def function_url_event(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers or {},
        "requestContext": {"http": {"method": method, "path": path}},
        "isBase64Encoded": False,
    }


def test_a_function_url_event_serves_a_ui_asset(env: RunnerEnv, app: RunnerLambda) -> None:
    content_hash = env.publish(example_bundle())

    answer = app(function_url_event(f"/ext-ui/{EXAMPLE_NAME}/{content_hash}/index.html"), CONTEXT)

    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is False
    assert answer["body"].startswith("<!doctype html>")
    assert answer["headers"]["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Content-Security-Policy" in answer["headers"]


def test_a_function_url_event_sends_binary_assets_base64(env: RunnerEnv, app: RunnerLambda) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    content_hash = env.publish(ui_bundle(extra={"ui/logo.png": png}))

    answer = app(function_url_event(f"/ext-ui/com.acme.tools/{content_hash}/logo.png"), CONTEXT)

    assert answer["isBase64Encoded"] is True
    assert base64.b64decode(answer["body"]) == png
    assert answer["headers"]["Content-Type"] == "image/png"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_asset_over_the_lambda_response_limit_is_a_clear_413(env: RunnerEnv, app: RunnerLambda, method: str) -> None:
    # Base64 makes 4 MiB about 5.6 MB, the most Lambda's 6 MB response carries; this one cannot be sent.
    big = os.urandom(lambda_handler.MAX_HTTP_BODY_BYTES + 1)
    content_hash = env.publish(ui_bundle(extra={"ui/video.webm": big}))

    answer = app(function_url_event(f"/ext-ui/com.acme.tools/{content_hash}/video.webm", method), CONTEXT)

    assert answer["statusCode"] == 413
    assert answer["headers"]["Cache-Control"] == "no-store"
    if method == "GET":
        error = json.loads(answer["body"])["error"]
        assert error["code"] == "ASSET_TOO_LARGE"
        assert "video.webm" in error["message"] and str(lambda_handler.MAX_HTTP_BODY_BYTES) in error["message"]


def test_a_function_url_event_answers_304_for_a_matching_etag(env: RunnerEnv, app: RunnerLambda) -> None:
    content_hash = env.publish(example_bundle())
    path = f"/ext-ui/{EXAMPLE_NAME}/{content_hash}/app.js"
    etag = app(function_url_event(path), CONTEXT)["headers"]["ETag"]

    answer = app(function_url_event(path, headers={"If-None-Match": etag}), CONTEXT)

    assert answer["statusCode"] == 304
    assert answer["body"] == ""


def test_an_api_gateway_v1_event_for_another_route_is_a_json_404(app: RunnerLambda) -> None:
    event = {"httpMethod": "GET", "path": "/v1/execute", "headers": {"Accept": "*/*"}, "requestContext": {}}

    answer = app(event, CONTEXT)

    assert answer["statusCode"] == 404
    assert json.loads(answer["body"])["error"]["code"] == "NOT_FOUND"
    assert answer["headers"]["Cache-Control"] == "no-store"


@pytest.fixture
def restore_ext_logger() -> Iterator[None]:
    """The Lambda handler configures the platform's logger for the process; put it back for other tests."""
    handlers, level, propagate = list(LOGGER.handlers), LOGGER.level, LOGGER.propagate
    yield
    LOGGER.handlers[:] = handlers
    LOGGER.setLevel(level)
    LOGGER.propagate = propagate


@pytest.mark.usefixtures("restore_ext_logger")
def test_the_module_handler_builds_its_service_once_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_S3_BUCKET", BUCKET)
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "lambda-cache"))
    with runner_env(tmp_path) as env:
        content_hash = env.publish(example_bundle())
        try:
            first = lambda_handler.compile_handler({"action": "precompile", "content_hash": content_hash}, CONTEXT)
            second = lambda_handler.compile_handler({"action": "precompile", "content_hash": content_hash}, CONTEXT)
        finally:
            lambda_handler.COMPILER.close()

    assert first["response"]["source"] == "compiled"
    assert second["response"]["source"] == "memory"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_guest_logs_reach_the_platform_only_with_the_log_capability(env: RunnerEnv, service: RunnerService) -> None:
    content_hash = env.publish(example_bundle())
    handler = _Collect()
    records = handler.records
    LOGGER.addHandler(handler)
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    try:
        granted = service.execute(execute_payload(content_hash)).to_dict()
        denied = service.execute(execute_payload(content_hash, granted=())).to_dict()
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    guest_lines = [r for r in records if r.getMessage() == "runner.guest_log"]
    assert len(guest_lines) == 1
    assert granted["logs"] and granted["logs_dropped"] == 0
    assert denied["logs"] == [] and denied["logs_dropped"] == 1
    assert denied["status"] == 200
