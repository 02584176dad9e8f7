"""The Zig example (examples/hello-zig): its committed guest run by the runner's engine, and rebuilt.

The routes are called through :class:`WasmEngine` with requests shaped as the gateway sends them
(the endpoint and its handler label included), so calls run on kept instances restored between
calls, as in production. Hostile raw requests go through the C example's minimal host, with the same
inputs and assertions as the C guest. Building needs the Zig compiler from PyPI (``ziglang``, in
requirements-dev.txt); the build runs once per session with the command copied from the example's
README, so the README's command is the one that is tested.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.bundles.wasm import RUNTIME_ABIS
from runner_container.engine import CallLimits, ExecutionResult, HostServices, LogLevel, WasmEngine
from tests.integration.test_cli import EXTCTL
from tests.integration.test_example_guest import MALFORMED_REQUESTS, Guest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello-zig"
COMMITTED_WASM = EXAMPLE / "dist" / "main.wasm"
ZIG_VERSION = "0.17.1"  # pinned in requirements-dev.txt, the example's README and the guide
LIMITS = CallLimits(timeout_ms=5000, memory_bytes=64 * 1024 * 1024, fuel=None, max_response_bytes=4 * 1024 * 1024)
MAX_NAME_BYTES = 100  # max_name_bytes in examples/hello-zig/src/main.zig
LABELS = {("GET", "/hello"): "hello", ("GET", "/info"): "info", ("POST", "/echo"): "echo"}
CONTEXT = {
    "request_id": "req-1",
    "tenant_id": "acme",
    "extension_id": "com.example.hello-zig",
    "install_id": "inst-1",
    "version": "1.0.0",
    "content_hash": "sha256:" + "ab" * 32,
    "config": {"greeting": "unused"},
}


@pytest.fixture(scope="module")
def engine() -> Iterator[WasmEngine]:
    with WasmEngine() as wasm:
        yield wasm


@pytest.fixture(scope="module")
def module(engine: WasmEngine) -> wasmtime.Module:
    return engine.compile(COMMITTED_WASM.read_bytes())


def gateway_request(
    method: str = "GET",
    path: str = "/hello",
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """A request as the gateway builds it; the endpoint's label is the manifest's for (method, path)."""
    label = label or LABELS.get((method, path))
    query = query or {}
    return {
        "context": CONTEXT,
        "endpoint": None if label is None else {"method": method, "path": path, "handler": label, "params": {}},
        "http": {
            "method": method,
            "path": path,
            "query": query,
            "query_string": "&".join(f"{k}={v}" for k, v in query.items()),
            "headers": headers or {},
            "body_b64": base64.b64encode(body).decode() if isinstance(body, bytes) else body,
        },
    }


def call(engine: WasmEngine, module: wasmtime.Module, **request: Any) -> ExecutionResult:
    return engine.execute(module, gateway_request(**request), LIMITS, HostServices())


def as_json(result: ExecutionResult) -> Any:
    assert result.headers == {"content-type": "application/json"}
    return json.loads(result.body)


# --- the three endpoints, through the runner's engine ---------------------------------------


def test_ordinary_calls_reuse_one_kept_instance_without_growing_its_memory(
    engine: WasmEngine, module: wasmtime.Module
) -> None:
    assert engine.keeps_instances(module)
    call(engine, module, path="/hello")
    before = copy.copy(engine.pool_stats)  # the engine's live counters
    for _ in range(3):
        call(engine, module, method="POST", path="/echo", body=bytes(16 * 1024))
    after = engine.pool_stats
    # A call that grew the memory would drop its instance: the allocator's static block prevents that.
    assert (after.dropped - before.dropped, after.reused - before.reused) == (0, 3)


def test_every_endpoint_of_the_manifest_reaches_its_route_by_its_handler_label(
    engine: WasmEngine, module: wasmtime.Module
) -> None:
    endpoints = json.loads((EXAMPLE / "manifest.json").read_text())["api"]["endpoints"]
    assert {(e["method"], e["path"]): e["handler"] for e in endpoints} == LABELS
    for endpoint in endpoints:
        assert call(engine, module, method=endpoint["method"], path=endpoint["path"]).status == 200


def test_the_label_picks_the_route_not_the_path(engine: WasmEngine, module: wasmtime.Module) -> None:
    reply = call(engine, module, method="GET", path="/greeting", label="hello", query={"name": "Ada"})
    assert as_json(reply) == {"message": "Hello, Ada!"}


def test_hello_without_a_name_greets_the_world(engine: WasmEngine, module: wasmtime.Module) -> None:
    reply = call(engine, module, path="/hello")
    assert reply.status == 200
    assert as_json(reply) == {"message": "Hello, world!"}


@pytest.mark.parametrize(
    "name",
    [
        "Ada",
        'Ada "the Countess" Lovelace',
        "back\\slash and /slash",
        "Zoë, 李, Ωmega, 🚀",
        "tab\tnew\nline\r\x00\x1f\x7f",
        "</script><b>",
    ],
)
def test_hello_escapes_the_name_so_it_survives_a_json_round_trip(
    engine: WasmEngine, module: wasmtime.Module, name: str
) -> None:
    assert as_json(call(engine, module, query={"name": name})) == {"message": f"Hello, {name}!"}


@settings(max_examples=150, deadline=None)
@given(name=st.text(min_size=1, max_size=40))
def test_hello_greets_any_short_name_exactly(engine: WasmEngine, module: wasmtime.Module, name: str) -> None:
    if len(name.encode()) > MAX_NAME_BYTES:
        name = name[:10]
    assert as_json(call(engine, module, query={"name": name})) == {"message": f"Hello, {name}!"}


def test_hello_cuts_a_long_name_at_a_character_boundary(engine: WasmEngine, module: wasmtime.Module) -> None:
    name = "é" * 51 + "tail"  # 102 bytes of UTF-8: the cut would fall inside the 51st "é"
    assert as_json(call(engine, module, query={"name": name}))["message"] == "Hello, " + "é" * 50 + "!"


def test_info_reports_the_context_of_the_call(engine: WasmEngine, module: wasmtime.Module) -> None:
    reply = call(engine, module, path="/info")
    assert reply.status == 200
    assert as_json(reply) == {"extension": "com.example.hello-zig", "version": "1.0.0", "tenant": "acme"}


def test_info_reports_null_for_context_fields_that_are_missing(engine: WasmEngine, module: wasmtime.Module) -> None:
    request = gateway_request(path="/info")
    request["context"] = {"tenant_id": 'te"nant'}
    reply = engine.execute(module, request, LIMITS, HostServices())
    assert as_json(reply) == {"extension": None, "version": None, "tenant": 'te"nant'}


def test_echo_returns_binary_bytes_unchanged_with_their_content_type(
    engine: WasmEngine, module: wasmtime.Module
) -> None:
    body = bytes(range(256)) * 3 + b"\x00\xff"
    reply = call(engine, module, method="POST", path="/echo", headers={"content-type": "image/png"}, body=body)
    assert reply.status == 200
    assert reply.headers == {"content-type": "image/png"}
    assert reply.body == body


@pytest.mark.parametrize("body", [b"", b"a", b"ab", b"abc", bytes(300 * 1024)])
def test_echo_round_trips_bodies_of_every_padding_length_and_past_the_first_block(
    engine: WasmEngine, module: wasmtime.Module, body: bytes
) -> None:
    assert call(engine, module, method="POST", path="/echo", body=body).body == body


def test_echo_without_a_body_answers_with_no_body(engine: WasmEngine, module: wasmtime.Module) -> None:
    reply = call(engine, module, method="POST", path="/echo")
    assert (reply.status, reply.body) == (200, b"")


def test_echo_without_a_usable_content_type_labels_the_body_as_octets(
    engine: WasmEngine, module: wasmtime.Module
) -> None:
    for headers in ({}, {"content-type": "text/plain\r\nx-injected: 1"}, {"content-type": "a/" + "b" * 255}):
        reply = call(engine, module, method="POST", path="/echo", headers=headers, body=b"hi")
        assert reply.headers == {"content-type": "application/octet-stream"}


def test_echo_refuses_a_body_that_is_not_base64(engine: WasmEngine, module: wasmtime.Module) -> None:
    reply = call(engine, module, method="POST", path="/echo", body="not base64!")
    assert reply.status == 400
    assert "body_b64" in as_json(reply)["error"]


@pytest.mark.parametrize(
    ("method", "path", "label"),
    [
        ("GET", "/nope", None),
        ("GET", "/hello/", None),
        ("DELETE", "/info", None),
        ("GET", "", None),
        ("GET", "/x", "nope"),
        ("GET", "/x", ""),
    ],
)
def test_a_request_without_a_known_label_is_a_404_naming_the_path(
    engine: WasmEngine, module: wasmtime.Module, method: str, path: str, label: str | None
) -> None:
    reply = call(engine, module, method=method, path=path, label=label)
    assert reply.status == 404
    assert as_json(reply) == {"error": f"no route for {path}"}


def test_a_404_escapes_the_path_it_names(engine: WasmEngine, module: wasmtime.Module) -> None:
    path = '/a"b\\c\n'
    assert as_json(call(engine, module, path=path)) == {"error": f"no route for {path}"}


def test_each_request_logs_one_info_line_with_method_and_path(engine: WasmEngine, module: wasmtime.Module) -> None:
    reply = call(engine, module, path="/hello", query={"name": "Ada"})
    assert [(r.level, r.message) for r in reply.logs] == [(LogLevel.INFO, "GET /hello")]


def test_log_lines_cannot_be_split_by_the_path(engine: WasmEngine, module: wasmtime.Module) -> None:
    assert [r.message for r in call(engine, module, path="/x\nFAKE entry").logs] == ["GET /x?FAKE entry"]


# --- raw and hostile requests, through the C example's minimal host -------------------------


@pytest.fixture(scope="module")
def raw_guest() -> Guest:
    engine = wasmtime.Engine()
    return Guest(engine, wasmtime.Module(engine, COMMITTED_WASM.read_bytes()))


@pytest.mark.parametrize("raw", MALFORMED_REQUESTS, ids=lambda raw: repr(raw[:40]))
def test_a_malformed_request_gets_a_400_json_answer(raw_guest: Guest, raw: bytes) -> None:
    reply, logs = raw_guest.call_raw(raw)
    assert reply.status == 400
    assert reply.json()["error"].startswith("malformed request")
    assert [level for level, _ in logs] == [2]


def test_an_unpaired_surrogate_escape_is_malformed(raw_guest: Guest) -> None:
    raw = json.dumps({"http": {"method": "GET", "path": "/hello", "query": {"name": "a\ud800b"}}}).encode()
    assert b"\\ud800" in raw
    reply, _ = raw_guest.call_raw(raw)
    assert reply.json() == {"error": "malformed request: not a JSON object"}


@pytest.mark.parametrize(
    "http",
    [None, {}, {"method": "GET"}, {"path": "/hello"}, {"method": 1, "path": "/hello"}, {"method": "GET", "path": None}],
)
def test_a_request_without_method_and_path_strings_gets_a_400(raw_guest: Guest, http: Any) -> None:
    reply, _ = raw_guest.call_raw(json.dumps({"context": CONTEXT, "http": http}).encode())
    assert reply.status == 400
    assert "http.method and http.path" in reply.json()["error"]


def test_every_truncation_of_a_valid_request_is_a_400_not_a_trap(raw_guest: Guest) -> None:
    request = gateway_request(method="POST", path="/echo", headers={"content-type": "a/b"}, body=b"\x00\x01")
    raw = json.dumps(request).encode()
    for cut in range(len(raw)):
        reply, _ = raw_guest.call_raw(raw[:cut])
        assert reply.status == 400, raw[:cut]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(alphabet='{}[]":,\\ u0aeE.-+trufalsn/h', max_size=60).map(str.encode))
def test_arbitrary_bytes_never_trap_the_guest(raw_guest: Guest, raw: bytes) -> None:
    reply, _ = raw_guest.call_raw(raw)
    assert reply.status in (200, 400, 404)


def test_a_request_reaching_past_the_end_of_memory_gets_a_400(raw_guest: Guest) -> None:
    instance = raw_guest.instantiate()
    reply = instance.handle(instance.memory_size - 10, 100)
    assert reply.status == 400
    assert instance.logs == [(2, "malformed request: it lies outside guest memory")]


def test_an_out_pointer_outside_memory_fails_the_call_without_a_trap(raw_guest: Guest) -> None:
    instance = raw_guest.instantiate()
    request = json.dumps(gateway_request()).encode()
    req_ptr = instance.write(request)
    assert instance.exports["handler"](instance.store, req_ptr, len(request), instance.memory_size - 4) == 1
    assert instance.exports["handler"](instance.store, req_ptr, len(request), 0) == 1


def test_alloc_returns_8_byte_aligned_blocks_and_zero_when_memory_cannot_grow(raw_guest: Guest) -> None:
    instance = raw_guest.instantiate()
    alloc = instance.exports["alloc"]
    assert alloc(instance.store, 64 * 1024 * 1024) == 0
    assert alloc(instance.store, -1) == 0
    assert [alloc(instance.store, size) % 8 for size in (1, 3, 16, 300_000)] == [0, 0, 0, 0]


def test_the_guest_exports_only_the_abi_and_imports_only_ext_log(raw_guest: Guest) -> None:
    assert sorted(e.name for e in raw_guest.module.exports) == ["alloc", "handler", "memory"]
    assert [(i.module, i.name) for i in raw_guest.module.imports] == [("ext", "log")]


def test_the_page_is_the_c_examples() -> None:
    ours, theirs = EXAMPLE / "ui", ROOT / "examples" / "hello" / "ui"
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    for page in theirs.iterdir():
        assert (ours / page.name).read_bytes() == page.read_bytes(), page.name


# --- building with the README's command, then packing and verifying -----------------------


def readme_build_command() -> list[str]:
    """The ``python -m ziglang build-exe …`` line of the example's README, as arguments."""
    lines = (EXAMPLE / "README.md").read_text("utf-8").splitlines()
    commands = [line for line in lines if line.startswith("python -m ziglang build-exe ")]
    assert len(commands) == 1, "the README gives one build command"
    return shlex.split(commands[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example whose dist/main.wasm the README's command just built (cold Zig caches)."""
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("needs the Zig compiler: pip install -r requirements-dev.txt (ziglang)")
    work = tmp_path_factory.mktemp("zig")
    project = work / "hello-zig"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("dist"))
    (project / "dist").mkdir()
    command = [sys.executable, *readme_build_command()[1:]]
    caches = ["--cache-dir", str(work / "cache"), "--global-cache-dir", str(work / "global-cache")]
    done = subprocess.run(command + caches, cwd=project, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return project


@pytest.mark.slow
@pytest.mark.xdist_group("zig-build")  # one build per session: both tests on one worker
def test_the_committed_guest_is_exactly_what_the_readme_command_builds(built: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    built_hash = hashlib.sha256((built / "dist" / "main.wasm").read_bytes()).hexdigest()
    assert built_hash == hashlib.sha256(COMMITTED_WASM.read_bytes()).hexdigest(), (
        f"examples/hello-zig/dist/main.wasm is not what Zig {version} builds from its sources; it is committed "
        f"as Zig {ZIG_VERSION} builds it: rebuild it with the command in examples/hello-zig/README.md"
    )


def run_extctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXTCTL, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.xdist_group("zig-build")  # one build per session: both tests on one worker
def test_the_built_bundle_passes_extctl_verify(built: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.tar.zst"
    packed = run_extctl("pack", str(built), "-o", str(bundle))
    assert packed.returncode == 0, packed.stderr
    done = run_extctl("verify", str(bundle), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True
    assert report["content_hash"] == packed.stdout.strip().splitlines()[-1]
    assert report["manifest"]["name"] == "com.example.hello-zig"


# --- the guide's checklist says what the code does -------------------------------------------


def test_the_guide_gives_the_readme_build_command() -> None:
    guide = (ROOT / "docs" / "extension-guide.md").read_text("utf-8")
    assert f"`{shlex.join(readme_build_command())}`" in guide


def test_the_guide_names_exactly_the_imports_publishing_accepts() -> None:
    accepted = sorted(RUNTIME_ABIS["wasm-core@1"]["imports"])
    assert accepted == ["ext.http_fetch", "ext.kv", "ext.log", "ext.secret_get"], (
        "docs/extension-guide.md's checklist says the runner links ext.log, ext.http_fetch, ext.kv and "
        "ext.secret_get: update it"
    )
    guide = (ROOT / "docs" / "extension-guide.md").read_text("utf-8")
    assert "the runner links four: `log`, `http_fetch`, `kv` and\n  `secret_get`" in guide


def test_the_zig_version_is_pinned_alike_everywhere() -> None:
    pin = f"ziglang=={ZIG_VERSION}"
    assert pin in (ROOT / "requirements-dev.txt").read_text("utf-8").splitlines()
    assert f"pip install {pin}" in (EXAMPLE / "README.md").read_text("utf-8")
    assert f"pip install {pin}" in (ROOT / "docs" / "extension-guide.md").read_text("utf-8")
