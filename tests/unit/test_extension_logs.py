"""Where the API reads the runner's log lines from (chalicelib.extension_logs.make_log_reader)."""

from __future__ import annotations

import pytest

from chalicelib.config import load_settings
from chalicelib.extension_logs import CloudWatchLogReader, RunnerLogReader, make_log_reader


def test_the_cloudwatch_reader_uses_the_platforms_region_without_a_default_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    settings = load_settings({"RUNNER_LOG_GROUP": "/ext/runner", "STORAGE_S3_REGION": "eu-west-3"})
    reader = make_log_reader(settings)
    assert isinstance(reader, CloudWatchLogReader)
    assert reader.client.meta.region_name == "eu-west-3"


def test_without_a_log_group_the_reader_is_the_http_runners_tail_or_none() -> None:
    assert isinstance(make_log_reader(load_settings({"RUNNER_BASE_URL": "http://127.0.0.1:9"})), RunnerLogReader)
    assert make_log_reader(load_settings({})) is None
