"""The admin side of an install's state over HTTP: secrets, KV data and purge, each tenant only its own.

Routes of DESIGN §5 through the Chalice app against a moto server (DynamoDB, KMS), as the API runs them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest

import app as app_module
from chalicelib.registry import Actor, SignatureStatus, VersionRecord
from tests.bundle_factory import manifest as good_manifest
from tests.integration.stack import AwsStack, auth
from tests.log_capture import EveryLogLine

NAME = "com.acme.stateful"
SECRETS = [
    {"name": "API_KEY", "description": "Your Acme API key", "required": True},
    {"name": "WEBHOOK_TOKEN"},
]
CAPABILITIES = ["cap:secrets.get", "cap:storage.kv"]


def publish_version(stack: AwsStack, version: str, **manifest: Any) -> None:
    """Record ``NAME@version`` in the registry as finalize would (the upload path has tests of its own)."""
    fields: dict[str, Any] = {"capabilities": CAPABILITIES, "secrets": SECRETS, **manifest}
    record = VersionRecord.from_manifest(
        good_manifest(name=NAME, version=version, **fields),
        content_hash="sha256:" + hashlib.sha256(version.encode()).hexdigest(),
        size=1,
        signature=None,
        signature_status=SignatureStatus.UNSIGNED,
        key_id=None,
        created_at=datetime.now(UTC),
        created_by=Actor(tenant="acme", sub="alice"),
    )
    app_module.services().registry.register_version(record, "acme", None)


@pytest.fixture
def installed(stack: AwsStack) -> AwsStack:
    """``NAME@1.0.0`` published by acme and installed by tenants acme and globex."""
    publish_version(stack, "1.0.0")
    for tenant in ("acme", "globex"):
        answer = stack.call("POST", "/installs", {"extension": NAME, "version": "1.0.0"}, auth(tenant))
        assert answer.status_code == 201, answer.json
    return stack


def call(stack: AwsStack, method: str, path: str, body: Any = None, tenant: str = "acme", **query: str) -> Any:
    target = path + ("?" + urlencode(query) if query else "")
    return stack.call(method, target, body, auth(tenant))


def code(answer: Any) -> str:
    assert answer.json is not None and set(answer.json) == {"error"}, answer.json
    error: dict[str, Any] = answer.json["error"]
    assert set(error) == {"code", "message", "request_id"}
    return str(error["code"])


def kv_set(stack: AwsStack, key: str, value: str, tenant: str = "acme", **extra: Any) -> Any:
    return call(stack, "PUT", f"/installs/{NAME}/kv/entry", {"key": key, "value": value, **extra}, tenant)


def kv_get(stack: AwsStack, key: str, tenant: str = "acme") -> Any:
    return call(stack, "GET", f"/installs/{NAME}/kv/entry", tenant=tenant, key=key)


def secrets_of(stack: AwsStack, tenant: str = "acme") -> dict[str, dict[str, Any]]:
    answer = call(stack, "GET", f"/installs/{NAME}/secrets", tenant=tenant)
    assert answer.status_code == 200, answer.json
    return {entry["name"]: entry for entry in answer.json["secrets"]}


# --- secrets ---------------------------------------------------------------------------------------


def test_an_admin_sets_a_declared_secret_and_the_list_shows_its_state_never_its_value(installed: AwsStack) -> None:
    before = secrets_of(installed)
    assert [(s["name"], s["required"], s["set"], s["missing"]) for s in before.values()] == [
        ("API_KEY", True, False, True),
        ("WEBHOOK_TOKEN", False, False, False),
    ]
    assert before["API_KEY"]["description"] == "Your Acme API key"

    stored = call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "sk-live-1"})

    assert stored.status_code == 200, stored.json
    assert stored.json["name"] == "API_KEY" and stored.json["set"] is True and stored.json["missing"] is False
    assert "sk-live-1" not in stored.body.decode() if isinstance(stored.body, bytes) else "sk-live-1" not in stored.body
    after = secrets_of(installed)
    assert after["API_KEY"]["set"] is True and after["API_KEY"]["updated_at"].endswith("Z")
    assert "value" not in after["API_KEY"]


def test_only_names_the_installed_version_declares_may_be_set(installed: AwsStack) -> None:
    undeclared = call(installed, "PUT", f"/installs/{NAME}/secrets/OTHER", {"value": "x"})
    bad_name = call(installed, "PUT", f"/installs/{NAME}/secrets/{quote('api key')}", {"value": "x"})
    too_long = call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "x" * (8 * 1024 + 1)})
    empty = call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": ""})
    extra = call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "x", "echo": True})

    assert [code(a) for a in (undeclared, bad_name, too_long, empty)] == ["SECRET_INVALID"] * 4
    assert (
        "OTHER is not a secret the installed version declares (it declares: API_KEY, WEBHOOK_TOKEN)"
        in (undeclared.json["error"]["message"])
    )
    assert code(extra) == "BAD_REQUEST"
    assert {s["set"] for s in secrets_of(installed).values()} == {False}


def test_deleting_a_secret_unsets_it_and_deleting_it_again_says_it_is_not_set(installed: AwsStack) -> None:
    assert call(installed, "PUT", f"/installs/{NAME}/secrets/WEBHOOK_TOKEN", {"value": "w"}).status_code == 200

    deleted = call(installed, "DELETE", f"/installs/{NAME}/secrets/WEBHOOK_TOKEN")
    again = call(installed, "DELETE", f"/installs/{NAME}/secrets/WEBHOOK_TOKEN")

    assert deleted.status_code == 200 and deleted.json == {"name": "WEBHOOK_TOKEN", "deleted": True}
    assert again.status_code == 404 and code(again) == "SECRET_NOT_FOUND"
    assert secrets_of(installed)["WEBHOOK_TOKEN"]["set"] is False


def test_a_secret_an_upgrade_no_longer_declares_is_listed_as_a_leftover_and_can_be_deleted(
    installed: AwsStack,
) -> None:
    assert call(installed, "PUT", f"/installs/{NAME}/secrets/WEBHOOK_TOKEN", {"value": "w"}).status_code == 200
    publish_version(installed, "2.0.0", secrets=[SECRETS[0]])
    assert call(installed, "PATCH", f"/installs/{NAME}", {"version": "2.0.0"}).status_code == 200

    listed = secrets_of(installed)

    assert (listed["WEBHOOK_TOKEN"]["declared"], listed["WEBHOOK_TOKEN"]["set"]) == (False, True)
    assert code(call(installed, "PUT", f"/installs/{NAME}/secrets/WEBHOOK_TOKEN", {"value": "w"})) == "SECRET_INVALID"
    assert call(installed, "DELETE", f"/installs/{NAME}/secrets/WEBHOOK_TOKEN").status_code == 200
    assert "WEBHOOK_TOKEN" not in secrets_of(installed)


def test_secret_routes_need_an_install_and_the_admin_role(installed: AwsStack) -> None:
    for method, path, body in (
        ("GET", "/installs/com.acme.absent/secrets", None),
        ("PUT", "/installs/com.acme.absent/secrets/API_KEY", {"value": "x"}),
        ("DELETE", "/installs/com.acme.absent/secrets/API_KEY", None),
    ):
        assert code(call(installed, method, path, body)) == "NOT_INSTALLED", (method, path)
        user = installed.call(method, path, body, auth("acme", ("user",)))
        assert (user.status_code, code(user)) == (403, "FORBIDDEN"), (method, path)
    anonymous = installed.call("GET", f"/installs/{NAME}/secrets", headers={})
    assert code(anonymous) == "UNAUTHENTICATED"


# --- KV ----------------------------------------------------------------------------------------------


def test_an_admin_sets_gets_lists_and_deletes_keys(installed: AwsStack) -> None:
    first = kv_set(installed, "sync/cursor", "42")
    binary = call(
        installed,
        "PUT",
        f"/installs/{NAME}/kv/entry",
        {"key": "blob", "value_b64": base64.b64encode(b"\0\xff").decode()},
    )
    assert first.status_code == 200 and first.json["key"] == "sync/cursor"
    assert binary.status_code == 200, binary.json

    got = kv_get(installed, "sync/cursor")
    assert got.json == {
        "key": "sync/cursor",
        "value_b64": base64.b64encode(b"42").decode(),
        "revision": first.json["revision"],
    }
    assert base64.b64decode(kv_get(installed, "blob").json["value_b64"]) == b"\0\xff"

    listed = call(installed, "GET", f"/installs/{NAME}/kv")
    assert listed.json == {
        "keys": ["blob", "sync/cursor"],
        "cursor": None,
        "usage": {"keys": 2, "bytes": 4 + 2 + 11 + 2},
    }
    page = call(installed, "GET", f"/installs/{NAME}/kv", limit="1")
    assert page.json["keys"] == ["blob"] and page.json["cursor"]
    rest = call(installed, "GET", f"/installs/{NAME}/kv", limit="1", cursor=page.json["cursor"])
    assert rest.json["keys"] == ["sync/cursor"] and rest.json["cursor"] is None
    assert call(installed, "GET", f"/installs/{NAME}/kv", prefix="sync/").json["keys"] == ["sync/cursor"]

    deleted = call(installed, "DELETE", f"/installs/{NAME}/kv/entry", key="blob")
    assert deleted.json == {"key": "blob", "deleted": True}
    assert code(call(installed, "DELETE", f"/installs/{NAME}/kv/entry", key="blob")) == "KV_NOT_FOUND"
    assert code(kv_get(installed, "blob")) == "KV_NOT_FOUND"


def test_compare_and_set_through_the_api(installed: AwsStack) -> None:
    created = kv_set(installed, "counter", "1", if_revision=0)
    again = kv_set(installed, "counter", "1", if_revision=0)
    stale = kv_set(installed, "counter", "2", if_revision=created.json["revision"] + 1)
    fresh = kv_set(installed, "counter", "2", if_revision=created.json["revision"])

    assert created.status_code == 200
    assert (again.status_code, code(again)) == (409, "KV_CONFLICT")
    assert code(stale) == "KV_CONFLICT"
    assert fresh.status_code == 200 and fresh.json["revision"] > created.json["revision"]


MALFORMED_KV = [
    ("PUT", {}, {"key": "", "value": "v"}, "KV_INVALID"),
    ("PUT", {}, {"key": "a\nb", "value": "v"}, "KV_INVALID"),
    ("PUT", {}, {"key": "k" * 513, "value": "v"}, "KV_INVALID"),
    ("PUT", {}, {"key": "k", "value": "v" * (64 * 1024 + 1)}, "KV_INVALID"),
    ("PUT", {}, {"key": "k"}, "BAD_REQUEST"),
    ("PUT", {}, {"key": "k", "value": "v", "value_b64": "dg=="}, "BAD_REQUEST"),
    ("PUT", {}, {"key": "k", "value_b64": "not base64!"}, "BAD_REQUEST"),
    ("PUT", {}, {"key": "k", "value": "v", "if_revision": -1}, "BAD_REQUEST"),
    ("PUT", {}, {"key": "k", "value": "v", "if_revision": True}, "BAD_REQUEST"),
    ("PUT", {}, {"key": 7, "value": "v"}, "BAD_REQUEST"),
    ("PUT", {}, {"key": "k", "value": "v", "ttl": 1}, "BAD_REQUEST"),
    ("GET", {}, None, "BAD_REQUEST"),
    ("GET", {"key": "k", "other": "x"}, None, "BAD_REQUEST"),
    ("DELETE", {}, None, "BAD_REQUEST"),
]
MALFORMED_LIST = [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"cursor": "nope"}, {"prefix": "a\x01"}]


def test_a_malformed_kv_request_gets_its_code_and_writes_nothing(installed: AwsStack) -> None:
    for method, query, body, expected in MALFORMED_KV:
        answer = call(installed, method, f"/installs/{NAME}/kv/entry", body, **query)
        assert (answer.status_code, code(answer)) == (400, expected), (method, query, body, answer.json)
    for query in MALFORMED_LIST:
        answer = call(installed, "GET", f"/installs/{NAME}/kv", **query)
        assert answer.status_code == 400 and code(answer) in {"BAD_REQUEST", "KV_INVALID"}, (query, answer.json)
    assert call(installed, "GET", f"/installs/{NAME}/kv").json["keys"] == []


def test_kv_routes_need_an_install_and_the_admin_role(installed: AwsStack) -> None:
    assert code(call(installed, "GET", "/installs/com.acme.absent/kv")) == "NOT_INSTALLED"
    assert code(call(installed, "GET", "/installs/com.acme.absent/kv/entry", key="k")) == "NOT_INSTALLED"
    user = installed.call("PUT", f"/installs/{NAME}/kv/entry", {"key": "k", "value": "v"}, auth("acme", ("user",)))
    assert code(user) == "FORBIDDEN"


# --- uninstall, reinstall, purge --------------------------------------------------------------------------


def test_a_plain_uninstall_keeps_kv_and_secrets_for_a_reinstall(installed: AwsStack) -> None:
    assert kv_set(installed, "kept", "yes").status_code == 200
    assert call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "k"}).status_code == 200

    gone = call(installed, "DELETE", f"/installs/{NAME}")
    assert gone.json == {"extension": NAME, "status": "uninstalled"}
    assert code(kv_get(installed, "kept")) == "NOT_INSTALLED"
    assert call(installed, "POST", "/installs", {"extension": NAME, "version": "1.0.0"}).status_code == 201

    assert base64.b64decode(kv_get(installed, "kept").json["value_b64"]) == b"yes"
    assert secrets_of(installed)["API_KEY"]["set"] is True


def test_uninstall_with_purge_deletes_kv_and_secrets_and_a_reinstall_starts_empty(installed: AwsStack) -> None:
    for key in ("a", "b", "c"):
        assert kv_set(installed, key, key).status_code == 200
    assert call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "k"}).status_code == 200

    purged = call(installed, "DELETE", f"/installs/{NAME}", purge="true")

    assert purged.status_code == 200, purged.json
    assert purged.json == {"extension": NAME, "status": "uninstalled", "purged": {"kv_keys": 3, "secrets": 1}}
    assert call(installed, "POST", "/installs", {"extension": NAME, "version": "1.0.0"}).status_code == 201
    assert call(installed, "GET", f"/installs/{NAME}/kv").json == {
        "keys": [],
        "cursor": None,
        "usage": {"keys": 0, "bytes": 0},
    }
    assert secrets_of(installed)["API_KEY"]["set"] is False


def test_purge_finishes_the_data_of_an_install_already_gone_and_plain_uninstall_of_none_is_not_installed(
    installed: AwsStack,
) -> None:
    assert kv_set(installed, "left", "over").status_code == 200
    assert call(installed, "DELETE", f"/installs/{NAME}").status_code == 200

    again = call(installed, "DELETE", f"/installs/{NAME}")
    purged = call(installed, "DELETE", f"/installs/{NAME}", purge="true")
    bad = call(installed, "DELETE", f"/installs/{NAME}", purge="yes")

    assert code(again) == "NOT_INSTALLED"
    assert purged.json == {"extension": NAME, "status": "purged", "purged": {"kv_keys": 1, "secrets": 0}}
    assert code(bad) == "BAD_REQUEST"
    # A name no extension can have: nothing installed and no data, with or without purge (Schemathesis
    # sends any string the path allows and expects the answer of an absent install).
    assert code(call(installed, "DELETE", "/installs/Not_A_Name")) == "NOT_INSTALLED"
    assert code(call(installed, "DELETE", "/installs/0", purge="true")) == "NOT_INSTALLED"


# --- tenant isolation ----------------------------------------------------------------------------------------


def test_another_tenant_can_neither_read_list_overwrite_nor_purge_kv_or_secrets(installed: AwsStack) -> None:
    assert kv_set(installed, "mine", "acme-data").status_code == 200
    assert call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "acme-key"}).status_code == 200

    # globex has its own install of the same extension: it sees its own, empty state.
    assert code(kv_get(installed, "mine", tenant="globex")) == "KV_NOT_FOUND"
    assert call(installed, "GET", f"/installs/{NAME}/kv", tenant="globex").json["keys"] == []
    assert secrets_of(installed, "globex")["API_KEY"]["set"] is False
    assert kv_set(installed, "mine", "globex-data", tenant="globex").status_code == 200
    assert call(installed, "PUT", f"/installs/{NAME}/secrets/API_KEY", {"value": "g"}, "globex").status_code == 200
    assert call(installed, "DELETE", f"/installs/{NAME}/secrets/API_KEY", tenant="globex").status_code == 200
    assert call(installed, "DELETE", f"/installs/{NAME}", tenant="globex", purge="true").json["purged"] == {
        "kv_keys": 1,
        "secrets": 0,
    }
    # initech never installed it: nothing to reach, and its purge touches only its own (empty) scope.
    assert code(kv_get(installed, "mine", tenant="initech")) == "NOT_INSTALLED"
    assert call(installed, "DELETE", f"/installs/{NAME}", tenant="initech", purge="true").json["purged"] == {
        "kv_keys": 0,
        "secrets": 0,
    }

    # A tenant is the token's, never the request's: a tenant named in the query or body is refused.
    assert code(call(installed, "GET", f"/installs/{NAME}/kv", tenant="globex", tenant_id="acme")) == "BAD_REQUEST"

    assert base64.b64decode(kv_get(installed, "mine").json["value_b64"]) == b"acme-data"
    assert call(installed, "GET", f"/installs/{NAME}/kv").json["usage"] == {"keys": 1, "bytes": 4 + 9}
    assert secrets_of(installed)["API_KEY"]["set"] is True


# --- the value never shows ---------------------------------------------------------------------------------


def test_a_secret_value_appears_in_no_response_or_log_line_of_any_admin_route(
    installed: AwsStack, every_log_line: EveryLogLine
) -> None:
    secret = "canary-Hq4uP7-admin-side"
    secret_path = f"/installs/{NAME}/secrets/API_KEY"
    answers = [
        call(installed, "PUT", secret_path, {"value": secret}),  # set
        call(installed, "PUT", secret_path, {"value": secret + "-2"}),  # replace
        call(installed, "PUT", f"/installs/{NAME}/secrets/UNDECLARED", {"value": secret}),  # refused name
        call(installed, "PUT", secret_path, {"value": secret * 400}),  # too long
        call(installed, "PUT", secret_path, {"value": secret, "extra": secret}),  # malformed
        call(installed, "PUT", secret_path, '{"value": "' + secret),  # not JSON
        call(installed, "PUT", secret_path, {"value": secret}, "acme-no-install"),  # not installed
        installed.call("PUT", secret_path, {"value": secret}, auth("acme", ("user",))),  # not an admin
        call(installed, "GET", f"/installs/{NAME}/secrets"),  # list
        call(installed, "DELETE", secret_path),  # delete
        call(installed, "PUT", secret_path, {"value": secret}),  # set again
        call(installed, "DELETE", f"/installs/{NAME}", purge="true"),  # purge
        call(installed, "GET", f"/installs/{NAME}/secrets"),  # after purge
    ]

    statuses = [answer.status_code for answer in answers]
    assert statuses == [200, 200, 400, 400, 400, 400, 404, 403, 200, 200, 200, 200, 404]
    responses = "\n".join(
        f"{answer.headers}\n{answer.body.decode() if isinstance(answer.body, bytes) else answer.body}"
        for answer in answers
    )
    output = responses + "\n" + every_log_line.text()
    needles = {secret, base64.b64encode(secret.encode()).decode(), secret.encode().hex(), json.dumps(secret)}
    assert [needle for needle in needles if needle in output] == []
    # The paths ran and logged: the test is not vacuous.
    assert "secrets.put" in every_log_line.json_lines and "secrets.purge" in every_log_line.json_lines
