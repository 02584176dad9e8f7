"""extctl.build: finding the toolchain and the commands it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.errors import ALL_ERRORS, BuildFailed, ToolchainMissing
from extctl.build import Toolchain, compile_command, find_toolchain, link_command

TOOLCHAIN = Toolchain(clang=Path("/opt/llvm/bin/clang"), wasm_ld=Path("/opt/llvm/bin/wasm-ld"), version="clang 99")


def test_an_empty_path_names_both_missing_tools_and_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ToolchainMissing) as caught:
        find_toolchain()
    message = caught.value.message
    assert message.startswith("clang and wasm-ld not found on PATH")
    assert "apt-get install clang lld" in message
    assert "brew install llvm lld" in message
    assert caught.value.details["missing"] == ["clang", "wasm-ld"]
    assert caught.value.code == "TOOLCHAIN_MISSING"


def test_a_source_compiles_to_a_strict_freestanding_wasm32_object() -> None:
    command = compile_command(TOOLCHAIN, "src/main.c", "/tmp/objs/main.o")
    assert command[0] == "/opt/llvm/bin/clang"
    assert {"--target=wasm32", "-ffreestanding", "-Wall", "-Werror", "-O2"} <= set(command)
    assert command[-4:] == ["-c", "src/main.c", "-o", "/tmp/objs/main.o"]


def test_objects_link_in_the_given_order_into_a_reactor_without_debug_info_but_with_names() -> None:
    command = link_command(TOOLCHAIN, ["/o/base64.o", "/o/ext.o", "/o/main.o"], "dist/.main.wasm.tmp")
    assert command[0] == "/opt/llvm/bin/wasm-ld"
    assert {"--no-entry", "--strip-debug"} <= set(command)
    assert "--strip-all" not in command  # it drops the name section a trap's backtrace reads
    assert command[-5:] == ["-o", "dist/.main.wasm.tmp", "/o/base64.o", "/o/ext.o", "/o/main.o"]


def test_a_failed_build_is_a_client_error_with_a_stable_code() -> None:
    error = BuildFailed("compiling src/main.c failed")
    assert (error.code, error.http_status) == ("BUILD_FAILED", 400)
    assert BuildFailed in ALL_ERRORS
