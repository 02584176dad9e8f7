"""A stand-in for the AWS Lambda Invoke API on 127.0.0.1, over real HTTP.

boto3's Lambda client is pointed at it (``endpoint_url``, or ``AWS_ENDPOINT_URL_LAMBDA``), so requests and
errors go through botocore's own serialization and error parsing: no patching.  Each invoke is recorded;
answers come from a queue the test fills (default: ``Event`` → 202, ``RequestResponse`` → ``{"ok": true}``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")


@dataclass(frozen=True)
class Invocation:
    function: str
    invocation_type: str
    payload: Any


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def throttled() -> Answer:
    """What Lambda answers when the function's reserved concurrency is used up."""
    body = {"Type": "User", "message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
    return Answer(429, json.dumps(body).encode(), {"x-amzn-ErrorType": "TooManyRequestsException"})


def runner_answer(document: Any) -> Answer:
    """A runner function's JSON answer to a synchronous invoke."""
    return Answer(200, json.dumps(document).encode(), {"X-Amz-Executed-Version": "$LATEST"})


class FakeLambda:
    def __init__(self) -> None:
        self.invocations: list[Invocation] = []
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                match = _INVOKE.match(self.path.split("?", 1)[0])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if match is None:
                    self._send(Answer(404, b'{"message": "not an invoke"}'))
                    return
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                self._send(fake.record(Invocation(match.group(1), kind, json.loads(body or b"null"))))

            def _send(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, invocation: Invocation) -> Answer:
        with self._lock:
            self.invocations.append(invocation)
            if self.answers:
                return self.answers.pop(0)
        if invocation.invocation_type == "Event":
            return Answer(202)
        return runner_answer({"ok": True, "response": {}})

    def invoked(self, invocation_type: str) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.invocation_type == invocation_type]

    @contextmanager
    def running(self) -> Iterator[FakeLambda]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
