"""Manifest v2: the schema, the semantic checks, and messages that name the field."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.manifest import Manifest, SecretSpec, manifest_schema
from chalicelib.errors import ManifestInvalid
from tests.bundle_factory import manifest


def invalid(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        Manifest.parse(json.dumps(doc).encode())
    assert match in caught.value.message, caught.value.message


def test_a_full_manifest_parses_into_typed_values() -> None:
    doc = manifest(
        description="Tools",
        capabilities=["cap:http.fetch", "cap:log.emit"],
        egress=["api.acme.com", "*.acme.io"],
        limits={"timeout_ms": 2000, "memory_mb": 64},
        ui={"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Tools"}}},
    )
    parsed = Manifest.parse(json.dumps(doc))
    assert parsed.entry == "dist/main.wasm"
    assert parsed.capabilities == ("cap:http.fetch", "cap:log.emit")
    assert parsed.ui is not None and parsed.ui.app_menu_label == "Tools"
    assert parsed.referenced_files() == {"entry": "dist/main.wasm", "ui.entry": "ui/index.html"}
    assert parsed.limits == {"timeout_ms": 2000, "memory_mb": 64}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("name", "Com.Acme", "`name` must be a lowercase reverse-domain id"),
        ("name", "acme", "`name`"),
        ("name", "com.acme.x\n", "`name`"),
        ("name", "com." + "a" * 130, "`name`"),
        ("publisher", "", "`publisher`"),
        ("version", "1.0", "`version` must be a SemVer"),
        ("version", "01.0.0", "`version`"),
        ("version", "1.0.0-", "`version`"),
        ("runtime", "wasm-core@2", "`runtime`"),
        ("entry", "/abs.wasm", "`entry`"),
        ("entry", "dist/main.js", "`entry`"),
        ("entry", "dist/../main.wasm", "`entry` is not a safe bundle path"),
        ("capabilities", ["cap:root"], "`capabilities[0]` is not a known capability"),
        ("capabilities", ["cap:log.emit", "cap:log.emit"], "must not repeat"),
        ("egress", ["HTTP://x"], "`egress[0]`"),
        ("ui", {"type": "window", "entry": "ui/index.html"}, "`ui.type`"),
        ("ui", {"type": "iframe", "entry": "index.html"}, "`ui.entry`"),
        ("ui", {"type": "iframe"}, "missing required field `ui.entry`"),
        ("limits", {"timeout_ms": "5s"}, "`limits.timeout_ms`"),
        ("limits", {"cpu": 1}, "unknown field in `limits`: cpu"),
        ("api", {"endpoints": [{"method": "TRACE", "path": "/x", "handler": "h"}]}, "`api.endpoints[0].method`"),
        ("api", {"endpoints": [{"method": "GET", "path": "x", "handler": "h"}]}, "`api.endpoints[0].path`"),
        ("api", {"endpoints": [{"method": "GET", "path": "/x"}]}, "missing required field `api.endpoints[0].handler`"),
    ],
)
def test_each_rule_names_the_field(field: str, value: Any, match: str) -> None:
    invalid(manifest(**{field: value}), match)


def test_unknown_top_level_fields_are_named() -> None:
    invalid(manifest(zeta=1, alpha=2), "unknown fields: alpha, zeta")


def test_missing_required_fields_are_named() -> None:
    doc = manifest()
    del doc["publisher"]
    invalid(doc, "missing required field `publisher`")


def test_endpoints_must_be_unique_by_method_and_shape() -> None:
    endpoints = [
        {"method": "GET", "path": "/items/:id", "handler": "a"},
        {"method": "GET", "path": "/items/:key", "handler": "b"},
    ]
    invalid(manifest(api={"endpoints": endpoints}), "`api.endpoints[1]` repeats GET /items/:key")
    endpoints[1]["method"] = "DELETE"
    Manifest.parse(json.dumps(manifest(api={"endpoints": endpoints})))


def test_egress_entries_may_name_a_port() -> None:
    entries = ["api.acme.com:8443", "*.acme.io:9000", "api.acme.com", "10.0.0.1:65535"]
    parsed = Manifest.parse(json.dumps(manifest(capabilities=["cap:http.fetch"], egress=entries)))
    assert parsed.egress == tuple(entries)


@pytest.mark.parametrize(
    "entry", ["api.acme.com:", "api.acme.com:0", "api.acme.com:65536", "api.acme.com:080", "a:1:2"]
)
def test_an_egress_port_must_be_a_number_from_1_to_65535(entry: str) -> None:
    invalid(manifest(capabilities=["cap:http.fetch"], egress=[entry]), "`egress[0]`")


def test_egress_requires_the_fetch_capability() -> None:
    invalid(manifest(egress=["api.acme.com"]), "requires the capability cap:http.fetch")


def test_endpoint_matching_prefers_literal_segments_and_extracts_params() -> None:
    endpoints = [
        {"method": "GET", "path": "/items/:id", "handler": "get"},
        {"method": "GET", "path": "/items/new", "handler": "new"},
        {"method": "GET", "path": "/", "handler": "root"},
    ]
    parsed = Manifest.parse(json.dumps(manifest(api={"endpoints": endpoints})))
    hit = parsed.find_endpoint("GET", "/items/new")
    assert hit is not None and hit[0].handler == "new"
    hit = parsed.find_endpoint("GET", "/items/42")
    assert hit is not None and hit[1] == {"id": "42"}
    hit = parsed.find_endpoint("GET", "/")
    assert hit is not None and hit[0].handler == "root"
    assert parsed.find_endpoint("POST", "/items/42") is None
    assert parsed.find_endpoint("GET", "/items/42/more") is None


def test_the_schema_is_one_file_rejecting_unknown_top_level_fields() -> None:
    schema = manifest_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "publisher", "version", "runtime"}


semver = st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))


@given(semver)
def test_any_plain_semver_is_accepted(version: str) -> None:
    assert Manifest.parse(json.dumps(manifest(version=version))).version == version


@given(st.recursive(st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3), max_leaves=10))
def test_arbitrary_json_values_never_crash(value: Any) -> None:
    with contextlib.suppress(ManifestInvalid):
        Manifest.parse(json.dumps({"name": value}).encode())


def test_endpoints_deeper_than_the_gateway_routes_are_refused() -> None:
    deep = "/" + "/".join(f"s{i}" for i in range(13))
    invalid(manifest(api={"endpoints": [{"method": "GET", "path": deep, "handler": "h"}]}), "more than 12 segments")
    ok = "/" + "/".join(f"s{i}" for i in range(12))
    Manifest.parse(json.dumps(manifest(api={"endpoints": [{"method": "GET", "path": ok, "handler": "h"}]})))


# --- secrets and config_schema (issue 12) ---------------------------------------------------------

SECRETS_CAP = ["cap:secrets.get"]


def test_declared_secrets_parse_into_specs_in_order() -> None:
    doc = manifest(
        capabilities=SECRETS_CAP,
        secrets=[{"name": "API_KEY", "description": "The vendor's key", "required": True}, {"name": "X"}],
    )
    parsed = Manifest.parse(json.dumps(doc))
    assert [(s.name, s.description, s.required) for s in parsed.secrets] == [
        ("API_KEY", "The vendor's key", True),
        ("X", None, False),
    ]
    assert SecretSpec.from_manifest(parsed.raw) == parsed.secrets
    assert Manifest.parse(json.dumps(manifest())).secrets == ()


@pytest.mark.parametrize(
    ("secrets", "match"),
    [
        ([{"name": "api_key"}], "`secrets[0].name` must be an upper-case name"),
        ([{"name": "1KEY"}], "`secrets[0].name`"),
        ([{"name": "K" * 65}], "`secrets[0].name`"),
        ([{"name": "KEY\n"}], "`secrets[0].name`"),
        ([{"name": "KEY", "value": "x"}], "unknown field in `secrets[0]`: value"),
        ([{"description": "no name"}], "missing required field `secrets[0].name`"),
        ([{"name": "KEY", "required": "yes"}], "`secrets[0].required`"),
        ([{"name": "KEY"}, {"name": "OTHER"}, {"name": "KEY"}], "`secrets[2].name` repeats KEY (same as secrets[0])"),
        ([{"name": f"K{i}"} for i in range(65)], "`secrets` must have at most 64 items"),
    ],
)
def test_secret_declarations_name_the_field_at_fault(secrets: list[dict[str, Any]], match: str) -> None:
    invalid(manifest(capabilities=SECRETS_CAP, secrets=secrets), match)


def test_the_longest_secret_name_is_64_characters() -> None:
    doc = manifest(capabilities=SECRETS_CAP, secrets=[{"name": "K" * 64}])
    assert Manifest.parse(json.dumps(doc)).secrets[0].name == "K" * 64


def test_secrets_require_the_secrets_capability() -> None:
    invalid(manifest(secrets=[{"name": "API_KEY"}]), "`secrets` requires the capability cap:secrets.get")


def test_a_config_schema_is_kept_as_published() -> None:
    schema = {"type": "object", "properties": {"retries": {"type": "integer", "maximum": 5}}}
    parsed = Manifest.parse(json.dumps(manifest(config_schema=schema)))
    assert parsed.config_schema == schema
    assert Manifest.parse(json.dumps(manifest())).config_schema is None


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ([], "`config_schema` must be of type object"),
        ({"type": "array"}, '`config_schema.type` must be "object"'),
        ({"properties": {}}, '`config_schema.type` must be "object"'),
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "`config_schema.properties.a.type` is not valid"),
        ({"type": "object", "properties": {"a": {"maximum": "5"}}}, "`config_schema.properties.a.maximum`"),
        ({"type": "object", "properties": {"a": {"pattern": "(unclosed"}}}, "`config_schema.properties.a.pattern`"),
        ({"type": "object", "$schema": "http://json-schema.org/draft-07/schema#"}, "`config_schema.$schema` must be"),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
            "`config_schema.properties.a.$ref` refers outside config_schema",
        ),
        ({"type": "object", "$ref": "defs.json#/x"}, "`config_schema.$ref` refers outside"),
        ({"type": "object", "allOf": [{"$dynamicRef": "other.json"}]}, "`config_schema.allOf[0].$dynamicRef`"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not resolve within config_schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#nowhere"}}}, "does not resolve"),
        (
            {"type": "object", "$defs": {"x": {"$id": "https://example.com/x"}}},
            "`config_schema.$defs.x.$id` is allowed only at the top",
        ),
    ],
)
def test_a_config_schema_must_be_a_self_contained_2020_12_object_schema(schema: Any, match: str) -> None:
    invalid(manifest(config_schema=schema), match)


def test_local_references_pointers_and_anchors_are_accepted() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://acme.example/config.json",
        "type": "object",
        "$defs": {"port": {"type": "integer", "minimum": 1}, "a/b": {"$anchor": "host", "type": "string"}},
        "properties": {
            "port": {"$ref": "#/$defs/port"},
            "host": {"$ref": "#host"},
            "slashed": {"$ref": "#/$defs/a~1b"},
            "root": {"$ref": "#"},
            # Instance data may hold anything, "$ref" included: only schema keywords are checked.
            "fixed": {"const": {"$ref": "https://example.com/not-a-reference"}},
        },
    }
    assert Manifest.parse(json.dumps(manifest(config_schema=schema))).config_schema == schema


def test_a_config_schema_must_be_storable_as_a_dynamodb_map() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(10):
        deep = {"type": "object", "properties": {"a": deep}}
    invalid(manifest(config_schema=deep), "nests deeper than 20 levels")
    invalid(
        manifest(config_schema={"type": "object", "properties": {"": {"type": "string"}}}),
        "`config_schema.properties` has an empty property name",
    )


def test_a_config_schema_is_at_most_16_kib() -> None:
    def schema_of(size: int) -> dict[str, Any]:
        base = {"type": "object", "description": ""}
        filler = size - len(json.dumps(base, separators=(",", ":")))
        return {**base, "description": "d" * filler}

    Manifest.parse(json.dumps(manifest(config_schema=schema_of(16 * 1024))))
    invalid(manifest(config_schema=schema_of(16 * 1024 + 1)), "`config_schema` is 16385 bytes as JSON; at most 16384")
