"""The OpenAPI 3.1 document of the HTTP API (DESIGN §5), served at ``/openapi.json``.

A test checks that it documents exactly the routes the Chalice app has.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from chalicelib.config import load_settings
from chalicelib.errors import ALL_ERRORS

__all__ = ["openapi_document"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {_JSON: {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {_JSON: {"schema": schema}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "error", "content": {_JSON: {"schema": _ref("Error")}}}
        for s in sorted({401, 403, 429, 500, *statuses})
    }


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    tag: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        op["requestBody"] = _body(body, required=body_required)
    return op


def _public(op: dict[str, Any]) -> dict[str, Any]:
    """``op`` without authentication."""
    return {**op, "security": []}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_HASH = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
_TEXT = {"type": "string", "minLength": 1}
"""A string the server refuses empty."""
_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": _STR}
_SECRET_NAME = {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,63}$"}
# ``required`` is also _obj's first parameter: schemas with a property of that name are spelt out.
_SECRET_SPEC: dict[str, Any] = {"name": _SECRET_NAME, "description": {"type": ["string", "null"]}, "required": _BOOL}
_SECRET_PARAM = {"name": "secret", "in": "path", "required": True, "schema": _STR, "description": "a declared name"}
_KV_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 512,
    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]+$",
    "description": "1–512 bytes of UTF-8, no control characters",
}
_UTF8_TEXT = {"type": "string", "pattern": "^[^\\ud800-\\udfff]*$"}
"""Text that encodes as UTF-8 (no lone surrogates)."""
_BASE64 = {"type": "string", "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
_KEY_PARAM = {"name": "key", "in": "query", "required": True, "schema": _KV_KEY, "description": "the key"}

_B64_TAIL = "([A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?"
_ED25519_SIGNATURE = {"type": "string", "pattern": "^[A-Za-z0-9+/]{85}[AQgw]==$"}
"""64 bytes, canonical base64."""
_ECDSA_SIGNATURE = {
    "type": "string",
    "minLength": 12,
    "maxLength": 96,
    "pattern": f"^([A-Za-z0-9+/]{{4}})*{_B64_TAIL}$",
}
"""8 to 72 bytes (DER), canonical base64."""


def _envelope(algorithm: str, signature: dict[str, Any]) -> dict[str, Any]:
    return {
        **_obj(
            ["format", "content_hash", "algorithm", "key_id", "signature"],
            format={"const": "ext-bundle-signature/v1"},
            content_hash=_HASH,
            algorithm={"const": algorithm},
            key_id=_HASH,
            signature=signature,
        ),
        "additionalProperties": False,
    }


_OPTIONAL_SIGNATURE = {"anyOf": [_ref("SignatureEnvelope"), {"type": "null"}]}

_SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["error"],
        error=_obj(
            ["code", "message"],
            code={"type": "string", "enum": sorted({cls.code for cls in ALL_ERRORS})},
            message=_STR,
            request_id=_STR,
        ),
    ),
    "LogLine": _obj(
        ["ts", "kind", "level"],
        ts={"type": "number", "description": "Unix time in seconds"},
        kind={"enum": ["call", "log"]},
        level=_STR,
        message=_STR,
        request_id=_STR,
        version=_STR,
        outcome={"type": "string", "description": "a call's `ok` or error code"},
        status=_INT,
        duration_ms={"type": "number"},
        truncated=_BOOL,
        backtrace={"type": "array", "items": _STR, "description": "a trap's frames, innermost first"},
        stderr={"type": "string", "description": "the end of the guest's stderr when the call failed"},
    ),
    "SignatureEnvelope": {
        "description": "An exact ext-bundle-signature/v1 envelope; `signature` is canonical standard base64.",
        "oneOf": [_envelope("ed25519", _ED25519_SIGNATURE), _envelope("ecdsa-p256-sha256", _ECDSA_SIGNATURE)],
    },
    "InitiateUpload": _obj(
        ["size"],
        size={"type": "integer", "minimum": 1},
        sha256={"type": ["string", "null"], "pattern": "^(sha256:)?[0-9a-f]{64}$"},
        signature=_OPTIONAL_SIGNATURE,
    ),
    "UploadTarget": _obj(
        ["upload_id", "method", "headers", "expires_at"],
        upload_id=_STR,
        method={"enum": ["PUT", "MULTIPART"]},
        url=_STR,
        parts={"type": "array", "items": _obj(["part_number", "url"], part_number=_INT, url=_STR)},
        part_size=_INT,
        headers={"type": "object", "additionalProperties": _STR},
        expires_at={"type": "string", "format": "date-time"},
        size=_INT,
    ),
    "Finalize": _obj(
        ["upload_id"],
        upload_id=_TEXT,
        parts={"type": ["array", "null"], "items": _obj(["part_number", "etag"], part_number=_INT, etag=_STR)},
        signature=_OPTIONAL_SIGNATURE,
    ),
    "FinalizeResult": _obj(
        ["content_hash", "extension", "version", "status", "signature_status"],
        upload_id=_STR,
        content_hash=_HASH,
        extension=_STR,
        version=_STR,
        status={"enum": ["finalized", "already_finalized"]},
        signature_status={"enum": ["verified", "unsigned", "unverified"]},
        key_id={"type": ["string", "null"]},
        size=_INT,
    ),
    "UploadId": _obj(["upload_id"], upload_id=_TEXT),
    "Upload": _obj(["upload_id", "state"], upload_id=_STR, state=_STR, size=_INT, parts={"type": "array"}),
    "Extension": _obj(
        ["name", "publisher"],
        name=_STR,
        publisher=_STR,
        owner_publisher={
            "type": ["string", "null"],
            "description": "With a trust bundle: the trusted publisher (the signing keys' `# publisher:`) "
            "that owns the name; null for a name a tenant owns.",
        },
        latest_version=_STR,
        owned={
            "type": "boolean",
            "description": "Whether the caller's tenant owns the name (never, for a name a trusted publisher owns).",
        },
        versions={"type": "array", "items": _ref("Version"), "description": "highest first"},
    ),
    "Owner": {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {"tenant": _STR, "publisher": _STR},
    },
    "Transfer": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {
            "to_publisher": {**_TEXT, "description": "With a trust bundle: one of its publishers."},
            "to_tenant": {**_TEXT, "description": "Without a trust bundle: a tenant id."},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "\\S"},
        },
        "oneOf": [{"required": ["to_publisher"]}, {"required": ["to_tenant"]}],
    },
    "AuditEvent": _obj(
        ["action", "at", "actor", "from", "to", "reason"],
        subject=_STR,
        event_id=_STR,
        action={"enum": ["name.transfer", "name.adopt"]},
        at={"type": "string", "format": "date-time"},
        actor=_obj(["tenant", "sub"], tenant=_STR, sub=_STR),
        **{"from": _ref("Owner"), "to": _ref("Owner")},
        reason=_STR,
        request_id={"type": ["string", "null"]},
    ),
    "Version": _obj(
        ["name", "version", "content_hash"],
        name=_STR,
        version=_STR,
        publisher=_STR,
        content_hash=_HASH,
        capabilities={"type": "array", "items": _STR},
        egress={"type": "array", "items": _STR},
        config_schema={"type": ["object", "null"], "description": "the JSON Schema an install's config must fit"},
        secrets={
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": _SECRET_SPEC},
        },
        size=_INT,
        signature_status=_STR,
        key_id={"type": ["string", "null"]},
        created_at=_STR,
    ),
    "Install": _obj(
        ["extension", "version", "content_hash", "enabled"],
        extension=_STR,
        install_id=_STR,
        version=_STR,
        content_hash=_HASH,
        enabled=_BOOL,
        config={"type": "object"},
        granted_capabilities={"type": "array", "items": _STR},
        history={"type": "array"},
    ),
    "InstallRequest": _obj(
        ["extension", "version"],
        extension=_TEXT,
        version=_TEXT,
        config={
            "type": "object",
            "description": "must fit the version's `config_schema` (`CONFIG_INVALID` names the field); default `{}`"
            ", or the install's current config when it already exists",
        },
    ),
    "Uninstalled": _obj(
        ["extension", "status"],
        extension=_STR,
        status={
            "enum": ["uninstalled", "purged"],
            "description": "`purged`: with `purge=true`, no install was left and only its data was deleted",
        },
        purged=_obj(["kv_keys", "secrets"], kv_keys=_INT, secrets=_INT),
    ),
    "SecretValue": {
        "type": "object",
        "required": ["value"],
        "additionalProperties": False,
        "properties": {"value": {**_UTF8_TEXT, "minLength": 1, "description": "1 B to 8 KiB of UTF-8; never returned"}},
    },
    "SecretStatus": {
        "type": "object",
        "required": ["name", "description", "declared", "required", "set", "missing", "updated_at"],
        "properties": {
            **_SECRET_SPEC,
            "declared": {
                "type": "boolean",
                "description": "false: stored, but the installed version no longer declares it",
            },
            "set": _BOOL,
            "missing": {"type": "boolean", "description": "required and not set"},
            "updated_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "SecretList": _obj(["secrets"], secrets={"type": "array", "items": _ref("SecretStatus")}),
    "SecretDeleted": _obj(["name", "deleted"], name=_SECRET_NAME, deleted={"const": True}),
    "KvPut": {
        "type": "object",
        "required": ["key"],
        "additionalProperties": False,
        "properties": {
            "key": _KV_KEY,
            "value": {**_UTF8_TEXT, "description": "UTF-8 text to store (or `value_b64`)"},
            "value_b64": {**_BASE64, "contentEncoding": "base64", "description": "bytes to store, ≤ 64 KiB"},
            "if_revision": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 2**64 - 1,
                "description": "absent or null: always write; 0: only a new key; n: only over revision n",
            },
        },
        "oneOf": [{"required": ["value"]}, {"required": ["value_b64"]}],
    },
    "KvValue": _obj(
        ["key", "value_b64", "revision"],
        key=_STR,
        value_b64={"type": "string", "contentEncoding": "base64"},
        revision=_INT,
    ),
    "KvStored": _obj(["key", "revision"], key=_STR, revision=_INT),
    "KvDeleted": _obj(["key", "deleted"], key=_STR, deleted={"const": True}),
    "KvListing": _obj(
        ["keys", "cursor", "usage"],
        keys={"type": "array", "items": _STR, "description": "in key order (UTF-8 bytes)"},
        cursor={"type": ["string", "null"], "description": "the next page's `cursor`; null on the last page"},
        usage=_obj(["keys", "bytes"], keys=_INT, bytes=_INT),
    ),
    "InstallUpdate": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {"enabled": _BOOL, "version": _TEXT, "config": {"type": "object"}},
    },
}


def _gateway() -> dict[str, Any]:
    """``/api/ext/{extension}/{path…}``: the extension's own answer, or the platform's error."""
    operation = {
        "summary": "Call an installed extension's endpoint; `path` may hold several segments (a/b/c)",
        "tags": ["gateway"],
        "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
        "responses": {
            "default": {"description": "the extension's answer: its status, allowlisted headers and body"},
            **_errors(404, 406, 413, 502, 503, 504),
        },
    }
    return {
        "parameters": [
            {"name": "extension", "in": "path", "required": True, "schema": _STR},
            {"name": "path", "in": "path", "required": True, "schema": _STR},
        ],
        **dict.fromkeys(("get", "post", "put", "patch", "delete"), operation),
    }


def _paths() -> dict[str, Any]:
    ext = "extensions"
    inst = "installs"
    state = "install state"
    up = "uploads"
    return {
        "/healthz": {"get": _public(_op("Liveness", _ok("ok", {"type": "object"}), tag="meta"))},
        "/openapi.json": {"get": _public(_op("This document", _ok("OpenAPI", {"type": "object"}), tag="meta"))},
        "/ext-bundles/initiate-upload": {
            "post": _op(
                "Start an upload: presigned PUT or multipart parts",
                {**_ok("where to upload", _ref("UploadTarget"), "201"), **_errors(400, 413)},
                body=_ref("InitiateUpload"),
                tag=up,
            )
        },
        "/ext-bundles/finalize": {
            "post": _op(
                "Verify, store and register the uploaded bundle (idempotent)",
                {**_ok("registered", _ref("FinalizeResult")), **_errors(400, 404, 409, 410, 413, 503)},
                body=_ref("Finalize"),
                tag=up,
            )
        },
        "/ext-bundles/abort": {
            "post": _op(
                "Abort an upload and clean its staging state",
                {**_ok("aborted", {"type": "object"}), **_errors(400, 404, 409)},
                body=_ref("UploadId"),
                tag=up,
            )
        },
        "/ext-bundles/uploads/{upload_id}": {
            "get": {
                **_op(
                    "An upload session; for multipart, held parts and fresh URLs to resume",
                    {**_ok("session", _ref("Upload")), **_errors(404)},
                    tag=up,
                ),
                "parameters": [{"name": "upload_id", "in": "path", "required": True, "schema": _STR}],
            }
        },
        "/extensions": {
            "get": {
                **_op(
                    "Every extension; with `include=versions`, each with its versions (one request, not one per name)",
                    {
                        **_ok("list", _obj(["extensions"], extensions={"type": "array", "items": _ref("Extension")})),
                        **_errors(400),
                    },
                    tag=ext,
                ),
                "parameters": [
                    {
                        "name": "include",
                        "in": "query",
                        "required": False,
                        "description": "`versions`: add each extension's versions, highest first",
                        "schema": {"enum": ["versions"]},
                    }
                ],
            }
        },
        "/extensions/{name}": {
            "get": {
                **_op(
                    "One extension with its versions", {**_ok("extension", _ref("Extension")), **_errors(404)}, tag=ext
                ),
                "parameters": [_NAME_PARAM],
            }
        },
        "/extensions/{name}/transfer": {
            "post": {
                **_op(
                    "Operators: give the name to another owner (audited)",
                    {
                        **_ok(
                            "transferred",
                            _obj(["extension", "event"], extension=_ref("Extension"), event=_ref("AuditEvent")),
                        ),
                        **_errors(400, 404, 503),
                    },
                    body=_ref("Transfer"),
                    tag=ext,
                ),
                "parameters": [_NAME_PARAM],
            }
        },
        "/extensions/{name}/audit": {
            "get": {
                **_op(
                    "Operators: every change of the name's owner, oldest first",
                    {
                        **_ok("events", _obj(["events"], events={"type": "array", "items": _ref("AuditEvent")})),
                        **_errors(404),
                    },
                    tag=ext,
                ),
                "parameters": [_NAME_PARAM],
            }
        },
        "/extensions/{name}/versions": {
            "get": {
                **_op(
                    "Versions, highest first",
                    {
                        **_ok("versions", _obj(["versions"], versions={"type": "array", "items": _ref("Version")})),
                        **_errors(404),
                    },
                    tag=ext,
                ),
                "parameters": [_NAME_PARAM],
            }
        },
        "/extensions/{name}/versions/{version}": {
            "get": {
                **_op("One version", {**_ok("version", _ref("Version")), **_errors(404)}, tag=ext),
                "parameters": [_NAME_PARAM, {"name": "version", "in": "path", "required": True, "schema": _STR}],
            }
        },
        "/api/ext/{extension}/{path}": _gateway(),
        "/installs": {
            "get": _op(
                "The tenant's installs",
                {**_ok("installs", _obj(["installs"], installs={"type": "array"})), **_errors()},
                tag=inst,
            ),
            "post": _op(
                "Install a version for the tenant",
                {**_ok("installed", _ref("Install"), "201"), **_errors(400, 404)},
                body=_ref("InstallRequest"),
                tag=inst,
            ),
        },
        "/installs/{name}": {
            "parameters": [_NAME_PARAM],
            "get": _op("One install", {**_ok("install", _ref("Install")), **_errors(404)}, tag=inst),
            "patch": _op(
                "Enable, disable, upgrade, roll back (a version from history) or configure",
                {**_ok("install", _ref("Install")), **_errors(400, 404)},
                body=_ref("InstallUpdate"),
                tag=inst,
            ),
            "delete": {
                **_op(
                    "Uninstall; with `purge=true` also delete the install's KV data and secrets (kept otherwise)",
                    {**_ok("uninstalled", _ref("Uninstalled")), **_errors(400, 404, 503)},
                    tag=inst,
                ),
                "parameters": [
                    {
                        "name": "purge",
                        "in": "query",
                        "required": False,
                        "description": "`true`: delete KV data and secrets now (also when no install is left)",
                        "schema": {"enum": ["true", "false"], "default": "false"},
                    }
                ],
            },
        },
        "/installs/{name}/secrets": {
            "parameters": [_NAME_PARAM],
            "get": _op(
                "Admins: the declared secrets and whether each is set (never a value)",
                {**_ok("secrets", _ref("SecretList")), **_errors(400, 404, 503)},
                tag=state,
            ),
        },
        "/installs/{name}/secrets/{secret}": {
            "parameters": [_NAME_PARAM, _SECRET_PARAM],
            "put": _op(
                "Admins: set or replace a declared secret (write-only: the value is never returned)",
                {**_ok("stored", _ref("SecretStatus")), **_errors(400, 404, 503)},
                body=_ref("SecretValue"),
                tag=state,
            ),
            "delete": _op(
                "Admins: delete a stored secret",
                {**_ok("deleted", _ref("SecretDeleted")), **_errors(400, 404, 503)},
                tag=state,
            ),
        },
        "/installs/{name}/kv": {
            "get": {
                **_op(
                    "Admins: the install's KV keys, one page in key order, and its usage",
                    {**_ok("keys", _ref("KvListing")), **_errors(400, 404, 503)},
                    tag=state,
                ),
                "parameters": [
                    _NAME_PARAM,
                    {
                        "name": "prefix",
                        "in": "query",
                        "required": False,
                        "schema": {**_KV_KEY, "minLength": 0, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]*$"},
                        "description": "keys starting with it (at most 512 bytes of UTF-8)",
                    },
                    {"name": "cursor", "in": "query", "required": False, "schema": _STR},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
                    },
                ],
            },
        },
        "/installs/{name}/kv/entry": {
            "parameters": [_NAME_PARAM],
            "get": {
                **_op(
                    "Admins: one key's value and revision",
                    {**_ok("value", _ref("KvValue")), **_errors(400, 404, 503)},
                    tag=state,
                ),
                "parameters": [_KEY_PARAM],
            },
            "put": _op(
                "Admins: store a value (compare-and-set with `if_revision`)",
                {**_ok("stored", _ref("KvStored")), **_errors(400, 404, 409, 413, 503)},
                body=_ref("KvPut"),
                tag=state,
            ),
            "delete": {
                **_op(
                    "Admins: delete a key",
                    {**_ok("deleted", _ref("KvDeleted")), **_errors(400, 404, 503)},
                    tag=state,
                ),
                "parameters": [_KEY_PARAM],
            },
        },
        "/installs/{name}/rollback": {
            "parameters": [_NAME_PARAM],
            "post": _op(
                "Roll back to the given or the previous version",
                {**_ok("install", _ref("Install")), **_errors(400, 404)},
                body={"type": "object", "properties": {"version": {"type": ["string", "null"], "minLength": 1}}},
                body_required=False,
                tag=inst,
            ),
        },
        "/installs/{name}/logs": {
            "get": {
                **_op(
                    "Admins: the install's log lines (calls, guest logs, traps), oldest first, after `cursor`",
                    {
                        **_ok(
                            "lines",
                            _obj(["lines", "cursor"], lines={"type": "array", "items": _ref("LogLine")}, cursor=_STR),
                        ),
                        **_errors(400, 503),
                    },
                    tag=inst,
                ),
                "parameters": [
                    _NAME_PARAM,
                    _query("cursor", "the `cursor` of the previous page: only newer lines", _STR),
                    _query("request_id", "only the lines of this request", _STR),
                    _query(
                        "limit", "at most this many lines (1–500, default 500)", {**_INT, "minimum": 1, "maximum": 500}
                    ),
                    _query(
                        "since", "without a cursor: the last this many seconds (default 3600)", {**_INT, "minimum": 1}
                    ),
                ],
            }
        },
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


@cache
def openapi_document(max_bundle_bytes: int | None = None) -> dict[str, Any]:
    """The document; ``max_bundle_bytes`` is the largest bundle an upload may declare (the settings'
    ``BUNDLE_MAX_COMPRESSED_BYTES``; None: its default)."""
    if max_bundle_bytes is None:
        max_bundle_bytes = load_settings({}).bundle_limits.max_compressed_bytes
    schemas = {**_SCHEMAS, "InitiateUpload": copy.deepcopy(_SCHEMAS["InitiateUpload"])}
    schemas["InitiateUpload"]["properties"]["size"]["maximum"] = max_bundle_bytes
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Extension platform API",
            "version": "1.0.0",
            "description": "Publish, register, install and call WebAssembly extensions. "
            "Errors are {error: {code, message, request_id}} with the codes listed in Error.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
