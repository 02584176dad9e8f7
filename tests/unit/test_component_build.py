"""extctl init --lang and extctl build for components, without running the (slow) toolchains."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from chalicelib.errors import BuildFailed, ToolchainMissing, UsageError
from extctl import component_build
from extctl.build import build_project
from extctl.scaffold import init_project


@pytest.mark.parametrize(("lang", "source"), [("python", "src/app.py"), ("js", "src/main.ts")])
def test_init_makes_a_component_project_with_its_own_wit_and_sdk(tmp_path: Path, lang: str, source: str):
    project = init_project("com.acme.thing", tmp_path / "thing", lang).directory
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["name"] == "com.acme.thing"
    assert manifest["runtime"] == "wasm-component@1"
    assert (project / source).is_file()
    assert (project / "wit" / "world.wit").read_text() == (component_build.SDK_DIR / "wit" / "world.wit").read_text()
    assert not (project / "dist").exists()
    assert component_build.component_language(project) == lang


def test_the_js_project_pins_its_toolchain(tmp_path: Path):
    project = init_project("com.acme.thing", tmp_path / "thing", "js").directory
    package = json.loads((project / "package.json").read_text())
    assert package["devDependencies"] == {
        "@bytecodealliance/componentize-js": "0.23.0",
        "@bytecodealliance/preview2-shim": "0.25.0",
        "esbuild": "0.28.2",
    }
    assert (project / "sdk" / "index.js").read_text() == (component_build.SDK_DIR / "js" / "index.js").read_text()


def test_init_refuses_an_unknown_language(tmp_path: Path):
    with pytest.raises(UsageError, match="unknown language 'rust'"):
        init_project("com.acme.thing", tmp_path / "thing", "rust")


def test_a_missing_componentize_py_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    project = init_project("com.acme.thing", tmp_path / "thing", "python").directory
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    with pytest.raises(ToolchainMissing, match=r"pip install componentize-py==0\.25\.1"):
        build_project(project)


def test_a_missing_js_toolchain_names_npm_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    project = init_project("com.acme.thing", tmp_path / "thing", "js").directory
    monkeypatch.setattr(component_build, "SDK_DIR", tmp_path / "no-sdk")
    with pytest.raises(ToolchainMissing, match=r"run `npm install` in the project"):
        build_project(project)


def test_a_component_project_without_sources_says_where_they_go(tmp_path: Path):
    project = init_project("com.acme.thing", tmp_path / "thing", "python").directory
    (project / "src" / "app.py").unlink()
    with pytest.raises(BuildFailed, match=r"src/app\.py"):
        build_project(project)
