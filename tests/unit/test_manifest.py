"""Manifest v2: the schema, the semantic checks, and messages that name the field."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.manifest import Manifest, manifest_schema
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
