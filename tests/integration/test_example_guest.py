"""The example extension's committed guest, run in real wasmtime, and rebuilt from its source.

The host here is the smallest faithful one: a fresh instance per request, ``ext.log``
defined, ``ext.http_fetch``, ``ext.kv`` and ``ext.secret_get`` refusing as a host without the
capabilities does, the request written through ``alloc``, one ``handler`` call, and the
``(ptr, len)`` pair read back from ``out``.  The routes that use KV, secrets and fetches are tested
against the real host in ``tests/integration/runner/test_state.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.errors import BuildFailed, ToolchainMissing, WasmInvalid
from extctl.build import build_project, find_toolchain

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
COMMITTED_WASM = EXAMPLE / "dist" / "main.wasm"
MEMORY_LIMIT = 64 * 1024 * 1024
MAX_NAME_BYTES = 100  # MAX_NAME_BYTES in examples/hello/src/main.c

CONTEXT = {
    "request_id": "req-1",
    "tenant_id": "acme",
    "extension_id": "com.example.hello",
    "install_id": "inst-1",
    "version": "1.0.0",
    "content_hash": "sha256:" + "ab" * 32,
    "config": {"greeting": "unused"},
}


def _toolchain_or_skip() -> None:
    try:
        find_toolchain()
    except ToolchainMissing as exc:
        pytest.skip(f"needs clang and wasm-ld to build guests: {exc.message}")


# --- a minimal wasm-core@1 host ----------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes | None

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        assert self.body is not None
        return json.loads(self.body)


@dataclass(frozen=True)
class Instance:
    """One fresh instance of the guest, as the runner makes for each request."""

    store: wasmtime.Store
    exports: Any
    logs: list[tuple[int, str]]

    @property
    def memory_size(self) -> int:
        size: int = self.exports["memory"].data_len(self.store)
        return size

    def write(self, data: bytes) -> int:
        ptr: int = self.exports["alloc"](self.store, len(data))
        assert ptr != 0
        self.exports["memory"].write(self.store, data, ptr)
        return ptr

    def handle(self, req_ptr: int, req_len: int) -> Reply:
        out = self.exports["alloc"](self.store, 8)
        assert self.exports["handler"](self.store, req_ptr, req_len, out) == 0
        memory = self.exports["memory"]
        resp_ptr, resp_len = struct.unpack("<ii", memory.read(self.store, out, out + 8))
        assert resp_ptr > 0
        assert resp_ptr + resp_len <= self.memory_size
        return _parse_response(memory.read(self.store, resp_ptr, resp_ptr + resp_len))


def _parse_response(raw: bytes) -> Reply:
    """Check everything DESIGN §6 asks of a response, then decode it."""
    doc = json.loads(raw.decode("utf-8"))
    assert set(doc) == {"status", "headers", "body_b64"}
    assert isinstance(doc["status"], int)
    assert 100 <= doc["status"] <= 599
    for name, value in doc["headers"].items():
        assert isinstance(value, str)
        assert not any(c in name + value for c in "\r\n")
    body = doc["body_b64"]
    return Reply(doc["status"], doc["headers"], None if body is None else base64.b64decode(body, validate=True))


@dataclass(frozen=True)
class Guest:
    """The committed guest, compiled once; every call gets a fresh instance."""

    engine: wasmtime.Engine
    module: wasmtime.Module

    def instantiate(self) -> Instance:
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=MEMORY_LIMIT)
        linker = wasmtime.Linker(self.engine)
        logs: list[tuple[int, str]] = []

        def log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
            memory = caller["memory"]
            assert isinstance(memory, wasmtime.Memory)
            logs.append((level, memory.read(caller, ptr, ptr + length).decode("utf-8")))

        def refuse(code: str) -> Any:
            answer = json.dumps({"error": {"code": code, "message": "not granted"}}).encode()

            def host_function(caller: wasmtime.Caller, ptr: int, length: int, out: int) -> int:
                memory, alloc = caller["memory"], caller["alloc"]
                assert isinstance(memory, wasmtime.Memory)
                assert isinstance(alloc, wasmtime.Func)
                at = alloc(caller, len(answer))
                memory.write(caller, answer, at)
                memory.write(caller, struct.pack("<II", at, len(answer)), out)
                return 1

            return host_function

        i32 = wasmtime.ValType.i32()
        linker.define_func("ext", "log", wasmtime.FuncType([i32, i32, i32], []), log, access_caller=True)
        json_function = wasmtime.FuncType([i32, i32, i32], [i32])
        for name, code in (("http_fetch", "EGRESS_DENIED"), ("kv", "KV_DENIED"), ("secret_get", "SECRET_DENIED")):
            linker.define_func("ext", name, json_function, refuse(code), access_caller=True)
        return Instance(store, linker.instantiate(store, self.module).exports(store), logs)

    def call_raw(self, request: bytes) -> tuple[Reply, list[tuple[int, str]]]:
        instance = self.instantiate()
        reply = instance.handle(instance.write(request), len(request))
        return reply, instance.logs

    def call(self, **kwargs: Any) -> Reply:
        return self.call_raw(make_request(**kwargs))[0]


@pytest.fixture(scope="module")
def guest() -> Guest:
    engine = wasmtime.Engine()
    return Guest(engine, wasmtime.Module(engine, COMMITTED_WASM.read_bytes()))


def make_request(
    method: str = "GET",
    path: str = "/hello",
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    query = query or {}
    request = {
        "context": CONTEXT,
        "endpoint": None,
        "http": {
            "method": method,
            "path": path,
            "query": query,
            "query_string": "&".join(f"{k}={v}" for k, v in query.items()),
            "headers": headers or {},
            "body_b64": None if body is None else base64.b64encode(body).decode(),
        },
    }
    return json.dumps(request).encode()


# --- routes -------------------------------------------------------------------------------


def test_hello_without_a_name_greets_the_world(guest: Guest) -> None:
    reply = guest.call(path="/hello")
    assert reply.status == 200
    assert reply.json() == {"message": "Hello, world!"}


def test_hello_greets_the_name_from_the_query(guest: Guest) -> None:
    assert guest.call(path="/hello", query={"name": "Ada"}).json() == {"message": "Hello, Ada!"}


@pytest.mark.parametrize(
    "name",
    [
        'Ada "the Countess" Lovelace',
        "back\\slash and /slash",
        "Zoë, 李, Ωmega, 🚀",
        "tab\tnew\nline\r\x00\x1f\x7f",
        "</script><b>",
    ],
)
def test_hello_escapes_the_name_so_it_survives_a_json_round_trip(guest: Guest, name: str) -> None:
    assert guest.call(path="/hello", query={"name": name}).json() == {"message": f"Hello, {name}!"}


@settings(max_examples=150, deadline=None)
@given(name=st.text(min_size=1, max_size=40))
def test_hello_greets_any_short_name_exactly(guest: Guest, name: str) -> None:
    if len(name.encode()) > MAX_NAME_BYTES:
        name = name[:10]
    assert guest.call(path="/hello", query={"name": name}).json() == {"message": f"Hello, {name}!"}


def test_hello_cuts_a_long_name_at_a_character_boundary(guest: Guest) -> None:
    name = "é" * 51 + "tail"  # 102 bytes of UTF-8: the cut would fall inside the 51st "é"
    message = guest.call(path="/hello", query={"name": name}).json()["message"]
    assert message == "Hello, " + "é" * 50 + "!"


def test_hello_replaces_a_lone_surrogate_escape(guest: Guest) -> None:
    request = make_request(path="/hello", query={"name": "a\ud800b"})
    assert b"\\ud800" in request
    reply, _ = guest.call_raw(request)
    assert reply.json() == {"message": "Hello, a\ufffdb!"}


def test_info_reports_the_context_of_the_call(guest: Guest) -> None:
    reply = guest.call(path="/info")
    assert reply.status == 200
    assert reply.json() == {"extension": "com.example.hello", "version": "1.0.0", "tenant": "acme"}


def test_info_reports_null_for_context_fields_that_are_missing(guest: Guest) -> None:
    request = json.loads(make_request(path="/info"))
    request["context"] = {"tenant_id": 'te"nant'}
    reply, _ = guest.call_raw(json.dumps(request).encode())
    assert reply.json() == {"extension": None, "version": None, "tenant": 'te"nant'}


def test_echo_returns_binary_bytes_unchanged_with_their_content_type(guest: Guest) -> None:
    body = bytes(range(256)) * 3 + b"\x00\xff"
    reply = guest.call(method="POST", path="/echo", headers={"content-type": "image/png"}, body=body)
    assert reply.status == 200
    assert reply.headers == {"content-type": "image/png"}
    assert reply.body == body


@pytest.mark.parametrize("body", [b"", b"a", b"ab", b"abc"])
def test_echo_round_trips_bodies_of_every_padding_length(guest: Guest, body: bytes) -> None:
    assert guest.call(method="POST", path="/echo", body=body).body == body


def test_echo_without_a_body_answers_with_no_body(guest: Guest) -> None:
    reply = guest.call(method="POST", path="/echo")
    assert (reply.status, reply.body) == (200, None)


def test_echo_without_a_usable_content_type_labels_the_body_as_octets(guest: Guest) -> None:
    for headers in ({}, {"content-type": "text/plain\r\nx-injected: 1"}):
        reply = guest.call(method="POST", path="/echo", headers=headers, body=b"hi")
        assert reply.headers == {"content-type": "application/octet-stream"}


def test_echo_refuses_a_body_that_is_not_base64(guest: Guest) -> None:
    request = json.loads(make_request(method="POST", path="/echo"))
    request["http"]["body_b64"] = "not base64!"
    reply, _ = guest.call_raw(json.dumps(request).encode())
    assert reply.status == 400
    assert "body_b64" in reply.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/hello/"), ("GET", "/echo"), ("POST", "/hello"), ("DELETE", "/info"), ("GET", "")],
)
def test_anything_else_is_a_404_naming_the_path(guest: Guest, method: str, path: str) -> None:
    reply = guest.call(method=method, path=path)
    assert reply.status == 404
    assert reply.json() == {"error": f"no route for {path}"}


def test_a_404_escapes_the_path_it_names(guest: Guest) -> None:
    path = '/a"b\\c\n'
    assert guest.call(path=path).json() == {"error": f"no route for {path}"}


# --- logging ------------------------------------------------------------------------------


def test_each_request_logs_one_info_line_with_method_and_path(guest: Guest) -> None:
    _, logs = guest.call_raw(make_request(path="/hello", query={"name": "Ada"}))
    assert logs == [(1, "GET /hello")]


def test_log_lines_cannot_be_split_by_the_path(guest: Guest) -> None:
    _, logs = guest.call_raw(make_request(path="/x\nFAKE entry"))
    assert logs == [(1, "GET /x?FAKE entry")]


# --- malformed requests get a 400, never a trap --------------------------------------------


# Requests an example guest must answer with a 400 (the last is valid JSON, but nested past the C reader's
# limit of 64 and without `http`). test_example_zig.py sends them to the Zig example too.
MALFORMED_REQUESTS = [
    b"",
    b"   ",
    b"{",
    b"not json",
    b"[]",
    b'"just a string"',
    b'{"http": {"method": "GET", "path": "/hello"}',
    b'{"http": {"method": "GET", "path": "/hello"}} trailing',
    b'{"http": {"method": "GET", "path": "/hel\nlo"}}',
    b'{"http": {"method": "GET", "path": "\xff\xfe"}}',
    b'{"http": {"method": "GET", "path": "\xed\xa0\x80"}}',
    b'{"http": {"method": "GET", "path": "/hello\\x"}}',
    b'{"http": {"method": "GET", "path": "/hello\\u12"}}',
    b'{"http": {"method": "GET", "path": "/hello", "n": 01}}',
    b'{"http": {"method": "GET", "path": "/hello", "n": 1.}}',
    b'{"http": {"method": "GET", "path": "/hello", "n": tru}}',
    b'{"http": {"method": "GET", "path": "/hello",}}',
    b'{"http" {"method": "GET", "path": "/hello"}}',
    b"[" * 100_000,
    b'{"a":' * 65 + b"1" + b"}" * 65,
]


@pytest.mark.parametrize("raw", MALFORMED_REQUESTS, ids=lambda raw: repr(raw[:40]))
def test_a_malformed_request_gets_a_400_json_answer(guest: Guest, raw: bytes) -> None:
    reply, logs = guest.call_raw(raw)
    assert reply.status == 400
    assert reply.json()["error"].startswith("malformed request")
    assert [level for level, _ in logs] == [2]


@pytest.mark.parametrize(
    "http",
    [None, {}, {"method": "GET"}, {"path": "/hello"}, {"method": 1, "path": "/hello"}, {"method": "GET", "path": None}],
)
def test_a_request_without_method_and_path_strings_gets_a_400(guest: Guest, http: Any) -> None:
    reply, _ = guest.call_raw(json.dumps({"context": CONTEXT, "http": http}).encode())
    assert reply.status == 400
    assert "http.method and http.path" in reply.json()["error"]


def test_nesting_up_to_the_limit_is_accepted(guest: Guest) -> None:
    request = json.loads(make_request(path="/hello"))
    request["context"]["config"] = json.loads("[" * 60 + "]" * 60)
    reply, _ = guest.call_raw(json.dumps(request).encode())
    assert reply.status == 200


def test_every_truncation_of_a_valid_request_is_a_400_not_a_trap(guest: Guest) -> None:
    request = make_request(method="POST", path="/echo", headers={"content-type": "a/b"}, body=b"\x00\x01")
    for cut in range(len(request)):
        reply, _ = guest.call_raw(request[:cut])
        assert reply.status == 400, request[:cut]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(alphabet='{}[]":,\\ u0aeE.-+trufalsn/h', max_size=60).map(str.encode))
def test_arbitrary_bytes_never_trap_the_guest(guest: Guest, raw: bytes) -> None:
    reply, _ = guest.call_raw(raw)
    assert reply.status in (200, 400, 404)


def test_a_request_reaching_past_the_end_of_memory_gets_a_400(guest: Guest) -> None:
    instance = guest.instantiate()
    reply = instance.handle(instance.memory_size - 10, 100)
    assert reply.status == 400
    assert instance.logs == [(2, "rejected a request that lies outside guest memory")]


def test_an_out_pointer_outside_memory_fails_the_call_without_a_trap(guest: Guest) -> None:
    instance = guest.instantiate()
    request = make_request()
    req_ptr = instance.write(request)
    assert instance.exports["handler"](instance.store, req_ptr, len(request), instance.memory_size - 4) == 1


def test_alloc_returns_zero_when_memory_cannot_grow(guest: Guest) -> None:
    instance = guest.instantiate()
    assert instance.exports["alloc"](instance.store, MEMORY_LIMIT) == 0
    assert instance.exports["alloc"](instance.store, -1) == 0
    assert instance.exports["alloc"](instance.store, 16) != 0


def test_the_guest_exports_only_the_abi_and_imports_only_the_hosts_functions(guest: Guest) -> None:
    assert sorted(e.name for e in guest.module.exports) == ["alloc", "handler", "memory"]
    imports = [(i.module, i.name) for i in guest.module.imports]
    assert imports == [("ext", "log"), ("ext", "http_fetch"), ("ext", "kv"), ("ext", "secret_get")]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("POST", "/counter", 403, "KV_DENIED"), ("GET", "/upstream", 403, "SECRET_DENIED")],
)
def test_a_route_the_host_refuses_passes_the_hosts_error_on(
    guest: Guest, method: str, path: str, status: int, code: str
) -> None:
    reply = guest.call(method=method, path=path)
    assert reply.status == status
    assert reply.json() == {"error": {"code": code, "message": "not granted"}}


# --- building from source -----------------------------------------------------------------


def _copy_example(tmp_path: Path) -> Path:
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("dist"))
    return project


def test_the_committed_guest_is_exactly_what_its_source_builds_to(tmp_path: Path) -> None:
    _toolchain_or_skip()
    project = _copy_example(tmp_path)
    result = build_project(project)
    assert result.output == project / "dist" / "main.wasm"
    committed = hashlib.sha256(COMMITTED_WASM.read_bytes()).hexdigest()
    assert result.sha256 == committed, (
        f"examples/hello/dist/main.wasm is not what {result.compiler_version} builds from its sources; it is "
        "committed as Debian clang 14.0.6 builds it: rebuild it with `extctl build examples/hello`"
    )
    assert result.output.read_bytes() == COMMITTED_WASM.read_bytes()


def test_a_build_reports_what_it_wrote(tmp_path: Path) -> None:
    _toolchain_or_skip()
    result = build_project(_copy_example(tmp_path))
    data = result.output.read_bytes()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert "clang" in result.compiler_version
    assert result.duration_seconds > 0
    assert result.output.stat().st_mode & 0o777 == 0o644


def test_a_build_writes_the_entry_the_manifest_names(tmp_path: Path) -> None:
    _toolchain_or_skip()
    project = _copy_example(tmp_path)
    manifest = json.loads((project / "manifest.json").read_text())
    manifest["entry"] = "out/guest.wasm"
    (project / "manifest.json").write_text(json.dumps(manifest))
    assert build_project(project).output == project / "out" / "guest.wasm"


def test_a_compile_error_keeps_the_old_entry_and_shows_the_compiler_message(tmp_path: Path) -> None:
    _toolchain_or_skip()
    project = _copy_example(tmp_path)
    build_project(project)
    before = (project / "dist" / "main.wasm").read_bytes()
    (project / "src" / "main.c").write_text("int handler(void) { return undefined_thing; }\n")
    with pytest.raises(BuildFailed) as caught:
        build_project(project)
    assert "compiling src/main.c failed" in caught.value.message
    assert "undefined_thing" in caught.value.message
    assert sorted(p.name for p in (project / "dist").iterdir()) == ["main.wasm"]
    assert (project / "dist" / "main.wasm").read_bytes() == before


def test_warnings_fail_the_build(tmp_path: Path) -> None:
    _toolchain_or_skip()
    project = _copy_example(tmp_path)
    with (project / "src" / "main.c").open("a") as source:
        source.write("\nstatic int unused_helper(void) { return 1; }\n")
    with pytest.raises(BuildFailed, match="unused_helper"):
        build_project(project)


def test_a_module_without_the_abi_exports_is_refused_before_it_replaces_the_entry(tmp_path: Path) -> None:
    _toolchain_or_skip()
    project = _copy_example(tmp_path)
    source = (project / "src" / "main.c").read_text()
    (project / "src" / "main.c").write_text(source.replace('export_name("handler")', 'export_name("handle_it")'))
    with pytest.raises(WasmInvalid, match="does not export `handler`"):
        build_project(project)
    assert not (project / "dist").exists() or list((project / "dist").iterdir()) == []


def test_a_project_without_c_sources_cannot_build(tmp_path: Path) -> None:
    project = _copy_example(tmp_path)
    for source in (project / "src").glob("*.c"):
        source.unlink()
    with pytest.raises(BuildFailed, match=r"no C sources"):
        build_project(project)


def test_a_missing_wasm_ld_is_named_with_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("needs clang on PATH to hide only wasm-ld")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "clang").symlink_to(clang)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ToolchainMissing) as caught:
        find_toolchain()
    assert caught.value.message.startswith("wasm-ld not found on PATH")
    assert "apt-get install clang lld" in caught.value.message


def test_versioned_tool_names_are_found_when_plain_ones_are_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clang, wasm_ld = shutil.which("clang"), shutil.which("wasm-ld")
    if clang is None or wasm_ld is None:
        pytest.skip("needs clang and wasm-ld on PATH to disguise them")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "clang-17").symlink_to(clang)
    (bin_dir / "wasm-ld-17").symlink_to(wasm_ld)
    monkeypatch.setenv("PATH", str(bin_dir))
    toolchain = find_toolchain()
    assert (toolchain.clang, toolchain.wasm_ld) == (bin_dir / "clang-17", bin_dir / "wasm-ld-17")
    assert "clang" in toolchain.version


def test_a_clang_without_a_wasm32_target_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_clang = bin_dir / "clang"
    fake_clang.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "Apple clang version 15.0.0"; '
        'else echo "  Registered Targets:"; echo "    arm64 - ARM64"; fi\n'
    )
    fake_clang.chmod(0o755)
    (bin_dir / "wasm-ld").symlink_to(fake_clang)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ToolchainMissing, match=r"Apple clang version 15\.0\.0\) cannot compile to WebAssembly"):
        find_toolchain()
