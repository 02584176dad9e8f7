"""Reading JSON values as JSON Schema reads them."""

from __future__ import annotations

from typing import Any

__all__ = ["as_integer"]


def as_integer(value: Any) -> int | None:
    """``value`` as an integer when JSON Schema calls it one (``4096`` and ``4096.0``, never ``true``), else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
