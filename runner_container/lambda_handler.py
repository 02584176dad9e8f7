"""The runner image's Lambda entry points: ``handler`` (the runner, and ``RunnerUi``) and ``compile_handler``.

The image runs as three functions.  The runner and ``RunnerUi`` use ``handler``
(:attr:`FunctionRole.RUNNER`), the compile function ``compile_handler`` (:attr:`FunctionRole.COMPILER`, set
as the function's image command); each accepts only its own work, so only the compile function compiles:

- direct invokes (IAM ``lambda:InvokeFunction``), whose JSON is the payload itself: to the runner, from the
  gateway, ``{"action": "execute", "content_hash", "extension", "granted_capabilities", "request"}``; to the
  compile function, asynchronously from the finalize worker and from runners that meet code with no compile
  outcome, ``{"action": "precompile", "content_hash"}`` (the compile job).  The answer is
  ``{"ok": true, "response": {...}}`` or ``{"ok": false, "error": {"code", "message", "request_id"},
  "status": <HTTP status>, "retry_after"?: <seconds>}``; errors are answers, not Lambda function errors, so
  the gateway maps them the same way as in HTTP mode.  The other function's action is ``BAD_REQUEST``;
- HTTP events from a Function URL or API Gateway (payload formats 1.0 and 2.0) for the public routes,
  ``GET|HEAD /ext-ui/…`` and ``/healthz`` (runner role only), answered as ``{"statusCode", "headers",
  "body", "isBase64Encoded"}``.

The service (engine, S3 client, cache) is built on the first event and kept for the container's life.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from chalicelib.config import load_settings
from chalicelib.errors import BadRequest, ExtError, Internal, NotFound
from chalicelib.logs import LOGGER
from runner_container.compile_jobs import LambdaJobs
from runner_container.http_responses import (
    SAFE_METHODS,
    HttpResponse,
    error_response,
    json_response,
    log_error_detail,
    method_not_allowed,
)
from runner_container.service import RunnerService, build_service, configure_process_logging
from runner_container.ui import UI_PREFIX

__all__ = ["APP", "COMPILER", "MAX_HTTP_BODY_BYTES", "FunctionRole", "RunnerLambda", "compile_handler", "handler"]

MAX_HTTP_BODY_BYTES = 4 * 1024 * 1024
"""Largest asset served through Lambda: base64 makes it ~5.6 MB, under Lambda's 6 MB response limit.
Larger ones are ``413 ASSET_TOO_LARGE``, never read."""
_TEXT_TYPES = ("text/", "application/json", "image/svg+xml", "application/javascript")


class FunctionRole(StrEnum):
    """Which function of the image this is, and so which invokes it answers."""

    RUNNER = "runner"
    """``execute`` (the gateway) and the public HTTP routes (``RunnerUi``)."""
    COMPILER = "compiler"
    """``precompile`` only: compile jobs, with the memory and time they need."""


_ACTIONS = {FunctionRole.RUNNER: "execute", FunctionRole.COMPILER: "precompile"}


def _as_text(body: bytes, content_type: str) -> str | None:
    """The body as text when its type is textual and it is valid UTF-8; None means send it base64."""
    if not content_type.startswith(_TEXT_TYPES):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _http_event_parts(event: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    """Method, raw path and lower-cased headers of a payload format 1.0 or 2.0 HTTP event."""
    if "rawPath" in event:
        method = str(event["requestContext"]["http"]["method"])
        path = str(event["rawPath"])
    else:
        method = str(event["httpMethod"])
        path = str(event["path"])
    headers = {str(name).lower(): str(value) for name, value in (event.get("headers") or {}).items()}
    return method.upper(), path, headers


def _is_http_event(event: Mapping[str, Any]) -> bool:
    return "rawPath" in event or "httpMethod" in event


def _lambda_response(response: HttpResponse, request_id: str, *, head: bool) -> dict[str, Any]:
    headers = {**response.headers, "X-Request-Id": request_id}
    if head:
        response.close()
        return {"statusCode": response.status, "headers": headers, "body": "", "isBase64Encoded": False}
    # UiServer refuses assets over MAX_HTTP_BODY_BYTES before opening them, so this body fits.
    body = response.read_body()
    text = _as_text(body, headers.get("Content-Type", ""))
    if text is not None:
        return {"statusCode": response.status, "headers": headers, "body": text, "isBase64Encoded": False}
    encoded = base64.b64encode(body).decode("ascii")
    return {"statusCode": response.status, "headers": headers, "body": encoded, "isBase64Encoded": True}


class RunnerLambda:
    """The Lambda entry point of a function of ``role`` around a service built once, lazily, by ``factory``."""

    def __init__(self, factory: Callable[[], RunnerService], *, role: FunctionRole = FunctionRole.RUNNER) -> None:
        self._factory = factory
        self._role = role
        self._service: RunnerService | None = None
        self._lock = threading.Lock()

    @property
    def service(self) -> RunnerService:
        with self._lock:
            if self._service is None:
                self._service = self._factory()
            return self._service

    def close(self) -> None:
        """Release the service (tests; a container just ends); the next event builds a new one."""
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service = None

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        request_id = str(getattr(context, "aws_request_id", "") or uuid.uuid4().hex)
        if isinstance(event, Mapping) and _is_http_event(event) and self._role is FunctionRole.RUNNER:
            return self._http(event, request_id)
        try:
            if not isinstance(event, Mapping) or "action" not in event:
                raise BadRequest("expected an invoke event with an 'action', or an HTTP event")
            return {"ok": True, "response": self._invoke(event)}
        except ExtError as exc:
            log_error_detail(exc, request_id)
            answer = {"ok": False, "error": exc.to_client_dict(request_id)["error"], "status": exc.http_status}
            if "retry_after" in exc.details:
                answer["retry_after"] = exc.details["retry_after"]
            return answer
        except Exception:
            LOGGER.exception("runner.unhandled_error", extra={"request_id": request_id})
            internal = Internal("unexpected runner error")
            return {"ok": False, "error": internal.to_client_dict(request_id)["error"], "status": internal.http_status}

    def _invoke(self, event: Mapping[str, Any]) -> dict[str, Any]:
        action, expected = event["action"], _ACTIONS[self._role]
        if action != expected:
            other = {value: role for role, value in _ACTIONS.items()}.get(action)
            if other is not None:
                raise BadRequest(f"{action!r} goes to the {other.value} function; this is the {self._role.value}")
            raise BadRequest(f"unknown action {action!r}; the {self._role.value} function answers {expected!r}")
        if action == "execute":
            payload = {key: value for key, value in event.items() if key != "action"}
            return self.service.execute(payload).to_dict()
        return self.service.precompile(event.get("content_hash")).to_dict()

    def _http(self, event: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        try:
            method, path, headers = _http_event_parts(event)
        except (KeyError, TypeError):
            return _lambda_response(
                error_response(BadRequest("malformed HTTP event"), request_id), request_id, head=False
            )
        try:
            response = self._route(method, path, headers, request_id)
        except ExtError as exc:
            response = error_response(exc, request_id)
        except Exception:
            LOGGER.exception("runner.unhandled_error", extra={"request_id": request_id})
            response = error_response(Internal("unexpected runner error"), request_id)
        return _lambda_response(response, request_id, head=method == "HEAD")

    def _route(self, method: str, path: str, headers: Mapping[str, str], request_id: str) -> HttpResponse:
        if path.startswith(UI_PREFIX):
            if_none_match = headers.get("if-none-match")
            return self.service.ui.serve(
                method, path, if_none_match=if_none_match, request_id=request_id, max_asset_bytes=MAX_HTTP_BODY_BYTES
            )
        if path == "/healthz":
            if method not in SAFE_METHODS:
                return method_not_allowed(method, SAFE_METHODS, request_id)
            # The function URL is public: no versions or cache figures (they are in the logs).
            return json_response(200, {"status": "ok"}, {"Cache-Control": "no-store"})
        raise NotFound(f"no route {path} (execute and precompile are direct invokes)")


def _build() -> RunnerService:
    settings = load_settings()
    configure_process_logging(settings.log_level)
    jobs = None
    if settings.runner_compile_function_name:
        import boto3

        # A request asks again only after a job had time to finish (its timeout, plus the fetch and upload).
        cooldown_s = settings.runner_compile_timeout_ms / 1000 + 60
        client = boto3.client("lambda", region_name=settings.storage_s3_region)
        jobs = LambdaJobs(client, settings.runner_compile_function_name, cooldown_s=cooldown_s)
    return build_service(settings, compile_jobs=jobs)


APP = RunnerLambda(_build)
COMPILER = RunnerLambda(_build, role=FunctionRole.COMPILER)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The runner's Lambda handler (the image's ``CMD ["runner_container.lambda_handler.handler"]``)."""
    return APP(event, context)


def compile_handler(event: Any, context: Any) -> dict[str, Any]:
    """The compile function's handler (its ``ImageConfig`` command)."""
    return COMPILER(event, context)
