"""The load ``make load`` puts on the gateway: one extension call per task, as a tenant's user makes it.

Run by :mod:`bench.load` (Locust headless); reads ``LOAD_PATH`` (the call), ``LOAD_TOKEN`` (a bearer
token) and ``LOAD_CALLS`` (stop after this many calls; 0: no limit, the run's time bounds it).
Failures are named so the driver can count them: ``5xx <status> <code>``, ``status <status>``, or Locust's own
name of the exception (a reset reads ``ConnectionResetError``).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import gevent
from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

_PATH = os.environ.get("LOAD_PATH", "/")
_HEADERS = {"Authorization": f"Bearer {os.environ.get('LOAD_TOKEN', '')}"}
_LIMIT = int(os.environ.get("LOAD_CALLS", "0"))
_started = itertools.count(1)
_RESET_MARKERS = ("ConnectionReset", "RemoteDisconnected", "BrokenPipe", "ConnectionAborted")


@events.quitting.add_listener
def _report(environment: Environment, **_: Any) -> None:
    """The run's figures: requests/s, p50/p99 (ms), and its failures by kind."""
    total = environment.stats.total
    failures = {entry.error: entry.occurrences for entry in environment.stats.errors.values()}
    figures = {
        "requests": total.num_requests,
        "requests_per_s": round(total.total_rps, 1),
        "p50_ms": total.get_response_time_percentile(0.5),
        "p99_ms": total.get_response_time_percentile(0.99),
        "errors": total.num_failures,
        "resets": sum(n for error, n in failures.items() if any(m in str(error) for m in _RESET_MARKERS)),
        "5xx": sum(n for error, n in failures.items() if str(error).startswith("5xx")),
        "failures": {str(error): n for error, n in failures.items()},
    }
    Path(os.environ["LOAD_REPORT"]).write_text(json.dumps(figures))


def _code(body: str | None) -> str:
    """The contract's error code of an answer, or what it is instead."""
    try:
        return str(json.loads(body or "")["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "no error code"


class GatewayCaller(FastHttpUser):
    wait_time = constant(0)

    @task
    def call(self) -> None:
        if _LIMIT and next(_started) > _LIMIT:
            gevent.spawn(self.environment.runner.quit)
            gevent.sleep(60)
            return
        with self.client.get(_PATH, headers=_HEADERS, name="gateway", catch_response=True) as response:
            if response.status_code == 0:
                return  # no answer (refused, reset): Locust records the exception itself
            if response.status_code >= 500:
                response.failure(f"5xx {response.status_code} {_code(response.text)}")
            elif response.status_code != 200:
                response.failure(f"status {response.status_code}")
