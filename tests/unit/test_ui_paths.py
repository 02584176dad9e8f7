"""The pure parts of UI serving: URL parsing, asset path safety, resolution, ETags and content types."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.verify import BundleFile
from chalicelib.errors import BadRequest, NotFound
from runner_container.ui import (
    HTML_CSP,
    SVG_CSP,
    UiTarget,
    asset_headers,
    content_type_for,
    etag_matches,
    normalize_asset_path,
    parse_ui_path,
    resolve_asset,
)

HASH = "sha256:" + "ab" * 32
ENTRY = "ui/index.html"
FILES = {path: BundleFile(path, 1, "0" * 64) for path in (ENTRY, "ui/app.js", "ui/img/logo.png", "ui/LICENSE")}
SAFE_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\\%", min_codepoint=0x20),
    min_size=1,
    max_size=12,
).filter(lambda segment: segment not in (".", "..") and "\x7f" not in segment)


# --- URL -----------------------------------------------------------------------------------------


def test_a_ui_url_splits_into_extension_hash_and_asset() -> None:
    assert parse_ui_path(f"/ext-ui/com.acme.tools/{HASH}/css/site.css") == UiTarget(
        "com.acme.tools", HASH, "css/site.css"
    )


def test_a_percent_encoded_hash_is_accepted() -> None:
    assert parse_ui_path(f"/ext-ui/com.acme.tools/{HASH.replace(':', '%3A')}/").content_hash == HASH


def test_a_url_ending_at_the_hash_redirects_to_the_folder() -> None:
    assert parse_ui_path(f"/ext-ui/com.acme.tools/{HASH}").redirect == f"./{HASH}/"


@pytest.mark.parametrize(
    "path",
    [
        f"/ext-ui/COM.ACME/{HASH}/",
        f"/ext-ui/acme/{HASH}/",
        "/ext-ui/com.acme.tools/sha256:" + "AB" * 32 + "/",
        "/ext-ui/com.acme.tools/sha256:abc/",
        "/ext-ui/com.acme.tools/",
        "/ext-ui/",
        "/other/com.acme.tools/",
    ],
)
def test_a_url_that_cannot_name_a_bundle_is_not_found(path: str) -> None:
    with pytest.raises(NotFound):
        parse_ui_path(path)


# --- asset paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("index.html", "index.html"),
        ("css/site.css", "css/site.css"),
        ("docs/", "docs"),
        ("caf%C3%A9.png", "café.png"),
        ("a%20b.txt", "a b.txt"),
        ("..hidden/x", "..hidden/x"),
    ],
)
def test_safe_asset_paths_are_decoded_once(raw: str, expected: str) -> None:
    assert normalize_asset_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("..", "'..' segment"),
        ("../x", "'..' segment"),
        ("a/../b", "'..' segment"),
        ("%2e%2e/x", "'..' segment"),
        ("%2E%2e%2fx", "'..' segment"),
        (".", "'.' segment"),
        ("./x", "'.' segment"),
        ("a//b", "'empty' segment"),
        ("/etc/passwd", "relative"),
        ("%2Fetc%2Fpasswd", "relative"),
        ("a\\b", "backslash"),
        ("..%5Cx", "encoded backslash"),
        ("%00", "control character"),
        ("a%0Ab", "control character"),
        ("%7f", "control character"),
        ("%252e%252e/x", "percent-encoded twice"),
        ("%ff", "UTF-8"),
    ],
)
def test_unsafe_asset_paths_are_bad_requests(raw: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        normalize_asset_path(raw)


@given(st.lists(SAFE_SEGMENT, min_size=1, max_size=5), st.integers(min_value=0, max_value=5))
def test_any_path_with_a_parent_segment_is_refused(segments: list[str], position: int) -> None:
    segments.insert(min(position, len(segments)), "..")

    with pytest.raises(BadRequest):
        normalize_asset_path("/".join(segments))


@given(st.lists(SAFE_SEGMENT, min_size=1, max_size=5))
def test_any_path_of_plain_segments_is_kept_as_is(segments: list[str]) -> None:
    path = "/".join(segments)

    assert normalize_asset_path(path) == path


# --- resolution ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        ("", ENTRY),
        ("app.js", "ui/app.js"),
        ("img/logo.png", "ui/img/logo.png"),
        ("LICENSE", "ui/LICENSE"),
        ("settings", ENTRY),
        ("settings/profile", ENTRY),
        ("img", ENTRY),
    ],
)
def test_assets_resolve_to_files_or_to_the_entry_for_extensionless_paths(asset: str, expected: str) -> None:
    assert resolve_asset(FILES, ENTRY, asset) == expected


@pytest.mark.parametrize("asset", ["missing.js", "img/missing.png", "index.htm", "v1.2/x.css"])
def test_a_missing_asset_with_an_extension_is_not_found(asset: str) -> None:
    with pytest.raises(NotFound):
        resolve_asset(FILES, ENTRY, asset)


# --- ETags and headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"sha256-abc"', True),
        ('W/"sha256-abc"', True),
        ('"x", "sha256-abc"', True),
        ('"x",W/"sha256-abc" ,"y"', True),
        ("*", True),
        (" * ", True),
        ('"sha256-abd"', False),
        ('"sha256-ab"', False),
        ("sha256-abc", False),
        ("", False),
        ('"a,b", "c"', False),
    ],
)
def test_if_none_match_uses_weak_comparison_over_a_list(header: str, matches: bool) -> None:
    assert etag_matches(header, '"sha256-abc"') is matches


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("ui/index.html", "text/html; charset=utf-8"),
        ("ui/INDEX.HTM", "text/html; charset=utf-8"),
        ("ui/app.js", "text/javascript; charset=utf-8"),
        ("ui/app.mjs", "text/javascript; charset=utf-8"),
        ("ui/site.css", "text/css; charset=utf-8"),
        ("ui/data.json", "application/json"),
        ("ui/app.js.map", "application/json"),
        ("ui/icon.svg", "image/svg+xml"),
        ("ui/a.png", "image/png"),
        ("ui/a.jpg", "image/jpeg"),
        ("ui/a.jpeg", "image/jpeg"),
        ("ui/a.gif", "image/gif"),
        ("ui/a.webp", "image/webp"),
        ("ui/favicon.ico", "image/x-icon"),
        ("ui/f.woff", "font/woff"),
        ("ui/f.woff2", "font/woff2"),
        ("ui/m.wasm", "application/wasm"),
        ("ui/notes.txt", "text/plain; charset=utf-8"),
        ("ui/archive.tar.zst", "application/octet-stream"),
        ("ui/LICENSE", "application/octet-stream"),
    ],
)
def test_content_types_follow_the_extension(path: str, content_type: str) -> None:
    assert content_type_for(path) == content_type


def test_only_what_a_browser_renders_as_a_document_carries_a_content_security_policy() -> None:
    file = BundleFile("x", 10, "f" * 64)

    assert asset_headers("ui/index.html", file)["Content-Security-Policy"] == HTML_CSP
    assert asset_headers("ui/icon.svg", file)["Content-Security-Policy"] == SVG_CSP
    assert "Content-Security-Policy" not in asset_headers("ui/app.js", file)
    assert asset_headers("ui/app.js", file)["ETag"] == f'"sha256-{"f" * 64}"'
