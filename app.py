"""The Chalice app: routes and event handlers only (parse, authorize, call a service, map errors)."""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice

app = Chalice(app_name="ext-platform")


@app.route("/healthz", methods=["GET"])
def healthz() -> dict[str, Any]:
    return {"status": "ok"}
