"""The runner's in-memory tail of extension lines (its HTTP mode's ``GET /v1/logs``)."""

from __future__ import annotations

import logging

from chalicelib.logs import LOGGER, log_event
from runner_container.log_tail import LogTail


def test_the_tail_keeps_the_extension_lines_of_one_tenant_after_a_cursor() -> None:
    tail = LogTail(capacity=10).attach()
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    try:
        log_event("runner.call", extension="com.a.x", tenant="t1", request_id="r1", outcome="ok")
        log_event("runner.call", extension="com.a.x", tenant="t2", request_id="r2", outcome="ok")
        log_event("runner.request", extension="com.a.x", tenant="t1", request_id="r3")
        log_event("runner.guest_log", extension="com.a.x", tenant="t1", request_id="r4", guest_message="hi")
        first = tail.query("com.a.x", "t1", limit=1)
        rest = tail.query("com.a.x", "t1", after=first.cursor)
        none = tail.query("com.a.x", "t1", after=rest.cursor)
        only = tail.query("com.a.x", "t1", request_id="r4")
    finally:
        tail.detach()
        LOGGER.setLevel(level)
    assert [r["request_id"] for r in first.records] == ["r1"]
    assert [r["request_id"] for r in rest.records] == ["r4"]
    assert rest.records[0]["guest_message"] == "hi"
    assert none.records == () and none.cursor == rest.cursor
    assert [r["request_id"] for r in only.records] == ["r4"]


def test_the_oldest_lines_go_first_when_the_tail_is_full() -> None:
    tail = LogTail(capacity=2).attach()
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    try:
        for n in range(3):
            log_event("runner.call", extension="com.a.x", tenant="t", request_id=f"r{n}")
        page = tail.query("com.a.x", "t")
    finally:
        tail.detach()
        LOGGER.setLevel(level)
    assert [r["request_id"] for r in page.records] == ["r1", "r2"]
    assert page.cursor == 3
