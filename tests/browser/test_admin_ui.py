"""The admin web UI in a real Chromium, against the whole local stack.

Each test signs in as a tenant of its own and publishes extensions under names of its own,
so the tests share one stack without seeing each other.  Screenshots of the main views at
1280 and 390 px land in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Request, Route, expect

import app as app_module
from chalicelib.bundles.pack import pack_project
from chalicelib.bundles.signing import SignatureStatus
from chalicelib.errors import RateLimited, UploadNotFound
from chalicelib.registry import Actor, VersionRecord
from tests.browser.conftest import MAX_BUNDLE_BYTES, PART_BYTES, RATE_LIMIT, BrowserStack
from tests.bundle_factory import bundle, good_files, manifest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

# Measures WCAG contrast of every visible text against the background it is drawn on.
CONTRAST_PROBLEMS_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const problems = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const el = text.parentElement;
    if (!text.textContent.trim() || !el.checkVisibility() || el.closest(":disabled, .visually-hidden")) continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color).slice(0, 3);
    const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) problems.push(`${text.textContent.trim().slice(0, 40)}: ${ratio.toFixed(2)}`);
  }
  return problems;
}
"""

# Every visible form control and button must have an accessible name.
UNLABELLED_CONTROLS_JS = """
() => [...document.querySelectorAll("input, select, textarea, button, iframe")]
  .filter((el) => el.checkVisibility())
  .filter((el) => !((el.labels && el.labels.length) || el.getAttribute("aria-label")
    || el.getAttribute("aria-labelledby") || el.getAttribute("title")
    || (el.tagName === "BUTTON" && el.textContent.trim())))
  .map((el) => el.outerHTML.slice(0, 80))
"""


# From inside the preview frame: a call that tries to leave the extension's own API.
CLIMBING_CALL_JS = """
() => new Promise((resolve) => {
  window.addEventListener("message", (event) => { if (event.data.id === "climb") resolve(event.data); });
  window.parent.postMessage({type: "ext-api", id: "climb", method: "GET", path: "/../../installs", body: null}, "*");
})
"""


# ---- helpers -----------------------------------------------------------------------------------


def sign_in(page: Page, stack: BrowserStack, tenant: str, token: str | None = None) -> None:
    page.goto(stack.admin_url(token or stack.token(tenant)))
    expect(page.locator("#identity")).to_contain_text(tenant)


def open_tab(page: Page, name: str) -> None:
    page.click(f"#tab-{name}")
    expect(page.locator(f"#panel-{name}")).to_be_visible()


def screenshot(page: Page, folder: Path, name: str) -> None:
    """The page as it is now, at 1280 px and at 390 px wide; neither may scroll sideways."""
    page.screenshot(path=folder / f"{name}-1280.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.screenshot(path=folder / f"{name}-390.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert overflow <= 0, f"{name} scrolls sideways at 390 px"


def choose_files(page: Page, bundle_path: Path, signature: Path | None = None) -> None:
    open_tab(page, "upload")
    page.set_input_files("#bundle-file", bundle_path)
    if signature is not None:
        page.set_input_files("#sig-file", signature)


def upload(page: Page, bundle_path: Path, signature: Path | None = None) -> str:
    """Upload through the page and return the upload id the API handed out."""
    choose_files(page, bundle_path, signature)
    with page.expect_response(lambda r: r.url.endswith("/ext-bundles/initiate-upload")) as initiated:
        page.click("#upload-start")
    answer: dict[str, Any] = initiated.value.json()
    return str(answer.get("upload_id", ""))


def upload_state(stack: BrowserStack, tenant: str, upload_id: str) -> str:
    return str(stack.api(tenant).get(f"/ext-bundles/uploads/{upload_id}")["state"])


def wait_for_state(stack: BrowserStack, tenant: str, upload_id: str, wanted: str) -> None:
    """The page aborts in the background: give it a moment to reach the server."""
    deadline = time.monotonic() + 5
    while upload_state(stack, tenant, upload_id) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upload_state(stack, tenant, upload_id) == wanted


def install_card(page: Page, name: str) -> Locator:
    return page.locator(f"#installs-list [data-extension='{name}']")


def extension_card(page: Page, name: str) -> Locator:
    return page.locator(f"#ext-list [data-extension='{name}']")


@contextmanager
def recorded_requests(page: Page, wanted: Callable[[Request], bool]) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(request: Request) -> None:
        if wanted(request):
            seen.append(f"{request.method} {request.url}")

    page.on("request", record)
    try:
        yield seen
    finally:
        page.remove_listener("request", record)


def to_storage(stack: BrowserStack) -> Callable[[Request], bool]:
    return lambda request: request.url.startswith(stack.urls.moto)


def sleep_past_window_edge() -> None:
    """Rate limits count per clock minute: start a burst well inside one."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.5)


# ---- signing in --------------------------------------------------------------------------------


def test_the_admin_url_signs_in_and_keeps_the_token_out_of_urls(page: Page, stack: BrowserStack, tenant: str) -> None:
    token = stack.token(tenant)
    with recorded_requests(page, lambda request: token in request.url) as leaks:
        sign_in(page, stack, tenant, token)
        assert "token" not in page.url
        assert page.evaluate("sessionStorage.getItem('ext-admin-token')") == token
        page.reload()
        expect(page.locator("#identity")).to_contain_text(tenant)
    assert leaks == []

    page.click("#sign-out")

    expect(page.locator("#signin-view")).to_be_visible()
    expect(page.locator("#app-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('ext-admin-token')") is None


def test_a_pasted_token_signs_in_and_a_bad_one_is_explained(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    page.goto(f"{stack.urls.api}/admin")
    page.fill("#token-input", "not-a-token")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_contain_text("three parts separated by dots")

    forged = stack.token(tenant)[:-4] + "AAAA"
    page.fill("#token-input", forged)
    page.click("#signin-submit")
    error = page.locator("#signin-error")
    expect(error).to_contain_text("You are not signed in, or your token has expired.")
    expect(error.locator(".error-code")).to_have_text("UNAUTHENTICATED")
    screenshot(page, screenshots, "sign-in")

    page.fill("#token-input", stack.token(tenant))
    page.keyboard.press("Enter")
    expect(page.locator("#identity")).to_contain_text(tenant)


def test_error_sentences_come_from_the_servers_error_table(page: Page, stack: BrowserStack, tenant: str) -> None:
    # The page keeps no copy of the server's sentences: change the table and the page says the new words.
    page.route("**/admin/errors.json", lambda route: route.fulfill(json={"UNAUTHENTICATED": "Words from the table."}))
    page.goto(f"{stack.urls.api}/admin")
    page.fill("#token-input", stack.token(tenant)[:-4] + "AAAA")
    page.click("#signin-submit")

    error = page.locator("#signin-error")
    expect(error.locator(".alert-title")).to_have_text("Words from the table.")
    expect(error.locator(".error-code")).to_have_text("UNAUTHENTICATED")


# ---- the lists ---------------------------------------------------------------------------------


def test_the_lists_load_without_a_request_per_extension(page: Page, stack: BrowserStack, tenant: str) -> None:
    for index in range(3):
        stack.publish(tenant, stack.write_bundle(f"com.ui.many{index}", f"1.{index}.0"))
    api = stack.urls.api

    with recorded_requests(page, lambda r: r.url.startswith((f"{api}/extensions", f"{api}/installs"))) as reads:
        sign_in(page, stack, tenant)
        expect(extension_card(page, "com.ui.many2").locator("[data-version='1.2.0']")).to_be_visible()

    assert sorted(reads) == [f"GET {api}/extensions?include=versions", f"GET {api}/installs", f"GET {api}/installs"]


# ---- uploads -----------------------------------------------------------------------------------


def test_a_signed_bundle_uploads_to_100_percent_and_is_listed_with_its_details(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.published"
    path = stack.write_bundle(
        name, "1.2.0", capabilities=["cap:log.emit", "cap:http.fetch"], egress=["api.example.com"]
    )
    sign_in(page, stack, tenant)

    upload(page, path, stack.write_signature(path))

    result = page.locator("#upload-result")
    expect(result).to_be_visible()
    expect(page.locator("#result-title")).to_have_text(f"Published {name} 1.2.0")
    expect(page.locator("#upload-bar")).to_have_attribute("value", "100")
    expect(page.locator("#upload-percent")).to_have_text("100 %")
    expect(result).to_contain_text("verified")
    published = stack.api(tenant).get(f"/extensions/{name}")["versions"][0]
    expect(page.locator("#result-hash")).to_have_text(published["content_hash"])
    screenshot(page, screenshots, "upload-published")

    page.click("#result-install")
    expect(page.locator("#confirm-title")).to_have_text(f"Install {name} 1.2.0?")
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"Installed {name} 1.2.0.")
    assert stack.api(tenant).get(f"/installs/{name}")["version"] == "1.2.0"

    page.click("#result-show")
    row = extension_card(page, name).locator("[data-version='1.2.0']")
    expect(extension_card(page, name)).to_contain_text("Acme Inc.")
    expect(extension_card(page, name).locator(".ext-installed")).to_have_text("Installed: 1.2.0")
    expect(row.locator(".v-signature")).to_contain_text("verified")
    expect(row.locator(".v-signature")).to_contain_text(published["key_id"][:19])
    expect(row.locator(".v-capabilities")).to_have_text("cap:log.emitcap:http.fetch")
    expect(row.locator(".v-egress")).to_have_text("api.example.com")
    expect(row.locator(".v-size")).to_have_text(f"{published['size']} B")
    expect(row.locator(".v-hash")).to_contain_text(published["content_hash"][:19])
    expect(row.locator(".v-published time")).to_have_attribute("datetime", published["created_at"])
    screenshot(page, screenshots, "extensions")


def test_a_large_bundle_goes_up_in_parts_with_progress_along_the_way(
    page: Page, stack: BrowserStack, tenant: str
) -> None:
    files = good_files(name="com.ui.large", version="1.0.0")
    files["ui/video.bin"] = os.urandom(PART_BYTES + MiB)  # incompressible: the bundle needs two parts
    path = stack.files / "large.tar.zst"
    path.write_bytes(bundle(files))
    sign_in(page, stack, tenant)
    page.evaluate(
        """() => {
          window.progressSeen = [];
          new MutationObserver(() => window.progressSeen.push(document.getElementById('upload-bar').value))
            .observe(document.getElementById('upload-bar'), {attributes: true});
        }"""
    )
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 8 * MiB},
    )

    with recorded_requests(page, lambda r: r.method == "PUT" and "partNumber=" in r.url) as parts:
        upload(page, path, stack.write_signature(path))
        expect(page.locator("#upload-result")).to_be_visible(timeout=30_000)

    assert len(parts) == 2
    seen: list[float] = page.evaluate("window.progressSeen")
    assert seen == sorted(seen)
    assert any(0 < value < 100 for value in seen)
    assert seen[-1] == 100
    expect(page.locator("#result-title")).to_have_text("Published com.ui.large 1.0.0")


def test_a_bundle_over_the_size_limit_is_refused_before_anything_is_uploaded(
    page: Page, stack: BrowserStack, tenant: str
) -> None:
    big = stack.files / "too-big.tar.zst"
    with big.open("wb") as handle:
        handle.truncate(MAX_BUNDLE_BYTES + 1)
    sign_in(page, stack, tenant)

    with recorded_requests(page, lambda r: "/ext-bundles/" in r.url or to_storage(stack)(r)) as sent:
        choose_files(page, big)
        error = page.locator("#upload-error")
        expect(error).to_contain_text("The bundle is larger than this platform accepts.")
        expect(error).to_contain_text("the limit is 12.0 MiB")
        page.click("#upload-start")
        expect(error.locator(".error-code")).to_have_text("BUNDLE_TOO_LARGE")

    assert sent == []


def _tampered(signature: Path) -> Path:
    envelope = json.loads(signature.read_text("utf-8"))
    raw = bytearray(base64.b64decode(envelope["signature"]))
    raw[0] ^= 0xFF
    envelope["signature"] = base64.b64encode(bytes(raw)).decode()
    signature.write_text(json.dumps(envelope), "utf-8")
    return signature


def _signature_for(case: str, stack: BrowserStack, path: Path) -> Path | None:
    if case == "no signature":
        return None
    if case == "untrusted key":
        return stack.write_signature(path, stack.untrusted_key)
    signature = stack.write_signature(path)
    return _tampered(signature) if case == "bad signature" else signature


REJECTIONS = {
    "bad signature": ("SIGNATURE_INVALID", "The signature does not match this bundle", "does not verify"),
    "untrusted key": ("SIGNATURE_UNTRUSTED", "signed with a key this platform does not trust", "not in the trust"),
    "no signature": ("SIGNATURE_MISSING", "only accepts signed bundles", "must be signed"),
    "manifest field": ("MANIFEST_INVALID", "manifest.json is not valid", "version must be a SemVer"),
    "not a bundle": ("BUNDLE_CORRUPT", "not a valid bundle.tar.zst", ""),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_each_rejection_is_explained_with_its_code_and_nothing_is_left_behind(
    page: Page, stack: BrowserStack, tenant: str, case: str
) -> None:
    code, sentence, detail = REJECTIONS[case]
    name = f"com.ui.rejected{list(REJECTIONS).index(case)}"
    path = stack.write_bundle(name, "one" if case == "manifest field" else "1.0.0")
    if case == "not a bundle":
        path.write_bytes(b"this is not zstd" * 64)
    sign_in(page, stack, tenant)

    upload_id = upload(page, path, _signature_for(case, stack, path))

    error = page.locator("#upload-error")
    expect(error).to_contain_text(sentence)
    expect(error).to_contain_text(detail)
    expect(error.locator(".error-code")).to_have_text(code)
    expect(error.locator(".retry")).to_have_count(0)
    expect(error).to_be_focused()
    wait_for_state(stack, tenant, upload_id, "aborted")
    assert name not in {e["name"] for e in stack.api(tenant).get("/extensions")["extensions"]}


def test_a_manifest_error_names_the_field_as_code(page: Page, stack: BrowserStack, tenant: str) -> None:
    path = stack.write_bundle("com.ui.badcaps", "1.0.0", capabilities=["cap:teleport"])
    sign_in(page, stack, tenant)

    upload(page, path, stack.write_signature(path))

    expect(page.locator("#upload-error .alert-detail code")).to_have_text("capabilities[0]")


def test_a_second_upload_of_the_same_version_with_other_content_says_the_version_exists(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    stack.publish(tenant, stack.write_bundle("com.ui.twice", "1.0.0"))
    other = stack.write_bundle("com.ui.twice", "1.0.0", description="different bytes")
    sign_in(page, stack, tenant)

    upload_id = upload(page, other, stack.write_signature(other))

    error = page.locator("#upload-error")
    expect(error).to_contain_text("This version already exists with different content.")
    expect(error.locator(".error-code")).to_have_text("VERSION_EXISTS")
    expect(error).to_contain_text("request id")
    screenshot(page, screenshots, "upload-error")
    wait_for_state(stack, tenant, upload_id, "aborted")


def test_publishing_the_same_bundle_again_says_it_was_already_published(
    page: Page, stack: BrowserStack, tenant: str
) -> None:
    path = stack.write_bundle("com.ui.again", "1.0.0")
    stack.publish(tenant, path)
    sign_in(page, stack, tenant)

    upload(page, path, stack.write_signature(path))

    expect(page.locator("#result-title")).to_have_text("Already published: com.ui.again 1.0.0")


def test_a_rate_limited_upload_says_when_to_retry(page: Page, stack: BrowserStack, tenant: str) -> None:
    path = stack.write_bundle("com.ui.busy", "1.0.0")
    signature = stack.write_signature(path)
    sign_in(page, stack, tenant)
    choose_files(page, path, signature)
    sleep_past_window_edge()
    api = stack.api(tenant)
    for _ in range(RATE_LIMIT):
        with pytest.raises(UploadNotFound):
            api.post("/ext-bundles/abort", {"upload_id": "no-such-upload"})
    with pytest.raises(RateLimited):
        api.post("/ext-bundles/abort", {"upload_id": "no-such-upload"})

    page.click("#upload-start")

    error = page.locator("#upload-error")
    expect(error).to_contain_text("Too many upload requests in a short time.")
    expect(error).to_contain_text("You can try again in")
    expect(error.locator(".error-code")).to_have_text("RATE_LIMITED")
    expect(error.locator(".retry")).to_be_disabled()
    expect(error.locator(".retry")).to_contain_text("Retry (")


def test_a_network_failure_aborts_the_upload_and_retry_publishes(page: Page, stack: BrowserStack, tenant: str) -> None:
    path = stack.write_bundle("com.ui.flaky", "1.0.0")
    sign_in(page, stack, tenant)
    page.route(f"{stack.urls.moto}/**", lambda route: route.abort("failed"))

    upload_id = upload(page, path, stack.write_signature(path))

    error = page.locator("#upload-error")
    expect(error).to_contain_text("The connection failed. Check your network, then retry.")
    expect(error.locator(".error-code")).to_have_text("NETWORK_ERROR")
    wait_for_state(stack, tenant, upload_id, "aborted")

    page.unroute(f"{stack.urls.moto}/**")
    error.locator(".retry").click()

    expect(page.locator("#result-title")).to_have_text("Published com.ui.flaky 1.0.0")


def test_cancelling_an_upload_aborts_it_on_the_server(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    path = stack.write_bundle("com.ui.cancelled", "1.0.0")
    held: list[Route] = []
    sign_in(page, stack, tenant)
    page.route(f"{stack.urls.moto}/**", lambda route: held.append(route))

    with page.expect_request(to_storage(stack)):
        upload_id = upload(page, path, stack.write_signature(path))
    expect(page.locator("#upload-cancel")).to_be_visible()
    screenshot(page, screenshots, "upload-in-progress")
    page.click("#upload-cancel")

    expect(page.locator("#toast")).to_have_text("Upload cancelled. Nothing was published.")
    expect(page.locator("#upload-cancel")).to_be_hidden()
    expect(page.locator("#upload-start")).to_be_enabled()
    wait_for_state(stack, tenant, upload_id, "aborted")
    page.unroute_all(behavior="ignoreErrors")


# ---- installs ----------------------------------------------------------------------------------


def test_install_toggle_upgrade_roll_back_configure_and_uninstall(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.lifecycle"
    stack.publish(tenant, stack.write_bundle(name, "1.0.0", capabilities=["cap:log.emit"]))
    stack.publish(
        tenant,
        stack.write_bundle(name, "1.1.0", capabilities=["cap:log.emit", "cap:http.fetch"], egress=["api.example.com"]),
    )
    api = stack.api(tenant)
    sign_in(page, stack, tenant)

    # install 1.0.0: the dialog lists what it will be granted
    extension_card(page, name).locator("[data-version='1.0.0'] .v-install").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Install {name} 1.0.0?")
    expect(dialog.locator(".grant-list")).to_contain_text("cap:log.emit: write to the platform log")
    screenshot(page, screenshots, "dialog-install")
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"Installed {name} 1.0.0.")
    assert api.get(f"/installs/{name}")["version"] == "1.0.0"

    # enable / disable
    open_tab(page, "installs")
    card = install_card(page, name)
    switch = card.locator(".inst-enabled")
    expect(switch).to_have_attribute("aria-checked", "true")
    switch.click()
    expect(install_card(page, name).locator(".inst-enabled")).to_have_attribute("aria-checked", "false")
    expect(install_card(page, name).locator(".switch-text")).to_have_text("Disabled")
    assert api.get(f"/installs/{name}")["enabled"] is False
    install_card(page, name).locator(".inst-enabled").click()
    expect(install_card(page, name).locator(".inst-enabled")).to_have_attribute("aria-checked", "true")

    # upgrade: the dialog marks the capability the new version adds
    install_card(page, name).locator(".inst-version-select").select_option("1.1.0")
    install_card(page, name).locator(".inst-switch").click()
    expect(dialog).to_contain_text(f"Upgrade {name} to 1.1.0?")
    expect(dialog.locator(".grant-list li", has_text="cap:http.fetch")).to_contain_text("new")
    expect(dialog).to_contain_text("api.example.com")
    screenshot(page, screenshots, "dialog-upgrade")
    page.click("#confirm-ok")
    expect(install_card(page, name).locator(".inst-version")).to_have_text("1.1.0")
    upgraded = api.get(f"/installs/{name}")
    assert (upgraded["version"], upgraded["granted_capabilities"]) == ("1.1.0", ["cap:log.emit", "cap:http.fetch"])

    # roll back to the previous version
    install_card(page, name).locator(".inst-rollback").click()
    expect(dialog).to_contain_text(f"Roll back {name} to 1.0.0?")
    page.click("#confirm-ok")
    expect(install_card(page, name).locator(".inst-version")).to_have_text("1.0.0")
    assert api.get(f"/installs/{name}")["version"] == "1.0.0"

    # configuration: refused until it is a JSON object, then saved
    card = install_card(page, name)
    card.locator(".inst-configure").click()
    editor = card.locator(".config-text")
    expect(editor).to_be_focused()
    with recorded_requests(page, lambda r: r.method == "PATCH") as patches:
        editor.fill('{"greeting": ')
        card.locator(".config-save").click()
        expect(card.locator(".config-error")).to_contain_text("Not valid JSON")
        expect(editor).to_have_attribute("aria-invalid", "true")
        editor.fill("[1, 2]")
        card.locator(".config-save").click()
        expect(card.locator(".config-error")).to_contain_text("must be a JSON object")
    assert patches == []
    editor.fill('{"greeting": "hi"}')
    card.locator(".config-save").click()
    expect(page.locator("#toast")).to_have_text(f"Saved the configuration of {name}.")
    assert api.get(f"/installs/{name}")["config"] == {"greeting": "hi"}
    page.click("#toast")
    expect(page.locator("#toast")).to_be_hidden()
    screenshot(page, screenshots, "installs")

    # uninstall, after a confirmation that cancel really cancels
    install_card(page, name).locator(".inst-uninstall").click()
    expect(dialog).to_contain_text(f"Uninstall {name}?")
    expect(page.locator("#confirm-cancel")).to_be_focused()
    screenshot(page, screenshots, "dialog-uninstall")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert api.get(f"/installs/{name}")["version"] == "1.0.0"
    install_card(page, name).locator(".inst-uninstall").click()
    page.click("#confirm-ok")
    expect(install_card(page, name)).to_have_count(0)
    assert api.get("/installs")["installs"] == []


def test_a_config_draft_survives_changes_to_other_installs(page: Page, stack: BrowserStack, tenant: str) -> None:
    api = stack.api(tenant)
    for name in ("com.ui.draft-a", "com.ui.draft-b"):
        stack.publish(tenant, stack.write_bundle(name, "1.0.0"))
        api.post("/installs", {"extension": name, "version": "1.0.0"})
    sign_in(page, stack, tenant)
    open_tab(page, "installs")
    install_card(page, "com.ui.draft-a").locator(".inst-configure").click()
    install_card(page, "com.ui.draft-a").locator(".config-text").fill('{"half": "typed')

    install_card(page, "com.ui.draft-b").locator(".inst-enabled").click()

    expect(install_card(page, "com.ui.draft-b").locator(".inst-enabled")).to_have_attribute("aria-checked", "false")
    expect(install_card(page, "com.ui.draft-a").locator(".config-text")).to_have_value('{"half": "typed')
    expect(install_card(page, "com.ui.draft-a").locator(".config-error")).to_contain_text("Not valid JSON")
    assert api.get("/installs/com.ui.draft-a")["config"] == {}


def test_a_token_without_the_admin_role_is_warned_and_its_changes_refused(
    page: Page, stack: BrowserStack, tenant: str
) -> None:
    stack.publish(tenant, stack.write_bundle("com.ui.readonly", "1.0.0"))
    sign_in(page, stack, tenant, stack.token(tenant, roles=("user",)))

    expect(page.locator("#role-warning")).to_be_visible()
    extension_card(page, "com.ui.readonly").locator(".v-install").click()
    page.click("#confirm-ok")

    error = page.locator("#ext-error")
    expect(error.locator(".error-code")).to_have_text("FORBIDDEN")
    expect(error).to_contain_text("managing extensions needs the admin role")
    expect(error).to_be_focused()
    assert stack.api(tenant).get("/installs")["installs"] == []


def test_an_unsigned_version_is_marked_unsigned(page: Page, stack: BrowserStack, tenant: str) -> None:
    # Versions published while the platform ran without a trust bundle stay unsigned in the registry.
    doc = manifest(name="com.ui.unsigned", version="0.9.0")
    record = VersionRecord.from_manifest(
        doc,
        content_hash="sha256:" + "ab" * 32,
        size=1234,
        signature=None,
        signature_status=SignatureStatus.UNSIGNED,
        key_id=None,
        created_at=datetime.now(UTC),
        created_by=Actor(tenant=tenant, sub="ci"),
    )
    app_module.services().registry.register_version(record, tenant, None)
    sign_in(page, stack, tenant)

    row = extension_card(page, "com.ui.unsigned").locator("[data-version='0.9.0']")
    expect(row.locator(".v-signature .badge")).to_have_text("unsigned")
    row.locator(".v-install").click()
    expect(page.locator("#confirm-dialog")).to_contain_text("Nobody signed this version")
    page.click("#confirm-cancel")


def test_the_preview_shows_the_extension_page_and_answers_its_api_calls(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    packed = pack_project(ROOT / "examples" / "hello", stack.files / "hello.tar.zst")
    stack.publish(tenant, packed.output)
    stack.api(tenant).post("/installs", {"extension": "com.example.hello", "version": "1.0.0"})
    sign_in(page, stack, tenant)
    open_tab(page, "installs")

    with recorded_requests(page, lambda r: "/api/ext/" in r.url) as calls:
        page.evaluate("window.postMessage({type: 'ext-api', id: 'x', method: 'GET', path: '/info', body: null}, '*')")
        install_card(page, "com.example.hello").locator(".inst-preview").click()
        frame = page.frame_locator("#preview-frame")
        expect(frame.locator("#context")).to_have_text(f"Version 1.0.0 · tenant {tenant}")
    assert calls == [f"GET {stack.urls.api}/api/ext/com.example.hello/info"]

    src = page.locator("#preview-frame").get_attribute("src") or ""
    assert src == f"{stack.urls.runner}/ext-ui/com.example.hello/{packed.content_hash}/index.html"
    expect(page.locator("#preview-frame")).to_have_attribute("sandbox", "allow-scripts")
    frame.locator("#name").fill("Ada")
    frame.locator("#say-hello").click()
    expect(frame.locator("#result")).to_have_text("Hello, Ada!")
    screenshot(page, screenshots, "installs-preview")

    hello = next(frame for frame in page.frames if "/ext-ui/" in frame.url)
    with recorded_requests(page, lambda r: "/api/ext/" in r.url) as calls:
        reply = hello.evaluate(CLIMBING_CALL_JS)
    assert (reply["status"], calls) == (400, [])
    assert "may not contain . or .. segments" in reply["body"]

    page.click("#preview-close")
    expect(page.locator("#preview")).to_be_hidden()
    expect(page.locator("#installs-refresh")).to_be_focused()


# ---- accessibility -----------------------------------------------------------------------------


def test_every_view_has_labels_enough_contrast_and_works_from_the_keyboard(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.access"
    stack.publish(tenant, stack.write_bundle(name, "1.0.0", capabilities=["cap:log.emit"]))
    stack.api(tenant).post("/installs", {"extension": name, "version": "1.0.0"})
    sign_in(page, stack, tenant)
    expect(extension_card(page, name)).to_be_visible()
    screenshot(page, screenshots, "extensions-many")  # every extension the earlier tests published

    page.focus("#tab-extensions")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-upload")).to_be_focused()
    expect(page.locator("#panel-upload")).to_be_visible()
    page.keyboard.press("End")
    expect(page.locator("#tab-installs")).to_be_focused()
    expect(install_card(page, name)).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#installs-refresh")).to_be_focused()

    for tab in ("extensions", "upload", "installs"):
        open_tab(page, tab)
        page.wait_for_load_state("networkidle")
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == [], tab
        assert page.evaluate(CONTRAST_PROBLEMS_JS) == [], tab
