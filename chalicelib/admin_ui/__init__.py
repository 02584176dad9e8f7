"""The admin web UI: static HTML, CSS and ES modules served by the app at ``/admin``.

The page loads ``app.js`` as a module and the browser fetches the modules it imports
(``./api.js`` …) from the same flat folder: there is no build step.  Only the names in
:data:`ASSETS` are served, plus ``errors.json``, made here from the error table in
:mod:`chalicelib.errors` so the page words each code the way the server defines it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from chalicelib.errors import error_texts

__all__ = ["ASSETS", "MODULES", "admin_asset"]

MODULES = (
    "app.js",
    "api.js",
    "catalog.js",
    "changes.js",
    "config.js",
    "config-form.js",
    "dialog.js",
    "dom.js",
    "errors.js",
    "extensions.js",
    "installs.js",
    "preview.js",
    "secrets.js",
    "session.js",
    "tabs.js",
    "toast.js",
    "upload-job.js",
    "upload.js",
    "widgets.js",
)
"""The page's ES modules; ``app.js`` is the one ``index.html`` loads."""

ASSETS = ("index.html", "style.css", *MODULES, "errors.json")


@cache
def admin_asset(name: str) -> str:
    """The text of one UI file; ``KeyError`` for anything that is not one."""
    if name not in ASSETS:
        raise KeyError(name)
    if name == "errors.json":
        return json.dumps(error_texts(), indent=2, sort_keys=True)
    return resources.files(__package__).joinpath(name).read_text("utf-8")
