"""Helpers every DynamoDB-backed service shares: binding a pynamodb model to a table at run time, and
telling a failed write condition from a failed service."""

from __future__ import annotations

from typing import TypeVar, cast

from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

__all__ = ["bind_model", "condition_failed", "response_code"]

_M = TypeVar("_M", bound=Model)


def bind_model(base: type[_M], table_name: str, region: str) -> type[_M]:
    """A subclass of ``base`` that reads and writes ``table_name`` in ``region`` (on-demand billing)."""
    meta = type("Meta", (), {"table_name": table_name, "region": region, "billing_mode": "PAY_PER_REQUEST"})
    namespace = {"Meta": meta, "__module__": base.__module__, "__qualname__": f"{base.__name__}[{table_name}]"}
    return cast(type[_M], type(f"{base.__name__}[{table_name}]", (base,), namespace))


def response_code(exc: PynamoDBException) -> str | None:
    """DynamoDB's error code behind ``exc``, or ``None`` when no answer came (a reset, a timeout).

    pynamodb's own ``cause_response_code`` (6.x) raises ``AttributeError`` on botocore's connection
    errors, which carry ``response=None``; this reads the same field without that trap.
    """
    response = getattr(exc.cause, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None


def condition_failed(exc: PynamoDBException) -> bool:
    """Whether a single-item write failed its condition (rather than the service)."""
    return response_code(exc) == "ConditionalCheckFailedException"
