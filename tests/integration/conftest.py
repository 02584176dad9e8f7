"""Fixtures shared by the integration tests."""

from tests.integration.stack import moto_server, stack, stack_env

__all__ = ["moto_server", "stack", "stack_env"]
