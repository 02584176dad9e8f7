"""`extctl logs` in AWS: the API reads the runner's CloudWatch log group (``RUNNER_LOG_GROUP``).

The local stack's moto server plays CloudWatch Logs: the test writes lines shaped exactly as the runner
writes them (real log records through :class:`chalicelib.logs.JsonFormatter`, beside Lambda's own
START/END lines and other tenants' and extensions' lines) and reads them back through the command.
Moto ignores JSON filter patterns, so these tests also prove the API's own filter keeps tenants apart.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.extension_logs import CloudWatchLogReader, LogQuery
from chalicelib.logs import JsonFormatter
from devstack.stack import LocalStack, StackConfig, StackUrls
from tests.e2e.test_first_run import EXTCTL

GROUP = "/ext-platform/test/runner"
NAME = "com.acme.clouded"


def runner_line(event: str, request_id: str, *, tenant: str = "dev", extension: str = NAME, **fields: Any) -> str:
    """One JSON line as the runner's log handler writes it."""
    record = logging.LogRecord("ext", logging.INFO, __file__, 1, event, None, None)
    for key, value in {"extension": extension, "tenant": tenant, "request_id": request_id, **fields}.items():
        setattr(record, key, value)
    return JsonFormatter().format(record)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUrls]:
    cache = tmp_path_factory.mktemp("runner-cache")
    stack = LocalStack(StackConfig(cache_dir=cache, settings={"RUNNER_LOG_GROUP": GROUP}))
    urls = stack.start()
    logs = client(urls)
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="2026/01/01/[$LATEST]abc")
    yield urls
    stack.stop()


def client(urls: StackUrls) -> Any:
    return boto3.client(
        "logs", endpoint_url=urls.moto, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def put(urls: StackUrls, *messages: str) -> None:
    now = int(time.time() * 1000)
    events = [{"timestamp": now, "message": message} for message in messages]
    client(urls).put_log_events(logGroupName=GROUP, logStreamName="2026/01/01/[$LATEST]abc", logEvents=events)


def extctl(urls: StackUrls, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXT_API_URL": urls.api, "EXT_TOKEN": urls.token}
    done = subprocess.run([EXTCTL, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_logs_read_the_tenants_lines_of_the_extension_from_cloudwatch(local: StackUrls) -> None:
    put(
        local,
        "START RequestId: 0f1e Version: $LATEST",
        runner_line("runner.guest_log", "req-a", guest_level="info", guest_message="GET /hello"),
        runner_line("runner.call", "req-a", version="1.0.0", outcome="ok", status=200, duration_ms=1.5),
        runner_line("runner.call", "req-b", tenant="other", version="1.0.0", outcome="ok", status=200),
        runner_line("runner.call", "req-c", extension="com.acme.else", version="1.0.0", outcome="ok", status=200),
        runner_line("runner.request", "req-a"),
        "END RequestId: 0f1e",
    )
    lines = [json.loads(line) for line in extctl(local, "logs", NAME, "--json").stdout.splitlines()]
    assert [(line["kind"], line["request_id"]) for line in lines] == [("log", "req-a"), ("call", "req-a")]
    assert lines[0]["message"] == "GET /hello"
    assert lines[1]["status"] == 200

    text = extctl(local, "logs", NAME).stdout
    assert "req-a GET /hello" in text and "req-b" not in text and "req-c" not in text


def test_a_trap_line_from_cloudwatch_shows_its_backtrace(local: StackUrls) -> None:
    put(
        local,
        runner_line(
            "runner.call",
            "req-trap",
            version="1.0.1",
            outcome="EXTENSION_FAILED",
            error="extension trapped: wasm trap: wasm `unreachable` instruction executed",
            backtrace=["crash_on_purpose @ 0x3575", "handler @ 0x2b81"],
            stderr="Traceback (most recent call last):\nValueError: bad input",
        ),
    )
    text = extctl(local, "logs", NAME, "--request-id", "req-trap").stdout
    assert "call 1.0.1 → EXTENSION_FAILED: extension trapped" in text
    assert "      crash_on_purpose @ 0x3575\n      handler @ 0x2b81" in text
    assert "      ValueError: bad input" in text


def test_follow_prints_lines_as_they_arrive_in_cloudwatch(local: StackUrls) -> None:
    env = {**os.environ, "EXT_API_URL": local.api, "EXT_TOKEN": local.token}
    follower = subprocess.Popen(
        [EXTCTL, "logs", NAME, "--follow", "--json", "--since", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(2)
        put(local, runner_line("runner.call", "req-new", version="1.0.0", outcome="ok", status=201))
        assert follower.stdout is not None
        # ``--since 1`` may also catch the last second of an earlier test's lines: skip to ours.
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["request_id"] != "req-new":
            seen.append(json.loads(follower.stdout.readline()))
        assert seen[-1]["status"] == 201
        assert all(line["request_id"] != "req-new" for line in seen[:-1])
    finally:
        follower.send_signal(signal.SIGINT)
        _, errors = follower.communicate(timeout=30)
    assert follower.returncode == 0, errors


def test_the_cursor_neither_repeats_nor_loses_lines_of_one_millisecond(local: StackUrls) -> None:
    reader = CloudWatchLogReader(client(local), GROUP)
    query = LogQuery(extension=NAME, tenant="ms", limit=1)
    put(local, runner_line("runner.call", "ms-1", tenant="ms"), runner_line("runner.call", "ms-2", tenant="ms"))
    first = reader.read(query)
    second = reader.read(LogQuery(extension=NAME, tenant="ms", limit=1, cursor=first.cursor))
    empty = reader.read(LogQuery(extension=NAME, tenant="ms", cursor=second.cursor))
    assert [line["request_id"] for line in (*first.lines, *second.lines)] == ["ms-1", "ms-2"]
    assert empty.lines == ()
