"""The API at its edges, over real HTTP on the local stack (issue 14, items 3 and 4): every answer is the
contract's ``{"error": …}`` (methods and content types no route takes, a path no route has, a binary
answer the request does not accept), and Schemathesis finds no gap between the served OpenAPI document
and the API, the gateway included."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from chalicelib.openapi import openapi_document
from devstack.stack import LocalStack, StackConfig, StackUrls
from extctl.dev import publish_example


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUrls]:
    """The local stack with ``com.example.hello`` published and installed for tenant ``dev``."""
    cache = tmp_path_factory.mktemp("edges-cache")
    stack = LocalStack(StackConfig(cache_dir=Path(cache)))
    urls = stack.start()
    try:
        publish_example(urls, None)
        yield urls
    finally:
        stack.stop()


def _auth(urls: StackUrls) -> dict[str, str]:
    return {"Authorization": f"Bearer {urls.token}"}


def _error(answer: requests.Response) -> dict[str, Any]:
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}, body
    return dict(body["error"])


def test_a_method_the_route_does_not_take_is_405_in_the_contract(local: StackUrls) -> None:
    answer = requests.put(f"{local.api}/installs", headers=_auth(local), timeout=30)
    assert answer.status_code == 405
    assert _error(answer)["code"] == "METHOD_NOT_ALLOWED"
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_a_body_type_the_route_does_not_read_is_415_in_the_contract(local: StackUrls) -> None:
    headers = {**_auth(local), "Content-Type": "text/plain"}
    answer = requests.post(f"{local.api}/installs", data="{}", headers=headers, timeout=30)
    assert answer.status_code == 415
    assert _error(answer)["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "BREW"])
def test_a_method_no_route_takes_is_405_in_the_contract_not_an_html_page(local: StackUrls, method: str) -> None:
    answer = requests.request(method, f"{local.api}/healthz", timeout=30)
    assert answer.status_code == 405
    assert _error(answer)["code"] == "METHOD_NOT_ALLOWED"


def test_a_malformed_request_line_is_400_in_the_contract(local: StackUrls) -> None:
    address = urlsplit(local.api)
    with socket.create_connection((address.hostname, address.port), timeout=30) as raw:
        raw.sendall(b"GET /health z HTTP/1.1\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0]
    assert json.loads(body)["error"]["code"] == "BAD_REQUEST"


def test_a_path_no_route_has_is_404_in_the_contract(local: StackUrls) -> None:
    # Also the check that devstack.servers' hook into chalice's local handler still applies.
    answer = requests.get(f"{local.api}/no/such/route", headers=_auth(local), timeout=30)
    assert answer.status_code == 404
    assert _error(answer)["code"] == "ROUTE_NOT_FOUND"


@pytest.mark.parametrize("accept", [None, "application/json", "text/html"])
def test_a_binary_answer_the_request_does_not_accept_is_406_in_the_contract(
    local: StackUrls, accept: str | None
) -> None:
    headers = {**_auth(local), "Content-Type": "application/octet-stream"}
    if accept is not None:
        headers["Accept"] = accept
    session = requests.Session()
    # requests sends Accept: */* unless told otherwise; None removes it.
    session.headers.pop("Accept")
    answer = session.post(
        f"{local.api}/api/ext/com.example.hello/echo", data=b"\x00\x01\xff", headers=headers, timeout=30
    )
    assert answer.status_code == 406
    error = _error(answer)
    assert error["code"] == "NOT_ACCEPTABLE" and "Accept" in error["message"]


@pytest.mark.parametrize("accept", ["*/*", "application/octet-stream", "text/html, */*;q=0.8"])
def test_a_binary_answer_the_request_accepts_arrives_as_bytes(local: StackUrls, accept: str) -> None:
    headers = {**_auth(local), "Content-Type": "application/octet-stream", "Accept": accept}
    sent = bytes(range(256))
    answer = requests.post(f"{local.api}/api/ext/com.example.hello/echo", data=sent, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.content == sent


# --- Schemathesis against the served document ---------------------------------------------------------


# The document as the app builds it (so every operation in it is a test); ``served`` checks that the stack
# serves exactly this document.  (Schemathesis' lazy ``from_fixture`` does not run under pytest 9.)
# 413 is how the API refuses a size over the limit: a rejection of invalid data like 400.
_CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": ["4xx", "5xx"]}}})
schema = schemathesis.openapi.from_dict(openapi_document(), config=_CONFIG)


def test_the_stack_serves_the_document_under_test(local: StackUrls) -> None:
    served = requests.get(f"{local.api}/openapi.json", timeout=30)
    assert served.status_code == 200 and served.json() == json.loads(json.dumps(openapi_document()))


@schema.parametrize()
@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_is_what_its_openapi_document_says(case: Any, local: StackUrls) -> None:
    """Every operation the document lists (new ones too), every check Schemathesis has, a fixed seed."""
    case.call_and_validate(base_url=local.api, headers=_auth(local), checks=_ALL_CHECKS, timeout=30)


def _all_checks() -> list[Any]:
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    return list(CHECKS.get_all())


_ALL_CHECKS = _all_checks()
