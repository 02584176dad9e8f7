"""An extension's ``config_schema`` (manifest v2) and the install configs validated against it.

Two checks, at two moments:

1. **at publish** (:func:`check_config_schema`, from ``Manifest.parse``): the schema is a JSON Schema
   2020-12 document (checked against the draft's own meta-schema), describes an object, is at most
   16 KiB, and refers only inside itself: every ``$ref`` and ``$dynamicRef`` is a fragment that
   resolves within the document, and ``$id`` / ``$schema`` appear only at its root; it nests at most 20
   levels and names no property ``""`` (the registry keeps it as a DynamoDB map).  So validating a
   config never touches the network (the validator is also given an empty registry that retrieves
   nothing) and never fails on the schema itself;
2. **at install and config change** (:func:`validate_config`, from ``InstallService``): the config
   fits the schema, or ``CONFIG_INVALID`` names the first offending field by its path
   (``config.retries: 7 is greater than the maximum of 5``).  Which error is reported is deterministic:
   the same config and schema give the same message whatever order the schema's keys come back in
   from DynamoDB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import jsonschema
import referencing
from jsonschema.exceptions import best_match

from chalicelib.errors import InstallConfigInvalid, ManifestInvalid

__all__ = [
    "DRAFT_2020_12",
    "MAX_CONFIG_SCHEMA_BYTES",
    "MAX_CONFIG_SCHEMA_DEPTH",
    "check_config_schema",
    "ecma_pattern",
    "validate_config",
]

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_CONFIG_SCHEMA_BYTES = 16 * 1024
MAX_CONFIG_SCHEMA_DEPTH = 20
_MAX_MESSAGE = 240
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Where 2020-12 keeps subschemas (and the older `definitions`, which authors still write for `$defs`).
_ONE_SCHEMA = (
    "additionalProperties",
    "items",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_REFERENCES = ("$ref", "$dynamicRef")
_ROOT_ONLY = ("$id", "$schema")


def ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    """The ``pattern`` keyword, with an anchored ``$`` covering the whole string as in ECMA-262.

    Python's ``$`` also matches before a trailing newline, so ``^[a-z]+$`` would accept ``"abc\\n"``.
    """
    if not isinstance(instance, str):
        return
    match = re.search(pattern, instance)
    if match is None or (pattern.endswith("$") and match.end() != len(instance)):
        yield jsonschema.ValidationError(f"{_short(instance)} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": ecma_pattern})


# --- at publish ---------------------------------------------------------------------------------


def check_config_schema(schema: Any) -> None:
    """Refuse a ``config_schema`` that is not a self-contained 2020-12 schema of an object.

    Raises :class:`ManifestInvalid` naming the field (``config_schema.properties.port.maximum``).
    """
    if not isinstance(schema, Mapping):
        raise ManifestInvalid("`config_schema` must be a JSON Schema object")
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_CONFIG_SCHEMA_BYTES:
        raise ManifestInvalid(f"`config_schema` is {size} bytes as JSON; at most {MAX_CONFIG_SCHEMA_BYTES} are allowed")
    _check_storable(schema, ("config_schema",), 1)
    if schema.get("type") != "object":
        raise ManifestInvalid('`config_schema.type` must be "object": an install\'s config is a JSON object')
    if "$schema" in schema and schema["$schema"] != DRAFT_2020_12:
        raise ManifestInvalid(f"`config_schema.$schema` must be {DRAFT_2020_12} (JSON Schema 2020-12)")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        # check_schema already raises the best match of the meta-schema's errors.
        where = _schema_path(exc.absolute_path)
        raise ManifestInvalid(f"`{where}` is not valid JSON Schema 2020-12: {_trim(exc.message)}") from None
    for path, subschema in _subschemas(schema, ()):
        _check_keywords(schema, path, subschema)


def _check_storable(node: Any, path: tuple[str, ...], depth: int) -> None:
    """The registry keeps the schema as a DynamoDB map: no empty names, nesting well within its 32 levels."""
    if depth > MAX_CONFIG_SCHEMA_DEPTH:
        raise ManifestInvalid(f"`{'.'.join(path)}` nests deeper than {MAX_CONFIG_SCHEMA_DEPTH} levels")
    children = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        if key == "":
            raise ManifestInvalid(f"`{'.'.join(path)}` has an empty property name, which cannot be stored")
        _check_storable(child, (*path, str(key)), depth + 1)


def _subschemas(schema: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Mapping[str, Any]]]:
    """Every schema object in ``schema`` (itself first), with its path; boolean schemas have nothing to check."""
    if not isinstance(schema, Mapping):
        return
    yield path, schema
    for keyword in _ONE_SCHEMA:
        if keyword in schema:
            yield from _subschemas(schema[keyword], (*path, keyword))
    for keyword in _SCHEMA_MAPS:
        if isinstance(schema.get(keyword), Mapping):
            for name, sub in schema[keyword].items():
                yield from _subschemas(sub, (*path, keyword, name))
    for keyword in _SCHEMA_LISTS:
        if isinstance(schema.get(keyword), list):
            for index, sub in enumerate(schema[keyword]):
                yield from _subschemas(sub, (*path, keyword, index))


def _check_keywords(root: Mapping[str, Any], path: tuple[str | int, ...], schema: Mapping[str, Any]) -> None:
    if path:
        for keyword in _ROOT_ONLY:
            if keyword in schema:
                where = _schema_path((*path, keyword))
                raise ManifestInvalid(f"`{where}` is allowed only at the top of config_schema")
    for keyword in _REFERENCES:
        reference = schema.get(keyword)
        if not isinstance(reference, str):
            continue
        where = _schema_path((*path, keyword))
        if not reference.startswith("#"):
            raise ManifestInvalid(
                f"`{where}` refers outside config_schema ({_trim(reference)}); only local references such as "
                "#/$defs/name are allowed, so validating a config never fetches anything"
            )
        if not _resolves(root, reference[1:]):
            raise ManifestInvalid(f"`{where}` ({_trim(reference)}) does not resolve within config_schema")


def _resolves(root: Mapping[str, Any], fragment: str) -> bool:
    """Whether ``#fragment`` names a schema of ``root``: a JSON pointer, or a ``$anchor`` / ``$dynamicAnchor``."""
    if fragment == "" or fragment.startswith("/"):
        node: Any = root
        for raw in fragment.split("/")[1:]:
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return False
        return isinstance(node, Mapping | bool)
    anchors = {sub.get(keyword) for _, sub in _subschemas(root, ()) for keyword in ("$anchor", "$dynamicAnchor")}
    return fragment in anchors


def _schema_path(path: Sequence[Any]) -> str:
    text = "config_schema"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# --- at install -----------------------------------------------------------------------------------


def validate_config(schema: Mapping[str, Any] | None, config: Mapping[str, Any]) -> None:
    """Check ``config`` against a published ``config_schema`` (``None``: any object is accepted).

    Raises :class:`InstallConfigInvalid` whose message starts with the JSON path of the first offending
    field (``config.retries: …``, ``config.hosts[2]: …``); ``details`` carry ``field`` (that path) and
    ``problems`` (how many errors the config has).
    """
    if schema is None:
        return
    validator = _Validator(schema, registry=referencing.Registry())
    errors = list(validator.iter_errors(config))
    if not errors:
        return
    # The first field in path order; among its errors jsonschema's best match, which prefers a
    # specific keyword to anyOf/oneOf and descends into their branches.
    first = min(_path_key(error.absolute_path) for error in errors)
    candidates = sorted((e for e in errors if _path_key(e.absolute_path) == first), key=_order)
    for candidate in candidates:
        _sort_context(candidate)
    error = best_match(candidates) or candidates[0]
    path = list(error.absolute_path)
    # A missing, depended-on or unexpected property belongs next to that property, not to the object holding it.
    named = _property_named(error)
    if named is not None:
        path.append(named)
    field = _config_path(path)
    raise InstallConfigInvalid(f"{field}: {_trim(error.message)}", field=field, problems=len(errors))


def _path_key(path: Iterable[str | int]) -> list[tuple[int, int, str]]:
    return [(0, part, "") if isinstance(part, int) else (1, 0, part) for part in path]


def _order(error: jsonschema.ValidationError) -> tuple[Any, ...]:
    return (_path_key(error.absolute_path), str(error.validator), error.message)


def _sort_context(error: jsonschema.ValidationError) -> None:
    error.context.sort(key=_order)
    for child in error.context:
        _sort_context(child)


def _property_named(error: jsonschema.ValidationError) -> str | None:
    """The property a ``required``, ``dependentRequired`` or ``additionalProperties`` error is about.

    jsonschema raises one error per missing property but keeps only the whole keyword's value, so the
    property is the missing one whose message is this error's (the first missing one would put the
    path of ``zeta`` on the message about ``alpha``).
    """
    instance = error.instance
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [name for name in error.validator_value if name not in instance]
        return _the_one_named(error.message, {f"{name!r} is a required property": name for name in missing})
    if error.validator == "dependentRequired" and isinstance(instance, Mapping):
        messages = {
            f"{each!r} is a dependency of {name!r}": each
            for name, dependencies in error.validator_value.items()
            if name in instance
            for each in dependencies
            if each not in instance
        }
        return _the_one_named(error.message, messages)
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extra = sorted(
            name for name in instance if name not in allowed and not any(re.search(p, name) for p in patterns)
        )
        return extra[0] if len(extra) == 1 else None
    return None


def _the_one_named(message: str, names_by_message: Mapping[str, Any]) -> str | None:
    name = names_by_message.get(message)
    return None if name is None else str(name)


def _config_path(path: Sequence[Any]) -> str:
    text = "config"
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}"
        else:
            text += "[" + json.dumps(part, ensure_ascii=False) + "]"
    return text


def _short(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _trim(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
