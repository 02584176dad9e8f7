"""KV and secrets for wasm-core@1 guests, through the whole runner: real Wasmtime, real C guests built by
clang, moto DynamoDB and KMS, and a local HTTP server the guest's fetches reach.

Two guests: ``examples/hello`` (its ``POST /counter`` and ``GET /upstream``) and a test guest,
``tests/fixtures/c/state-proxy``, that calls ``ext.kv`` / ``ext.secret_get`` with what its query says and
reports the host's answers, so every error shape can be seen exactly as a guest sees it.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib.bundles.pack import pack_project
from chalicelib.errors import BadRequest, ToolchainMissing
from chalicelib.kv import KvLimits, KvService
from chalicelib.tenancy import InstallScope
from extctl.build import build_project, find_toolchain
from runner_container.egress import EgressPolicy
from runner_container.engine import WasmEngine
from runner_container.service import RunnerService
from tests.integration.runner_fixtures import EXAMPLE, REPO, RunnerEnv, execute_payload, runner_env
from tests.integration.state_fixtures import StateBackend, provision_state, upstream_server

PROXY = REPO / "tests" / "fixtures" / "c" / "state-proxy"
PROXY_NAME = "com.acme.state-proxy"
HELLO = "com.example.hello"
STATE = ("cap:storage.kv", "cap:secrets.get")
HELLO_GRANTS = ("cap:log.emit", "cap:storage.kv", "cap:secrets.get", "cap:http.fetch")
API_KEY = "sk-live-7Hq2-recognisable-0xC0FFEE"


# --- guests and an upstream server -------------------------------------------------------------------


def _toolchain_or_skip() -> None:
    try:
        find_toolchain()
    except ToolchainMissing as exc:
        pytest.skip(f"needs clang and wasm-ld to build guests: {exc.message}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_server() as address:
        yield address


@pytest.fixture(scope="module")
def proxy_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    _toolchain_or_skip()
    project = tmp_path_factory.mktemp("proxy") / "state-proxy"
    shutil.copytree(PROXY, project)
    for name in ("ext", "json", "base64"):
        for suffix in (".c", ".h"):
            shutil.copy(EXAMPLE / "src" / f"{name}{suffix}", project / "src")
    build_project(project)
    return pack_project(project, project.parent / "proxy.tar.zst").output.read_bytes()


@pytest.fixture(scope="module")
def hello_bundle(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> bytes:
    """The example as committed, its egress list also naming the local upstream server."""
    project = tmp_path_factory.mktemp("hello") / "hello"
    shutil.copytree(EXAMPLE, project)
    manifest = json.loads((project / "manifest.json").read_text("utf-8"))
    manifest["egress"] = [*manifest["egress"], upstream]
    (project / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    return pack_project(project, project.parent / "hello.tar.zst").output.read_bytes()


# --- a runner with state ----------------------------------------------------------------------------


@dataclass
class StateRunner:
    env: RunnerEnv
    engine: WasmEngine
    backend: StateBackend

    def runner(self, limits: KvLimits | None = None) -> RunnerService:
        """A runner whose KV has ``limits`` (the platform's by default)."""
        policy = EgressPolicy.from_settings(self.env.settings)
        state = self.backend.services(limits)
        return RunnerService(self.env.cache(self.engine), self.engine, self.env.settings, policy, state=state)

    def set_secret(self, tenant: str, extension: str, name: str, value: str) -> None:
        self.backend.set_secret(tenant, extension, name, value)

    @property
    def kv(self) -> KvService:
        return self.backend.kv()


@pytest.fixture
def state(tmp_path: Path, engine: WasmEngine, upstream: str) -> Iterator[StateRunner]:
    allow = {"EXT_EGRESS_ALLOWLIST": upstream, "EXT_EGRESS_ALLOW_PRIVATE": "true"}
    # A call here makes up to 101 DynamoDB requests: on a loaded machine that outlasts the 10 s default.
    with runner_env(tmp_path, EXT_GATEWAY_TIMEOUT_MS="30000", **allow) as env:
        yield StateRunner(env, engine, provision_state(env.settings))


def call(
    runner: RunnerService,
    content_hash: str,
    *,
    extension: str = PROXY_NAME,
    tenant: str = "acme",
    method: str = "GET",
    path: str = "/proxy",
    granted: tuple[str, ...] = STATE,
    **query: str,
) -> tuple[int, Any]:
    payload = execute_payload(content_hash, extension=extension, method=method, path=path, query=query, granted=granted)
    payload["request"]["context"]["tenant_id"] = tenant
    answer = runner.execute(payload)
    return answer.status, json.loads(base64.b64decode(answer.body_b64))


def kv(runner: RunnerService, content_hash: str, request: dict[str, Any], **options: Any) -> Any:
    """What the proxy guest saw: ``{"calls", "ok", "last"}``."""
    status, body = call(runner, content_hash, fn="kv", arg=json.dumps(request), **options)
    assert status == 200
    return body


def secret(runner: RunnerService, content_hash: str, name: str, **options: Any) -> Any:
    status, body = call(runner, content_hash, fn="secret", arg=name, **options)
    assert status == 200
    return body


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- the example's counter and upstream call ---------------------------------------------------------


def test_the_examples_counter_persists_across_calls(state: StateRunner, hello_bundle: bytes) -> None:
    runner, hello = state.runner(), state.env.publish(hello_bundle)
    counts = [call(runner, hello, extension=HELLO, method="POST", path="/counter", granted=HELLO_GRANTS) for _ in "abc"]
    assert counts == [(200, {"count": 1}), (200, {"count": 2}), (200, {"count": 3})]
    assert state.kv.get(InstallScope("acme", HELLO), "counter").value == b"3"


def test_the_examples_upstream_call_carries_the_secret_in_a_header(
    state: StateRunner, hello_bundle: bytes, upstream: str
) -> None:
    runner, hello = state.runner(), state.env.publish(hello_bundle)
    state.set_secret("acme", HELLO, "API_KEY", API_KEY)
    status, body = call(
        runner, hello, extension=HELLO, path="/upstream", granted=HELLO_GRANTS, url=f"http://{upstream}/v1/me"
    )
    assert (status, body) == (200, {"x-api-key": API_KEY, "path": "/v1/me"})


def test_the_example_without_its_secret_set_answers_the_hosts_not_found(
    state: StateRunner, hello_bundle: bytes, upstream: str
) -> None:
    runner, hello = state.runner(), state.env.publish(hello_bundle)
    status, body = call(
        runner, hello, extension=HELLO, path="/upstream", granted=HELLO_GRANTS, url=f"http://{upstream}/"
    )
    assert status == 404
    assert body["error"]["code"] == "SECRET_NOT_FOUND"


def test_the_examples_counter_without_the_grant_is_denied_not_a_trap(state: StateRunner, hello_bundle: bytes) -> None:
    runner, hello = state.runner(), state.env.publish(hello_bundle)
    status, body = call(runner, hello, extension=HELLO, method="POST", path="/counter", granted=("cap:log.emit",))
    assert status == 403
    assert body["error"] == {"code": "KV_DENIED", "message": "the install was not granted cap:storage.kv"}


# --- every answer as the guest sees it ----------------------------------------------------------------


def test_a_set_then_get_round_trips_the_value_and_revision(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    stored = kv(runner, proxy, {"op": "set", "key": "cursor", "value_b64": b64("page-7")})
    assert stored["ok"] == 1
    revision = stored["last"]["revision"]
    got = kv(runner, proxy, {"op": "get", "key": "cursor"})
    assert got["last"] == {"value_b64": b64("page-7"), "revision": revision}
    listed = kv(runner, proxy, {"op": "list", "prefix": "cur"})
    assert listed["last"] == {"keys": ["cursor"], "cursor": None}
    assert kv(runner, proxy, {"op": "delete", "key": "cursor"})["last"] == {"deleted": True}
    missing = kv(runner, proxy, {"op": "get", "key": "cursor"})
    assert (missing["ok"], missing["last"]["error"]["code"]) == (0, "KV_NOT_FOUND")


def test_a_compare_and_set_on_a_stale_revision_is_a_conflict(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    first = kv(runner, proxy, {"op": "set", "key": "k", "value_b64": b64("1"), "if_revision": 0})["last"]["revision"]
    kv(runner, proxy, {"op": "set", "key": "k", "value_b64": b64("2"), "if_revision": first})
    stale = kv(runner, proxy, {"op": "set", "key": "k", "value_b64": b64("3"), "if_revision": first})
    assert stale["ok"] == 0
    assert stale["last"]["error"]["code"] == "KV_CONFLICT"
    again = kv(runner, proxy, {"op": "set", "key": "k", "value_b64": b64("4"), "if_revision": 0})
    assert again["last"]["error"]["code"] == "KV_CONFLICT"
    assert state.kv.get(InstallScope("acme", PROXY_NAME), "k").value == b"2"


def test_the_keys_quota_reaches_the_guest_as_quota_exceeded(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(KvLimits(max_keys=2)), state.env.publish(proxy_bundle)
    for key in ("a", "b"):
        assert kv(runner, proxy, {"op": "set", "key": key, "value_b64": ""})["ok"] == 1
    refused = kv(runner, proxy, {"op": "set", "key": "c", "value_b64": ""})["last"]["error"]
    assert refused["code"] == "KV_QUOTA_EXCEEDED"
    assert "10,000" not in refused["message"]


def test_a_value_over_64_kib_is_invalid(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    big = base64.b64encode(b"x" * (64 * 1024 + 1)).decode()
    assert kv(runner, proxy, {"op": "set", "key": "big", "value_b64": big})["last"]["error"]["code"] == "KV_INVALID"


def test_a_malformed_request_is_invalid_naming_the_field(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    answer = kv(runner, proxy, {"op": "get", "key": "k", "colour": "red"})["last"]["error"]
    assert answer == {"code": "KV_INVALID", "message": "unknown field in the KV request: colour"}


def test_the_101st_operation_of_one_call_is_refused_and_the_next_call_has_a_fresh_budget(
    state: StateRunner, proxy_bundle: bytes
) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    kv(runner, proxy, {"op": "set", "key": "k", "value_b64": ""})
    spent = kv(runner, proxy, {"op": "get", "key": "k"}, times="101")
    assert (spent["calls"], spent["ok"]) == (101, 100)
    assert spent["last"]["error"] == {
        "code": "KV_QUOTA_EXCEEDED",
        "message": "a call may make at most 100 KV operations",
    }
    assert kv(runner, proxy, {"op": "get", "key": "k"}, times="100")["ok"] == 100


def test_without_the_capabilities_kv_and_secrets_are_denied(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    state.set_secret("acme", PROXY_NAME, "API_KEY", API_KEY)
    kv_answer = kv(runner, proxy, {"op": "get", "key": "k"}, granted=())
    assert kv_answer["last"]["error"]["code"] == "KV_DENIED"
    secret_answer = secret(runner, proxy, "API_KEY", granted=("cap:storage.kv",))
    assert secret_answer["last"]["error"] == {
        "code": "SECRET_DENIED",
        "message": "the install was not granted cap:secrets.get",
    }


def test_a_declared_secret_is_read_and_an_undeclared_one_is_denied(state: StateRunner, proxy_bundle: bytes) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    state.set_secret("acme", PROXY_NAME, "API_KEY", API_KEY)
    state.set_secret("acme", PROXY_NAME, "UNDECLARED", "from-an-older-version")
    assert secret(runner, proxy, "API_KEY")["last"] == {"value": API_KEY}
    assert secret(runner, proxy, "OTHER")["last"]["error"]["code"] == "SECRET_NOT_FOUND"
    denied = secret(runner, proxy, "UNDECLARED")["last"]["error"]
    assert denied == {"code": "SECRET_DENIED", "message": "the manifest does not declare a secret named 'UNDECLARED'"}
    assert secret(runner, proxy, "N" * 65)["last"]["error"]["code"] == "SECRET_DENIED"


def test_another_tenants_guest_reads_none_of_this_tenants_kv_or_secrets(
    state: StateRunner, proxy_bundle: bytes
) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    kv(runner, proxy, {"op": "set", "key": "owner", "value_b64": b64("acme")}, tenant="acme")
    state.set_secret("acme", PROXY_NAME, "API_KEY", API_KEY)
    other = {"tenant": "globex"}
    assert kv(runner, proxy, {"op": "get", "key": "owner"}, **other)["last"]["error"]["code"] == "KV_NOT_FOUND"
    assert kv(runner, proxy, {"op": "list"}, **other)["last"] == {"keys": [], "cursor": None}
    assert secret(runner, proxy, "API_KEY", **other)["last"]["error"]["code"] == "SECRET_NOT_FOUND"
    kv(runner, proxy, {"op": "set", "key": "owner", "value_b64": b64("globex")}, **other)
    assert kv(runner, proxy, {"op": "get", "key": "owner"})["last"]["value_b64"] == b64("acme")
    state.set_secret("globex", PROXY_NAME, "API_KEY", "globex-key")
    assert secret(runner, proxy, "API_KEY")["last"] == {"value": API_KEY}
    assert secret(runner, proxy, "API_KEY", **other)["last"] == {"value": "globex-key"}


def test_a_call_whose_context_has_no_valid_tenant_is_refused_before_it_runs(
    state: StateRunner, proxy_bundle: bytes
) -> None:
    runner, proxy = state.runner(), state.env.publish(proxy_bundle)
    payload = execute_payload(proxy, extension=PROXY_NAME, path="/proxy", granted=STATE)
    payload["request"]["context"]["tenant_id"] = "../other"
    with pytest.raises(BadRequest, match="is not a tenant id"):
        runner.execute(payload)
