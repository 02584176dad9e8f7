"""The local stack refuses busy ports with a message a person can act on."""

from __future__ import annotations

import socket

import pytest

from chalicelib.errors import UsageError
from extctl.localstack import ensure_free, free_port


def test_a_busy_port_is_refused_up_front() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} on 127.0.0.1 is in use"):
            ensure_free(port)


def test_a_free_port_passes() -> None:
    ensure_free(free_port())
