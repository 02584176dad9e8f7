"""The bench's bare-wasmtime peer still runs the example it measures (`make bench` is not in `make test`)."""

from __future__ import annotations

import base64
import json

import wasmtime

from bench.runner import HELLO_REQUEST, bare_call
from chalicelib.config import load_settings
from extctl.scaffold import TEMPLATE
from runner_container.engine import WasmEngine


def test_the_bare_peer_answers_the_examples_hello_whatever_else_the_example_imports() -> None:
    wasm_engine = WasmEngine.from_settings(load_settings({}))
    engine = wasm_engine.engine
    module = wasmtime.Module(engine, (TEMPLATE / "dist" / "main.wasm").read_bytes())
    assert any(imported.name != "log" for imported in module.imports), "the example imports more than ext.log"

    answer = bare_call(engine, module, HELLO_REQUEST)()

    assert isinstance(answer, dict) and answer["status"] == 200
    assert "bench" in json.loads(base64.b64decode(answer["body_b64"]))["message"]
    wasm_engine.close()
