"""Outbound HTTP for extensions: the policy behind the ``ext.http_fetch`` host import (DESIGN §6).

A fetch goes through these stages, each raising :class:`FetchError` with one precise message:

1. parse the guest's request JSON (:meth:`FetchRequest.parse`): method, headers, body size;
2. check the URL (:meth:`EgressPolicy._target`): http/https only, no userinfo, and the host and port must
   match the manifest's ``egress`` list **and** the platform's ``EXT_EGRESS_ALLOWLIST`` (deny by default;
   an entry ``host`` allows ports 80 and 443, ``host:port`` that port only);
3. resolve the name once and refuse loopback, private, link-local, multicast, reserved, unspecified and
   cloud-metadata addresses unless ``allow_private`` (metadata addresses are refused even then);
4. connect to the address that was checked (no second lookup, so DNS rebinding cannot swap it), sending
   the original ``Host`` header and, for https, the original name for SNI and certificate checks;
5. read at most ``max_response_bytes + 1`` bytes;
6. follow a redirect only to the same host and port, never from https to http (at most
   ``max_redirects``); anything else is refused, an http to https upgrade included (it changes the port).

One absolute deadline covers every stage of a fetch, redirects included: the name lookup, connect, TLS
handshake, sending, the response headers and the body. Socket timeouts alone cannot give that, as they
bound each operation, and a server dripping one byte at a time completes every operation in time; so
before each read and write the socket's timeout is set to what is left of the deadline (see
:class:`_DeadlineReader`), and a lookup that outlives it is abandoned.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from chalicelib.config import Settings
from chalicelib.errors import SettingsInvalid
from chalicelib.headers import is_header_name, is_header_value

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "AddressClass",
    "EgressPolicy",
    "FetchError",
    "FetchOutcome",
    "FetchRequest",
    "FetchResponse",
    "classify_address",
    "host_allowed",
    "host_matches",
    "resolve_addresses",
    "split_entry",
    "target_allowed",
]

MiB = 1024 * 1024
MAX_REQUEST_BODY_BYTES = MiB
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The host computes these itself; a guest-supplied value would contradict the pinned address or body.
_HOST_SET_HEADERS = frozenset({"host", "content-length"})
_READ_CHUNK = 64 * 1024
_SEND_CHUNK = 16 * 1024
# Name lookups run on their own threads so the deadline can abandon one that hangs; an abandoned lookup
# still holds its thread until the system resolver gives up, so the number in flight is capped.
_LOOKUPS_IN_FLIGHT = threading.BoundedSemaphore(32)
_REQUEST_ENVELOPE_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The ports an allowlist entry without a port allows; any other port must be named (``host:port``).
_UNNAMED_ENTRY_PORTS = frozenset(_DEFAULT_PORTS.values())
_ENTRY_PORT_NOTE = "an entry without a port allows 80 and 443"
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


class FetchOutcome(Enum):
    """Why a fetch did not produce a response; the value is the code ``ext.http_fetch`` returns."""

    DENIED = 1
    FAILED = 2
    TIMEOUT = 3

    @property
    def code(self) -> str:
        """The stable code in the guest-visible error JSON."""
        return {1: "EGRESS_DENIED", 2: "FETCH_FAILED", 3: "FETCH_TIMEOUT"}[self.value]


class FetchError(Exception):
    """A refused or failed fetch; the guest sees :meth:`to_json` and the return code ``outcome.value``."""

    def __init__(self, outcome: FetchOutcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message

    def to_json(self) -> bytes:
        """``{"error": {"code", "message"}}`` as the guest receives it."""
        return json.dumps({"error": {"code": self.outcome.code, "message": self.message}}).encode()

    def answer(self) -> tuple[int, bytes]:
        """What ``ext.http_fetch`` gives the guest: the outcome's return code and :meth:`to_json`."""
        return self.outcome.value, self.to_json()


def _denied(message: str) -> FetchError:
    return FetchError(FetchOutcome.DENIED, message)


def _failed(message: str) -> FetchError:
    return FetchError(FetchOutcome.FAILED, message)


def _timeout(message: str) -> FetchError:
    return FetchError(FetchOutcome.TIMEOUT, message)


# --- host patterns ------------------------------------------------------------------


def _normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` matches one allowlist ``pattern``.

    A pattern is a hostname (exact, case-insensitive) or ``*.suffix``, which matches any name with at
    least one more label (``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not
    ``example.com``). Wildcards never match IP literals, and a bare ``*`` matches nothing.
    """
    pattern = _normalize_host(pattern)
    host = _normalize_host(host)
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        suffix = pattern[1:]
        if "*" in suffix or suffix == "." or _is_ip_literal(host):
            return False
        return host.endswith(suffix) and len(host) > len(suffix)
    return "*" not in pattern and host == pattern


def _entry_port(text: str, entry: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"egress entry {entry!r} has a port that is not a number from 1 to 65535")
    return int(text)


def split_entry(entry: str) -> tuple[str, int | None]:
    """An allowlist entry's host pattern and port; ``None`` when it names no port (then 80 and 443).

    Entries are ``host``, ``*.suffix``, either with ``:port``, or an IPv6 address as ``[addr]`` or
    ``[addr]:port`` (a bare IPv6 address names no port). Raises ``ValueError`` for a malformed port.
    """
    entry = entry.strip()
    if entry.startswith("["):
        host, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"egress entry {entry!r} is not [IPv6 address] or [IPv6 address]:port")
        return host, (_entry_port(rest[1:], entry) if rest else None)
    if entry.count(":") != 1:
        return entry, None
    host, _, port = entry.partition(":")
    return host, _entry_port(port, entry)


def _parsed_entries(entries: Iterable[str]) -> list[tuple[str, int | None]]:
    # A malformed entry matches nothing: manifests are validated at publish and the platform's list
    # when the runner starts, so one can only come from code that built a list by hand.
    parsed = []
    for entry in entries:
        try:
            parsed.append(split_entry(entry))
        except ValueError:
            continue
    return parsed


def host_allowed(host: str, entries: Iterable[str]) -> bool:
    """Whether any of ``entries`` names ``host``, at any port; an empty list allows nothing."""
    return any(host_matches(pattern, host) for pattern, _ in _parsed_entries(entries))


def target_allowed(host: str, port: int, entries: Iterable[str]) -> bool:
    """Whether any of ``entries`` allows ``port`` of ``host``: the port it names, else 80 and 443."""
    return any(
        host_matches(pattern, host) and (port in _UNNAMED_ENTRY_PORTS if named is None else port == named)
        for pattern, named in _parsed_entries(entries)
    )


# --- addresses ----------------------------------------------------------------------


class AddressClass(Enum):
    """Where an address points; only ``PUBLIC`` is reachable without ``allow_private``."""

    PUBLIC = "public"
    METADATA = "cloud metadata"
    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    PRIVATE = "private"
    RESERVED = "reserved"


def classify_address(address: IPAddress) -> AddressClass:
    """Classify one resolved address; IPv4-mapped IPv6 addresses are judged by their IPv4 part."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        if address.ipv4_mapped is not None:
            return classify_address(address.ipv4_mapped)
    checks: tuple[tuple[bool, AddressClass], ...] = (
        (address in _METADATA_ADDRESSES, AddressClass.METADATA),
        (address.is_unspecified, AddressClass.UNSPECIFIED),
        (address.is_loopback, AddressClass.LOOPBACK),
        (address.is_link_local, AddressClass.LINK_LOCAL),
        (address.is_multicast, AddressClass.MULTICAST),
        (address.is_private, AddressClass.PRIVATE),
        (address.is_reserved or not address.is_global, AddressClass.RESERVED),
    )
    return next((cls for matched, cls in checks if matched), AddressClass.PUBLIC)


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection (``socket.getaddrinfo``), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- request and response -----------------------------------------------------------


def _check_header(name: object, value: object, where: str) -> tuple[str, str]:
    if not isinstance(name, str) or not isinstance(value, str):
        raise _failed(f"{where} headers must map strings to strings")
    if not is_header_name(name):
        raise _failed(f"{where} header name {name!r} is not a valid token")
    if not is_header_value(value):
        raise _failed(f"{where} header {name!r} has a value with CR, LF or NUL")
    return name, value


@dataclass(frozen=True)
class FetchRequest:
    """One outbound request, validated; build with :meth:`parse` or directly."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def parse(cls, raw: bytes, *, max_body_bytes: int = MAX_REQUEST_BODY_BYTES) -> FetchRequest:
        """Parse the guest's ``{url, method, headers, body_b64}`` JSON; raises :class:`FetchError`."""
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _failed(f"http_fetch request is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _failed("http_fetch request must be a JSON object")
        url, method = obj.get("url"), obj.get("method") or "GET"
        headers = {} if obj.get("headers") is None else obj["headers"]
        if not isinstance(url, str) or not url:
            raise _failed("http_fetch request needs a string 'url'")
        if not isinstance(method, str) or method.upper() not in ALLOWED_METHODS:
            raise _failed(f"http_fetch method must be one of {', '.join(sorted(ALLOWED_METHODS))}")
        if not isinstance(headers, dict):
            raise _failed("request headers must map strings to strings")
        pairs = tuple(_check_header(name, value, "request") for name, value in headers.items())
        body = _decode_body(obj.get("body_b64"), max_body_bytes)
        return cls(url=url, method=method.upper(), headers=pairs, body=body)


def _base64_length(size: int) -> int:
    return (size + 2) // 3 * 4


def _decode_body(body_b64: object, max_body_bytes: int) -> bytes:
    if body_b64 is None:
        return b""
    if not isinstance(body_b64, str):
        raise _failed("http_fetch 'body_b64' must be a string or null")
    if len(body_b64) > _base64_length(max_body_bytes):
        raise _failed(f"http_fetch request body exceeds {max_body_bytes} bytes")
    try:
        body = base64.b64decode(body_b64, validate=True)
    except (binascii.Error, ValueError):
        raise _failed("http_fetch 'body_b64' is not valid base64") from None
    if len(body) > max_body_bytes:
        raise _failed(f"http_fetch request body exceeds {max_body_bytes} bytes")
    return body


@dataclass(frozen=True)
class FetchResponse:
    """What the remote server answered, hop-by-hop headers removed."""

    status: int
    headers: dict[str, str]
    body: bytes

    def to_json(self) -> bytes:
        """``{"status", "headers", "body_b64"}`` as the guest receives it."""
        body_b64 = base64.b64encode(self.body).decode("ascii")
        return json.dumps({"status": self.status, "headers": self.headers, "body_b64": body_b64}).encode()


def _connection_listed(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    listed = (
        token.strip().lower() for name, value in headers if name.lower() == "connection" for token in value.split(",")
    )
    return frozenset(token for token in listed if token)


def _forwardable(headers: Sequence[tuple[str, str]], also_drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    drop = HOP_BY_HOP_HEADERS | also_drop | _connection_listed(headers)
    return [(name, value) for name, value in headers if name.lower() not in drop]


def _response_headers(raw: Sequence[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in _forwardable(raw):
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


# --- targets and connections --------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str
    host_header: str


class _Deadline:
    """Seconds left until a fixed monotonic instant."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; raises the ``FETCH_TIMEOUT`` :class:`FetchError` once none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise _timeout("http_fetch ran out of time")
        return left


def _lookup(resolver: Resolver, host: str, port: int, deadline: _Deadline) -> list[str]:
    """``resolver(host, port)`` if it answers within ``deadline``; a lookup that outlives it is abandoned."""
    timeout = deadline.remaining()
    if not _LOOKUPS_IN_FLIGHT.acquire(blocking=False):
        raise _failed("too many name lookups are in flight; try again later")
    answer: list[str] = []
    failure: list[OSError | ValueError] = []
    done = threading.Event()

    def run() -> None:
        try:
            answer.extend(resolver(host, port))
        except (OSError, ValueError) as exc:  # ValueError: a name the IDNA codec refuses (a label too long)
            failure.append(exc)
        finally:
            done.set()
            _LOOKUPS_IN_FLIGHT.release()

    threading.Thread(target=run, name="egress-lookup", daemon=True).start()
    if not done.wait(timeout):
        raise _timeout(f"resolving {host!r} took longer than the fetch's time limit")
    if failure:
        raise failure[0]
    return answer


class _DeadlineReader(io.RawIOBase):
    """The response's byte stream; each read waits at most what is left of the fetch's deadline."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        self._sock.settimeout(self._deadline.remaining())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _response_class(deadline: _Deadline) -> type[http.client.HTTPResponse]:
    """An ``HTTPResponse`` whose reads (status line, headers, body) all end by ``deadline``."""

    class DeadlineResponse(http.client.HTTPResponse):
        def __init__(
            self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None
        ) -> None:
            super().__init__(sock, debuglevel, method, url)
            # The socket file stays open until this response closes it, even after the connection lets
            # go of the socket (it does when the server announces it will close).
            raw = self.fp.detach()
            self.fp = io.BufferedReader(_DeadlineReader(raw, sock, deadline))

    return DeadlineResponse


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a pre-resolved address; connecting, sending and reading all end by one deadline.

    ``response_class`` is http.client's documented hook for the response ``getresponse`` builds.
    """

    def __init__(self, address: str, port: int, *, deadline: _Deadline) -> None:
        super().__init__(address, port, timeout=deadline.remaining())
        self._deadline = deadline
        self.response_class = _response_class(deadline)

    def connect(self) -> None:
        self.timeout = self._deadline.remaining()
        super().connect()

    def send(self, data: Any) -> None:
        # http.client sends the request head and then the body, both bytes here (a fetch body is bytes),
        # in slices so that each write, too, waits at most what is left.
        if self.sock is None:
            self.connect()
        view = memoryview(data).cast("B")
        for offset in range(0, len(view), _SEND_CHUNK):
            self.sock.settimeout(self._deadline.remaining())
            self.sock.sendall(view[offset : offset + _SEND_CHUNK])


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a pre-resolved address, with SNI and certificate checks against the original name."""

    def __init__(
        self, address: str, port: int, *, server_hostname: str, context: ssl.SSLContext, deadline: _Deadline
    ) -> None:
        super().__init__(address, port, deadline=deadline)
        self._server_hostname = server_hostname
        self._tls_context = context

    def connect(self) -> None:
        super().connect()
        # Python's ssl module bounds the whole handshake by the socket's timeout, not each read within it.
        self.sock.settimeout(self._deadline.remaining())
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._server_hostname)


def _redirected(status: int, method: str, body: bytes) -> tuple[str, bytes]:
    if status == 303 or (status in (301, 302) and method == "POST"):
        return ("HEAD" if method == "HEAD" else "GET"), b""
    return method, body


@dataclass(frozen=True)
class EgressPolicy:
    """The platform half of egress control plus the fetch limits; the manifest half is passed per call.

    The default policy denies everything (empty ``allowlist``).
    """

    allowlist: tuple[str, ...] = ()
    allow_private: bool = False
    max_response_bytes: int = 2 * MiB
    timeout_ms: int = 3000
    max_redirects: int = 3
    max_request_body_bytes: int = MAX_REQUEST_BODY_BYTES
    resolver: Resolver = resolve_addresses
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    @property
    def max_request_json_bytes(self) -> int:
        """Largest ``http_fetch`` request JSON worth reading: the body cap in base64 plus URL and headers."""
        return _base64_length(self.max_request_body_bytes) + _REQUEST_ENVELOPE_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """The policy configured by ``EXT_EGRESS_*`` and ``EXT_HTTP_FETCH_*`` settings.

        Raises :class:`SettingsInvalid` for an ``EXT_EGRESS_ALLOWLIST`` entry with a malformed port, so the
        runner refuses to start rather than silently never matching it.
        """
        for entry in settings.ext_egress_allowlist:
            try:
                split_entry(entry)
            except ValueError as exc:
                raise SettingsInvalid(f"EXT_EGRESS_ALLOWLIST: {exc}") from None
        return cls(
            allowlist=tuple(settings.ext_egress_allowlist),
            allow_private=bool(settings.ext_egress_allow_private),
            max_response_bytes=int(settings.ext_http_fetch_max_bytes),
            timeout_ms=int(settings.ext_http_fetch_timeout_ms),
        )

    def fetch_json(self, raw: bytes, egress: Sequence[str], *, remaining_s: float | None = None) -> tuple[int, bytes]:
        """Serve one ``ext.http_fetch``: ``(0, response JSON)`` or ``(outcome code, error JSON)``."""
        try:
            request = FetchRequest.parse(raw, max_body_bytes=self.max_request_body_bytes)
            return 0, self.fetch(request, egress, remaining_s=remaining_s).to_json()
        except FetchError as exc:
            return exc.answer()

    def fetch(self, request: FetchRequest, egress: Sequence[str], *, remaining_s: float | None = None) -> FetchResponse:
        """Perform ``request`` if this policy and the manifest's ``egress`` list allow it.

        The whole fetch, redirects included, ends within ``min(timeout_ms, remaining_s)``. Raises
        :class:`FetchError` when the request is refused, fails or runs out of time.
        """
        budget = self.timeout_ms / 1000 if remaining_s is None else min(self.timeout_ms / 1000, remaining_s)
        if budget <= 0:
            raise _timeout("no time left in the call's deadline for http_fetch")
        deadline = _Deadline(budget)
        if len(request.body) > self.max_request_body_bytes:
            raise _failed(f"http_fetch request body exceeds {self.max_request_body_bytes} bytes")
        first = target = self._target(request.url, egress, deadline)
        method, body = request.method, request.body
        for hop in range(self.max_redirects + 1):
            response, location = self._exchange(target, method, request.headers, body, deadline)
            if response.status not in REDIRECT_STATUSES or location is None:
                return response
            if hop == self.max_redirects:
                break
            target = self._redirect_target(first, urljoin(target.url, location), egress, deadline)
            method, body = _redirected(response.status, method, body)
        raise _failed(f"too many redirects (more than {self.max_redirects})")

    def _target(self, url: str, egress: Sequence[str], deadline: _Deadline) -> _Target:
        """Check ``url`` against both allowlists and resolve it to one permitted address."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise _denied(f"only http and https URLs may be fetched, not {scheme or 'a relative URL'!r}")
        if "@" in parts.netloc:
            raise _denied("URLs with credentials (user:password@) are refused")
        host = _normalize_host(parts.hostname or "")
        if not host or not host.isascii():
            raise _failed(f"URL {url!r} has no valid ASCII host (use punycode for international names)")
        try:
            port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port
        except ValueError:
            raise _failed(f"URL {url!r} has an invalid port") from None
        for entries, where in (
            (egress, "the extension's egress list"),
            (self.allowlist, "the platform's egress allowlist"),
        ):
            if not host_allowed(host, entries):
                raise _denied(f"host {host!r} is not in {where}")
            if not target_allowed(host, port, entries):
                raise _denied(f"port {port} of host {host!r} is not in {where} ({_ENTRY_PORT_NOTE})")
        address = self._checked_address(host, port, deadline)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        return _Target(url, scheme, host, port, address, path, host_header)

    def _redirect_target(self, first: _Target, url: str, egress: Sequence[str], deadline: _Deadline) -> _Target:
        target = self._target(url, egress, deadline)
        if target.host != first.host:
            raise _denied(f"redirect from {first.host!r} to another host ({target.host!r}) refused")
        if first.scheme == "https" and target.scheme != "https":
            raise _denied("redirect from https to http refused")
        if target.port != first.port:
            raise _denied(f"redirect from port {first.port} to another port ({target.port}) refused")
        return target

    def _checked_address(self, host: str, port: int, deadline: _Deadline) -> str:
        try:
            addresses = _lookup(self.resolver, host, port, deadline)
        except (OSError, ValueError) as exc:
            raise _failed(f"could not resolve {host!r}: {exc}") from None
        if not addresses:
            raise _failed(f"{host!r} resolved to no address")
        for address in addresses:
            kind = classify_address(ipaddress.ip_address(address))
            if kind is AddressClass.METADATA or (kind is not AddressClass.PUBLIC and not self.allow_private):
                raise _denied(f"host {host!r} resolves to a {kind.value} address ({address}), which is refused")
        return addresses[0]

    def _connect(self, target: _Target, deadline: _Deadline) -> http.client.HTTPConnection:
        if target.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            return _PinnedHTTPSConnection(
                target.address, target.port, server_hostname=target.host, context=context, deadline=deadline
            )
        return _PinnedHTTPConnection(target.address, target.port, deadline=deadline)

    def _exchange(
        self,
        target: _Target,
        method: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        deadline: _Deadline,
    ) -> tuple[FetchResponse, str | None]:
        connection = self._connect(target, deadline)
        outgoing = dict(_forwardable(headers, _HOST_SET_HEADERS))
        outgoing["Host"] = target.host_header
        try:
            connection.request(method, target.path, body=body or None, headers=outgoing)
            response = connection.getresponse()
            try:
                payload = self._read_body(response, head=method == "HEAD")
            finally:
                response.close()
            raw_headers = response.getheaders()
        except TimeoutError:
            raise _timeout(f"http_fetch to {target.host!r} timed out") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise _failed(f"http_fetch to {target.host!r} failed: {exc}") from None
        finally:
            connection.close()
        location = response.getheader("location")
        return FetchResponse(response.status, _response_headers(raw_headers), payload), location

    def _read_body(self, response: http.client.HTTPResponse, *, head: bool) -> bytes:
        cap = self.max_response_bytes
        declared = response.getheader("content-length")
        if not head and declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise _failed(f"response body ({declared} bytes) exceeds the limit of {cap} bytes")
        chunks: list[bytes] = []
        received = 0
        while received <= cap and not response.isclosed():
            chunk = response.read(min(_READ_CHUNK, cap + 1 - received))
            chunks.append(chunk)
            received += len(chunk)
            if not chunk:
                break
        if received > cap:
            raise _failed(f"response body exceeds the limit of {cap} bytes")
        return b"".join(chunks)
