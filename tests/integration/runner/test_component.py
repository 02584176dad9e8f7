"""The wasm-component@1 executor with real components built by the real toolchains.

The Python example, a hostile Python component and the JS example are each built once per session
(componentize-py / componentize-js through ``extctl build``) and compiled once by the runner's compile job
(``component_artifacts``); every test gets a fresh store, as every call does.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from chalicelib.errors import ExtensionFailed, ExtensionTimeout, PayloadTooLarge
from chalicelib.tenancy import InstallScope
from runner_container.component import MAX_INLINE_BODY_BYTES, OUTPUT_CAPTURE_BYTES, ComponentEngine, PreparedComponent
from runner_container.egress import EgressPolicy
from runner_container.engine import CallLimits, HostServices, LogLevel, WasmEngine
from runner_container.traps import STDERR_TAIL_BYTES
from tests.components import FIXTURES, ROOT, ComponentArtifacts, dummy_component
from tests.integration.state_fixtures import StateBackend, state_backend, upstream_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("components")]

LIMITS = CallLimits(timeout_ms=5000, memory_bytes=128 * 1024 * 1024, fuel=None, max_response_bytes=4 * 1024 * 1024)
FETCH = frozenset({"cap:http.fetch", "cap:log.emit"})


@pytest.fixture(scope="module")
def engines(engine: WasmEngine) -> ComponentEngine:
    return ComponentEngine(engine)


@pytest.fixture(scope="module")
def python_example(
    engines: ComponentEngine, engine: WasmEngine, component_artifacts: ComponentArtifacts
) -> PreparedComponent:
    return engines.deserialize_file(component_artifacts.cwasm(ROOT / "examples" / "hello-python", engine))


@pytest.fixture(scope="module")
def hostile(engines: ComponentEngine, engine: WasmEngine, component_artifacts: ComponentArtifacts) -> PreparedComponent:
    return engines.deserialize_file(component_artifacts.cwasm(FIXTURES / "hostile-python", engine))


def request(handler: str, method: str = "GET", body: bytes = b"", **query: str) -> dict[str, Any]:
    return {
        "context": {"request_id": "req-1", "tenant_id": "t1", "extension_id": "com.example.x", "version": "1.0.0"},
        "endpoint": {"method": method, "path": f"/{handler}", "handler": handler, "params": {}},
        "http": {
            "method": method,
            "path": f"/{handler}",
            "query": query,
            "headers": {"content-type": "application/octet-stream"},
            "body_b64": base64.b64encode(body).decode() if body else None,
        },
    }


def test_the_python_example_answers_its_endpoints(engines: ComponentEngine, python_example: PreparedComponent):
    hello = engines.execute(python_example, request("hello", name="Ada"), LIMITS, HostServices(capabilities=FETCH))
    assert (hello.status, hello.body) == (200, b'{"message":"Hello, Ada!"}')
    assert hello.headers["content-type"] == "application/json"
    assert [(r.level, r.message) for r in hello.logs] == [(LogLevel.INFO, "GET /hello for Ada")]
    info = engines.execute(python_example, request("info"), LIMITS, HostServices())
    assert info.body == b'{"extension":"com.example.x","version":"1.0.0","tenant":"t1"}'


@pytest.mark.parametrize("size", [0, 1, 32 * 1024, 32 * 1024 + 1, 1024 * 1024])
def test_the_python_example_echoes_bodies_byte_for_byte(
    engines: ComponentEngine, python_example: PreparedComponent, size: int
):
    body = os.urandom(size)
    echoed = engines.execute(python_example, request("echo", "POST", body), LIMITS, HostServices())
    assert echoed.status == 200
    assert echoed.body == body
    assert "x-ext-body-stdout" not in echoed.headers


def test_a_body_over_the_inline_limit_is_payload_too_large_for_components_without_stdio(
    engines: ComponentEngine, tmp_path: Path
):
    plain = engines.compile(dummy_component(tmp_path))
    assert not plain.body_stdio
    with pytest.raises(PayloadTooLarge, match="exceeds 2097152"):
        engines.execute(plain, request("echo", "POST", b"x" * (MAX_INLINE_BODY_BYTES + 1)), LIMITS, HostServices())


def test_fetch_reaches_the_egress_policy_and_is_denied_without_the_capability(
    engines: ComponentEngine, python_example: PreparedComponent
):
    denied = engines.execute(python_example, request("fetch"), LIMITS, HostServices())
    assert denied.status == 502
    assert b'"code":"denied"' in denied.body and b"cap:http.fetch" in denied.body
    not_listed = engines.execute(python_example, request("fetch"), LIMITS, HostServices(capabilities=FETCH))
    assert b"not in the extension's egress list" in not_listed.body


def _serving(engines: ComponentEngine, component: PreparedComponent) -> None:
    """The runner keeps serving: the next call of the same component works."""
    answer = engines.execute(component, request("log_flood"), LIMITS, HostServices(capabilities=FETCH))
    assert answer.status == 200


def test_an_endless_loop_times_out_and_the_runner_keeps_serving(engines: ComponentEngine, hostile: PreparedComponent):
    short = CallLimits(timeout_ms=300, memory_bytes=LIMITS.memory_bytes, fuel=None, max_response_bytes=1024)
    with pytest.raises(ExtensionTimeout, match="300 ms"):
        engines.execute(hostile, request("loop"), short, HostServices())
    _serving(engines, hostile)


def test_a_memory_bomb_hits_the_memory_limit_and_fails_that_call_only(
    engines: ComponentEngine, hostile: PreparedComponent
):
    answer = engines.execute(hostile, request("memory"), LIMITS, HostServices())
    assert answer.status == 500
    assert b"MemoryError" in answer.body
    _serving(engines, hostile)


def test_deep_recursion_traps_and_fails_that_call_only(engines: ComponentEngine, hostile: PreparedComponent):
    with pytest.raises(ExtensionFailed, match="extension trapped"):
        engines.execute(hostile, request("recursion"), LIMITS, HostServices())
    _serving(engines, hostile)


def test_a_trap_carries_its_backtrace_and_the_end_of_stderr_for_the_logs_only(
    engines: ComponentEngine, hostile: PreparedComponent
):
    with pytest.raises(ExtensionFailed) as caught:
        engines.execute(hostile, request("stderr_then_trap"), LIMITS, HostServices())
    # The words come after 24 KB of noise: past the head kept for the logs, inside the tail kept for a failure.
    assert caught.value.details["stderr"].endswith("ValueError: the guest's own last words")
    assert len(caught.value.details["stderr"]) <= STDERR_TAIL_BYTES
    assert caught.value.details["backtrace"]
    client = json.dumps(caught.value.to_client_dict("req-1"))
    assert "last words" not in client and "backtrace" not in client


@pytest.mark.parametrize(("handler", "why"), [("fetch_metadata", b"cloud metadata"), ("fetch_loopback", b"loopback")])
def test_fetches_to_metadata_and_loopback_are_refused_even_when_listed(
    engines: ComponentEngine, hostile: PreparedComponent, handler: str, why: bytes
):
    listed = ("169.254.169.254", "127.0.0.1:9")
    host = HostServices(capabilities=FETCH, egress=listed, egress_policy=EgressPolicy(allowlist=listed))
    answer = engines.execute(hostile, request(handler), LIMITS, host)
    assert b'"refused":"denied"' in answer.body
    assert why in answer.body


def test_a_fetch_without_the_capability_is_denied(engines: ComponentEngine, hostile: PreparedComponent):
    answer = engines.execute(hostile, request("fetch_metadata"), LIMITS, HostServices())
    assert b'"refused":"denied"' in answer.body and b"cap:http.fetch" in answer.body


@pytest.mark.parametrize(
    ("handler", "message"),
    [("status_999", "status must be an integer from 100 to 599, got 999"), ("crlf_header", "CR, LF or NUL")],
)
def test_bad_responses_fail_the_call(engines: ComponentEngine, hostile: PreparedComponent, handler: str, message: str):
    with pytest.raises(ExtensionFailed, match=message):
        engines.execute(hostile, request(handler), LIMITS, HostServices())


@pytest.mark.parametrize("handler", ["socket", "resolve"])
def test_sockets_and_name_lookups_are_refused_at_run_time(
    engines: ComponentEngine, hostile: PreparedComponent, handler: str
):
    answer = engines.execute(hostile, request(handler), LIMITS, HostServices())
    assert answer.status == 200
    assert b'"refused":null' not in answer.body
    assert b'"refused":"' in answer.body


def test_a_stdout_flood_reaches_the_logs_bounded(engines: ComponentEngine, hostile: PreparedComponent):
    answer = engines.execute(hostile, request("stdout_flood"), LIMITS, HostServices())
    assert answer.status == 200
    logged = sum(len(record.message) for record in answer.logs)
    assert 0 < logged <= OUTPUT_CAPTURE_BYTES
    assert answer.logs[-1].truncated


def test_guest_log_records_past_the_limit_are_counted_as_dropped(engines: ComponentEngine, hostile: PreparedComponent):
    answer = engines.execute(hostile, request("log_flood"), LIMITS, HostServices(capabilities=FETCH))
    assert len(answer.logs) == 100
    assert answer.logs_dropped == 900


def test_the_js_example_answers_its_endpoints(
    engines: ComponentEngine, engine: WasmEngine, component_artifacts: ComponentArtifacts
):
    component = engines.deserialize_file(component_artifacts.cwasm(ROOT / "examples" / "hello-js", engine))
    hello = engines.execute(component, request("hello", name="Ada"), LIMITS, HostServices(capabilities=FETCH))
    assert (hello.status, hello.body) == (200, b'{"message":"Hello, Ada!"}')
    body = os.urandom(4096)
    assert engines.execute(component, request("echo", "POST", body), LIMITS, HostServices()).body == body
    with state_backend() as backend, upstream_server() as upstream:
        _counts_and_calls_upstream_with_its_secret(engines, component, backend, upstream)


# --- KV and secrets (ext:platform/kv, ext:platform/secrets) -----------------------------------------

STATE = frozenset({"cap:storage.kv", "cap:secrets.get", "cap:http.fetch"})
API_KEY = "sk-live-components-0xFEEDFACE"
# Each call here reads DynamoDB (and KMS once): on a loaded machine that takes seconds, not the 5 s budget.
STATE_LIMITS = CallLimits(
    timeout_ms=30_000, memory_bytes=LIMITS.memory_bytes, fuel=None, max_response_bytes=LIMITS.max_response_bytes
)


def stateful(backend: StateBackend, upstream: str, tenant: str = "t1", granted: frozenset[str] = STATE) -> HostServices:
    """One call's host services as the runner builds them: KV and secrets scoped to (tenant, extension)."""
    state = backend.services().for_call(tenant, "com.example.x", granted, ["API_KEY"])
    policy = EgressPolicy(allowlist=(upstream,), allow_private=True)
    return HostServices(
        capabilities=granted, egress=(upstream,), egress_policy=policy, kv=state.kv, secrets=state.secrets
    )


def as_tenant(call: dict[str, Any], tenant: str) -> dict[str, Any]:
    call["context"]["tenant_id"] = tenant
    return call


def _counts_and_calls_upstream_with_its_secret(
    engines: ComponentEngine, component: PreparedComponent, backend: StateBackend, upstream: str
) -> None:
    """The example's counter and upstream handlers, as a guest sees KV and secrets through the WIT world."""
    counts = [
        engines.execute(component, request("counter", "POST"), STATE_LIMITS, stateful(backend, upstream)) for _ in "ab"
    ]
    assert [(answer.status, answer.body) for answer in counts] == [(200, b'{"count":1}'), (200, b'{"count":2}')]
    other = engines.execute(component, request("counter", "POST"), STATE_LIMITS, stateful(backend, upstream, "t2"))
    assert other.body == b'{"count":1}'
    url = f"http://{upstream}/v1/me"
    missing = engines.execute(component, request("upstream", url=url), STATE_LIMITS, stateful(backend, upstream))
    assert missing.status == 502
    assert b'"not-found"' in missing.body
    backend.set_secret("t1", "com.example.x", "API_KEY", API_KEY)
    called = engines.execute(component, request("upstream", url=url), STATE_LIMITS, stateful(backend, upstream))
    assert called.status == 200
    assert json.loads(called.body) == {"x-api-key": API_KEY, "path": "/v1/me"}
    denied = engines.execute(
        component, request("counter", "POST"), STATE_LIMITS, stateful(backend, upstream, granted=frozenset())
    )
    assert denied.status == 503
    assert json.loads(denied.body)["error"]["code"] == "denied"


def test_the_python_examples_counter_persists_and_each_tenant_counts_apart(
    engines: ComponentEngine, python_example: PreparedComponent
) -> None:
    with state_backend() as backend, upstream_server() as upstream:
        for expected in (1, 2, 3):
            answer = engines.execute(
                python_example, request("counter", "POST"), STATE_LIMITS, stateful(backend, upstream)
            )
            assert (answer.status, json.loads(answer.body)) == (200, {"count": expected})
        other = stateful(backend, upstream, "t2")
        assert json.loads(engines.execute(python_example, request("counter", "POST"), STATE_LIMITS, other).body) == {
            "count": 1
        }
        assert backend.kv().get(InstallScope("t1", "com.example.x"), "counter").value == b"3"


def test_the_python_example_sends_its_secret_only_to_its_own_tenants_upstream_call(
    engines: ComponentEngine, python_example: PreparedComponent
) -> None:
    with state_backend() as backend, upstream_server() as upstream:
        backend.set_secret("t1", "com.example.x", "API_KEY", API_KEY)
        url = f"http://{upstream}/v1/me"
        mine = engines.execute(python_example, request("upstream", url=url), STATE_LIMITS, stateful(backend, upstream))
        assert (mine.status, json.loads(mine.body)) == (200, {"x-api-key": API_KEY, "path": "/v1/me"})
        theirs = engines.execute(
            python_example,
            as_tenant(request("upstream", url=url), "t2"),
            STATE_LIMITS,
            stateful(backend, upstream, "t2"),
        )
        assert theirs.status == 502
        assert json.loads(theirs.body)["error"]["code"] == "not-found"
        assert API_KEY.encode() not in theirs.body


def test_kv_and_secrets_without_their_capabilities_are_denied_variants_not_traps(
    engines: ComponentEngine, python_example: PreparedComponent
) -> None:
    with state_backend() as backend, upstream_server() as upstream:
        backend.set_secret("t1", "com.example.x", "API_KEY", API_KEY)
        fetch_only = stateful(backend, upstream, granted=frozenset({"cap:http.fetch"}))
        counter = engines.execute(python_example, request("counter", "POST"), STATE_LIMITS, fetch_only)
        assert (counter.status, json.loads(counter.body)["error"]["code"]) == (503, "denied")
        url = f"http://{upstream}/"
        upstream_call = engines.execute(python_example, request("upstream", url=url), STATE_LIMITS, fetch_only)
        assert (upstream_call.status, json.loads(upstream_call.body)["error"]["code"]) == (502, "denied")
