"""A small client of the platform's HTTP API, with retries for what is safe to retry."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from chalicelib.errors import ApiUnreachable, ExtError, UsageError, error_for_code
from extctl.session import read_session

if TYPE_CHECKING:
    import requests

__all__ = ["ApiClient", "with_retries"]

_T = TypeVar("_T")
_RETRYABLE_CODES = frozenset({"RATE_LIMITED", "STORAGE_ERROR", "API_UNREACHABLE", "INTERNAL"})


def _retry_delay(attempt: int, error: ExtError) -> float:
    retry_after: float | None = error.details.get("retry_after")
    if retry_after is not None:
        return min(30.0, float(retry_after))
    return min(8.0, 0.5 * 2.0**attempt) * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


def with_retries(action: Callable[[], _T], *, attempts: int = 5, retryable: frozenset[str] = _RETRYABLE_CODES) -> _T:
    """Run ``action``, retrying transient failures with exponential backoff and jitter."""
    for attempt in range(attempts):
        try:
            return action()
        except ExtError as exc:
            in_progress = exc.code == "UPLOAD_CONFLICT" and "retry_after" in exc.details
            if attempt == attempts - 1 or not (exc.code in retryable or in_progress):
                raise
            time.sleep(_retry_delay(attempt, exc))
    raise AssertionError("unreachable")


class ApiClient:
    """Calls ``{base}{path}`` with the bearer token; errors come back as ``ExtError``.

    Without a URL and a token, those of the running ``extctl dev`` (:mod:`extctl.session`).
    """

    def __init__(self, base_url: str | None, token: str | None, *, timeout_s: float = 60.0) -> None:
        if not base_url and not token:
            # Neither given: the running `extctl dev`, if there is one.
            session = read_session()
            if session is not None:
                base_url, token = session.api, session.token
        if not base_url:
            raise UsageError("no API URL: pass --api or set EXT_API_URL (extctl dev prints it)")
        if not token:
            raise UsageError("no token: pass --token or set EXT_TOKEN (extctl dev prints one)")
        # Imported on first use: requests (and urllib3) take longer to import than `extctl --help` to run.
        import requests

        self.base_url = base_url.rstrip("/")
        self._session: requests.Session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        self._timeout = timeout_s

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        import requests

        try:
            response = self._session.request(method, self.base_url + path, json=body, timeout=self._timeout)
        except requests.RequestException as exc:
            raise ApiUnreachable(f"cannot reach {self.base_url}: {type(exc).__name__}") from None
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, Mapping) else None
            if not isinstance(error, Mapping):
                raise ApiUnreachable(f"{method} {path} answered {response.status_code} without an error body")
            failure = error_for_code(str(error.get("code")), str(error.get("message")))
            if "Retry-After" in response.headers:
                failure.details["retry_after"] = float(response.headers["Retry-After"])
            raise failure
        return data

    def send(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        """``method`` ``{base}{path}`` with raw bytes; the answer as it came, whatever its status."""
        try:
            return self._session.request(
                method, self.base_url + path, data=body, headers=dict(headers or {}), timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise ApiUnreachable(f"cannot reach {self.base_url}: {type(exc).__name__}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def put_bytes(self, url: str, data: bytes, headers: Mapping[str, str]) -> str:
        """PUT ``data`` to a presigned URL (no bearer token); returns the ETag."""
        import requests

        try:
            response = requests.put(url, data=data, headers=dict(headers), timeout=self._timeout)
        except requests.RequestException as exc:
            raise ApiUnreachable(f"upload failed: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise ApiUnreachable(f"storage answered {response.status_code}")
        if response.status_code >= 400:
            raise error_for_code(
                "UPLOAD_EXPIRED" if response.status_code == 403 else "BAD_REQUEST",
                f"storage refused the upload ({response.status_code}): {response.text[:200]}",
            )
        return str(response.headers.get("ETag", ""))


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
