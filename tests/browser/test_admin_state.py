"""An install's secrets, its config form (in Configure and in the install dialog) and the uninstall
dialog's data choice, in a real Chromium against the whole local stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Request, Response, Route, expect

from tests.browser.conftest import BrowserStack

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SECRETS = [
    {"name": "API_KEY", "description": "Your Acme API key", "required": True},
    {"name": "WEBHOOK_TOKEN", "description": "Signs webhooks"},
]
SCHEMA = {
    "type": "object",
    "required": ["board"],
    "properties": {
        "board": {"type": "string", "description": "Board to sync"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 5, "description": "Attempts per item"},
        "ratio": {"type": "number"},
        "verbose": {"type": "boolean", "description": "Log every item"},
        "mode": {"enum": ["fast", "safe"]},
        "extra": {"type": "object"},
    },
}


def sign_in(page: Page, stack: BrowserStack, tenant: str) -> None:
    page.goto(stack.admin_url(stack.token(tenant)))
    expect(page.locator("#identity")).to_contain_text(tenant)
    page.click("#tab-installs")
    expect(page.locator("#panel-installs")).to_be_visible()
    # Each tab loads the lists again: a control used before the last load ends is redrawn under the click.
    expect(page.locator("#installs-list")).not_to_have_attribute("aria-busy", "true")


def open_install_dialog(page: Page, stack: BrowserStack, tenant: str, name: str) -> Locator:
    """Signs in and clicks Install… on ``name`` 1.0.0 in the Extensions tab; the open dialog."""
    page.goto(stack.admin_url(stack.token(tenant)))
    expect(page.locator("#identity")).to_contain_text(tenant)
    page.locator(f"#ext-list [data-extension='{name}'] [data-version='1.0.0'] .v-install").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(f"Install {name} 1.0.0?")
    return dialog


def install_card(page: Page, name: str) -> Locator:
    return page.locator(f"#installs-list [data-extension='{name}']")


def installed(stack: BrowserStack, tenant: str, name: str, **manifest: Any) -> None:
    stack.publish(tenant, stack.write_bundle(name, "1.0.0", **manifest))
    stack.api(tenant).post("/installs", {"extension": name, "version": "1.0.0"})


def test_an_admin_sets_replaces_and_deletes_a_secret_and_the_page_never_holds_its_value(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.secrets"
    value = "canary-browser-7fQ2x"
    installed(stack, tenant, name, capabilities=["cap:secrets.get"], secrets=SECRETS)
    answers: list[str] = []

    def keep(response: Response) -> None:
        if "/secrets" in response.url:
            answers.append(response.text())

    page.on("response", keep)
    sign_in(page, stack, tenant)
    card = install_card(page, name)
    card.locator(".inst-secrets").click()
    panel = card.locator(".secrets-panel")
    expect(card.locator(".inst-secrets")).to_have_attribute("aria-expanded", "true")
    expect(panel.locator(".secrets-status")).to_have_text("1 required secret is missing.")
    row = panel.locator("[data-secret='API_KEY']")
    expect(row).to_contain_text("missing")
    expect(row).to_contain_text("required")
    expect(row).to_contain_text("Your Acme API key")
    expect(panel.locator("[data-secret='WEBHOOK_TOKEN']")).to_contain_text("not set")
    field = row.locator(".secret-value")
    expect(field).to_have_attribute("type", "password")
    screenshot_name = screenshots / "secrets-missing-1280.png"
    page.screenshot(path=screenshot_name, full_page=True)

    field.fill(value)
    row.locator(".secret-save").click()

    expect(page.locator("#toast")).to_have_text(f"Saved API_KEY for {name}.")
    row = panel.locator("[data-secret='API_KEY']")
    expect(row.locator(".badge-ok")).to_have_text("set")
    expect(panel.locator(".secrets-status")).to_have_text("Every required secret is set.")
    expect(row.locator(".secret-value")).to_have_value("")
    expect(row.locator(".secret-save")).to_have_text("Replace")
    listed = {s["name"]: s for s in stack.api(tenant).get(f"/installs/{name}/secrets")["secrets"]}
    assert listed["API_KEY"]["set"] is True

    # replace, then delete: required and missing again. While the replace is on its way the row's controls
    # are disabled, so the delete cannot overtake it (and leave the secret set after "Deleted").
    held: list[Route] = []
    page.route(f"**/installs/{name}/secrets/API_KEY", lambda route: held.append(route))
    row.locator(".secret-value").fill(value + "-2")
    row.locator(".secret-value").press("Enter")
    expect(panel.locator("[data-secret='API_KEY'] .secret-delete")).to_be_disabled()
    expect(panel.locator(".secrets-list")).to_have_attribute("aria-busy", "true")
    assert len(held) == 1 and held[0].request.method == "PUT"
    held[0].continue_()
    page.unroute(f"**/installs/{name}/secrets/API_KEY")
    expect(panel.locator("[data-secret='API_KEY'] .secret-delete")).to_be_enabled()
    panel.locator("[data-secret='API_KEY'] .secret-delete").click()
    expect(page.locator("#toast")).to_have_text(f"Deleted API_KEY of {name}.")
    expect(panel.locator("[data-secret='API_KEY']")).to_contain_text("missing")

    # an undeclared name cannot be set, and the error says so in the panel
    # (the page offers only declared names: ask the API directly, as a stale page would)
    refused = page.evaluate(
        """async ([base, token, name]) => {
             const r = await fetch(`${base}/installs/${name}/secrets/OTHER`, {method: "PUT",
               headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/json"},
               body: JSON.stringify({value: "x"})});
             return (await r.json()).error.code; }""",
        [stack.urls.api, stack.token(tenant), name],
    )
    assert refused == "SECRET_INVALID"

    page.remove_listener("response", keep)
    assert answers and all(value not in text for text in answers)
    assert value not in page.content()
    stored = page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert value not in stored


def test_configure_renders_a_form_from_the_schema_and_shows_config_invalid_next_to_its_field(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.schema"
    # A config that fits the schema's required `board` first, then the version with the schema.
    installed(stack, tenant, name)
    stack.api(tenant).patch(f"/installs/{name}", {"config": {"board": "ops", "kept": [1, 2]}})
    stack.publish(tenant, stack.write_bundle(name, "1.1.0", config_schema=SCHEMA))
    stack.api(tenant).patch(f"/installs/{name}", {"version": "1.1.0"})
    patches: list[str] = []

    def record(request: Request) -> None:
        if request.method == "PATCH":
            patches.append(request.post_data or "")

    sign_in(page, stack, tenant)
    card = install_card(page, name)
    card.locator(".inst-configure").click()
    form = card.locator(".config-form")
    board = form.locator("[data-field='board'] input")
    expect(board).to_be_focused()
    expect(board).to_have_value("ops")
    expect(form.locator("[data-field='board'] label")).to_contain_text("required")
    expect(form.locator("[data-field='board']")).to_contain_text("Board to sync")
    expect(form.locator("[data-field='retries'] input")).to_have_attribute("type", "number")
    expect(form.locator("[data-field='verbose'] input")).to_have_attribute("type", "checkbox")
    expect(form.locator("[data-field='mode'] select option")).to_have_count(3)
    expect(form.locator("[data-field='extra'] textarea")).to_be_visible()
    expect(card.locator(".config-text")).to_be_hidden()
    page.screenshot(path=screenshots / "config-form-1280.png", full_page=True)
    page.on("request", record)

    # Caught in the page: a required field left empty, JSON that does not parse.
    board.fill("")
    form.locator("[data-field='extra'] textarea").fill("{not json")
    card.locator(".config-save").click()
    expect(form.locator("[data-field='board'] .cf-error")).to_have_text("This field is required.")
    expect(board).to_have_attribute("aria-invalid", "true")
    expect(form.locator("[data-field='extra'] .cf-error")).to_contain_text("Not valid JSON")
    assert patches == []

    # Caught by the server: CONFIG_INVALID is shown next to the field its path names.
    board.fill("main")
    form.locator("[data-field='extra'] textarea").fill("")
    form.locator("[data-field='retries'] input").fill("7")
    card.locator(".config-save").click()
    retries_error = form.locator("[data-field='retries'] .cf-error")
    expect(retries_error).to_have_text("config.retries: 7 is greater than the maximum of 5")
    expect(form.locator("[data-field='retries'] input")).to_be_focused()
    expect(form.locator("[data-field='board'] .cf-error")).to_be_hidden()
    assert len(patches) == 1
    assert stack.api(tenant).get(f"/installs/{name}")["config"] == {"board": "ops", "kept": [1, 2]}
    page.screenshot(path=screenshots / "config-form-invalid-1280.png", full_page=True)

    # Valid: saved with the right JSON types, keys the schema does not name kept.
    form.locator("[data-field='retries'] input").fill("3")
    form.locator("[data-field='ratio'] input").fill("0.5")
    form.locator("[data-field='verbose'] input").check()
    form.locator("[data-field='mode'] select").select_option(label="safe")
    form.locator("[data-field='extra'] textarea").fill('{"a": 1}')
    card.locator(".config-save").click()
    expect(page.locator("#toast")).to_have_text(f"Saved the configuration of {name}.")
    expected = {"board": "main", "retries": 3, "ratio": 0.5, "verbose": True, "mode": "safe", "extra": {"a": 1}}
    assert stack.api(tenant).get(f"/installs/{name}")["config"] == {**expected, "kept": [1, 2]}
    assert json.loads(patches[-1]) == {"config": {"kept": [1, 2], **expected}}


def test_the_uninstall_dialog_keeps_data_by_default_and_purges_it_when_asked(
    page: Page, stack: BrowserStack, tenant: str
) -> None:
    name = "com.ui.purge"
    installed(stack, tenant, name, capabilities=["cap:storage.kv", "cap:secrets.get"], secrets=SECRETS[:1])
    api = stack.api(tenant)
    api.request("PUT", f"/installs/{name}/kv/entry", {"key": "cursor", "value": "41"})
    sign_in(page, stack, tenant)
    dialog = page.locator("#confirm-dialog")

    install_card(page, name).locator(".inst-uninstall").click()
    expect(dialog).to_contain_text("Keep its data.")
    expect(dialog).to_contain_text("Delete its data too.")
    expect(dialog.locator("input[value='keep']")).to_be_checked()
    expect(page.locator("#confirm-ok")).to_have_text("Uninstall")
    page.click("#confirm-ok")
    expect(install_card(page, name)).to_have_count(0)
    api.post("/installs", {"extension": name, "version": "1.0.0"})
    assert api.get(f"/installs/{name}/kv/entry?key=cursor")["value_b64"] == "NDE="

    page.reload()
    page.click("#tab-installs")
    install_card(page, name).locator(".inst-uninstall").click()
    dialog.locator("input[value='purge']").check()
    expect(page.locator("#confirm-ok")).to_have_text("Uninstall and delete data")
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"Uninstalled {name} and deleted its data.")
    api.post("/installs", {"extension": name, "version": "1.0.0"})
    assert api.get(f"/installs/{name}/kv")["keys"] == []


def test_installing_a_version_with_a_config_schema_asks_for_its_config_in_the_dialog_and_sends_it_typed(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.install-schema"
    schema = {
        "type": "object",
        "required": ["board", "retries"],
        "properties": {
            "board": {"type": "string", "description": "Board to sync"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 2},
            "verbose": {"type": "boolean"},
            "mode": {"enum": ["fast", "safe"], "default": "safe"},
        },
    }
    stack.publish(tenant, stack.write_bundle(name, "1.0.0", config_schema=schema))
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.post_data or "") if request.method == "POST" else None)
    dialog = open_install_dialog(page, stack, tenant, name)
    form = dialog.locator(".config-form")
    board = form.locator("[data-field='board'] input")
    retries = form.locator("[data-field='retries'] input")
    expect(dialog.get_by_label("board")).to_be_focused()
    expect(board).to_have_accessible_description("Board to sync")
    expect(retries).to_have_value("2")
    expect(form.locator("[data-field='mode'] select option:checked")).to_have_text("safe")

    # Empty: the page names the missing field and sends nothing.
    page.click("#confirm-ok")
    expect(form.locator("[data-field='board'] .cf-error")).to_have_text("This field is required.")
    expect(board).to_have_attribute("aria-invalid", "true")
    assert posts == []

    # The server's CONFIG_INVALID lands next to its field; the dialog keeps what was typed.
    board.fill("ops")
    retries.fill("9")
    board.press("Enter")
    expect(form.locator("[data-field='retries'] .cf-error")).to_have_text(
        "config.retries: 9 is greater than the maximum of 5"
    )
    expect(retries).to_be_focused()
    expect(board).to_have_value("ops")
    expect(form.locator("[data-field='board'] .cf-error")).to_be_hidden()
    assert len(posts) == 1
    page.screenshot(path=screenshots / "install-config-invalid-1280.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.querySelector('#confirm-dialog').scrollWidth <= innerWidth")
    page.screenshot(path=screenshots / "install-config-invalid-390.png")
    page.set_viewport_size({"width": 1280, "height": 900})

    retries.fill("3")
    form.locator("[data-field='verbose'] input").check()
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"Installed {name} 1.0.0.")
    expect(dialog).to_be_hidden()
    config = stack.api(tenant).get(f"/installs/{name}")["config"]
    assert config == {"board": "ops", "retries": 3, "verbose": True, "mode": "safe"}
    assert type(config["retries"]) is int and config["verbose"] is True
    assert json.loads(posts[-1]) == {"extension": name, "version": "1.0.0", "config": config}


def test_a_version_without_a_config_schema_installs_from_the_dialog_without_a_form(
    page: Page, stack: BrowserStack, tenant: str
) -> None:
    name = "com.ui.install-plain"
    stack.publish(tenant, stack.write_bundle(name, "1.0.0"))
    dialog = open_install_dialog(page, stack, tenant, name)
    expect(dialog.locator(".config-form")).to_have_count(0)
    expect(page.locator("#confirm-ok")).to_be_focused()
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"Installed {name} 1.0.0.")
    install = stack.api(tenant).get(f"/installs/{name}")
    assert (install["version"], install["config"]) == ("1.0.0", {})


def test_switching_to_a_version_whose_schema_the_config_does_not_fit_asks_for_it_in_the_dialog(
    page: Page, stack: BrowserStack, tenant: str, screenshots: Path
) -> None:
    name = "com.ui.upgrade-schema"
    v1 = {"type": "object", "properties": {"board": {"type": "string"}, "verbose": {"type": "boolean"}}}
    v2 = {
        "type": "object",
        "required": ["board", "retries"],
        "additionalProperties": False,
        "properties": {
            "board": {"type": "string"},
            "verbose": {"type": "boolean"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5, "description": "Attempts per item"},
            "mode": {"enum": ["fast", "safe"], "default": "safe"},
        },
    }
    installed(stack, tenant, name, config_schema=v1)
    api = stack.api(tenant)
    api.patch(f"/installs/{name}", {"config": {"board": "ops", "verbose": True, "legacy": 1}})
    stack.publish(tenant, stack.write_bundle(name, "2.0.0", config_schema=v2))
    patches: list[str] = []
    page.on("request", lambda request: patches.append(request.post_data or "") if request.method == "PATCH" else None)
    sign_in(page, stack, tenant)
    card = install_card(page, name)
    card.locator(".inst-version-select").select_option("2.0.0")
    card.locator(".inst-switch").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(f"Upgrade {name} to 2.0.0?")

    # The form of 2.0.0's schema, with the current values and 2.0.0's defaults; a key its schema
    # refuses is named as not carried over; the focus is on the field the config lacks.
    form = dialog.locator(".config-form")
    retries = form.locator("[data-field='retries'] input")
    expect(form.locator("[data-field='board'] input")).to_have_value("ops")
    expect(form.locator("[data-field='verbose'] input")).to_be_checked()
    expect(form.locator("[data-field='mode'] select option:checked")).to_have_text("safe")
    expect(retries).to_have_value("")
    expect(retries).to_be_focused()
    expect(retries).to_have_accessible_description("Attempts per item")
    expect(dialog.locator(".change-dropped")).to_contain_text("legacy")

    # Empty: the page names the missing field and sends nothing.
    page.click("#confirm-ok")
    expect(form.locator("[data-field='retries'] .cf-error")).to_have_text("This field is required.")
    expect(retries).to_have_attribute("aria-invalid", "true")
    assert patches == []

    # The server's CONFIG_INVALID lands next to its field; the install stays where it was.
    retries.fill("9")
    retries.press("Enter")
    expect(form.locator("[data-field='retries'] .cf-error")).to_have_text(
        "config.retries: 9 is greater than the maximum of 5"
    )
    expect(retries).to_be_focused()
    assert api.get(f"/installs/{name}")["version"] == "1.0.0"
    page.screenshot(path=screenshots / "upgrade-config-invalid-1280.png", full_page=True)

    retries.fill("3")
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"{name} now runs 2.0.0.")
    expect(dialog).to_be_hidden()
    install = api.get(f"/installs/{name}")
    expected = {"board": "ops", "verbose": True, "retries": 3, "mode": "safe"}
    assert (install["version"], install["config"]) == ("2.0.0", expected)
    assert type(install["config"]["retries"]) is int
    assert json.loads(patches[-1]) == {"version": "2.0.0", "config": expected}
    assert len(patches) == 2

    # Rolling back to 1.0.0, whose schema the config fits: the form shows what will apply (its own
    # fields; the others are kept, as 1.0.0's schema allows them) and one click confirms.
    card.locator(".inst-rollback").click()
    expect(dialog).to_contain_text(f"Roll back {name} to 1.0.0?")
    expect(dialog.locator("[data-field='board'] input")).to_have_value("ops")
    expect(dialog.locator("[data-field='retries']")).to_have_count(0)
    expect(dialog.locator(".change-dropped")).to_have_count(0)
    expect(page.locator("#confirm-ok")).to_be_focused()
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_have_text(f"{name} now runs 1.0.0 again.")
    install = api.get(f"/installs/{name}")
    assert (install["version"], install["config"]) == ("1.0.0", expected)
    assert json.loads(patches[-1]) == {"version": "1.0.0", "config": expected}
