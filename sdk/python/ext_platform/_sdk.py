"""The SDK's implementation: records from the generated bindings in, a ``types.Response`` out."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wit_world
from componentize_py_types import Err
from wit_world.imports import http, kv, log, secrets, types

BODY_STDIN_HEADER = "x-ext-body-stdin"
BODY_STDOUT_HEADER = "x-ext-body-stdout"
# Bodies above this size cross through stdio: the runner copies those far faster than list<u8>.
STDIO_BODY_THRESHOLD = 32 * 1024
BODY_STDIO_VERSION = 1

Handler = Callable[["Request", "Context"], "Response"]
_HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler the manifest calls ``name``."""

    def register(function: Handler) -> Handler:
        if name in _HANDLERS:
            raise ValueError(f"two handlers are registered as {name!r}")
        _HANDLERS[name] = function
        return function

    return register


class HostError(Exception):
    """A host function refused or failed: ``code`` is the WIT case (``denied``, ``not-found``, ``timeout``…)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def _host_error(error: Err) -> HostError:
    case = error.value
    name = type(case).__name__.split("_", 1)[-1]
    code = "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")
    return HostError(code, str(getattr(case, "value", "") or ""))


@dataclass(frozen=True)
class User:
    sub: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """The HTTP request: ``query`` and ``headers`` hold the first value of each name (headers lower-case);
    ``query_all`` and ``header_pairs`` keep every pair in order; ``params`` are the endpoint's ``:params``."""

    method: str
    path: str
    query: dict[str, str]
    query_all: list[tuple[str, str]]
    headers: dict[str, str]
    header_pairs: list[tuple[str, str]]
    body: bytes
    params: dict[str, str]
    handler: str | None

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Response:
    """What a handler returns; build it with :meth:`json`, :meth:`text` or directly."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(status, {"content-type": "application/json", **(headers or {})}, data)

    @classmethod
    def text(cls, value: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, {"content-type": "text/plain; charset=utf-8", **(headers or {})}, value.encode("utf-8"))


@dataclass(frozen=True)
class FetchResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int


@dataclass(frozen=True)
class Page:
    keys: list[str]
    cursor: str | None


class Log:
    """``ext:platform/log``: messages reach the extension's logs with ``cap:log.emit``."""

    def debug(self, message: str) -> None:
        log.emit(log.Level.DEBUG, message)

    def info(self, message: str) -> None:
        log.emit(log.Level.INFO, message)

    def warn(self, message: str) -> None:
        log.emit(log.Level.WARN, message)

    def error(self, message: str) -> None:
        log.emit(log.Level.ERROR, message)


class Http:
    """``ext:platform/http``: needs ``cap:http.fetch`` and a host on the manifest's ``egress`` list."""

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | str = b"",
        timeout_ms: int | None = None,
    ) -> FetchResponse:
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        request = http.OutgoingRequest(method, url, list((headers or {}).items()), data, timeout_ms)
        try:
            answer = http.fetch(request)
        except Err as error:
            raise _host_error(error) from None
        return FetchResponse(answer.status, dict(answer.headers), bytes(answer.body))


class Kv:
    """``ext:platform/kv``: the install's key-value store (``cap:storage.kv``)."""

    def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None when there is none."""
        try:
            entry = kv.get(key)
        except Err as error:
            failure = _host_error(error)
            if failure.code == "not-found":
                return None
            raise failure from None
        return Entry(bytes(entry.value), entry.revision)

    def set(self, key: str, value: bytes | str, if_revision: int | None = None) -> int:
        """Store ``value``; ``if_revision`` 0 = only if absent, n = only at revision n. Returns the new revision."""
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        try:
            return kv.set(key, data, if_revision)
        except Err as error:
            raise _host_error(error) from None

    def delete(self, key: str) -> bool:
        try:
            return kv.delete(key)
        except Err as error:
            raise _host_error(error) from None

    def list_keys(self, prefix: str = "", cursor: str | None = None, limit: int = 100) -> Page:
        try:
            page = kv.list_keys(prefix, cursor, limit)
        except Err as error:
            raise _host_error(error) from None
        return Page(list(page.keys), page.cursor)


class Secrets:
    """``ext:platform/secrets``: the install's secrets named in the manifest (``cap:secrets.get``)."""

    def get(self, name: str) -> str:
        try:
            return secrets.get(name)
        except Err as error:
            raise _host_error(error) from None


@dataclass(frozen=True)
class Context:
    """Who is calling and the host's services; ``config`` is the install's config (a dict)."""

    request_id: str
    tenant_id: str
    extension_id: str
    install_id: str
    version: str
    content_hash: str
    config: dict[str, Any]
    user: User | None
    log: Log = field(default_factory=Log)
    http: Http = field(default_factory=Http)
    kv: Kv = field(default_factory=Kv)
    secrets: Secrets = field(default_factory=Secrets)


def _read_stdin(size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(0, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def _request(req: types.Request) -> Request:
    pairs = [(name.lower(), value) for name, value in req.headers]
    body = bytes(req.body)
    announced = [value for name, value in pairs if name == BODY_STDIN_HEADER]
    if announced:
        body = _read_stdin(int(announced[0]))
        pairs = [(name, value) for name, value in pairs if name != BODY_STDIN_HEADER]
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers.setdefault(name, value)
    query: dict[str, str] = {}
    for name, value in req.query:
        query.setdefault(name, value)
    endpoint = req.endpoint
    return Request(
        method=req.method,
        path=req.path,
        query=query,
        query_all=list(req.query),
        headers=headers,
        header_pairs=pairs,
        body=body,
        params=dict(endpoint.params) if endpoint else {},
        handler=endpoint.handler if endpoint else None,
    )


def _context(ctx: types.Context) -> Context:
    try:
        config = json.loads(ctx.config) if ctx.config else {}
    except ValueError:
        config = {}
    user = User(ctx.user.sub, tuple(ctx.user.roles)) if ctx.user else None
    return Context(
        ctx.request_id,
        ctx.tenant_id,
        ctx.extension_id,
        ctx.install_id,
        ctx.version,
        ctx.content_hash,
        config if isinstance(config, dict) else {},
        user,
    )


def _error(status: int, code: str, message: str) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status=status)


def _dispatch(request: Request, context: Context) -> Response:
    function = _HANDLERS.get(request.handler or "")
    if function is None:
        return _error(404, "HANDLER_NOT_FOUND", f"no handler is registered as {request.handler!r}")
    try:
        response = function(request, context)
    except Exception as exc:
        traceback.print_exc()
        return _error(500, "HANDLER_FAILED", f"{type(exc).__name__}: {exc}")
    if not isinstance(response, Response):
        return _error(500, "HANDLER_FAILED", f"handler {request.handler!r} returned {type(response).__name__}")
    return response


class WitWorld(wit_world.WitWorld):
    """The component's entry point (componentize-py calls ``handle``); handlers never see it."""

    def body_stdio(self) -> int:
        return BODY_STDIO_VERSION

    def handle(self, ctx: types.Context, req: types.Request) -> types.Response:
        response = _dispatch(_request(req), _context(ctx))
        headers = [(str(name), str(value)) for name, value in response.headers.items()]
        body = bytes(response.body)
        if len(body) > STDIO_BODY_THRESHOLD:
            _write_stdout(body)
            return types.Response(response.status, [*headers, (BODY_STDOUT_HEADER, str(len(body)))], b"")
        sys.stdout.flush()
        return types.Response(response.status, headers, body)
