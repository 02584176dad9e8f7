"""Talking to the runner: Lambda ``Invoke`` in AWS, HTTP locally and self-hosted.

Both transports carry the same payloads (DESIGN §6): ``execute`` answers with the
extension's normalized response, ``precompile`` is fire-and-forget right after a
publish so the first request finds compiled code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import urllib3
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError

from chalicelib.config import Settings
from chalicelib.errors import ConfigInvalid, ExtensionFailed, ExtensionTimeout, error_for_code
from chalicelib.logs import log_event

__all__ = ["HttpRunnerClient", "LambdaRunnerClient", "RunnerClient", "make_runner_client"]


class RunnerClient(Protocol):
    def execute(self, payload: Mapping[str, Any], timeout_s: float) -> dict[str, Any]: ...

    def precompile(self, content_hash: str) -> None: ...


def _answer(status: int, data: Any) -> dict[str, Any]:
    """The runner's response, or its error raised with the runner's own code."""
    if isinstance(data, Mapping) and isinstance(data.get("error"), Mapping):
        error = data["error"]
        raise error_for_code(str(error.get("code", "EXTENSION_FAILED")), str(error.get("message", "runner error")))
    if status != 200 or not isinstance(data, Mapping) or not isinstance(data.get("status"), int):
        raise ExtensionFailed(f"the runner answered {status} without a usable response")
    return dict(data)


class HttpRunnerClient:
    """The runner's HTTP mode (``POST /v1/execute``), over a keep-alive pool."""

    def __init__(self, base_url: str, token: str, *, pool_size: int = 16) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._pool = urllib3.PoolManager(maxsize=pool_size, retries=False)

    def execute(self, payload: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            response = self._pool.request(
                "POST",
                f"{self._base}/v1/execute",
                body=json.dumps(payload).encode(),
                headers=self._headers,
                timeout=urllib3.Timeout(connect=min(2.0, timeout_s), read=timeout_s),
            )
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError):
            raise ExtensionTimeout(f"the extension did not answer within {timeout_s:.1f} s") from None
        except urllib3.exceptions.HTTPError as exc:
            raise ExtensionFailed(f"the runner is unreachable: {type(exc).__name__}") from None
        try:
            data = json.loads(response.data)
        except ValueError:
            raise ExtensionFailed(f"the runner answered {response.status} with a body that is not JSON") from None
        return _answer(response.status, data)

    def precompile(self, content_hash: str) -> None:
        def send() -> None:
            try:
                self._pool.request(
                    "POST",
                    f"{self._base}/v1/precompile",
                    body=json.dumps({"content_hash": content_hash}).encode(),
                    headers=self._headers,
                    timeout=urllib3.Timeout(connect=2.0, read=120.0),
                )
            except urllib3.exceptions.HTTPError as exc:
                log_event("runner.precompile_failed", content_hash=content_hash, outcome=type(exc).__name__)

        threading.Thread(target=send, name="precompile", daemon=True).start()


class LambdaRunnerClient:
    """The runner as a container-image Lambda, invoked with IAM."""

    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._lambda = lambda_client
        self._function = function_name

    def execute(self, payload: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Invoke the runner; the client's read timeout (see :func:`make_runner_client`) is the
        gateway's deadline, and it never retries: an extension call must not run twice."""
        try:
            response = self._lambda.invoke(
                FunctionName=self._function,
                InvocationType="RequestResponse",
                Payload=json.dumps({"action": "execute", **payload}).encode(),
            )
        except ReadTimeoutError:
            raise ExtensionTimeout(f"the extension did not answer within {timeout_s:.1f} s") from None
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise ExtensionFailed(f"the runner failed: {response['FunctionError']}")
        if isinstance(body, Mapping) and body.get("ok") is True:
            return _answer(200, body.get("response"))
        return _answer(int(body.get("status", 502)) if isinstance(body, Mapping) else 502, body)

    def precompile(self, content_hash: str) -> None:
        self._lambda.invoke(
            FunctionName=self._function,
            InvocationType="Event",
            Payload=json.dumps({"action": "precompile", "content_hash": content_hash}).encode(),
        )


def make_runner_client(settings: Settings, lambda_client: Any = None) -> RunnerClient:
    """Lambda when ``RUNNER_FUNCTION_NAME`` is set, else HTTP to ``RUNNER_BASE_URL``."""
    if settings.runner_function_name:
        if lambda_client is None:
            import boto3

            deadline = Config(
                read_timeout=settings.ext_gateway_timeout_ms / 1000,
                connect_timeout=2,
                retries={"total_max_attempts": 1},
            )
            lambda_client = boto3.client("lambda", region_name=settings.storage_s3_region, config=deadline)
        return LambdaRunnerClient(lambda_client, settings.runner_function_name)
    if settings.runner_base_url:
        return HttpRunnerClient(settings.runner_base_url, settings.runner_auth_token)
    raise ConfigInvalid("set RUNNER_FUNCTION_NAME (AWS) or RUNNER_BASE_URL (local, self-hosted)")
