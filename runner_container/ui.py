"""Serving extension UI assets at immutable, content-addressed URLs (DESIGN §7).

``GET|HEAD /ext-ui/{extension}/{content_hash}/{path}`` where ``{path}`` is relative to the bundle's
``ui/`` folder.  One request goes through these stages:

1. parse the URL (:func:`parse_ui_path`): the extension segment must be a valid name and the hash a full
   ``sha256:<64 lowercase hex>`` (either may be percent-encoded); anything else cannot name a published
   bundle, so it is ``404``.  ``/ext-ui/{extension}/{hash}`` without the trailing slash redirects (308) to
   ``…/{hash}/`` so the entry page's relative URLs resolve inside the bundle;
2. check the asset path (:func:`normalize_asset_path`): decoded once; ``..`` or ``.`` segments, empty
   segments, backslashes, NUL and other control characters, a leading ``/`` and double-encoded
   sequences are all ``400`` (even in spellings the lookup below would never match);
3. take one of the server's ``max_concurrency`` slots (``503 RUNNER_BUSY`` when none frees up within
   :data:`SLOT_WAIT_S`) and lease the bundle's UI from the cache (verified, only ``manifest.json`` and
   ``ui/`` unpacked; no compiling); both are held until the response's file is closed.  Require the
   manifest name to equal ``{extension}``, else ``404``.  That is how "some version of this extension
   has this hash" is checked without a database: only finalize writes under ``sha256/``, and only once
   the registry took the version;
4. resolve (:func:`resolve_asset`) against the bundle's verified file list, never the file system: an empty
   path is ``ui.entry``; an existing file is itself; a missing extensionless path falls back to
   ``ui.entry`` (single-page apps); a missing path with an extension is ``404``;
5. answer: strong ETag ``"sha256-<file sha256>"``; ``If-None-Match`` (lists, ``*``, weak comparison per
   RFC 9110 §13.1.2) gives ``304``; ``Cache-Control: public, max-age=31536000, immutable`` on 200/304 only;
   a file over the caller's ``max_asset_bytes`` (Lambda's response limit) is ``413 ASSET_TOO_LARGE``.

Every response carries ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
``Cross-Origin-Resource-Policy: cross-origin`` (the host app on another origin embeds these).  Errors are
JSON ``{"error": {...}}`` with ``Cache-Control: no-store``.

HTML gets :data:`HTML_CSP`.  The host embeds the page in ``<iframe sandbox="allow-scripts">``, so it runs in
an opaque origin; the policy's own ``sandbox allow-scripts`` does the same for a page opened directly (a link,
a new tab), which would otherwise run on the runner's origin, shared by every extension.  Browsers still
resolve ``'self'`` against the page's URL, so the bundle's own scripts, styles, images and fonts load and
nothing else does.  ``connect-src 'none'``: the UI has no network access
of its own and reaches its API only by ``postMessage`` to the host, which adds the user's identity.
No inline script or style (XSS in an extension's page cannot run), ``object-src 'none'`` (no plugins),
``base-uri 'none'`` and ``form-action 'none'`` (no redirecting relative URLs or posting data away).
``frame-ancestors *``: the runner does not know the host app's origin; framing grants nothing because the
page holds no credentials and acts only through the host's ``postMessage`` handler, which must check the
message source.  SVG, the other type a browser renders as a document, gets :data:`SVG_CSP`: sandboxed
without scripts (an image needs none), its inline styles allowed.  Assets also send
``Access-Control-Allow-Origin: *``: they are public and immutable, and fonts and module scripts requested
from an opaque-origin frame are CORS requests.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes

from chalicelib.bundles.digests import CONTENT_HASH_RE
from chalicelib.bundles.verify import BundleFile
from chalicelib.errors import AssetTooLarge, BadRequest, ExtError, NotFound, RunnerBusy
from chalicelib.tenancy import is_extension_name
from runner_container.bundle_fetch import CachedBundle
from runner_container.cache import BundleCache
from runner_container.http_responses import (
    SAFE_METHODS,
    SECURITY_HEADERS,
    HttpResponse,
    error_response,
    method_not_allowed,
)

__all__ = [
    "CONTENT_TYPES",
    "HTML_CSP",
    "IMMUTABLE",
    "SVG_CSP",
    "UI_PREFIX",
    "UiServer",
    "UiTarget",
    "asset_headers",
    "content_type_for",
    "etag_matches",
    "normalize_asset_path",
    "parse_ui_path",
    "resolve_asset",
]

UI_PREFIX = "/ext-ui/"
UI_FOLDER = "ui/"
IMMUTABLE = "public, max-age=31536000, immutable"
_REDIRECT_CACHE = "public, max-age=86400"
HTML_CSP = (
    "sandbox allow-scripts; default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'none'; object-src 'none'; frame-ancestors *; base-uri 'none'; form-action 'none'"
)
SVG_CSP = "sandbox; default-src 'none'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
_HTML = "text/html; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
CONTENT_TYPES: Mapping[str, str] = {
    ".html": _HTML,
    ".htm": _HTML,
    ".js": _JS,
    ".mjs": _JS,
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_DOCUMENT_CSP: Mapping[str, str] = {_HTML: HTML_CSP, CONTENT_TYPES[".svg"]: SVG_CSP}
"""The types a browser renders as a document when an asset is opened directly, and their policies."""
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')


# --- pure parts: URL, path, resolution, headers ---------------------------------------------


@dataclass(frozen=True)
class UiTarget:
    """A parsed UI URL; ``asset`` is the normalized path below ``ui/`` ("" for the entry page).

    ``redirect`` is set when the URL lacks the slash after the hash.
    """

    extension: str
    content_hash: str
    asset: str
    redirect: str | None = None


def _decode_segment(raw: str, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise NotFound(f"the {what} in the URL is not valid UTF-8") from None


def parse_ui_path(raw_path: str) -> UiTarget:
    """Split ``/ext-ui/{extension}/{content_hash}/{path}`` as sent (percent-encoded, no query).

    Raises ``NotFound`` when the extension or hash cannot name a bundle and ``BadRequest`` for an unsafe
    asset path.
    """
    if not raw_path.startswith(UI_PREFIX):
        raise NotFound("UI assets live under /ext-ui/{extension}/{content_hash}/")
    parts = raw_path[len(UI_PREFIX) :].split("/", 2)
    if len(parts) < 2:
        raise NotFound("UI URLs are /ext-ui/{extension}/{content_hash}/{path}")
    extension = _decode_segment(parts[0], "extension name")
    content_hash = _decode_segment(parts[1], "content hash")
    if not is_extension_name(extension):
        raise NotFound(f"{extension[:128]!r} is not an extension name")
    if not CONTENT_HASH_RE.fullmatch(content_hash):
        raise NotFound("the content hash must be 'sha256:' and 64 lowercase hex digits")
    if len(parts) == 2:
        # Relative, so it holds behind any path prefix; "./" keeps "sha256:" from reading as a URL scheme.
        return UiTarget(extension, content_hash, "", redirect=f"./{content_hash}/")
    return UiTarget(extension, content_hash, normalize_asset_path(parts[2]))


def normalize_asset_path(raw: str) -> str:
    """The asset path below ``ui/``, decoded once; raises ``BadRequest`` for every unsafe spelling.

    A trailing ``/`` is dropped (``docs/`` is ``docs``); the empty path stays empty (the entry page).
    """
    if "\\" in raw:
        raise BadRequest("the asset path contains a backslash")
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the asset path is not valid UTF-8 once decoded") from None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise BadRequest("the asset path contains NUL or another control character")
    if "\\" in path:
        raise BadRequest("the asset path contains an encoded backslash")
    if _ENCODED.search(path):
        raise BadRequest("the asset path is percent-encoded twice")
    if path.startswith("/"):
        raise BadRequest("the asset path must be relative")
    if path.endswith("/"):
        path = path[:-1]
    if path == "":
        return ""
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise BadRequest(f"the asset path has a {segment or 'empty'!r} segment")
    return path


def resolve_asset(files: Mapping[str, BundleFile], entry: str, asset: str) -> str:
    """The bundle path that answers ``asset``: the file itself, or ``entry`` for "" and extensionless misses."""
    if asset == "":
        return entry
    candidate = UI_FOLDER + asset
    if candidate in files:
        return candidate
    if PurePosixPath(asset).suffix == "":
        return entry
    raise NotFound(f"{asset!r} is not in this bundle's UI")


def content_type_for(path: str) -> str:
    return CONTENT_TYPES.get(PurePosixPath(path).suffix.lower(), DEFAULT_CONTENT_TYPE)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value matches ``etag`` (``*``, or a list; weak comparison)."""
    value = if_none_match.strip()
    if value == "*":
        return True
    wanted = etag.removeprefix("W/").strip('"')
    return any(match.group(1) == wanted for match in _ENTITY_TAG.finditer(value))


def asset_headers(path: str, file: BundleFile) -> dict[str, str]:
    """Headers of a 200 for ``path``."""
    content_type = content_type_for(path)
    headers = {
        **SECURITY_HEADERS,
        "Content-Type": content_type,
        "Content-Length": str(file.size),
        "ETag": f'"sha256-{file.sha256}"',
        "Cache-Control": IMMUTABLE,
        "Access-Control-Allow-Origin": "*",
    }
    policy = _DOCUMENT_CSP.get(content_type)
    if policy is not None:
        headers["Content-Security-Policy"] = policy
    return headers


def not_modified_headers(file: BundleFile) -> dict[str, str]:
    """Headers of a 304: the validators and caching of the 200 (RFC 9110 §15.4.5), no content metadata."""
    return {
        **SECURITY_HEADERS,
        "ETag": f'"sha256-{file.sha256}"',
        "Cache-Control": IMMUTABLE,
        "Access-Control-Allow-Origin": "*",
    }


def redirect_headers(location: str) -> dict[str, str]:
    """Headers of the 308 that adds the slash after the hash; it never changes, but is not an asset."""
    return {**SECURITY_HEADERS, "Location": location, "Cache-Control": _REDIRECT_CACHE, "Content-Length": "0"}


# --- the server -------------------------------------------------------------------------------


class _LeasedFile(io.BufferedReader):
    """An asset being sent: until it is closed, its bundle stays leased (on disk, counted in the cache's
    budget, never evicted) and its request keeps its UI slot."""

    def __init__(self, raw: io.FileIO, held: ExitStack) -> None:
        self._held = held
        super().__init__(raw)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._held.close()


SLOT_WAIT_S = 1.0
"""How long a UI request waits for a free slot before ``503 RUNNER_BUSY``: a page loading its assets
at once queues briefly behind the cap instead of losing some of them."""


class UiServer:
    """Answers ``/ext-ui/…`` requests from the bundle cache, at most ``max_concurrency`` at once
    (more wait up to ``slot_wait_s`` for a slot, then get ``503 RUNNER_BUSY``: UI traffic cannot take
    what calls need)."""

    def __init__(self, cache: BundleCache, max_concurrency: int = 64, slot_wait_s: float = SLOT_WAIT_S) -> None:
        self._cache = cache
        self._max_concurrency = max_concurrency
        self._slot_wait_s = slot_wait_s
        self._slots = threading.BoundedSemaphore(max_concurrency)

    def serve(
        self,
        method: str,
        raw_path: str,
        *,
        if_none_match: str | None = None,
        request_id: str | None = None,
        max_asset_bytes: int | None = None,
    ) -> HttpResponse:
        """The response to one request; errors become their JSON response (never raised).

        A ``200`` to ``GET`` carries an open ``file``: the caller streams it and must close it, which
        releases the bundle (kept on disk and counted until then) and the request's slot.  An asset over
        ``max_asset_bytes`` (the most one response can carry, where there is such a limit) is
        ``413 ASSET_TOO_LARGE``, to ``GET`` and ``HEAD``.
        """
        if method not in SAFE_METHODS:
            return method_not_allowed(method, SAFE_METHODS, request_id)
        with ExitStack() as held:
            try:
                target = parse_ui_path(raw_path)
                if target.redirect is not None:
                    return HttpResponse(308, redirect_headers(target.redirect))
                if not self._slots.acquire(timeout=self._slot_wait_s):
                    raise RunnerBusy(
                        f"this runner is answering {self._max_concurrency} UI requests; retry shortly", retry_after=1
                    )
                held.callback(self._slots.release)
                return self._serve(
                    target,
                    held,
                    head=method == "HEAD",
                    if_none_match=if_none_match,
                    max_asset_bytes=max_asset_bytes,
                )
            except ExtError as exc:
                return error_response(exc, request_id)

    def _serve(
        self,
        target: UiTarget,
        held: ExitStack,
        *,
        head: bool,
        if_none_match: str | None,
        max_asset_bytes: int | None,
    ) -> HttpResponse:
        """The answer; a ``200`` to ``GET`` takes over ``held`` (the slot and the lease) until its file closes."""
        bundle = held.enter_context(self._cache.lease(target.content_hash))
        path = self._resolve(bundle, target)
        file = bundle.files[path]
        if if_none_match is not None and etag_matches(if_none_match, f'"sha256-{file.sha256}"'):
            return HttpResponse(304, not_modified_headers(file))
        if max_asset_bytes is not None and file.size > max_asset_bytes:
            raise AssetTooLarge(
                f"{path.removeprefix(UI_FOLDER)!r} is {file.size} bytes; this runner sends UI assets of at "
                f"most {max_asset_bytes} bytes (Lambda's response limit): split it or host it elsewhere"
            )
        headers = asset_headers(path, file)
        if head:
            return HttpResponse(200, headers)
        raw = io.FileIO(Path(bundle.root, path), "r")
        return HttpResponse(200, headers, file=_LeasedFile(raw, held.pop_all()))

    @staticmethod
    def _resolve(bundle: CachedBundle, target: UiTarget) -> str:
        if bundle.manifest.name != target.extension:
            raise NotFound(f"{target.content_hash} is not a bundle of {target.extension}")
        if bundle.manifest.ui is None:
            raise NotFound(f"{target.extension} {bundle.manifest.version} has no UI")
        return resolve_asset(bundle.files, bundle.manifest.ui.entry, target.asset)
