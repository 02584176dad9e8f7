"""``extctl call`` and ``extctl logs``: an extension's answers and its log lines, from the terminal.

``call`` goes through the gateway with the current token, as the host app would: the body on stdout,
``HTTP 200 (12 ms, request id …)`` on stderr.  A platform error exits 1 with ``error: CODE: message``;
when the extension failed (``EXTENSION_FAILED``, ``EXTENSION_TIMEOUT``) it first prints that request's log
lines (the trap's backtrace, the guest's stderr), which the HTTP answer never carries.  The extension's
own answer of 400 or more prints its body and exits 1 with ``error: HTTP_<status>: …``.

``logs`` reads ``GET /installs/{name}/logs``; ``--follow`` polls for new lines until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from chalicelib.errors import ExtError, UsageError, error_for_code
from extctl.api import ApiClient

__all__ = ["add_commands", "format_line"]

FAILURE_CODES = frozenset({"EXTENSION_FAILED", "EXTENSION_TIMEOUT"})
"""Errors whose cause is in the extension's log lines, which ``call`` fetches for the request."""
FOLLOW_INTERVAL_S = 1.0
_LOG_WAIT_S = 5.0
_MAX_PAGES = 20


def add_commands(sub: Any, common: Any) -> None:
    """Add ``call`` and ``logs``; ``common`` adds the ``--api``/``--token`` options to a parser."""
    p = sub.add_parser("call", help="call an extension through the gateway (body on stdout, status on stderr)")
    p.add_argument("name", help="the extension, e.g. com.acme.hello")
    p.add_argument("path", help="the path after /api/ext/NAME, with its query, e.g. '/hello?name=Ada'")
    p.add_argument("-X", "--request", dest="method", help="HTTP method (default: GET, or POST with -d)")
    p.add_argument("-d", "--data", help="request body; @FILE reads a file, @- standard input")
    p.add_argument("-H", "--header", action="append", default=[], help="a request header 'Name: value' (repeatable)")
    common(p)
    p.set_defaults(handler=_call)

    p = sub.add_parser("logs", help="an install's log lines: calls, guest logs, traps (--follow for new ones)")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("--request-id", help="only this request's lines")
    p.add_argument("--since", type=int, default=3600, help="seconds back to start from (default: 3600)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    common(p)
    p.set_defaults(handler=_logs)


# --- call --------------------------------------------------------------------------------------


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")


def _headers(lines: list[str]) -> dict[str, str]:
    headers = {"Accept": "*/*"}
    for line in lines:
        name, separator, value = line.partition(":")
        if not separator or not name.strip():
            raise UsageError(f"-H {line!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _gateway_path(name: str, path: str) -> str:
    route, separator, query = path.partition("?")
    return f"/api/ext/{quote(name, safe='')}/{quote(route.lstrip('/'), safe='/%')}{separator}{query}"


def _platform_error(response: Any) -> tuple[str, str] | None:
    """``(code, message)`` when the answer is the platform's error body, not the extension's own."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if isinstance(error, Mapping) and isinstance(error.get("code"), str):
        return error["code"], str(error.get("message", ""))
    return None


def _call(args: argparse.Namespace, out: TextIO) -> int:
    api = ApiClient(args.api, args.token)
    body = _body(args.data)
    method = (args.method or ("POST" if body is not None else "GET")).upper()
    headers = _headers(args.header)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    started = time.perf_counter()
    response = api.send(method, _gateway_path(args.name, args.path), body, headers)
    elapsed_ms = (time.perf_counter() - started) * 1000
    request_id = response.headers.get("X-Request-Id", "-")
    print(f"HTTP {response.status_code} ({elapsed_ms:.0f} ms, request id {request_id})", file=sys.stderr)
    error = _platform_error(response) if response.status_code >= 400 else None
    if error is None:
        _write_body(out, response.content)
        if response.status_code < 400:
            return 0
        print(f"error: HTTP_{response.status_code}: the extension answered {response.status_code}", file=sys.stderr)
        return 1
    code, message = error
    if code in FAILURE_CODES and request_id != "-":
        _print_request_lines(api, args.name, request_id)
    raise error_for_code(code, message)


def _write_body(out: TextIO, content: bytes) -> None:
    binary = getattr(out, "buffer", None)
    if binary is not None:
        out.flush()
        binary.write(content)
        binary.flush()
    else:
        out.write(content.decode("utf-8", errors="replace"))
    if content and not content.endswith(b"\n") and out.isatty():
        out.write("\n")


def _print_request_lines(api: ApiClient, name: str, request_id: str) -> None:
    """The failed request's lines on stderr; CloudWatch takes a few seconds to have them, so wait a little."""
    deadline = time.monotonic() + _LOG_WAIT_S
    while True:
        try:
            lines = api.get(f"/installs/{quote(name, safe='')}/logs?" + urlencode({"request_id": request_id}))["lines"]
        except ExtError as exc:
            print(f"(the request's log lines are not readable: {exc.code}: {exc.message})", file=sys.stderr)
            return
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for line in lines:
        print(format_line(line), file=sys.stderr)


# --- logs --------------------------------------------------------------------------------------


def format_line(line: Mapping[str, Any]) -> str:
    """One log line for people: time, level, request id, what happened; a trap's frames and stderr below."""
    when = datetime.fromtimestamp(float(line.get("ts") or 0)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    level = str(line.get("level") or "info").upper()
    head = f"{when} {level:<5} {line.get('request_id', '-')} "
    if line.get("kind") == "log":
        text = str(line.get("message", ""))
    else:
        version = line.get("version", "?")
        took = f"{line['duration_ms']} ms" if "duration_ms" in line else ""
        if line.get("outcome") == "ok":
            text = f"call {version} → {line.get('status')} ({took})"
        else:
            text = f"call {version} → {line.get('outcome')}: {line.get('message', '')} ({took})"
    rows = [head + text]
    if line.get("backtrace"):
        rows.append("    wasm backtrace (innermost first):")
        rows.extend(f"      {frame}" for frame in line["backtrace"])
    if line.get("stderr"):
        rows.append("    guest stderr (its end):")
        rows.extend(f"      {row}" for row in str(line["stderr"]).splitlines())
    return "\n".join(rows)


def _pages(api: ApiClient, name: str, params: dict[str, str]) -> Iterator[tuple[list[dict[str, Any]], str]]:
    path = f"/installs/{quote(name, safe='')}/logs?"
    while True:
        page = api.get(path + urlencode(params))
        yield page["lines"], page["cursor"]
        params = {**params, "cursor": page["cursor"]}


def _print(lines: list[dict[str, Any]], out: TextIO, as_json: bool) -> None:
    for line in lines:
        print(json.dumps(line, sort_keys=True) if as_json else format_line(line), file=out)
    out.flush()


def _logs(args: argparse.Namespace, out: TextIO) -> int:
    api = ApiClient(args.api, args.token)
    params = {"since": str(args.since)}
    if args.request_id:
        params["request_id"] = args.request_id
    try:
        for count, (lines, _cursor) in enumerate(_pages(api, args.name, params), 1):
            _print(lines, out, args.json)
            if not args.follow and (not lines or count >= _MAX_PAGES):
                break
            if not lines:
                time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        if not args.follow:
            raise
        # Ctrl-C is how one stops following, wherever it lands: not an error.
    return 0
