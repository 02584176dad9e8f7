"""Manifest v2: parse, validate, and expose as typed values.

:meth:`Manifest.parse` is the only way to get a :class:`Manifest` (STYLE: parse, then
trust).  Validation runs in three stages, each raising ``MANIFEST_INVALID`` with a
message that names the field:

1. bytes → JSON: strict UTF-8, no BOM, no duplicate keys, no NaN/Infinity, bounded
   nesting and size;
2. JSON → schema (``manifest.schema.json``, the one validator);
3. semantic checks the schema cannot express (unique endpoints, egress needs
   ``cap:http.fetch``, secrets need ``cap:secrets.get`` and unique names, bundle-path rules for
   ``entry``, and ``config_schema`` is a self-contained JSON Schema 2020-12 document:
   :mod:`chalicelib.bundles.config_schema`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from chalicelib.bundles.config_schema import check_config_schema, ecma_pattern
from chalicelib.bundles.duplicate_keys import refuse_duplicate_keys
from chalicelib.bundles.paths import normalize_member_path
from chalicelib.errors import BundleError, ManifestInvalid

__all__ = [
    "DEFAULT_ENTRY",
    "KNOWN_CAPABILITIES",
    "MANIFEST_PATH",
    "MAX_ENDPOINT_SEGMENTS",
    "RUNTIMES",
    "Endpoint",
    "Manifest",
    "SecretSpec",
    "UiSpec",
    "find_endpoint",
    "manifest_schema",
]

MANIFEST_PATH = "manifest.json"
"""Where the manifest lives in a bundle."""
DEFAULT_ENTRY = "dist/main.wasm"
RUNTIMES = ("wasm-core@1", "wasm-component@1")
KNOWN_CAPABILITIES = (
    "cap:log.emit",
    "cap:context.read",
    "cap:http.fetch",
    "cap:storage.kv",
    "cap:secrets.get",
    "cap:user.read",
)
_MAX_DEPTH = 32
MAX_ENDPOINT_SEGMENTS = 12
"""The gateway routes ``/api/ext/{extension}`` plus at most this many path segments."""
_FIELD_ORDER = (
    "name",
    "publisher",
    "version",
    "runtime",
    "entry",
    "ui",
    "api",
    "capabilities",
    "egress",
    "secrets",
    "config_schema",
    "limits",
)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(s for s in path.split("/") if s)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Endpoint:
        """An endpoint of an already validated manifest (for example a stored version's ``endpoints``)."""
        return cls(data["method"], data["path"], data["handler"])

    @property
    def segments(self) -> tuple[str, ...]:
        return _segments(self.path)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Return the ``:param`` values when ``method path`` hits this endpoint."""
        if method != self.method:
            return None
        given = _segments(path)
        if len(given) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, value in zip(self.segments, given, strict=True):
            if pattern.startswith(":"):
                params[pattern[1:]] = value
            elif pattern != value:
                return None
        return params

    def to_dict(self) -> dict[str, str]:
        return {"method": self.method, "path": self.path, "handler": self.handler}


@dataclass(frozen=True)
class UiSpec:
    entry: str
    app_menu_label: str | None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "iframe", "entry": self.entry}
        if self.app_menu_label is not None:
            data["hooks"] = {"appMenu": {"label": self.app_menu_label}}
        return data


@dataclass(frozen=True)
class SecretSpec:
    """One secret an install may hold (manifest ``secrets``): its name, what it is for, whether it must be set."""

    name: str
    description: str | None = None
    required: bool = False

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> tuple[SecretSpec, ...]:
        """The ``secrets`` of an already validated manifest (for example a stored version's), in order."""
        return tuple(
            cls(name=item["name"], description=item.get("description"), required=bool(item.get("required", False)))
            for item in manifest.get("secrets", ())
        )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "required": self.required}


@dataclass(frozen=True)
class Manifest:
    """A validated Manifest v2.  Build it with :meth:`parse` only."""

    name: str
    publisher: str
    version: str
    runtime: str
    entry: str
    description: str | None
    capabilities: tuple[str, ...]
    egress: tuple[str, ...]
    ui: UiSpec | None
    endpoints: tuple[Endpoint, ...]
    has_api: bool
    limits: Mapping[str, int]
    secrets: tuple[SecretSpec, ...]
    config_schema: Mapping[str, Any] | None
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, data: bytes | str | Mapping[str, Any]) -> Manifest:
        """Validate ``data`` (raw ``manifest.json`` bytes, text, or decoded JSON)."""
        document = data if isinstance(data, Mapping) else _load_json(data)
        if not isinstance(document, Mapping):
            raise ManifestInvalid("manifest.json must hold a JSON object")
        _check_schema(document)
        _check_semantics(document)
        return cls._from_document(document)

    @classmethod
    def _from_document(cls, doc: Mapping[str, Any]) -> Manifest:
        ui_doc = doc.get("ui")
        ui = None
        if ui_doc is not None:
            label = ui_doc.get("hooks", {}).get("appMenu", {}).get("label")
            ui = UiSpec(entry=ui_doc["entry"], app_menu_label=label)
        api = doc.get("api")
        endpoints = tuple(Endpoint.from_dict(e) for e in (api or {}).get("endpoints", []))
        return cls(
            name=doc["name"],
            publisher=doc["publisher"],
            version=doc["version"],
            runtime=doc["runtime"],
            entry=doc.get("entry", DEFAULT_ENTRY),
            description=doc.get("description"),
            capabilities=tuple(doc.get("capabilities", ())),
            egress=tuple(doc.get("egress", ())),
            ui=ui,
            endpoints=endpoints,
            has_api=api is not None,
            limits=dict(doc.get("limits", {})),
            secrets=SecretSpec.from_manifest(doc),
            config_schema=json.loads(json.dumps(doc["config_schema"])) if "config_schema" in doc else None,
            raw=json.loads(json.dumps(doc)),
        )

    @property
    def needs_entry(self) -> bool:
        """The wasm entry must exist when the manifest declares an ``api``."""
        return self.has_api

    def referenced_files(self) -> dict[str, str]:
        """Bundle paths the manifest points at, by the field that names them."""
        files: dict[str, str] = {}
        if self.needs_entry:
            files["entry"] = self.entry
        if self.ui is not None:
            files["ui.entry"] = self.ui.entry
        return files

    def find_endpoint(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        """:func:`find_endpoint` among this manifest's endpoints."""
        return find_endpoint(self.endpoints, method, path)


def find_endpoint(endpoints: Iterable[Endpoint], method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint that answers ``method path`` and its ``:param`` values (undecoded), or None.

    Where several match, the one with literal segments earliest wins (``/items/new`` before
    ``/items/:id``); the manifest's validation makes that choice unique.
    """
    ranked = sorted(endpoints, key=lambda e: [s.startswith(":") for s in e.segments])
    for endpoint in ranked:
        params = endpoint.match(method, path)
        if params is not None:
            return endpoint, params
    return None


# --- stage 1: bytes → JSON ------------------------------------------------------------


_unique_keys = refuse_duplicate_keys(lambda key: ManifestInvalid(f"duplicate key {key!r} in manifest.json"))


def _reject_constant(name: str) -> Any:
    raise ManifestInvalid(f"manifest.json holds {name}, which is not JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ManifestInvalid(f"number {text[:40]} in manifest.json is out of range")
    return value


def _load_json(data: bytes | str) -> Any:
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            raise ManifestInvalid("manifest.json must not start with a byte order mark")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestInvalid(f"manifest.json is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    _check_depth(text)
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
        )
    except json.JSONDecodeError as exc:
        raise ManifestInvalid(
            f"manifest.json is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ManifestInvalid(f"manifest.json is not valid JSON: {exc}") from None


def _check_depth(text: str) -> None:
    """Refuse absurd nesting before the parser recurses into it."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                raise ManifestInvalid(f"manifest.json nests deeper than {_MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


# --- stage 2: schema --------------------------------------------------------------------


@cache
def manifest_schema() -> dict[str, Any]:
    """The Manifest v2 JSON Schema shipped with the package."""
    text = resources.files("chalicelib.bundles").joinpath("manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Any:
    base = jsonschema.Draft202012Validator
    cls = jsonschema.validators.extend(base, {"pattern": ecma_pattern})
    return cls(manifest_schema())


def _field_path(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    field = _field_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        where = "" if field == "(top level)" else f" in `{field}`"
        return f"unknown field{'s' if len(unknown) > 1 else ''}{where}: {', '.join(unknown)}"
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        prefix = "" if field == "(top level)" else f"{field}."
        return f"missing required field `{prefix}{missing[0]}`"
    if error.validator == "type":
        return f"`{field}` must be of type {error.validator_value}"
    if error.validator == "uniqueItems":
        return f"`{field}` must not repeat items"
    if error.validator in ("maxItems", "minItems"):
        return f"`{field}` must have at most {error.validator_value} items"
    custom = error.schema.get("x-message")
    if custom:
        return f"`{field}` {custom}"
    return f"`{field}`: {error.message}"


def _check_schema(document: Mapping[str, Any]) -> None:
    errors = list(_validator().iter_errors(document))
    if not errors:
        return

    def rank(error: jsonschema.ValidationError) -> tuple[int, int]:
        top = str(error.absolute_path[0]) if error.absolute_path else ""
        order = _FIELD_ORDER.index(top) if top in _FIELD_ORDER else -1
        return (order, len(error.absolute_path))

    errors.sort(key=rank)
    messages = list(dict.fromkeys(_describe(e) for e in errors))
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    raise ManifestInvalid(messages[0] + more, problems=messages)


# --- stage 3: semantics -------------------------------------------------------------------


def _check_semantics(doc: Mapping[str, Any]) -> None:
    if "entry" in doc:
        _check_bundle_path("entry", doc["entry"])
    if "ui" in doc:
        _check_bundle_path("ui.entry", doc["ui"]["entry"])
    seen: dict[tuple[str, str], int] = {}
    for index, endpoint in enumerate(doc.get("api", {}).get("endpoints", [])):
        shape = "/".join(":" if s.startswith(":") else s for s in endpoint["path"].split("/"))
        key = (endpoint["method"], shape)
        if key in seen:
            raise ManifestInvalid(
                f"`api.endpoints[{index}]` repeats {endpoint['method']} {endpoint['path']} "
                f"(same as api.endpoints[{seen[key]}])"
            )
        seen[key] = index
        if len(_segments(endpoint["path"])) > MAX_ENDPOINT_SEGMENTS:
            raise ManifestInvalid(f"`api.endpoints[{index}].path` has more than {MAX_ENDPOINT_SEGMENTS} segments")
        params = [s[1:] for s in endpoint["path"].split("/") if s.startswith(":")]
        if len(set(params)) != len(params):
            raise ManifestInvalid(f"`api.endpoints[{index}].path` repeats a :param name")
    if doc.get("egress") and "cap:http.fetch" not in doc.get("capabilities", []):
        raise ManifestInvalid("`egress` requires the capability cap:http.fetch in `capabilities`")
    _check_secrets(doc)
    if "config_schema" in doc:
        check_config_schema(doc["config_schema"])


def _check_secrets(doc: Mapping[str, Any]) -> None:
    seen: dict[str, int] = {}
    for index, secret in enumerate(doc.get("secrets", [])):
        if secret["name"] in seen:
            raise ManifestInvalid(
                f"`secrets[{index}].name` repeats {secret['name']} (same as secrets[{seen[secret['name']]}])"
            )
        seen[secret["name"]] = index
    if seen and "cap:secrets.get" not in doc.get("capabilities", []):
        raise ManifestInvalid("`secrets` requires the capability cap:secrets.get in `capabilities`")


def _check_bundle_path(field: str, value: str) -> None:
    try:
        normalized = normalize_member_path(value)
    except BundleError as exc:
        raise ManifestInvalid(f"`{field}` is not a safe bundle path: {exc.message}") from None
    if normalized != value:
        raise ManifestInvalid(f"`{field}` must be written in normal form: {normalized!r}")
