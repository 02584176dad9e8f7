"""The admin web UI: static HTML, JS and CSS served by the app at ``/admin``."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["ASSETS", "admin_asset"]

ASSETS = ("index.html", "app.js", "style.css")


@cache
def admin_asset(name: str) -> str:
    """The text of one UI file; ``KeyError`` for anything that is not one."""
    if name not in ASSETS:
        raise KeyError(name)
    return resources.files(__package__).joinpath(name).read_text("utf-8")
