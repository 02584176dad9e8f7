"""The Chalice app: routes and event handlers only.

Each route authenticates, parses the body into a request type, calls one service
and returns its result's ``to_json()``; the services trust that the caller was
authorized and never see a raw body.  :func:`api` maps every :class:`ExtError` to
the contract's error body in one place.  Authentication happens here rather than
in an API Gateway authorizer so that every surface (API Gateway, ``chalice local``,
``chalice.test``) answers a bad token with the same
``{"error": {"code": "UNAUTHENTICATED", ...}}`` body.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import Chalice, Request, Response, SQSEvent

from chalicelib.admin_ui import admin_asset
from chalicelib.auth import Identity
from chalicelib.bundles.manifest import MAX_ENDPOINT_SEGMENTS
from chalicelib.config import Settings, load_settings
from chalicelib.errors import (
    BadRequest,
    ExtError,
    Forbidden,
    Internal,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    RateLimited,
    Unauthenticated,
    UnsupportedMediaType,
)
from chalicelib.extension_logs import LogQuery
from chalicelib.gateway.service import GatewayRequest
from chalicelib.install_state import KvKeyQuery, KvListQuery, KvPutRequest, UninstallQuery
from chalicelib.logs import LOGGER, bind, configure_logging, log_event
from chalicelib.openapi import openapi_document
from chalicelib.registry import Actor, ExtensionView, InstallChange, InstallRequest, RollbackRequest, TransferRequest
from chalicelib.secrets import PutSecretRequest
from chalicelib.services import Services
from chalicelib.uploads.events import created_objects
from chalicelib.uploads.messages import AbortRequest, FinalizeRequest, InitiateRequest

app = Chalice(app_name="ext-platform")
# Extension answers of these media types reach clients as bytes (API Gateway binary media types).
BINARY_TYPES = (
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "application/wasm",
    "application/gzip",
    "image/*",
    "audio/*",
    "video/*",
    "font/*",
)
app.api.binary_types.extend(BINARY_TYPES)
configure_logging(os.environ.get("LOG_LEVEL", "INFO"))

FINALIZE_QUEUE = os.environ.get("FINALIZE_QUEUE_NAME", "ext-finalize")
_MAX_JSON_BODY = 256 * 1024


_configured: list[Settings] = []
"""Settings given by :func:`use_settings`; empty: the environment's."""


def use_settings(settings: Settings | None) -> None:
    """Serve with ``settings`` from now on (None: the environment's again).

    For the local stack, which runs this app inside its own process with settings it was given.
    """
    _configured[:] = [settings] if settings is not None else []
    services.cache_clear()


@functools.cache
def services() -> Services:
    return Services(_configured[0] if _configured else load_settings())


def _current() -> Request:
    request = app.current_request
    if request is None:
        raise Internal("no current request")
    return request


def _request_id() -> str:
    """API Gateway's id of the current request; one made up once per request where there is none (local)."""
    if app.current_request is None:
        return str(uuid.uuid4())
    context = app.current_request.context
    # Kept in the request's context, so the gateway, the runner's logs and the answer all name one id.
    return str(context.setdefault("requestId", str(uuid.uuid4())))


def _error_response(error: ExtError, request_id: str) -> Response:
    """``error`` as the contract's body; an operator-side failure's detail stays in the logs."""
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    retry_after = error.details.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after)))
    body = json.dumps(error.to_client_dict(request_id))
    return Response(body=body, status_code=error.http_status, headers=headers)


_CHALICE_CODES: dict[str, type[ExtError]] = {
    "MethodNotAllowedError": MethodNotAllowed,
    "UnsupportedMediaType": UnsupportedMediaType,
    # Chalice's own binary check (a binary answer, an Accept that does not admit it); the gateway
    # answers that case itself (``_gateway_response``), so this is the net under it.
    "BadRequest": NotAcceptable,
    "BadRequestError": BadRequest,
    "UnauthorizedError": Unauthenticated,
    "ForbiddenError": Forbidden,
    "NotFoundError": NotFound,
    "TooManyRequestsError": RateLimited,
}


@app.middleware("http")
def contract_errors(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Every answer in the contract's format: Chalice's own rejections (a method or content type the
    route does not take, its binary check, a crash outside :func:`api`) become ``{"error": …}`` too."""
    try:
        response = get_response(event)
    except Exception:
        request_id = _request_id()
        LOGGER.exception("api.crash", extra={"request_id": request_id})
        return _error_response(Internal("unexpected error"), request_id)
    body = response.body
    if not (isinstance(body, dict) and set(body) == {"Code", "Message"}):
        return response
    error_class = _CHALICE_CODES.get(str(body["Code"]), Internal if response.status_code >= 500 else BadRequest)
    answer = _error_response(error_class(str(body["Message"])), _request_id())
    if "Allow" in response.headers:
        answer.headers["Allow"] = response.headers["Allow"]
    return answer


def api(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``view`` and turn its result or error into the contract's JSON."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        request_id = _request_id()
        try:
            with bind(request_id=request_id):
                result = view(*args, **kwargs)
        except ExtError as exc:
            # The whole message, which the client may not get (``hides_detail``), is logged with the request id.
            level = logging.ERROR if exc.hides_detail else logging.INFO
            log_event("api.error", level=level, request_id=request_id, outcome=exc.code, message=exc.message)
            result = _error_response(exc, request_id)
        except Exception:
            LOGGER.exception("api.crash", extra={"request_id": request_id})
            result = _error_response(Internal("unexpected error"), request_id)
        if not isinstance(result, Response):
            result = Response(body=json.dumps(result), status_code=200, headers={"Content-Type": "application/json"})
        # What a caller quotes to find this request in the logs (``extctl call`` prints it).
        result.headers["X-Request-Id"] = request_id
        return result

    return wrapper


def caller() -> Identity:
    identity = services().tokens.verify(_current().headers.get("authorization"))
    identity.require_user()
    return identity


def admin() -> Identity:
    identity = caller()
    identity.require_admin()
    return identity


def operator() -> Identity:
    identity = caller()
    identity.require_operator()
    return identity


def uploader() -> Actor:
    """The admin calling an upload route, as the pipeline knows them."""
    identity = admin()
    return Actor(tenant=identity.tenant, sub=identity.sub)


def _raw_body(request: Request) -> bytes:
    raw = request.raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


def json_body() -> Mapping[str, Any]:
    raw = _raw_body(_current())
    if len(raw) > _MAX_JSON_BODY:
        raise BadRequest(f"the request body is over {_MAX_JSON_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    return body


def created(result: Mapping[str, Any]) -> Response:
    return Response(body=json.dumps(result), status_code=201, headers={"Content-Type": "application/json"})


# --- health and description ------------------------------------------------------------


@app.route("/healthz", methods=["GET"])
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@app.route("/openapi.json", methods=["GET"])
def openapi() -> dict[str, Any]:
    return openapi_document(services().settings.bundle_limits.max_compressed_bytes)


# --- uploads ---------------------------------------------------------------------------------


@app.route("/ext-bundles/initiate-upload", methods=["POST"])
@api
def initiate_upload() -> Response:
    actor, request = uploader(), InitiateRequest.parse(json_body())
    return created(services().pipeline.initiate(actor, request).to_json())


@app.route("/ext-bundles/finalize", methods=["POST"])
@api
def finalize_upload() -> dict[str, Any]:
    actor, request = uploader(), FinalizeRequest.parse(json_body())
    return services().pipeline.finalize(actor, request).to_json()


@app.route("/ext-bundles/abort", methods=["POST"])
@api
def abort_upload() -> dict[str, Any]:
    actor, request = uploader(), AbortRequest.parse(json_body())
    return services().pipeline.abort(actor, request).to_json()


@app.route("/ext-bundles/uploads/{upload_id}", methods=["GET"])
@api
def describe_upload(upload_id: str) -> dict[str, Any]:
    return services().pipeline.describe(uploader(), upload_id).to_json()


@app.on_sqs_message(queue=FINALIZE_QUEUE, batch_size=1)
def finalize_worker(event: SQSEvent) -> None:
    """S3 ObjectCreated (staging/) → SQS → finalize; the same code as the route.

    An error propagates so SQS delivers the message again (and, after the
    redrive limit, parks it in the dead-letter queue).
    """
    for record in event:
        for created in created_objects(record.body):
            services().pipeline.finalize_staging_object(created.key, requested=created.requested)


# --- registry reads ---------------------------------------------------------------------------


@app.route("/extensions", methods=["GET"])
@api
def list_extensions() -> dict[str, Any]:
    identity, with_versions = caller(), _includes_versions(_current())
    listed = services().registry.catalog(identity.tenant, with_versions=with_versions)
    return {"extensions": [view.to_json() for view in listed]}


def _includes_versions(request: Request) -> bool:
    """``?include=versions`` asks for each extension's versions; nothing else may be included."""
    params = request.query_params
    if not params or "include" not in params:
        return False
    if {part for value in params.getlist("include") for part in value.split(",")} != {"versions"}:
        raise BadRequest("`include` may only be `versions`")
    return True


@app.route("/extensions/{name}", methods=["GET"])
@api
def get_extension(name: str) -> dict[str, Any]:
    return services().registry.describe(name, caller().tenant).to_json()


@app.route("/extensions/{name}/transfer", methods=["POST"])
@api
def transfer_extension(name: str) -> dict[str, Any]:
    identity, request = operator(), TransferRequest.parse(json_body())
    actor = Actor(identity.tenant, identity.sub)
    extension, event = services().registry.transfer(name, request, actor=actor, request_id=_request_id())
    view = ExtensionView(extension, owned=extension.owner_tenant == identity.tenant)
    return {"extension": view.to_json(), "event": event.to_json()}


@app.route("/extensions/{name}/audit", methods=["GET"])
@api
def extension_audit(name: str) -> dict[str, Any]:
    operator()
    return {"events": [event.to_json() for event in services().registry.audit_events(name)]}


@app.route("/extensions/{name}/versions", methods=["GET"])
@api
def list_versions(name: str) -> dict[str, Any]:
    caller()
    return {"versions": [v.to_json() for v in services().registry.list_versions(name)]}


@app.route("/extensions/{name}/versions/{version}", methods=["GET"])
@api
def get_version(name: str, version: str) -> dict[str, Any]:
    caller()
    return services().registry.get_version(name, version).to_json()


# --- installs (the caller's tenant only) -----------------------------------------------------


@app.route("/installs", methods=["POST"])
@api
def install() -> Response:
    identity, request = admin(), InstallRequest.parse(json_body())
    record = services().installs.install(
        identity.tenant, request.extension, request.version, by=identity.sub, config=request.config
    )
    return created(record.to_json())


@app.route("/installs", methods=["GET"])
@api
def list_installs() -> dict[str, Any]:
    identity = caller()
    return {"installs": [i.to_json() for i in services().installs.list(identity.tenant)]}


@app.route("/installs/{name}", methods=["GET"])
@api
def get_install(name: str) -> dict[str, Any]:
    return services().installs.get(caller().tenant, name).to_json()


@app.route("/installs/{name}", methods=["PATCH"])
@api
def update_install(name: str) -> dict[str, Any]:
    identity, change = admin(), InstallChange.parse(json_body())
    return services().installs.update(identity.tenant, name, change, by=identity.sub).to_json()


@app.route("/installs/{name}/rollback", methods=["POST"])
@api
def rollback_install(name: str) -> dict[str, Any]:
    identity, request = admin(), RollbackRequest.parse(json_body())
    return services().installs.rollback(identity.tenant, name, request.version, by=identity.sub).to_json()


@app.route("/installs/{name}/logs", methods=["GET"])
@api
def install_logs(name: str) -> dict[str, Any]:
    identity, params = admin(), _current().query_params
    query = LogQuery.parse(name, identity.tenant, {k: params[k] for k in params} if params else {})
    return services().read_logs(query).to_json()


@app.route("/installs/{name}", methods=["DELETE"])
@api
def uninstall(name: str) -> dict[str, Any]:
    identity, query = admin(), UninstallQuery.parse(_query())
    return services().state.uninstall(identity.tenant, name, query).to_json()


def _query() -> dict[str, str]:
    """The query string, one value per name (the last, as API Gateway's ``queryStringParameters`` has it)."""
    params = _current().query_params
    return dict(params) if params else {}


# --- an install's secrets and KV data (its tenant's admins; values of secrets are write-only) --------


@app.route("/installs/{name}/secrets", methods=["GET"])
@api
def list_secrets(name: str) -> dict[str, Any]:
    return services().state.list_secrets(admin().tenant, name).to_json()


@app.route("/installs/{name}/secrets/{secret}", methods=["PUT"])
@api
def put_secret(name: str, secret: str) -> dict[str, Any]:
    identity, request = admin(), PutSecretRequest.parse(json_body())
    return services().state.put_secret(identity.tenant, name, secret, request, by=identity.sub).to_json()


@app.route("/installs/{name}/secrets/{secret}", methods=["DELETE"])
@api
def delete_secret(name: str, secret: str) -> dict[str, Any]:
    services().state.delete_secret(admin().tenant, name, secret)
    return {"name": secret, "deleted": True}


@app.route("/installs/{name}/kv", methods=["GET"])
@api
def list_kv(name: str) -> dict[str, Any]:
    identity, query = admin(), KvListQuery.parse(_query())
    return services().state.kv_list(identity.tenant, name, query).to_json()


@app.route("/installs/{name}/kv/entry", methods=["GET"])
@api
def get_kv(name: str) -> dict[str, Any]:
    identity, query = admin(), KvKeyQuery.parse(_query())
    return services().state.kv_get(identity.tenant, name, query).to_json()


@app.route("/installs/{name}/kv/entry", methods=["PUT"])
@api
def put_kv(name: str) -> dict[str, Any]:
    identity, request = admin(), KvPutRequest.parse(json_body())
    return services().state.kv_put(identity.tenant, name, request).to_json()


@app.route("/installs/{name}/kv/entry", methods=["DELETE"])
@api
def delete_kv(name: str) -> dict[str, Any]:
    identity, query = admin(), KvKeyQuery.parse(_query())
    services().state.kv_delete(identity.tenant, name, query)
    return {"key": query.key, "deleted": True}


# --- the admin UI (static files shipped inside chalicelib/admin_ui) ----------------------------

_ADMIN_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css",
    ".json": "application/json",
}


def _admin_csp() -> str:
    settings = services().settings
    s3 = settings.storage_s3_endpoint or os.environ.get("AWS_ENDPOINT_URL") or "https://*.amazonaws.com"
    runner = settings.runner_public_base or "'none'"
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {s3}; frame-src {runner}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def _admin_file(name: str) -> Response:
    try:
        asset = admin_asset(name)
    except KeyError:
        return Response(body="not found", status_code=404, headers={"Content-Type": "text/plain"})
    headers: dict[str, str | list[str]] = {
        "Content-Type": _ADMIN_TYPES[os.path.splitext(name)[1]],
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if name.endswith(".html"):
        headers["Content-Security-Policy"] = _admin_csp()
        headers["X-Frame-Options"] = "DENY"
    return Response(body=asset, status_code=200, headers=headers)


@app.route("/admin", methods=["GET"])
def admin_page() -> Response:
    return _admin_file("index.html")


@app.route("/admin/{asset}", methods=["GET"])
def admin_static(asset: str) -> Response:
    if asset == "config.json":
        settings = services().settings
        config = {
            "runner_public_base": settings.runner_public_base,
            "max_bundle_bytes": settings.bundle_max_compressed_bytes,
            "multipart_threshold_bytes": settings.upload_multipart_threshold_bytes,
        }
        return Response(body=json.dumps(config), status_code=200, headers={"Content-Type": "application/json"})
    return _admin_file(asset)


# --- the gateway ---------------------------------------------------------------------------------

_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml", "+json", "+xml")


def _is_binary_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return any(media == t or (t.endswith("/*") and media.startswith(t[:-1])) for t in BINARY_TYPES)


def _accepts_binary(accept: str | None) -> bool:
    """Whether API Gateway (and Chalice, which checks as it does) hands a binary answer to a request with
    this ``Accept``: it must name ``*/*`` or one of the binary media types as listed."""
    if accept is None:
        return False
    ranges = {part.strip() for part in re.split("[,;]", accept.lower())}
    return "*/*" in ranges or any(t in ranges for t in BINARY_TYPES)


def _gateway_response(status: int, headers: dict[str, str], body: bytes, accept: str | None) -> Response:
    # One spelling per header name, or Chalice adds a second Content-Type.
    canonical: dict[str, str | list[str]] = {
        "-".join(p.capitalize() for p in k.split("-")): v for k, v in headers.items()
    }
    content_type = str(canonical.setdefault("Content-Type", "application/octet-stream"))
    if any(marker in content_type for marker in _TEXT_TYPES):
        return Response(body=body.decode("utf-8", errors="replace"), status_code=status, headers=canonical)
    if not _is_binary_type(content_type):
        # API Gateway passes bytes only for its binary media types: other types go out
        # as octet-stream, with the extension's own type alongside.
        canonical["X-Ext-Content-Type"] = content_type
        canonical["Content-Type"] = "application/octet-stream"
    media = str(canonical["Content-Type"]).split(";", 1)[0].strip().lower()
    if media in BINARY_TYPES and not _accepts_binary(accept):
        raise NotAcceptable(
            f"the extension answered {media}, which reaches a client as bytes only when the request's "
            f"Accept names it or */* (this one: {accept or 'none'})"
        )
    return Response(body=body, status_code=status, headers=canonical)


@api
def gateway(extension: str, **segments: str) -> Response:
    """``ANY /api/ext/{extension}/{path…}``; Chalice has no greedy path parameter,
    so one route per depth (up to MAX_ENDPOINT_SEGMENTS) shares this view."""
    request = _current()
    identity = caller()
    path = "/" + "/".join(segments[f"p{i}"] for i in range(len(segments)))
    query = request.query_params
    result = services().gateway.handle(
        identity,
        GatewayRequest(
            extension=extension,
            method=request.method,
            path=path,
            query={k: query.getlist(k) for k in query} if query else {},
            headers=dict(request.headers),
            body=_raw_body(request),
            request_id=_request_id(),
        ),
    )
    return _gateway_response(result.status, result.headers, result.body, request.headers.get("accept"))


for _depth in range(MAX_ENDPOINT_SEGMENTS + 1):
    app.route(
        "/api/ext/{extension}" + "".join(f"/{{p{i}}}" for i in range(_depth)),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        content_types=["*/*"],
        name=f"gateway_{_depth}",
    )(gateway)
