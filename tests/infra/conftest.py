"""The packaged AWS stack, built once per test session (``chalice package`` runs offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from infra.check import Packaged, package
from tests.infra.cfn import Stack


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    return package(tmp_path_factory.mktemp("infra") / "out")


@pytest.fixture(scope="session")
def template(packaged: Packaged) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(packaged.template.read_text("utf-8"))
    return loaded


@pytest.fixture
def stack(template: dict[str, Any]) -> Stack:
    """The stack with every parameter at its default, except the image every deploy must name."""
    return Stack(template, {"RunnerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/runner:abc"})


@pytest.fixture(scope="session")
def bootstrap_template() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "infra" / "bootstrap.yaml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return loaded
