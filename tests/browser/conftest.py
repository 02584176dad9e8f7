"""Fixtures for the admin UI's browser tests: one local stack per module, one Chromium per session.

The stack trusts one signing key (so the page can show every signature error) and runs with
small limits, so the multipart and size-limit paths need only a few MiB:

- multipart above 5 MiB, in 5 MiB parts; bundles up to 12 MiB;
- 20 upload calls per tenant per minute.

Every test signs in as a tenant of its own, so installs and rate limits never meet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright, expect, sync_playwright

from chalicelib.auth import issue_token
from chalicelib.bundles.signing import PrivateKey, generate_ed25519_keypair, load_private_key, sign_content_hash
from devstack.stack import LocalStack, StackConfig, StackUrls
from extctl.api import ApiClient
from tests.bundle_factory import bundle, good_files

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
MiB = 1024 * 1024
MAX_BUNDLE_BYTES = 12 * MiB
PART_BYTES = 5 * MiB
RATE_LIMIT = 20
STACK_ENV = {
    "UPLOAD_MULTIPART_THRESHOLD_BYTES": str(PART_BYTES),
    "UPLOAD_PART_BYTES": str(PART_BYTES),
    "BUNDLE_MAX_COMPRESSED_BYTES": str(MAX_BUNDLE_BYTES),
    "UPLOAD_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
}
_TENANT_SEQUENCE = itertools.count(1)

# Generous waits: `make test` runs these next to the rest of the suite on two cores.
expect.set_options(timeout=10_000)


@dataclass(frozen=True)
class BrowserStack:
    """The running stack, the keys it trusts (and one it does not), and ways to seed it."""

    urls: StackUrls
    secret: str
    trusted_key: PrivateKey
    untrusted_key: PrivateKey
    files: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    def token(self, tenant: str, roles: tuple[str, ...] = ("admin", "user")) -> str:
        return issue_token(self.secret, sub=f"admin@{tenant}", tenant=tenant, roles=list(roles), ttl_seconds=3600)

    def api(self, tenant: str) -> ApiClient:
        return ApiClient(self.urls.api, self.token(tenant))

    def admin_url(self, token: str) -> str:
        """The page, signed in through the fragment as ``extctl dev``'s EXT_ADMIN_URL does."""
        return f"{self.urls.api}/admin#token={token}"

    def write_bundle(self, name: str, version: str, **manifest: Any) -> Path:
        """A valid bundle file for ``name@version`` (the manifest overrides apply on top)."""
        path = self.files / f"{name}-{version}-{next(self._names)}.tar.zst"
        path.write_bytes(bundle(good_files(name=name, version=version, **manifest)))
        return path

    def write_signature(self, bundle_path: Path, key: PrivateKey | None = None) -> Path:
        """``<bundle>.sig`` as ``extctl sign`` writes it; the trusted key unless told otherwise."""
        content_hash = "sha256:" + hashlib.sha256(bundle_path.read_bytes()).hexdigest()
        envelope = sign_content_hash(content_hash, key or self.trusted_key)
        signature = bundle_path.with_name(bundle_path.name + ".sig")
        signature.write_text(envelope.to_json(), "utf-8")
        return signature

    def publish(self, tenant: str, bundle_path: Path) -> dict[str, Any]:
        """Publish a bundle through the API (initiate → PUT → finalize), signed with the trusted key."""
        api = self.api(tenant)
        envelope = json.loads(self.write_signature(bundle_path).read_text("utf-8"))
        data = bundle_path.read_bytes()
        target = api.post(
            "/ext-bundles/initiate-upload",
            {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "signature": envelope},
        )
        api.put_bytes(target["url"], data, target["headers"])
        result: dict[str, Any] = api.post("/ext-bundles/finalize", {"upload_id": target["upload_id"]})
        return result


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserStack]:
    """The whole platform on 127.0.0.1, shared by the module's tests.

    The stack takes over process-wide state (the AWS SDKs' environment, the ``app`` module's
    services), so it lives exactly as long as the module: under ``pytest -n`` the ``browser`` xdist
    group runs contiguously on one worker, and the next module on that worker gets that state back.
    """
    _require_chromium()
    trusted_pem, trusted_public = generate_ed25519_keypair()
    untrusted_pem, _ = generate_ed25519_keypair()
    local = LocalStack(
        StackConfig(
            trust_bundle="# name: browser tests\n" + trusted_public.decode(),
            cache_dir=tmp_path_factory.mktemp("runner-cache"),
            settings=STACK_ENV,
        )
    )
    with local as urls:
        yield BrowserStack(
            urls=urls,
            secret=str(local.settings.ext_auth_secret),
            trusted_key=load_private_key(trusted_pem),
            untrusted_key=load_private_key(untrusted_pem),
            files=tmp_path_factory.mktemp("bundles"),
        )


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    _require_chromium()
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield chromium
    chromium.close()


@dataclass
class PageProblems:
    """What the page complained about: uncaught exceptions and CSP refusals fail the test."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if re.search(r"Content Security Policy|Refused to", message.text):
            self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error.message}")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page at 1280 × 900 in its own context (its own sessionStorage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    problems = PageProblems()
    tab = context.new_page()
    tab.on("console", problems.on_console)
    tab.on("pageerror", problems.on_page_error)
    yield tab
    context.close()
    assert problems.errors == []


@pytest.fixture
def tenant(request: pytest.FixtureRequest) -> str:
    """A tenant id of this test's own, readable in screenshots and logs."""
    words = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:24].strip("-")
    return f"{words}-{next(_TENANT_SEQUENCE)}-{secrets.token_hex(2)}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
