"""Talking to the runner: Lambda ``Invoke`` in AWS, HTTP locally and self-hosted.

Both transports carry the same payloads (DESIGN §6): ``execute`` answers with the
extension's normalized response, ``precompile`` is fire-and-forget right after a
publish so the first request finds compiled code. In AWS only the compile function
(``RUNNER_COMPILE_FUNCTION_NAME``, with the memory and time for it) compiles: without
one no job is asked for (the first call asks), never the runner function, which
refuses compile jobs (:func:`make_compile_client`).

Errors keep the runner's code and its ``retry_after``; throttling and capacity
errors of the transport (Lambda's ``TooManyRequestsException``, a runner that
refuses connections) are ``RUNNER_BUSY`` with ``retry_after``, never ``INTERNAL``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from chalicelib.config import Settings
from chalicelib.errors import ExtensionFailed, ExtensionTimeout, RunnerBusy, SettingsInvalid, error_for_code
from chalicelib.logs import log_event

__all__ = [
    "CompileClient",
    "HttpRunnerClient",
    "LambdaCompileClient",
    "LambdaRunnerClient",
    "RunnerClient",
    "make_compile_client",
    "make_runner_client",
]


class CompileClient(Protocol):
    def precompile(self, content_hash: str) -> None:
        """Ask for the compile job of ``content_hash``; returns at once."""
        ...


class RunnerClient(CompileClient, Protocol):
    def execute(self, payload: Mapping[str, Any], timeout_s: float) -> dict[str, Any]: ...


BUSY_RETRY_AFTER_S = 1
_LAMBDA_BUSY_CODES = frozenset(
    {
        "TooManyRequestsException",
        "EC2ThrottledException",
        "ResourceNotReadyException",
        "ServiceException",
        "SnapStartNotReadyException",
    }
)
"""Lambda errors that mean "no capacity now" (throttled, scaling, Lambda's own 500), not a bad request."""


def _busy(why: str) -> RunnerBusy:
    return RunnerBusy(f"the runner is busy ({why}); retry in {BUSY_RETRY_AFTER_S} s", retry_after=BUSY_RETRY_AFTER_S)


def _retry_after(value: object) -> int | None:
    try:
        seconds = int(str(value))
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _answer(status: int, data: Any, retry_after: object = None) -> dict[str, Any]:
    """The runner's response, or its error raised with the runner's own code and ``retry_after``."""
    if isinstance(data, Mapping) and isinstance(data.get("error"), Mapping):
        error = data["error"]
        details = {}
        seconds = _retry_after(retry_after)
        if seconds is not None:
            details["retry_after"] = seconds
        code = str(error.get("code", "EXTENSION_FAILED"))
        raise error_for_code(code, str(error.get("message", "runner error")), **details)
    if status != 200 or not isinstance(data, Mapping) or not isinstance(data.get("status"), int):
        raise ExtensionFailed(f"the runner answered {status} without a usable response")
    return dict(data)


class HttpRunnerClient:
    """The runner's HTTP mode (``POST /v1/execute``), over a keep-alive pool."""

    def __init__(self, base_url: str, token: str, *, pool_size: int = 16, precompile_wait_s: float = 300.0) -> None:
        self._base = base_url.rstrip("/")
        self._precompile_wait_s = precompile_wait_s
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
        except urllib3.exceptions.ReadTimeoutError:
            raise ExtensionTimeout(f"the extension did not answer within {timeout_s:.1f} s") from None
        except (
            urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ProtocolError,
        ) as exc:
            # Refused, reset or not accepted in time: a runner out of capacity (or restarting).
            raise _busy(type(exc).__name__) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ExtensionFailed(f"the runner is unreachable: {type(exc).__name__}") from None
        try:
            data = json.loads(response.data)
        except ValueError:
            raise ExtensionFailed(f"the runner answered {response.status} with a body that is not JSON") from None
        return _answer(response.status, data, response.headers.get("Retry-After"))

    def precompile(self, content_hash: str) -> None:
        def send() -> None:
            try:
                self._pool.request(
                    "POST",
                    f"{self._base}/v1/precompile",
                    body=json.dumps({"content_hash": content_hash}).encode(),
                    headers=self._headers,
                    # The runner answers once the job is done; waiting is this thread's only work.
                    timeout=urllib3.Timeout(connect=2.0, read=self._precompile_wait_s),
                )
            except urllib3.exceptions.HTTPError as exc:
                log_event("runner.precompile_failed", content_hash=content_hash, outcome=type(exc).__name__)

        threading.Thread(target=send, name="precompile", daemon=True).start()


class LambdaRunnerClient:
    """The runner as a container-image Lambda, invoked with IAM; compile jobs go to ``compile_function``."""

    def __init__(self, lambda_client: Any, function_name: str, compile_function: str = "") -> None:
        self._lambda = lambda_client
        self._function = function_name
        self._compile = LambdaCompileClient(lambda_client, compile_function) if compile_function else None

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
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            raise _busy(type(exc).__name__) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _LAMBDA_BUSY_CODES:
                raise _busy(code) from None
            raise
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise ExtensionFailed(f"the runner failed: {response['FunctionError']}")
        if isinstance(body, Mapping) and body.get("ok") is True:
            return _answer(200, body.get("response"))
        if isinstance(body, Mapping):
            return _answer(int(body.get("status", 502)), body, body.get("retry_after"))
        return _answer(502, body)

    def precompile(self, content_hash: str) -> None:
        """A job for the compile function; without one, none (the runner function refuses compile jobs)."""
        if self._compile is None:
            log_event("runner.precompile_skipped", content_hash=content_hash, reason="no compile function")
            return
        self._compile.precompile(content_hash)


class LambdaCompileClient:
    """The compile function (AWS): one asynchronous ``precompile`` invoke per request."""

    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._lambda = lambda_client
        self._function = function_name

    def precompile(self, content_hash: str) -> None:
        self._lambda.invoke(
            FunctionName=self._function,
            InvocationType="Event",
            Payload=json.dumps({"action": "precompile", "content_hash": content_hash}).encode(),
        )


def make_compile_client(settings: Settings, lambda_client: Any = None) -> CompileClient | None:
    """Who runs the compile job after a publish: the compile function when ``RUNNER_COMPILE_FUNCTION_NAME`` is
    set (AWS), else the HTTP runner at ``RUNNER_BASE_URL``; None when neither is (the first call asks)."""
    if settings.runner_compile_function_name:
        if lambda_client is None:
            import boto3

            lambda_client = boto3.client("lambda", region_name=settings.storage_s3_region)
        return LambdaCompileClient(lambda_client, settings.runner_compile_function_name)
    if settings.runner_base_url:
        return _http_client(settings)
    return None


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
        return LambdaRunnerClient(lambda_client, settings.runner_function_name, settings.runner_compile_function_name)
    if settings.runner_base_url:
        return _http_client(settings)
    raise SettingsInvalid("set RUNNER_FUNCTION_NAME (AWS) or RUNNER_BASE_URL (local, self-hosted)")


def _http_client(settings: Settings) -> HttpRunnerClient:
    # The HTTP runner answers a precompile once its job is done: wait for the job's limit and a margin.
    wait_s = settings.runner_compile_timeout_ms / 1000 + 60
    return HttpRunnerClient(settings.runner_base_url, settings.runner_auth_token, precompile_wait_s=wait_s)
