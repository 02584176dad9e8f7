"""Extension pages opened directly in Chromium, outside the host's iframe (issue 9): the runner's own
headers must sandbox them, because every extension's UI shares the runner's origin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from runner_container.engine import WasmEngine
from runner_container.server import make_server
from tests.integration.runner_fixtures import EXAMPLE_NAME, clear_aws_env, example_bundle, runner_env, ui_bundle

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

# Sets a mark on the runner origin's storage: possible only for a page running on that origin.
SVG_WITH_SCRIPT = b"""<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">
<script>document.documentElement.setAttribute("data-ran", "yes"); localStorage.setItem("owned", "yes")</script>
<rect width="10" height="10" style="fill: teal"/></svg>"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, str]]:
    """A runner in HTTP mode on moto S3: its URL, the example's hash and a bundle holding an SVG with a script."""
    clear_aws_env(monkeypatch)
    with runner_env(tmp_path) as env, WasmEngine() as engine:
        hello = env.publish(example_bundle())
        svg = env.publish(ui_bundle(extra={"ui/logo.svg": SVG_WITH_SCRIPT}))
        server = make_server(env.service(engine), "127.0.0.1", 0, insecure_no_auth=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server.url, hello, svg
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def test_an_extension_page_opened_directly_runs_in_an_opaque_origin_with_its_scripts(
    tab: Page, runner: tuple[str, str, str]
) -> None:
    base, hello, _ = runner

    tab.goto(f"{base}/ext-ui/{EXAMPLE_NAME}/{hello}/index.html")

    # app.js ran (it shows the "no host app" warning), but not on the runner's origin.
    tab.wait_for_selector("#host-warning:not([hidden])")
    assert tab.evaluate("self.origin") == "null"


def test_an_svg_opened_directly_runs_no_script(tab: Page, runner: tuple[str, str, str]) -> None:
    base, _, svg = runner

    tab.goto(f"{base}/ext-ui/com.acme.tools/{svg}/logo.svg")

    assert tab.evaluate("document.documentElement.getAttribute('data-ran')") is None
    assert tab.evaluate("self.origin") == "null"
