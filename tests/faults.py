"""A TCP fault proxy in front of the AWS the platform reaches (moto's server): outside a fault window it
forwards bytes both ways; inside one, each chunk a client sends is, at a seeded rate, answered with an
HTTP 500 or 503, a throttling error in the service's own format, a connection reset, or forwarded late.
A window may target one JSON-protocol service by its ``X-Amz-Target`` prefix (``TrentService.`` is KMS):
then only that service's requests meet faults, and KMS's answers have KMS's own error shapes
(``KMSInternalException``, ``DependencyTimeoutException``, ``ThrottlingException``).

It sits where AWS does (``AWS_ENDPOINT_URL``), so every SDK client of the process (boto3 for S3, SQS and
KMS, pynamodb for DynamoDB) and presigned URLs meet the same faults, with nothing patched.  A fault may
land on a request's first bytes or inside its body: both happen to real connections.
"""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FAULTS", "HANG", "KMS", "KMS_FAULTS", "SQS", "FaultProxy"]

FAULTS = ("500", "503", "throttle", "reset", "slow")
KMS = "TrentService."
"""The ``X-Amz-Target`` prefix of KMS's requests."""
SQS = "AmazonSQS."
"""The ``X-Amz-Target`` prefix of SQS's requests (its JSON protocol)."""
KMS_FAULTS = (*FAULTS, "dependency-timeout")
"""KMS's faults: ``dependency-timeout`` is its ``DependencyTimeoutException`` (elsewhere a plain 500)."""
HANG = "hang"
"""A fault outside the random mix: the request is held, unanswered, until the window closes, then dropped."""

_CLOSE = b"Connection: close\r\n"
_S3_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_JSON_THROTTLE = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}'
_TARGET = re.compile(rb"^x-amz-target:[ \t]*([A-Za-z0-9_.]+)", re.IGNORECASE | re.MULTILINE)
_KMS_ERRORS = {
    "500": ("500 Internal Server Error", "KMSInternalException"),
    "dependency-timeout": ("500 Internal Server Error", "DependencyTimeoutException"),
    "503": ("503 Service Unavailable", "KMSInternalException"),
    "throttle": ("400 Bad Request", "ThrottlingException"),
}


def _answer(status: str, body: bytes, content_type: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + b"Content-Type: " + content_type + b"\r\n" + _CLOSE + b"\r\n" + body


class FaultProxy:
    """Forward 127.0.0.1:``port`` (a free one) to ``upstream``; :meth:`window` turns faults on."""

    def __init__(self, upstream: tuple[str, int], *, seed: int = 14, slow_s: float = 0.3) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rate = 0.0
        self._faults: tuple[str, ...] = ()
        self._slow_s = slow_s
        self.injected: Counter[str] = Counter()
        """Faults injected so far, by kind."""
        self.chunks = 0
        """Chunks clients sent (requests, or parts of their bodies) so far."""
        self.targets: Counter[str] = Counter()
        """Requests so far by ``X-Amz-Target`` (``TrentService.Decrypt``: KMS Decrypt attempts), faulted or not."""
        self._only: str | None = None
        self._calm = threading.Event()
        self._calm.set()
        self._closing = threading.Event()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    @contextmanager
    def window(self, rate: float, faults: tuple[str, ...] = FAULTS, *, only: str | None = None) -> Iterator[None]:
        """Inside the block each chunk a client sends meets one of ``faults`` with probability ``rate``;
        with ``only`` (an ``X-Amz-Target`` prefix such as :data:`KMS`), only that service's requests do."""
        with self._lock:
            self._rate, self._faults, self._only = rate, faults, only
            self._calm.clear()
        try:
            yield
        finally:
            with self._lock:
                self._rate, self._faults, self._only = 0.0, (), None
                self._calm.set()

    def close(self) -> None:
        self._closing.set()
        self._calm.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _choose(self, target: str | None) -> str | None:
        with self._lock:
            self.chunks += 1
            if target is not None:
                self.targets[target] += 1
            if not self._faults or (self._only is not None and not (target or "").startswith(self._only)):
                return None
            if self._rng.random() >= self._rate:
                return None
            fault = self._rng.choice(self._faults)
            self.injected[fault] += 1
            return fault

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        with client, upstream:
            while not self._closing.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 1.0)
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if sock is upstream:
                        client.sendall(data)
                        continue
                    found = _TARGET.search(data)
                    target = found.group(1).decode() if found else None
                    fault = self._choose(target)
                    if fault is not None and not self._inject(fault, client, target):
                        return
                    upstream.sendall(data)

    def _inject(self, fault: str, client: socket.socket, target: str | None) -> bool:
        """Apply ``fault`` to a chunk from ``client`` (a request to ``target``, or ``None`` for a REST one
        or a body's later part); whether the connection goes on."""
        if fault == "slow":
            time.sleep(self._slow_s)
            return True
        if fault == HANG:
            self._calm.wait()
            return False
        try:
            if fault == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif target is not None and target.startswith(KMS) and fault in _KMS_ERRORS:
                status, kind = _KMS_ERRORS[fault]
                body = f'{{"__type":"{kind}","message":"injected {kind}"}}'.encode()
                client.sendall(_answer(status, body, b"application/x-amz-json-1.1"))
            elif fault == "throttle" and target is not None:
                client.sendall(_answer("400 Bad Request", _JSON_THROTTLE, b"application/x-amz-json-1.0"))
            elif fault == "throttle":
                client.sendall(_answer("503 Slow Down", _S3_SLOW_DOWN, b"application/xml"))
            else:
                status = "503 Service Unavailable" if fault == "503" else "500 Internal Server Error"
                client.sendall(_answer(status, b"", b"text/plain"))
        except OSError:
            pass
        return False
