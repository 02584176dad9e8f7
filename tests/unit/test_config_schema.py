"""An install's config against its version's config_schema: CONFIG_INVALID names the field, deterministically."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import referencing.exceptions
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.config_schema import validate_config
from chalicelib.bundles.manifest import manifest_schema
from chalicelib.errors import InstallConfigInvalid
from chalicelib.tenancy import EXTENSION_NAME

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["host"],
    "additionalProperties": False,
    "properties": {
        "host": {"type": "string", "minLength": 1},
        "retries": {"type": "integer", "minimum": 0, "maximum": 5},
        "mode": {"enum": ["fast", "safe"]},
        "hosts": {"type": "array", "items": {"type": "string", "pattern": "^[a-z.]+$"}},
        "a.b": {"type": "boolean"},
        "nested": {"type": "object", "properties": {"level": {"type": "number", "exclusiveMaximum": 1}}},
    },
}


def refused(config: dict[str, Any], schema: dict[str, Any] = SCHEMA) -> InstallConfigInvalid:
    with pytest.raises(InstallConfigInvalid) as caught:
        validate_config(schema, config)
    assert caught.value.code == "CONFIG_INVALID"
    assert caught.value.http_status == 400
    return caught.value


def test_a_config_that_fits_is_accepted_and_no_schema_accepts_any_object() -> None:
    validate_config(SCHEMA, {"host": "a", "retries": 5, "mode": "safe", "hosts": ["x.y"], "a.b": True})
    validate_config(None, {"anything": [1, {"goes": None}]})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"host": "a", "retries": 7}, "config.retries: 7 is greater than the maximum of 5"),
        ({"host": "a", "retries": "3"}, "config.retries: '3' is not of type 'integer'"),
        ({"host": "a", "mode": "slow"}, "config.mode: 'slow' is not one of ['fast', 'safe']"),
        ({"host": "a", "hosts": ["ok", "ok", "Bad"]}, "config.hosts[2]: 'Bad' does not match '^[a-z.]+$'"),
        ({"host": "a", "a.b": 1}, "config[\"a.b\"]: 1 is not of type 'boolean'"),
        ({"host": "a", "nested": {"level": 1}}, "config.nested.level: 1 is greater than or equal to the maximum of 1"),
        ({}, "config.host: 'host' is a required property"),
        (
            {"host": "a", "colour": "red"},
            "config.colour: Additional properties are not allowed ('colour' was unexpected)",
        ),
    ],
)
def test_the_message_starts_with_the_fields_json_path(config: dict[str, Any], message: str) -> None:
    error = refused(config)
    assert error.message == message
    assert error.details["field"] == message.split(":")[0]


def test_an_anchored_pattern_does_not_accept_a_trailing_newline() -> None:
    assert "config.hosts[0]" in refused({"host": "a", "hosts": ["abc\n"]}).message


def test_long_values_are_cut_short_in_the_message() -> None:
    error = refused({"host": "a", "mode": "x" * 10_000})
    assert error.message.startswith("config.mode: 'xxx")
    assert len(error.message) < 300


def test_every_problem_is_counted_and_the_first_field_is_named() -> None:
    error = refused({"host": 1, "retries": 9, "mode": "slow"})
    assert error.details["problems"] == 3
    assert error.message.startswith("config.host: ")


def _reordered(node: Any) -> Any:
    """``node`` with every object's keys in reverse order (DynamoDB does not keep a map's order)."""
    if isinstance(node, dict):
        return {key: _reordered(node[key]) for key in reversed(list(node))}
    if isinstance(node, list):
        return [_reordered(item) for item in node]
    return node


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "host": st.one_of(st.integers(), st.text(max_size=3)),
            "retries": st.one_of(st.integers(-3, 9), st.text(max_size=2)),
            "mode": st.sampled_from(["fast", "slow", 3]),
            "hosts": st.lists(st.sampled_from(["ok", "Bad", 1]), max_size=3),
            "nested": st.fixed_dictionaries({"level": st.integers(-1, 3)}),
            "extra": st.none(),
        },
    )
)
def test_the_same_config_gets_the_same_message_whatever_the_schemas_key_order(config: dict[str, Any]) -> None:
    messages: list[str | None] = []
    for schema in (SCHEMA, _reordered(SCHEMA)):
        try:
            validate_config(schema, _reordered(config) if messages else config)
        except InstallConfigInvalid as exc:
            messages.append(exc.message)
        else:
            messages.append(None)
    assert messages[0] == messages[1]


def test_one_of_reports_the_most_specific_branch() -> None:
    schema = {
        "type": "object",
        "properties": {
            "target": {
                "oneOf": [
                    {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}},
                    {"type": "integer"},
                ]
            }
        },
    }
    assert refused({"target": {"url": 5}}, schema).message == "config.target.url: 5 is not of type 'string'"


def test_the_validator_never_fetches_a_remote_reference() -> None:
    # Publish refuses such a schema (test_manifest); should one reach validation anyway, it fails
    # locally instead of fetching, because the validator's registry retrieves nothing.
    with pytest.raises(referencing.exceptions.Unresolvable):
        validate_config({"type": "object", "$ref": "http://127.0.0.1:9/schema.json"}, {})


def test_the_extension_name_pattern_is_the_manifest_schemas() -> None:
    pattern = manifest_schema()["properties"]["name"]["pattern"]
    assert pattern == "^" + EXTENSION_NAME.pattern + "$"
    assert re.fullmatch(pattern.strip("^$"), "com.acme.tools")
    assert json.dumps(EXTENSION_NAME.pattern)


@pytest.mark.parametrize(
    ("schema", "config", "message"),
    [
        (
            {"type": "object", "dependentRequired": {"a": ["b", "c"]}},
            {"a": 1},
            "config.b: 'b' is a dependency of 'a'",
        ),
        (
            {"type": "object", "dependentRequired": {"a": ["b", "c"]}},
            {"a": 1, "b": 2},
            "config.c: 'c' is a dependency of 'a'",
        ),
        (
            {"type": "object", "properties": {"n": {"type": "object", "dependentRequired": {"a.x": ["b y"]}}}},
            {"n": {"a.x": 1}},
            "config.n[\"b y\"]: 'b y' is a dependency of 'a.x'",
        ),
        (
            {"type": "object", "dependentSchemas": {"a": {"required": ["q"]}}},
            {"a": 1},
            "config.q: 'q' is a required property",
        ),
    ],
)
def test_a_missing_dependency_is_named_by_its_own_path(schema: dict[str, Any], config: Any, message: str) -> None:
    error = refused(config, schema)
    assert error.message == message
    assert error.details["field"] == message.split(": ")[0]


@pytest.mark.parametrize("required", [["zeta", "alpha"], ["alpha", "zeta"]])
@pytest.mark.parametrize("nested", [False, True])
def test_of_several_missing_properties_the_path_names_the_one_the_message_names(
    required: list[str], nested: bool
) -> None:
    inner = {"type": "object", "required": required}
    schema = {"type": "object", "properties": {"n": inner}} if nested else inner
    error = refused({"n": {}} if nested else {}, schema)
    field, _, text = error.message.partition(": ")
    named = re.fullmatch(r"'(\w+)' is a required property", text)
    assert named is not None
    assert field == ("config.n." if nested else "config.") + named.group(1)
    assert error.details == {"field": field, "problems": 2}
