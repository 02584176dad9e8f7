"""Every log line a test's process writes, for the checks that a secret never shows in one."""

from __future__ import annotations

import io
import logging

import pytest

from chalicelib.logs import JsonFormatter

__all__ = ["EveryLogLine"]


class EveryLogLine:
    """Everything logged while it is open, at DEBUG: the platform's JSON lines (the ``ext`` logger stops
    propagating once app.py configures it) and every other logger's records (botocore's, pynamodb's,
    moto's) with all their fields."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        self._json = io.StringIO()
        self._handler = logging.StreamHandler(self._json)
        self._handler.setFormatter(JsonFormatter())
        logging.getLogger("ext").addHandler(self._handler)
        caplog.set_level(logging.DEBUG, logger="ext")
        caplog.set_level(logging.DEBUG)

    @property
    def json_lines(self) -> str:
        """The platform's own JSON lines so far."""
        return self._json.getvalue()

    def text(self) -> str:
        """Everything logged so far: the JSON lines, every record's text and every record's fields."""
        records = (repr(record.__dict__) for record in self._caplog.records)
        return "\n".join([self.json_lines, self._caplog.text, *records])

    def close(self) -> None:
        logging.getLogger("ext").removeHandler(self._handler)
