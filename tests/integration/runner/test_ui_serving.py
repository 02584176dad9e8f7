"""UI assets from verified bundles (DESIGN §7): headers, conditional requests, SPA fallback, and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chalicelib.storage.store import BUNDLE_OBJECT
from runner_container.engine import WasmEngine
from runner_container.http_responses import HttpResponse
from runner_container.ui import HTML_CSP, IMMUTABLE, UiServer
from tests.bundle_factory import good_files, zero_filled_bundle
from tests.integration.runner_fixtures import (
    EXAMPLE,
    EXAMPLE_NAME,
    RunnerEnv,
    content_hash_of,
    example_bundle,
    ui_bundle,
)

MiB = 1024 * 1024
INDEX_HTML = (EXAMPLE / "ui" / "index.html").read_bytes()
APP_JS = (EXAMPLE / "ui" / "app.js").read_bytes()


@pytest.fixture
def ui(env: RunnerEnv, engine: WasmEngine) -> UiServer:
    return UiServer(env.cache(engine))


@pytest.fixture
def hello(env: RunnerEnv) -> str:
    return env.publish(example_bundle())


def get(
    ui: UiServer, path: str, *, method: str = "GET", if_none_match: str | None = None
) -> tuple[HttpResponse, bytes]:
    response = ui.serve(method, path, if_none_match=if_none_match, request_id="req-ui")
    return response, response.read_body()


def etag_of(data: bytes) -> str:
    return f'"sha256-{hashlib.sha256(data).hexdigest()}"'


def assert_error(response: HttpResponse, body: bytes, status: int, code: str) -> None:
    assert response.status == status
    error = json.loads(body)["error"]
    assert (error["code"], error["request_id"]) == (code, "req-ui")
    assert error["message"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "ETag" not in response.headers
    assert "Content-Security-Policy" not in response.headers


# --- 200 and 304 ---------------------------------------------------------------------------------


def test_the_entry_page_is_served_with_every_header(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/index.html")

    assert response.status == 200
    assert body == INDEX_HTML
    assert response.headers == {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Length": str(len(INDEX_HTML)),
        "ETag": etag_of(INDEX_HTML),
        "Cache-Control": IMMUTABLE,
        "Content-Security-Policy": HTML_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Access-Control-Allow-Origin": "*",
    }


def test_the_csp_is_strict_and_on_html_only(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/app.js")

    assert body == APP_JS
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in response.headers
    assert "script-src 'self'" in HTML_CSP
    assert "connect-src 'none'" in HTML_CSP
    assert "'unsafe-inline'" not in HTML_CSP


def test_the_empty_path_serves_the_entry_page(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/")

    assert body == INDEX_HTML
    assert response.headers["ETag"] == etag_of(INDEX_HTML)


def test_the_url_without_the_slash_after_the_hash_redirects_to_it(ui: UiServer, hello: str) -> None:
    response, _ = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}")

    assert response.status == 308
    assert response.headers["Location"] == f"./{hello}/"
    assert "immutable" not in response.headers["Cache-Control"]


def test_an_extensionless_path_falls_back_to_the_entry_page(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/settings/profile")

    assert response.status == 200
    assert body == INDEX_HTML
    assert response.headers["Content-Security-Policy"] == HTML_CSP


@pytest.mark.parametrize("header", ["{etag}", "W/{etag}", '"other", {etag}', '"a",W/{etag} , "b"', "*"])
def test_a_matching_if_none_match_gives_304_with_caching_headers(ui: UiServer, hello: str, header: str) -> None:
    etag = etag_of(APP_JS)

    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/app.js", if_none_match=header.format(etag=etag))

    assert response.status == 304
    assert body == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_different_etag_gets_the_full_asset(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/app.js", if_none_match=etag_of(b"old"))

    assert response.status == 200
    assert body == APP_JS


def test_head_sends_the_headers_without_a_body(ui: UiServer, hello: str) -> None:
    response = ui.serve("HEAD", f"/ext-ui/{EXAMPLE_NAME}/{hello}/index.html")

    assert response.status == 200
    assert response.file is None
    assert response.body == b""
    assert response.headers["Content-Length"] == str(len(INDEX_HTML))


def test_content_types_follow_the_file_extension(env: RunnerEnv, ui: UiServer) -> None:
    extra = {"ui/logo.png": b"\x89PNG", "ui/fonts/a.woff2": b"wOF2", "ui/data.xyz": b"?", "ui/app.mjs": b"export {}"}
    content_hash = env.publish(ui_bundle(extra=extra))
    base = f"/ext-ui/com.acme.tools/{content_hash}"

    types = {
        path: get(ui, f"{base}/{path}")[0].headers["Content-Type"]
        for path in ("logo.png", "fonts/a.woff2", "data.xyz", "app.mjs")
    }

    assert types == {
        "logo.png": "image/png",
        "fonts/a.woff2": "font/woff2",
        "data.xyz": "application/octet-stream",
        "app.mjs": "text/javascript; charset=utf-8",
    }


# --- refusals ------------------------------------------------------------------------------------


def test_a_missing_asset_with_an_extension_is_a_404(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/missing.js")

    assert_error(response, body, 404, "NOT_FOUND")


def test_files_outside_the_ui_folder_are_not_served(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/dist/main.wasm")

    assert_error(response, body, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "asset",
    [
        "../manifest.json",
        "%2e%2e/manifest.json",
        "%2E%2E%2Fmanifest.json",
        "css/../../manifest.json",
        "..%5cmanifest.json",
        "a\\b.js",
        "%00.js",
        "index.html%00.png",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "./index.html",
        "a//b.js",
        "%252e%252e/manifest.json",
    ],
)
def test_every_spelling_of_path_traversal_is_a_400(ui: UiServer, hello: str, asset: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/{asset}")

    assert_error(response, body, 400, "BAD_REQUEST")


def test_a_hash_of_another_extension_is_a_404(env: RunnerEnv, ui: UiServer, hello: str) -> None:
    other = env.publish(ui_bundle("com.acme.tools"))

    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{other}/index.html")
    assert_error(response, body, 404, "NOT_FOUND")
    response, body = get(ui, f"/ext-ui/com.acme.tools/{hello}/index.html")
    assert_error(response, body, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "content_hash",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64, "a" * 64, "sha256:" + "0" * 64],
    ids=["uppercase", "short", "other-algorithm", "no-prefix", "not-published"],
)
def test_a_hash_that_names_no_published_bundle_is_a_404(ui: UiServer, content_hash: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{content_hash}/index.html")

    assert_error(response, body, 404, "NOT_FOUND")


def test_a_bundle_without_a_ui_has_no_assets(env: RunnerEnv, ui: UiServer) -> None:
    content_hash = env.publish(ui_bundle(ui=None))

    response, body = get(ui, f"/ext-ui/com.acme.tools/{content_hash}/index.html")

    assert_error(response, body, 404, "NOT_FOUND")


def test_methods_other_than_get_and_head_are_refused(ui: UiServer, hello: str) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/index.html", method="POST")

    assert_error(response, body, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "GET, HEAD"


def test_a_bundle_stays_on_disk_and_counted_until_its_asset_response_is_closed(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    # An evicted bundle whose file a slow client still reads would take disk the budget no longer counts.
    first, second = (env.publish(ui_bundle(f"com.acme.u{n}", {"ui/blob.bin": os.urandom(200_000)})) for n in range(2))
    ui = UiServer(env.cache(engine, runner_cache_max_bytes=250_000))
    open_response = ui.serve("GET", f"/ext-ui/com.acme.u0/{first}/blob.bin")

    busy, body = get(ui, f"/ext-ui/com.acme.u1/{second}/blob.bin")

    assert_error(busy, body, 503, "RUNNER_BUSY")
    assert busy.headers["Retry-After"] == "1"
    assert (env.root / "cache" / f"{first.split(':')[1]}.ui").is_dir()
    assert len(open_response.read_body()) == 200_000
    served, _ = get(ui, f"/ext-ui/com.acme.u1/{second}/blob.bin")
    assert served.status == 200
    assert not (env.root / "cache" / f"{first.split(':')[1]}.ui").exists()


# --- what a page may do when opened directly (issue 9) -------------------------------------------


def csp_directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as ``{directive: [tokens]}``."""
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *tokens = part.split()
        directives[name.lower()] = tokens
    return directives


def test_html_is_sandboxed_as_the_iframe_contract_sandboxes_it(ui: UiServer, hello: str) -> None:
    # Opened directly (not in the host's iframe), the page must still run in an opaque origin, never on
    # the runner origin that every extension shares.
    response, _ = get(ui, f"/ext-ui/{EXAMPLE_NAME}/{hello}/index.html")

    assert csp_directives(response.headers["Content-Security-Policy"])["sandbox"] == ["allow-scripts"]


def test_svg_is_sandboxed_without_scripts(env: RunnerEnv, ui: UiServer) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
    content_hash = env.publish(ui_bundle(extra={"ui/logo.svg": svg}))

    response, body = get(ui, f"/ext-ui/com.acme.tools/{content_hash}/logo.svg")

    assert (response.status, body) == (200, svg)
    directives = csp_directives(response.headers["Content-Security-Policy"])
    assert directives["sandbox"] == []
    assert directives["script-src"] == ["'none'"]


# --- what an error tells the client (issue 9, item 10) -------------------------------------------


def test_a_storage_failure_is_reported_without_keys_or_s3_codes(env: RunnerEnv, ui: UiServer) -> None:
    env.client.delete_bucket(Bucket=env.settings.storage_s3_bucket)

    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/sha256:{'ab' * 32}/index.html")

    assert_error(response, body, 503, "STORAGE_ERROR")
    message = json.loads(body)["error"]["message"]
    assert "sha256/" not in message and "NoSuchBucket" not in message and "bundle.tar.zst" not in message
    assert "req-ui" in message


def test_a_hash_nobody_published_is_a_404_that_names_no_storage_key(ui: UiServer) -> None:
    response, body = get(ui, f"/ext-ui/{EXAMPLE_NAME}/sha256:{'ab' * 32}/index.html")

    assert_error(response, body, 404, "NOT_FOUND")
    assert "bundle.tar.zst" not in json.loads(body)["error"]["message"]


# --- disk and concurrency under a hostile bundle (issue 9, item 5) -----------------------------


def tree_size(root: Path) -> int:
    """Bytes of every file under ``root`` now (files vanishing meanwhile count as gone)."""
    total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


@contextmanager
def peak_disk_use(root: Path) -> Iterator[list[int]]:
    """Samples ``root``'s size while the block runs; the list holds the largest size seen."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_size(root))
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(5)
        peak[0] = max(peak[0], tree_size(root))


def bomb(name: str = "com.acme.bomb") -> bytes:
    """A UI bundle of a few KiB holding 192 MiB of zeros outside ``ui/``, as published before the ratio cap."""
    files = good_files(name=name, api=None)
    del files["dist/main.wasm"]
    return zero_filled_bundle(files, {f"data/zeros{n}.bin": 64 * MiB for n in range(3)})


def publish_unchecked(env: RunnerEnv, data: bytes) -> str:
    """Store a bundle under ``sha256/`` without the checks of today's finalize (an older platform's)."""
    content_hash = content_hash_of(data)
    env.store.put_immutable(env.store.object_key(content_hash, BUNDLE_OBJECT), data, "application/zstd")
    return content_hash


def test_a_ui_request_unpacks_only_the_ui_of_a_bundle_that_expands_hugely(env: RunnerEnv, engine: WasmEngine) -> None:
    data = bomb()
    assert len(data) < 64 * 1024
    content_hash = publish_unchecked(env, data)
    # The ratio cap lifted, as for a bundle published before it: unpacking only ui/ must bound the disk alone.
    cache = env.cache(engine, runner_cache_max_bytes=8 * MiB, bundle_max_compression_ratio=10**9)

    with peak_disk_use(env.root / "cache") as peak:
        response, body = get(UiServer(cache), f"/ext-ui/com.acme.bomb/{content_hash}/index.html")

    assert (response.status, body) == (200, b"<!doctype html><title>t</title>")
    assert peak[0] < 1 * MiB


def test_a_bundle_past_the_ratio_cap_is_refused_before_it_fills_the_disk(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = publish_unchecked(env, bomb())
    cache = env.cache(engine, runner_cache_max_bytes=64 * MiB)

    with peak_disk_use(env.root / "cache") as peak:
        response, body = get(UiServer(cache), f"/ext-ui/com.acme.bomb/{content_hash}/index.html")

    assert_error(response, body, 413, "BUNDLE_UNPACKED_TOO_LARGE")
    assert peak[0] < 1 * MiB
    assert tree_size(env.root / "cache") == 0


def test_ui_requests_past_the_concurrency_cap_are_busy_until_one_finishes(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(ui_bundle())
    ui = UiServer(env.cache(engine), max_concurrency=1)
    path = f"/ext-ui/com.acme.tools/{content_hash}/index.html"
    streaming = ui.serve("GET", path)

    busy, body = get(ui, path)

    assert_error(busy, body, 503, "RUNNER_BUSY")
    assert busy.headers["Retry-After"] == "1"
    streaming.close()
    assert get(ui, path)[0].status == 200
