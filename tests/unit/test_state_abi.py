"""The state host functions' request shapes (wasm-core@1) and error cases (the WIT kv-error and secret-error)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chalicelib.errors import (
    KvConflict,
    KvDenied,
    KvInvalid,
    KvNotFound,
    KvQuotaExceeded,
    KvUnavailable,
    SecretDenied,
    SecretNotFound,
    SecretUnavailable,
)
from chalicelib.kv import (
    KvDeleteRequest,
    KvGetRequest,
    KvListRequest,
    KvSetRequest,
    OperationBudget,
    parse_core_request,
    wit_case,
)
from chalicelib.kv.abi import MAX_CORE_REQUEST_BYTES, WIT_CASES
from chalicelib.secrets import wit_case as secret_wit_case
from chalicelib.secrets.service import WIT_CASES as SECRET_WIT_CASES

ROOT = Path(__file__).resolve().parents[2]


def parse(**document: Any) -> Any:
    return parse_core_request(json.dumps(document).encode())


def test_each_operation_parses_into_its_typed_request() -> None:
    assert parse(op="get", key="k") == KvGetRequest("k")
    assert parse(op="delete", key="k", value_b64=None) == KvDeleteRequest("k")
    assert parse(op="set", key="k", value_b64="AAE=", if_revision=3) == KvSetRequest("k", b"\x00\x01", 3)
    assert parse(op="set", key="k", value_b64="") == KvSetRequest("k", b"", None)
    assert parse(op="list") == KvListRequest("", None, 0)
    assert parse(op="list", prefix="a/", cursor="k1.YQ", limit=5, key=None) == KvListRequest("a/", "k1.YQ", 5)


def test_a_set_requests_repr_does_not_show_the_value() -> None:
    assert "hunter2" not in repr(parse(op="set", key="k", value_b64="aHVudGVyMg=="))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a JSON object"),
        ({"op": "put", "key": "k"}, '"op" must be one of'),
        ({"op": ["get"], "key": "k"}, '"op" must be one of'),
        ({"key": "k"}, '"op" must be one of'),
        ({"op": "get"}, '"get" needs "key"'),
        ({"op": "get", "key": None}, '"get" needs "key"'),
        ({"op": "set", "key": "k"}, '"set" needs "value_b64"'),
        ({"op": "get", "key": "k", "prefix": "p"}, '"get" does not take "prefix"'),
        ({"op": "list", "if_revision": 1}, '"list" does not take "if_revision"'),
        ({"op": "get", "key": "k", "extra": 1, "more": 2}, "unknown fields in the KV request: extra, more"),
        ({"op": "get", "key": 5}, '"key" must be a string'),
        ({"op": "set", "key": "k", "value_b64": "not base64!"}, '"value_b64" is not standard base64'),
        ({"op": "set", "key": "k", "value_b64": 5}, '"value_b64" must be a base64 string'),
        ({"op": "set", "key": "k", "value_b64": "", "if_revision": -1}, '"if_revision" must be null or an integer'),
        ({"op": "set", "key": "k", "value_b64": "", "if_revision": 2**64}, '"if_revision"'),
        ({"op": "set", "key": "k", "value_b64": "", "if_revision": True}, '"if_revision"'),
        ({"op": "set", "key": "k", "value_b64": "", "if_revision": 1.5}, '"if_revision"'),
        ({"op": "list", "limit": -1}, '"limit" must be a non-negative integer'),
        ({"op": "list", "cursor": 7}, '"cursor" must be a string'),
    ],
)
def test_malformed_requests_are_invalid_naming_what_is_wrong(document: Any, message: str) -> None:
    with pytest.raises(KvInvalid) as caught:
        parse_core_request(json.dumps(document).encode())
    assert message in caught.value.message


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"NaN", b"[1, 2"])
def test_bytes_that_are_not_json_are_invalid(raw: bytes) -> None:
    with pytest.raises(KvInvalid, match="JSON object"):
        parse_core_request(raw)


def test_a_request_larger_than_any_valid_one_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(KvInvalid, match=f"at most {MAX_CORE_REQUEST_BYTES} bytes"):
        parse_core_request(b" " * (MAX_CORE_REQUEST_BYTES + 1))
    largest = json.dumps({"op": "set", "key": "é" * 256, "value_b64": "A" * (4 * 65536 // 3 + 4)})
    assert len(largest) < MAX_CORE_REQUEST_BYTES


def test_the_budget_counts_to_its_limit_then_refuses() -> None:
    budget = OperationBudget(2)
    budget.spend()
    budget.spend()
    with pytest.raises(KvQuotaExceeded, match="at most 2 KV operations"):
        budget.spend()
    assert budget.spent == 2


def _variant(name: str) -> dict[str, bool]:
    """The cases of a WIT variant in DESIGN §6b (docs/design.md, and sdk/wit when it exists): case -> has payload."""
    sources = [ROOT / "docs" / "design.md", *sorted((ROOT / "sdk" / "wit").glob("*.wit"))]
    found: list[dict[str, bool]] = []
    for source in sources:
        match = re.search(rf"variant {name} \{{([^}}]*)\}}", source.read_text("utf-8"))
        if match:
            cases = [case.strip() for case in match.group(1).split(",") if case.strip()]
            found.append({case.split("(")[0]: "(" in case for case in cases})
    assert found, f"no variant {name}"
    assert all(cases == found[0] for cases in found), found
    return found[0]


def test_every_kv_error_is_a_case_of_the_wit_variant_with_its_payload() -> None:
    cases = _variant("kv-error")
    assert set(WIT_CASES.values()) == set(cases)
    for cls in (KvDenied, KvNotFound, KvInvalid, KvConflict, KvQuotaExceeded, KvUnavailable):
        case, payload = wit_case(cls("why"))
        assert case == WIT_CASES[cls]
        assert (payload == "why") if cases[case] else payload is None


def test_every_secret_error_is_a_case_of_the_wit_variant_with_its_payload() -> None:
    cases = _variant("secret-error")
    assert set(SECRET_WIT_CASES.values()) == set(cases)
    for cls in (SecretDenied, SecretNotFound, SecretUnavailable):
        case, payload = secret_wit_case(cls("why"))
        assert case == SECRET_WIT_CASES[cls]
        assert (payload == "why") if cases[case] else payload is None
