"""What the admin UI ships: its files, the imports between its ES modules, and its error sentences."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chalicelib.admin_ui import ASSETS, MODULES, admin_asset
from chalicelib.errors import error_texts

UI = Path(__file__).resolve().parents[2] / "chalicelib" / "admin_ui"
IMPORT = re.compile(r'^import\s.*?\sfrom\s+"([^"]+)";', re.M | re.S)


def _imports(module: str) -> list[str]:
    return IMPORT.findall(admin_asset(module))


def test_every_file_in_the_folder_ships_and_every_shipped_file_exists() -> None:
    on_disk = {path.name for path in UI.iterdir() if path.is_file() and path.suffix != ".py"}
    assert on_disk == set(ASSETS) - {"errors.json"}


def test_modules_import_only_shipped_modules_by_flat_relative_paths() -> None:
    # /admin/{asset} is one path segment: a module in a subfolder, or a bare specifier, would not load.
    wanted = {name for module in MODULES for name in _imports(module)}
    assert {name for name in wanted if not re.fullmatch(r"\./[a-z-]+\.js", name)} == set()
    assert {name.removeprefix("./") for name in wanted} - set(MODULES) == set()


def test_every_module_is_reached_from_the_page() -> None:
    assert re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', admin_asset("index.html")) == ["admin/app.js"]
    reached, todo = set(), ["app.js"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [name.removeprefix("./") for name in _imports(module)]
    assert reached == set(MODULES)


def test_the_modules_import_each_other_without_cycles() -> None:
    # In a cycle one module runs before what it imports has run, and its top-level lookups break.
    graph = {module: [name.removeprefix("./") for name in _imports(module)] for module in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " → ".join((*path, module))
        if module not in done:
            for name in graph[module]:
                visit(name, (*path, module))
            done.add(module)

    for module in MODULES:
        visit(module, ())


def test_only_the_dom_helpers_look_elements_up_by_id() -> None:
    # Each module names the elements it owns in one `elements({...})` call, not lookups scattered through it.
    looking = {module for module in MODULES if "getElementById" in admin_asset(module)}
    assert looking == {"dom.js"}


def test_error_sentences_are_served_from_the_error_table() -> None:
    assert json.loads(admin_asset("errors.json")) == error_texts()


def test_the_page_words_only_codes_the_server_never_sends() -> None:
    # errors.js words the failures that happen in the browser; a server code worded there too would drift.
    block = re.search(r"const BROWSER_TEXT = \{(.*?)\n\};", admin_asset("errors.js"), re.S)
    assert block is not None
    browser_codes = set(re.findall(r"^\s+([A-Z_]+):", block.group(1), re.M))
    assert "NETWORK_ERROR" in browser_codes  # the block was found and read
    assert browser_codes & set(error_texts()) == set()


@pytest.mark.parametrize("name", ["../app.py", "__init__.py", "admin_ui/app.js", "APP.JS", "", ".", "config.json"])
def test_nothing_else_is_an_asset(name: str) -> None:
    with pytest.raises(KeyError):
        admin_asset(name)
