"""One rule for every JSON document a bundle carries: an object never names a key twice.

``json`` keeps the last of two equal keys; a reader that keeps the first would see another document, so
the manifest and the signature envelope refuse both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.errors import ExtError

__all__ = ["refuse_duplicate_keys"]

PairsHook = Callable[[list[tuple[str, Any]]], dict[str, Any]]


def refuse_duplicate_keys(error: Callable[[str], ExtError]) -> PairsHook:
    """An ``object_pairs_hook`` for :func:`json.loads` that raises ``error(key)`` at a key's second use."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise error(key)
            found[key] = value
        return found

    return hook
