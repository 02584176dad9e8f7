"""The gateway: ``/api/ext/{extension}/{path}`` → the tenant's install → the runner.

Stages of one call:

1. the caller's identity (the route authenticates; any role may call);
2. the tenant's install of the extension, which must be enabled (``NOT_INSTALLED``);
3. a per-(tenant, extension) rate limit (``RATE_LIMITED``);
4. the body cap (``PAYLOAD_TOO_LARGE``), sized so the base64 request fits
   Lambda's 6 MB invoke payload;
5. the endpoint, matched against the version's manifest (``ENDPOINT_NOT_FOUND``);
6. the normalized request: allowlisted headers only (never ``Authorization`` or
   ``Cookie``), the query, the body in base64, and the context;
7. one of the tenant's ``EXT_GATEWAY_TENANT_CONCURRENCY`` slots, held across every
   gateway instance for the runner call (``RUNNER_BUSY``), so one tenant cannot take
   the runner's whole concurrency;
8. the runner call within ``EXT_GATEWAY_TIMEOUT_MS`` of the request's start; the
   payload carries what is left (``deadline_ms``, ``deadline_at_ms``) so the runner
   stops before the gateway gives up (``EXTENSION_TIMEOUT`` / ``EXTENSION_FAILED`` /
   ``EXTENSION_NOT_READY`` / ``RUNNER_BUSY``);
9. the response: status and allowlisted headers (never ``Set-Cookie``), plus
   headers that keep an extension's answer from acting on the host's origin, and
   ``Cache-Control: private`` whatever the extension says (:func:`private_cache_control`).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

from chalicelib.auth import Identity
from chalicelib.bundles.manifest import Endpoint, find_endpoint
from chalicelib.config import Settings
from chalicelib.errors import EndpointNotFound, ExtensionFailed, ExtensionTimeout, NotInstalled, PayloadTooLarge
from chalicelib.gateway.runner_client import RunnerClient
from chalicelib.headers import is_header_name
from chalicelib.registry import (
    InstallRecord,
    InstallService,
    RateLimiter,
    RegistryService,
    VersionRecord,
)

__all__ = [
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "CallSlots",
    "GatewayRequest",
    "GatewayResponse",
    "GatewayService",
    "private_cache_control",
]

REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "content-language",
        "content-type",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "user-agent",
        "x-request-id",
    }
)
"""Request headers an extension sees; anything else (cookies, credentials, proxies' headers) stays out."""

RESPONSE_HEADERS = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-language",
        "content-type",
        "etag",
        "expires",
        "last-modified",
        "vary",
    }
)
"""Response headers passed back, besides ``x-ext-*``; never ``set-cookie`` or CORS headers."""

_EXTENSION_PREFIX = "x-ext-"
_SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # An extension's answer is served on the platform's origin: if a browser ever
    # renders it, the sandbox gives it a unique origin and no script.
    "Content-Security-Policy": "sandbox; default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
_SHARED_CACHE_DIRECTIVES = frozenset({"public", "private", "s-maxage", "proxy-revalidate"})
_HEADER_VALUE = re.compile(r"[^\r\n\x00]*")
_VERSION_CACHE_ENTRIES = 512
RUNNER_MARGIN_MS = 250
"""The runner's deadline is this much earlier than the gateway's, so its own timeout answer arrives in time."""
_SLOT_LEASE_MARGIN_S = 5.0


class CallSlots(Protocol):
    """Caps calls in flight per key across gateway instances (:class:`~chalicelib.registry.ConcurrencyLimiter`)."""

    def slot(self, key: str, cap: int, lease_s: float) -> AbstractContextManager[None]:
        """Hold one of ``key``'s ``cap`` slots for the block; ``RunnerBusy`` when none is free."""
        ...


@dataclass(frozen=True)
class GatewayRequest:
    extension: str
    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]
    body: bytes
    request_id: str


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _query_string(query: Mapping[str, Sequence[str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, values in query.items() for v in values)


def _forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in REQUEST_HEADERS}


def _returned_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise ExtensionFailed("the extension's response headers are not an object")
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lowered = str(name).lower()
        allowed = lowered in RESPONSE_HEADERS or lowered.startswith(_EXTENSION_PREFIX)
        if allowed and is_header_name(name) and isinstance(value, str) and _HEADER_VALUE.fullmatch(value):
            kept[lowered] = value
    return kept


class _VersionCache:
    """Published versions never change, so their records are cached per process."""

    def __init__(self, registry: RegistryService) -> None:
        self._registry = registry
        self._items: OrderedDict[tuple[str, str], VersionRecord] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, version: str) -> VersionRecord:
        key = (name, version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        record = self._registry.get_version(name, version)
        with self._lock:
            self._items[key] = record
            while len(self._items) > _VERSION_CACHE_ENTRIES:
                self._items.popitem(last=False)
        return record


class _InstallCache:
    """Install records for ``ttl`` seconds: most calls skip the DynamoDB read.

    Writes made through this process's :class:`InstallService` drop the entry at
    once (``forget``); other gateway instances see a change within ``ttl``.
    """

    def __init__(self, installs: InstallService, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._installs = installs
        self._ttl = ttl
        self._clock = clock
        self._items: dict[tuple[str, str], tuple[float, InstallRecord]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, name: str) -> InstallRecord:
        key = (tenant, name)
        now = self._clock()
        with self._lock:
            cached = self._items.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        record = self._installs.get(tenant, name)
        if self._ttl > 0:
            with self._lock:
                if len(self._items) > 10_000:
                    self._items.clear()
                self._items[key] = (now, record)
        return record

    def forget(self, tenant: str, name: str) -> None:
        with self._lock:
            self._items.pop((tenant, name), None)


class GatewayService:
    def __init__(
        self,
        settings: Settings,
        *,
        installs: InstallService,
        registry: RegistryService,
        limiter: RateLimiter,
        concurrency: CallSlots,
        runner: Callable[[], RunnerClient],
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._installs = _InstallCache(installs, settings.ext_gateway_install_cache_ms / 1000)
        self._versions = _VersionCache(registry)
        self._limiter = limiter
        self._concurrency = concurrency
        self._runner = runner
        self._clock = clock

    def handle(self, identity: Identity, request: GatewayRequest) -> GatewayResponse:
        started = time.monotonic()
        install = self._enabled_install(identity.tenant, request.extension)
        self._limiter.hit(
            f"gateway#{identity.tenant}#{request.extension}",
            self._settings.ext_gateway_rate_limit_per_minute,
            self._clock(),
        )
        if len(request.body) > self._settings.ext_gateway_max_body_bytes:
            raise PayloadTooLarge(
                f"the request body is {len(request.body)} bytes; the limit is "
                f"{self._settings.ext_gateway_max_body_bytes}"
            )
        version = self._versions.get(install.name, install.version)
        endpoint, params = self._endpoint(version, request)
        payload: dict[str, Any] = {
            "content_hash": install.content_hash,
            "extension": install.name,
            "granted_capabilities": list(install.granted_capabilities),
            "request": self._guest_request(identity, install, request, endpoint, params),
        }
        timeout_s = self._settings.ext_gateway_timeout_ms / 1000
        lease_s = timeout_s + _SLOT_LEASE_MARGIN_S
        with self._concurrency.slot(identity.tenant, self._settings.ext_gateway_tenant_concurrency, lease_s):
            left_s = timeout_s - (time.monotonic() - started)
            deadline_ms = int(left_s * 1000) - RUNNER_MARGIN_MS
            if deadline_ms < 1:
                raise ExtensionTimeout("the gateway's deadline passed before the runner was called")
            payload["deadline_ms"] = deadline_ms
            payload["deadline_at_ms"] = int(time.time() * 1000) + deadline_ms
            answer = self._runner().execute(payload, left_s)
        return self._response(answer)

    def forget_install(self, tenant: str, name: str) -> None:
        """``tenant``'s install of ``name`` changed: read it afresh on the next call."""
        self._installs.forget(tenant, name)

    def _enabled_install(self, tenant: str, name: str) -> InstallRecord:
        install = self._installs.get(tenant, name)
        if not install.enabled:
            raise NotInstalled(f"extension {name!r} is disabled for this tenant")
        return install

    @staticmethod
    def _endpoint(version: VersionRecord, request: GatewayRequest) -> tuple[Endpoint, dict[str, str]]:
        endpoints = [Endpoint.from_dict(e) for e in version.endpoints]
        found = find_endpoint(endpoints, request.method, request.path)
        if found is not None:
            endpoint, params = found
            return endpoint, {k: unquote(v) for k, v in params.items()}
        allowed = sorted({e.method for e in endpoints if e.match(e.method, request.path) is not None})
        hint = f" (it accepts {', '.join(allowed)} there)" if allowed else ""
        raise EndpointNotFound(f"{request.extension} has no endpoint for {request.method} {request.path}{hint}")

    @staticmethod
    def _guest_request(
        identity: Identity,
        install: InstallRecord,
        request: GatewayRequest,
        endpoint: Endpoint,
        params: Mapping[str, str],
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            "request_id": request.request_id,
            "tenant_id": identity.tenant,
            "extension_id": install.name,
            "install_id": install.install_id,
            "version": install.version,
            "content_hash": install.content_hash,
            "config": dict(install.config),
        }
        if "cap:user.read" in install.granted_capabilities:
            context["user"] = {"sub": identity.sub, "roles": sorted(identity.roles)}
        return {
            "context": context,
            "endpoint": {**endpoint.to_dict(), "params": dict(params)},
            "http": {
                "method": request.method,
                "path": request.path,
                "query": {k: v[0] for k, v in request.query.items() if v},
                "query_string": _query_string(request.query),
                "headers": _forwarded_headers(request.headers),
                "body_b64": base64.b64encode(request.body).decode() if request.body else None,
            },
        }

    @staticmethod
    def _response(answer: Mapping[str, Any]) -> GatewayResponse:
        status = answer.get("status")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ExtensionFailed("the extension answered without a valid status")
        body_b64 = answer.get("body_b64")
        try:
            body = base64.b64decode(body_b64, validate=True) if body_b64 else b""
        except (binascii.Error, TypeError):
            raise ExtensionFailed("the extension's body is not valid base64") from None
        headers = {**_returned_headers(answer.get("headers", {})), **_SAFETY_HEADERS}
        headers["cache-control"] = private_cache_control(headers.get("cache-control"))
        return GatewayResponse(status=status, headers=headers, body=body)


def private_cache_control(value: str | None) -> str:
    """The extension's ``Cache-Control`` made ``private``: every call is authenticated, so an answer is one
    user's and must never be stored by a shared cache (a CDN, a proxy) and served to the next caller.

    The directives only shared caches read (``public``, ``s-maxage``, ``proxy-revalidate``) are dropped; the
    rest are kept, names lower-cased, so ``no-store`` or ``max-age`` still tell the browser what to do.
    """
    kept = {"private": "private"}
    for directive in (value or "").split(","):
        name, separator, argument = directive.strip().partition("=")
        name = name.strip().lower()
        if name and name not in _SHARED_CACHE_DIRECTIVES:
            kept.setdefault(name, f"{name}{separator}{argument.strip()}")
    return ", ".join(kept.values())
