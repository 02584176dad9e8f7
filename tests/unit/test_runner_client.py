"""Which transport reaches the runner, and with what deadline."""

from __future__ import annotations

import pytest

from chalicelib.config import load_settings
from chalicelib.errors import SettingsInvalid
from chalicelib.gateway.runner_client import (
    HttpRunnerClient,
    LambdaCompileClient,
    LambdaRunnerClient,
    make_compile_client,
    make_runner_client,
)


def test_a_function_name_means_lambda_with_the_gateway_deadline_and_no_retries() -> None:
    settings = load_settings(
        {"RUNNER_FUNCTION_NAME": "runner", "EXT_GATEWAY_TIMEOUT_MS": "1500", "RUNNER_BASE_URL": "http://127.0.0.1:1"}
    )
    client = make_runner_client(settings)
    assert isinstance(client, LambdaRunnerClient)
    config = client._lambda.meta.config
    assert config.read_timeout == 1.5
    assert config.retries["total_max_attempts"] == 1


def test_a_base_url_means_http() -> None:
    assert isinstance(make_runner_client(load_settings({"RUNNER_BASE_URL": "http://127.0.0.1:1"})), HttpRunnerClient)


def test_no_runner_configured_is_an_operator_error() -> None:
    with pytest.raises(SettingsInvalid, match="RUNNER_FUNCTION_NAME"):
        make_runner_client(load_settings({}))


def test_compile_jobs_go_to_the_compile_function_or_the_http_runner_never_the_runner_function() -> None:
    with_compiler = {"RUNNER_FUNCTION_NAME": "runner", "RUNNER_COMPILE_FUNCTION_NAME": "compiler"}
    assert isinstance(make_compile_client(load_settings(with_compiler)), LambdaCompileClient)
    assert make_compile_client(load_settings({"RUNNER_FUNCTION_NAME": "runner"})) is None
    assert isinstance(make_compile_client(load_settings({"RUNNER_BASE_URL": "http://127.0.0.1:1"})), HttpRunnerClient)
    assert make_compile_client(load_settings({})) is None
