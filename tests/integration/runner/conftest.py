"""Fixtures shared by the runner's tests: no ambient AWS settings, one engine per module, a fresh
moto-backed runner environment per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner_container.engine import WasmEngine
from tests.integration.runner_fixtures import RunnerEnv, clear_aws_env, runner_env


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_aws_env(monkeypatch)


@pytest.fixture(scope="module")
def engine() -> Iterator[WasmEngine]:
    with WasmEngine() as shared:
        yield shared


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RunnerEnv]:
    with runner_env(tmp_path) as created:
        yield created
