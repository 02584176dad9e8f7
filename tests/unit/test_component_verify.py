"""Publishing checks a component entry without wasmtime: structure, imports, and the handle export's type."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chalicelib.bundles.component import HANDLE_TYPE, ComponentInspector, EntryInspector, check_entry
from chalicelib.bundles.verify import verify_bundle
from chalicelib.errors import WasmInvalid
from tests.bundle_factory import bundle, manifest_bytes, wasm
from tests.components import WIT_DIR, dummy_component, run_wasm_tools, wit_with

pytestmark = pytest.mark.xdist_group("components")

HTTP_WIT = "package wasi:http@0.2.0;\ninterface outgoing-handler {\n  handle: func(url: string) -> u32;\n}\n"


def _inspect(binary: bytes, chunk: int = 7) -> object:
    inspector = EntryInspector()
    for start in range(0, len(binary), chunk):
        inspector.feed(binary[start : start + chunk])
    return inspector.finish()


def test_the_wit_world_is_valid_wit():
    printed = run_wasm_tools("component", "wit", str(WIT_DIR))
    assert "package ext:platform@1.0.0;" in printed
    assert "world extension {" in printed
    assert "world extension-sdk {" in printed


def test_a_component_of_the_world_passes_fed_in_small_chunks(tmp_path: Path):
    info = _inspect(dummy_component(tmp_path))
    check_entry(info, "wasm-component@1", "dist/main.wasm")  # type: ignore[arg-type]


def test_the_rendered_handle_type_is_the_worlds_own(tmp_path: Path):
    inspector = ComponentInspector()
    inspector.feed(dummy_component(tmp_path, "extension-sdk"))
    assert inspector.finish().exports["handle"] == HANDLE_TYPE


def test_a_component_importing_wasi_http_is_refused_naming_the_import(tmp_path: Path):
    wit = wit_with(
        tmp_path,
        "world with-http {\n  include extension;\n  import wasi:http/outgoing-handler@0.2.0;\n}\n",
        {"http": HTTP_WIT},
    )
    info = _inspect(dummy_component(tmp_path, "with-http", wit))
    with pytest.raises(WasmInvalid, match=r"imports instance 'wasi:http/outgoing-handler@0\.2\.0'"):
        check_entry(info, "wasm-component@1", "dist/main.wasm")  # type: ignore[arg-type]


def test_a_component_importing_a_bare_function_is_refused(tmp_path: Path):
    wit = wit_with(tmp_path, "world with-func {\n  include extension;\n  import spawn: func(cmd: string);\n}\n")
    with pytest.raises(WasmInvalid, match=r"imports func 'spawn'"):
        check_entry(_inspect(dummy_component(tmp_path, "with-func", wit)), "wasm-component@1", "x.wasm")  # type: ignore[arg-type]


def test_a_handle_with_another_type_is_refused(tmp_path: Path):
    wit = tmp_path / "other"
    wit.mkdir()
    (wit / "w.wit").write_text(
        "package acme:other@1.0.0;\nworld w {\n  export handle: func(req: list<u8>) -> list<u8>;\n}\n"
    )
    with pytest.raises(WasmInvalid, match=r"exports `handle` as func\(req: list<u8>\) -> list<u8>"):
        check_entry(_inspect(dummy_component(tmp_path, "w", wit)), "wasm-component@1", "x.wasm")  # type: ignore[arg-type]


def test_a_component_without_handle_is_refused(tmp_path: Path):
    wit = tmp_path / "other"
    wit.mkdir()
    (wit / "w.wit").write_text("package acme:other@1.0.0;\nworld w {\n  export run: func();\n}\n")
    with pytest.raises(WasmInvalid, match="does not export the function `handle`"):
        check_entry(_inspect(dummy_component(tmp_path, "w", wit)), "wasm-component@1", "x.wasm")  # type: ignore[arg-type]


def test_a_core_module_is_refused_for_the_component_runtime_and_the_reverse(tmp_path: Path):
    with pytest.raises(WasmInvalid, match="is a core module; wasm-component@1 needs a WebAssembly component"):
        check_entry(_inspect(wasm()), "wasm-component@1", "x.wasm")  # type: ignore[arg-type]
    with pytest.raises(WasmInvalid, match="is a WebAssembly component; wasm-core@1 needs a core module"):
        check_entry(_inspect(dummy_component(tmp_path)), "wasm-core@1", "x.wasm")  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", [9, 40, -3])
def test_a_truncated_component_is_refused(tmp_path: Path, cut: int):
    binary = dummy_component(tmp_path)
    with pytest.raises(WasmInvalid, match=r"truncated|ends early"):
        _inspect(binary[:cut])


def test_a_bundle_with_a_component_entry_verifies_and_one_with_wasi_http_does_not(tmp_path: Path):
    good = {
        "manifest.json": manifest_bytes(runtime="wasm-component@1"),
        "dist/main.wasm": dummy_component(tmp_path),
        "ui/index.html": b"<!doctype html><title>t</title>",
    }
    verified = verify_bundle(io.BytesIO(bundle(good)))
    assert json.loads(verified.manifest_bytes)["runtime"] == "wasm-component@1"
    wit = wit_with(
        tmp_path / "bad",
        "world with-http {\n  include extension;\n  import wasi:http/outgoing-handler@0.2.0;\n}\n",
        {"http": HTTP_WIT},
    )
    bad = {**good, "dist/main.wasm": dummy_component(tmp_path / "bad", "with-http", wit)}
    with pytest.raises(WasmInvalid, match=r"dist/main\.wasm imports instance 'wasi:http/outgoing-handler@0\.2\.0'"):
        verify_bundle(io.BytesIO(bundle(bad)))
