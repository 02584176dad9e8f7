"""The upload pipeline and registry through the HTTP API, against a moto server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import app as app_module
from chalicelib.admin_ui import MODULES
from chalicelib.bundles.publication import PublishRecord
from chalicelib.bundles.signing import SignatureStatus, sign_content_hash
from chalicelib.errors import StorageError, error_texts
from chalicelib.logs import LOGGER
from chalicelib.openapi import openapi_document
from chalicelib.registry import Actor, Models, RegistryService, VersionRecord
from chalicelib.registry.records import ExistingState
from chalicelib.storage.store import S3BundleStore
from tests.bundle_factory import bundle, good_files, manifest, manifest_bytes, zero_filled_bundle
from tests.integration.runner_fixtures import certificate_pem
from tests.integration.stack import BUCKET, AwsStack, auth, content_hash, fresh_rate_window, publish, token, upload

MiB = 1024 * 1024


def test_publish_through_a_presigned_put_registers_the_version(stack: AwsStack) -> None:
    data = bundle()
    result = publish(stack, data)
    assert result.status_code == 200, result.json
    assert result.json["status"] == "finalized"
    assert result.json["content_hash"] == content_hash(data)
    assert (result.json["extension"], result.json["version"]) == ("com.acme.tools", "1.0.0")
    assert result.json["signature_status"] == "unsigned"
    hex_digest = content_hash(data).split(":")[1]
    assert stack.keys("sha256/") == [
        f"sha256/{hex_digest}/{n}" for n in ("bundle.tar.zst", "entry.wasm", "manifest.json", "published.json")
    ]
    assert stack.keys("staging/") == []
    stored = stack.s3.get_object(Bucket=BUCKET, Key=f"sha256/{hex_digest}/bundle.tar.zst")["Body"].read()
    assert stored == data
    versions = stack.call("GET", "/extensions/com.acme.tools/versions").json["versions"]
    assert [(v["version"], v["content_hash"]) for v in versions] == [("1.0.0", content_hash(data))]


def test_publish_through_multipart_parts(stack: AwsStack) -> None:
    data = bundle({**good_files(), "ui/big.bin": os.urandom(17 * MiB)})
    target = upload(stack, data)
    assert target["method"] == "MULTIPART" and len(target["parts"]) == 3
    result = stack.call(
        "POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"], "parts": target["uploaded"]}
    )
    assert result.status_code == 200, result.json
    assert result.json["content_hash"] == content_hash(data)
    hex_digest = content_hash(data).split(":")[1]
    stored = stack.s3.get_object(Bucket=BUCKET, Key=f"sha256/{hex_digest}/bundle.tar.zst")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == hex_digest


def test_multipart_finalize_without_parts_lists_them_server_side(stack: AwsStack) -> None:
    data = bundle({**good_files(), "ui/big.bin": os.urandom(17 * MiB)})
    target = upload(stack, data)
    result = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    assert result.status_code == 200, result.json


def test_resume_lists_held_parts_and_presigns_the_rest(stack: AwsStack) -> None:
    data = bundle({**good_files(), "ui/big.bin": os.urandom(17 * MiB)})
    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": len(data)}).json
    first = answer["parts"][0]
    requests.put(first["url"], data=data[: answer["part_size"]], timeout=30).raise_for_status()
    state = stack.call("GET", f"/ext-bundles/uploads/{answer['upload_id']}").json
    assert state["state"] == "pending"
    assert [p["part_number"] for p in state["uploaded_parts"]] == [1]
    assert [p["part_number"] for p in state["parts"]] == [2, 3]


def test_the_s3_event_path_finalizes_and_the_explicit_call_gets_the_same_answer(stack: AwsStack) -> None:
    data = bundle()
    target = upload(stack, data)
    stack.pump()
    state = stack.call("GET", f"/ext-bundles/uploads/{target['upload_id']}").json
    assert state["state"] == "finalized"
    explicit = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    assert explicit.status_code == 200
    assert explicit.json == state["result"]
    assert explicit.json["status"] == "finalized"
    assert len(stack.call("GET", "/extensions/com.acme.tools/versions").json["versions"]) == 1


def test_two_concurrent_finalizes_give_one_version_and_the_same_answer(stack: AwsStack) -> None:
    target = upload(stack, bundle())
    answers: list[Any] = []

    def finalize() -> None:
        answers.append(stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]}))

    threads = [threading.Thread(target=finalize) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200, 200], [a.json for a in answers]
    assert answers[0].json == answers[1].json
    assert len(stack.call("GET", "/extensions/com.acme.tools/versions").json["versions"]) == 1


def test_same_version_same_bytes_is_already_finalized_other_bytes_conflict(stack: AwsStack) -> None:
    data = bundle()
    assert publish(stack, data).json["status"] == "finalized"
    again = publish(stack, data)
    assert again.status_code == 200
    assert again.json["status"] == "already_finalized"
    other = publish(stack, bundle({**good_files(), "ui/extra.txt": b"different"}))
    assert other.status_code == 409
    assert other.json["error"]["code"] == "VERSION_EXISTS"
    assert other.json["error"]["request_id"]


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({**good_files(), "../evil": b"x"}, "BUNDLE_UNSAFE_PATH"),
        ({**good_files(), "manifest.json": manifest_bytes(version="one")}, "MANIFEST_INVALID"),
        ({k: v for k, v in good_files().items() if k != "manifest.json"}, "MANIFEST_MISSING"),
    ],
)
def test_a_hostile_bundle_is_rejected_and_leaves_nothing(stack: AwsStack, files: dict[str, bytes], code: str) -> None:
    target = upload(stack, bundle(files))
    result = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    assert result.status_code == 400
    assert result.json["error"]["code"] == code
    assert stack.keys("sha256/") == []
    assert stack.keys("staging/") == []
    assert stack.call("GET", "/extensions").json["extensions"] == []
    replay = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    assert replay.json["error"]["code"] == code


def test_more_bytes_than_declared_are_rejected(stack: AwsStack) -> None:
    data = bundle()
    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": len(data) - 10}).json
    requests.put(answer["url"], data=data, timeout=30).raise_for_status()  # moto does not enforce the signed length
    result = stack.call("POST", "/ext-bundles/finalize", {"upload_id": answer["upload_id"]})
    assert result.status_code == 413
    assert result.json["error"]["code"] == "BUNDLE_TOO_LARGE"
    assert stack.keys() == []


def test_a_declared_sha256_must_match(stack: AwsStack) -> None:
    result = publish(stack, bundle(), extra={"sha256": "0" * 64})
    assert result.json["error"]["code"] == "HASH_MISMATCH"


def test_oversize_uploads_are_refused_before_any_byte_moves(stack: AwsStack) -> None:
    result = stack.call("POST", "/ext-bundles/initiate-upload", {"size": 200 * MiB + 1})
    assert result.status_code == 413
    assert result.json["error"]["code"] == "BUNDLE_TOO_LARGE"


def test_finalize_before_uploading_keeps_the_session_usable(stack: AwsStack) -> None:
    data = bundle()
    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": len(data)}).json
    early = stack.call("POST", "/ext-bundles/finalize", {"upload_id": answer["upload_id"]})
    assert early.status_code == 409 and early.json["error"]["code"] == "UPLOAD_CONFLICT"
    requests.put(answer["url"], data=data, headers=answer["headers"], timeout=30).raise_for_status()
    assert stack.call("POST", "/ext-bundles/finalize", {"upload_id": answer["upload_id"]}).status_code == 200


def test_abort_cleans_staging_and_blocks_finalize(stack: AwsStack) -> None:
    target = upload(stack, bundle())
    aborted = stack.call("POST", "/ext-bundles/abort", {"upload_id": target["upload_id"]})
    assert aborted.json == {"upload_id": target["upload_id"], "status": "aborted"}
    assert stack.keys() == []
    late = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    assert late.status_code == 409


def test_tenants_cannot_touch_each_others_uploads(stack: AwsStack) -> None:
    target = upload(stack, bundle())
    for method, path, body in [
        ("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]}),
        ("POST", "/ext-bundles/abort", {"upload_id": target["upload_id"]}),
        ("GET", f"/ext-bundles/uploads/{target['upload_id']}", None),
    ]:
        answer = stack.call(method, path, body, auth("globex"))
        assert answer.status_code == 404, (path, answer.json)
        assert answer.json["error"]["code"] == "UPLOAD_NOT_FOUND"
    assert stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]}).status_code == 200


def test_another_tenant_cannot_publish_an_owned_name(stack: AwsStack) -> None:
    assert publish(stack, bundle()).status_code == 200
    other = publish(stack, bundle(good_files(version="2.0.0")), tenant="globex")
    assert other.status_code == 409
    assert other.json["error"]["code"] == "NAME_OWNED"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "UNAUTHENTICATED"),
        ({"Authorization": "Bearer nonsense"}, 401, "UNAUTHENTICATED"),
        ({"Authorization": f"Bearer {token(ttl=-300)}"}, 401, "UNAUTHENTICATED"),
        (auth("acme", ("user",)), 403, "FORBIDDEN"),
    ],
)
def test_uploads_need_an_admin_token(stack: AwsStack, headers: dict[str, str], status: int, code: str) -> None:
    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": 100}, headers)
    assert answer.status_code == status
    assert answer.json["error"]["code"] == code


def test_bad_request_bodies_are_400(stack: AwsStack) -> None:
    for body in ("{not json", "[]", json.dumps({"size": "big"}), json.dumps({"size": True})):
        answer = stack.call("POST", "/ext-bundles/initiate-upload", body)
        assert answer.status_code == 400, body
        assert answer.json["error"]["code"] == "BAD_REQUEST"


def test_upload_routes_are_rate_limited_per_tenant(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("UPLOAD_RATE_LIMIT_PER_MINUTE", "2")
    stack: AwsStack = request.getfixturevalue("stack")
    fresh_rate_window()
    codes = [stack.call("POST", "/ext-bundles/initiate-upload", {"size": 100}).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    limited = stack.call("POST", "/ext-bundles/initiate-upload", {"size": 100})
    assert limited.json["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert stack.call("POST", "/ext-bundles/initiate-upload", {"size": 100}, auth("globex")).status_code == 201


# --- signatures through the pipeline -------------------------------------------------------------


@pytest.fixture
def signing_key(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    monkeypatch.setenv("SIGNING_TRUST_BUNDLE", "# scope: com.acme.*\n" + pem)
    return key


def test_a_trust_bundle_fails_closed(signing_key: Ed25519PrivateKey, request: pytest.FixtureRequest) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    data = bundle()
    signed = publish(stack, data, extra={"signature": sign_content_hash(content_hash(data), signing_key).to_dict()})
    assert signed.status_code == 200, signed.json
    assert signed.json["signature_status"] == "verified"
    unsigned = publish(stack, bundle(good_files(version="1.0.1")))
    assert unsigned.json["error"]["code"] == "SIGNATURE_MISSING"
    other_key = Ed25519PrivateKey.generate()
    data2 = bundle(good_files(version="1.0.2"))
    untrusted = publish(stack, data2, extra={"signature": sign_content_hash(content_hash(data2), other_key).to_dict()})
    assert untrusted.json["error"]["code"] == "SIGNATURE_UNTRUSTED"
    data3 = bundle(good_files(name="org.other.tools"))
    scoped = publish(stack, data3, extra={"signature": sign_content_hash(content_hash(data3), signing_key).to_dict()})
    assert scoped.json["error"]["code"] == "SIGNATURE_SCOPE"
    assert [v["version"] for v in stack.call("GET", "/extensions/com.acme.tools/versions").json["versions"]] == [
        "1.0.0"
    ]


def test_the_event_path_waits_for_a_signature_when_trust_is_configured(
    signing_key: Ed25519PrivateKey, request: pytest.FixtureRequest
) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    data = bundle()
    target = upload(stack, data)
    stack.pump()
    assert stack.call("GET", f"/ext-bundles/uploads/{target['upload_id']}").json["state"] == "pending"
    envelope = sign_content_hash(content_hash(data), signing_key).to_dict()
    result = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"], "signature": envelope})
    assert result.json["signature_status"] == "verified"


# --- name ownership under a trust bundle (issue 9, item 3) -------------------------------------


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Publishers:
    """Keys the trust bundle knows, by publisher: ``acme`` (com.acme.*), ``evilcorp`` (com.evil.*) and
    ``platform`` (any name)."""

    acme: Ed25519PrivateKey
    evilcorp: Ed25519PrivateKey
    platform: Ed25519PrivateKey


@pytest.fixture
def publishers(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Publishers:
    keys = Publishers(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())
    trust = (
        f"# publisher: acme\n# scope: com.acme.*\n{public_pem(keys.acme)}"
        f"# publisher: evilcorp\n# scope: com.evil.*\n{public_pem(keys.evilcorp)}"
        f"# publisher: platform\n{public_pem(keys.platform)}"
    )
    monkeypatch.setenv("SIGNING_TRUST_BUNDLE", trust)
    return keys


def signed(data: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    return {"signature": sign_content_hash(content_hash(data), key).to_dict()}


def operator() -> dict[str, str]:
    return auth("ops", ("operator",))


def test_a_squatter_uploading_the_publishers_signed_bundle_first_does_not_take_the_name(
    publishers: Publishers, request: pytest.FixtureRequest
) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    v100, v110 = bundle(), bundle(good_files(version="1.1.0"))

    squatted = publish(stack, v100, tenant="evil", extra=signed(v100, publishers.acme))
    assert squatted.status_code == 200 and squatted.json["status"] == "finalized", squatted.json
    legitimate = publish(stack, v110, tenant="acme", extra=signed(v110, publishers.acme))
    assert legitimate.status_code == 200, legitimate.json
    assert legitimate.json["status"] == "finalized"

    # The squatter cannot publish a version of its own: it holds no key that may sign the name.
    own = bundle(good_files(version="1.2.0", publisher="Evil Ltd"))
    attempts = {
        "SIGNATURE_MISSING": {},
        "SIGNATURE_UNTRUSTED": signed(own, Ed25519PrivateKey.generate()),
        "SIGNATURE_SCOPE": signed(own, publishers.evilcorp),
    }
    for code, extra in attempts.items():
        refused = publish(stack, own, tenant="evil", extra=extra)
        assert refused.json["error"]["code"] == code
    # Uploading the publisher's signed bytes again changes nothing.
    again = publish(stack, v110, tenant="evil", extra=signed(v110, publishers.acme))
    assert again.status_code == 200 and again.json["status"] == "already_finalized"

    versions = stack.call("GET", "/extensions/com.acme.tools/versions", headers=auth("evil")).json["versions"]
    assert [v["version"] for v in versions] == ["1.1.0", "1.0.0"]
    for tenant in ("evil", "acme"):
        extension = stack.call("GET", "/extensions/com.acme.tools", headers=auth(tenant)).json
        assert (extension["owner_publisher"], extension["owned"], extension["latest_version"]) == (
            "acme",
            False,
            "1.1.0",
        )


def test_where_scopes_overlap_the_first_publisher_keeps_the_name(
    publishers: Publishers, request: pytest.FixtureRequest
) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    v100, v110 = bundle(), bundle(good_files(version="1.1.0"))
    assert publish(stack, v100, extra=signed(v100, publishers.acme)).status_code == 200

    other = publish(stack, v110, extra=signed(v110, publishers.platform))

    assert other.status_code == 409
    assert other.json["error"]["code"] == "NAME_OWNED"
    assert "'acme'" in other.json["error"]["message"]


def test_an_operator_transfers_a_name_and_the_transfer_is_audited(
    publishers: Publishers, request: pytest.FixtureRequest
) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    v100 = bundle()
    assert publish(stack, v100, extra=signed(v100, publishers.acme)).status_code == 200
    path = "/extensions/com.acme.tools/transfer"
    body = {"to_publisher": "platform", "reason": "Acme sold the product to the platform (ticket 42)"}

    assert stack.call("POST", path, body).json["error"]["code"] == "FORBIDDEN"
    assert stack.call("POST", path, {**body, "to_publisher": "nobody"}, operator()).status_code == 400
    assert stack.call("POST", path, {"to_publisher": "platform"}, operator()).status_code == 400
    missing = stack.call("POST", "/extensions/com.acme.nothing/transfer", body, operator())
    assert missing.status_code == 404
    moved = stack.call("POST", path, body, operator())

    assert moved.status_code == 200, moved.json
    assert moved.json["extension"]["owner_publisher"] == "platform"
    v110, v120 = bundle(good_files(version="1.1.0")), bundle(good_files(version="1.2.0"))
    assert publish(stack, v110, extra=signed(v110, publishers.platform)).json["status"] == "finalized"
    assert publish(stack, v120, extra=signed(v120, publishers.acme)).json["error"]["code"] == "NAME_OWNED"
    assert stack.call("GET", "/extensions/com.acme.tools/audit").json["error"]["code"] == "FORBIDDEN"
    events = stack.call("GET", "/extensions/com.acme.tools/audit", headers=operator()).json["events"]
    assert [(e["action"], e["actor"], e["from"], e["to"], e["reason"]) for e in events] == [
        (
            "name.transfer",
            {"tenant": "ops", "sub": "alice"},
            {"publisher": "acme"},
            {"publisher": "platform"},
            body["reason"],
        )
    ]
    assert events[0]["at"] and events[0]["request_id"]
    stored = boto3.client("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1").scan(TableName="it-audit")
    assert stored["Count"] == 1


def test_without_a_trust_bundle_the_first_tenant_keeps_a_name_until_an_operator_transfers_it(stack: AwsStack) -> None:
    assert publish(stack, bundle()).status_code == 200
    v200 = bundle(good_files(version="2.0.0"))
    assert publish(stack, v200, tenant="globex").json["error"]["code"] == "NAME_OWNED"
    path = "/extensions/com.acme.tools/transfer"
    assert stack.call("POST", path, {"to_publisher": "acme", "reason": "r"}, operator()).status_code == 400

    moved = stack.call("POST", path, {"to_tenant": "globex", "reason": "acme asked us to"}, operator())

    assert moved.status_code == 200, moved.json
    assert publish(stack, v200, tenant="globex").json["status"] == "finalized"
    v300 = bundle(good_files(version="3.0.0"))
    assert publish(stack, v300, tenant="acme").json["error"]["code"] == "NAME_OWNED"
    assert stack.call("GET", "/extensions/com.acme.tools", headers=auth("globex")).json["owned"] is True
    assert stack.call("GET", "/extensions/com.acme.tools", headers=auth("acme")).json["owned"] is False
    [event] = stack.call("GET", "/extensions/com.acme.tools/audit", headers=operator()).json["events"]
    assert (event["from"], event["to"]) == ({"tenant": "acme"}, {"tenant": "globex"})


def test_finalize_records_the_publish_time_beside_the_bundle(
    publishers: Publishers, request: pytest.FixtureRequest
) -> None:
    stack: AwsStack = request.getfixturevalue("stack")
    data = bundle()
    before = datetime.now(UTC)
    assert publish(stack, data, extra=signed(data, publishers.acme)).status_code == 200
    after = datetime.now(UTC)

    hex_digest = content_hash(data).split(":")[1]
    raw = stack.s3.get_object(Bucket=BUCKET, Key=f"sha256/{hex_digest}/published.json")["Body"].read()
    record = PublishRecord.parse(raw)
    assert (record.content_hash, record.extension, record.version) == (content_hash(data), "com.acme.tools", "1.0.0")
    assert before <= record.published_at <= after


def test_finalize_refuses_a_certificate_that_is_not_valid_at_publish_time(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    key = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    expired = certificate_pem(key, now - timedelta(days=30), now - timedelta(days=1))
    monkeypatch.setenv("SIGNING_TRUST_BUNDLE", f"# publisher: acme\n# scope: com.acme.*\n{expired}")
    stack: AwsStack = request.getfixturevalue("stack")
    data = bundle()

    refused = publish(stack, data, extra=signed(data, key))

    assert refused.status_code == 403, refused.json
    assert refused.json["error"]["code"] == "SIGNATURE_UNTRUSTED"
    assert "expired at" in refused.json["error"]["message"]
    assert stack.keys("sha256/") == []


def test_malformed_signatures_are_refused_at_initiate(stack: AwsStack) -> None:
    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": 100, "signature": {"format": "x"}})
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "SIGNATURE_INVALID"


# --- registry reads ----------------------------------------------------------------------------------


def test_the_extension_list_includes_every_version_when_asked(stack: AwsStack) -> None:
    publish(stack, bundle())
    publish(stack, bundle(good_files(version="1.10.0")))
    publish(stack, bundle(good_files(version="1.9.0")))
    publish(stack, bundle(good_files(name="com.globex.maps", publisher="Globex")), tenant="globex")

    listed = stack.call("GET", "/extensions?include=versions")

    assert listed.status_code == 200, listed.json
    assert [e["name"] for e in listed.json["extensions"]] == ["com.acme.tools", "com.globex.maps"]
    for extension in listed.json["extensions"]:
        one = stack.call("GET", f"/extensions/{extension['name']}").json
        assert extension == one
    assert [v["version"] for v in listed.json["extensions"][0]["versions"]] == ["1.10.0", "1.9.0", "1.0.0"]
    plain = stack.call("GET", "/extensions").json["extensions"]
    assert plain == [{k: v for k, v in e.items() if k != "versions"} for e in listed.json["extensions"]]


@pytest.mark.parametrize("query", ["include=", "include=owners", "include=versions,owners", "include=Versions"])
def test_the_extension_list_includes_nothing_but_versions(stack: AwsStack, query: str) -> None:
    answer = stack.call("GET", f"/extensions?{query}")
    assert (answer.status_code, answer.json["error"]["code"]) == (400, "BAD_REQUEST")


def test_the_admin_page_serves_its_modules_and_the_error_sentences(stack: AwsStack) -> None:
    texts = stack.client.http.get("/admin/errors.json")
    assert texts.headers["Content-Type"] == "application/json"
    assert json.loads(texts.body) == error_texts()
    for module in MODULES:
        served = stack.client.http.get(f"/admin/{module}")
        assert (served.status_code, served.headers["Content-Type"]) == (200, "text/javascript; charset=utf-8")
    assert stack.client.http.get("/admin/__init__.py").status_code == 404


# --- installs ----------------------------------------------------------------------------------------


def test_install_enable_disable_upgrade_rollback_config_uninstall(stack: AwsStack) -> None:
    v1, v2 = bundle(), bundle(good_files(version="1.1.0"))
    publish(stack, v1)
    publish(stack, v2)
    installed = stack.call("POST", "/installs", {"extension": "com.acme.tools", "version": "1.0.0"})
    assert installed.status_code == 201
    assert installed.json["content_hash"] == content_hash(v1) and installed.json["enabled"] is True
    disabled = stack.call("PATCH", "/installs/com.acme.tools", {"enabled": False})
    assert disabled.json["enabled"] is False
    upgraded = stack.call("PATCH", "/installs/com.acme.tools", {"version": "1.1.0", "enabled": True})
    assert (upgraded.json["version"], upgraded.json["content_hash"]) == ("1.1.0", content_hash(v2))
    rolled = stack.call("POST", "/installs/com.acme.tools/rollback", {})
    assert (rolled.json["version"], rolled.json["content_hash"]) == ("1.0.0", content_hash(v1))
    configured = stack.call("PATCH", "/installs/com.acme.tools", {"config": {"greeting": "hi"}})
    assert configured.json["config"] == {"greeting": "hi"}
    bad_config = stack.call("PATCH", "/installs/com.acme.tools", {"config": [1]})
    assert bad_config.status_code == 400
    listed = stack.call("GET", "/installs").json["installs"]
    assert [i["extension"] for i in listed] == ["com.acme.tools"]
    assert stack.call("DELETE", "/installs/com.acme.tools").json["status"] == "uninstalled"
    assert stack.call("GET", "/installs/com.acme.tools").status_code == 404


def test_a_patch_with_version_and_config_checks_the_new_config_against_the_new_version(stack: AwsStack) -> None:
    # 1.1.0 requires `host`, which the install's current config lacks: the upgrade alone is refused, the
    # upgrade with a config that fits 1.1.0 is one change.
    strict = {"type": "object", "required": ["host"], "properties": {"host": {"type": "string", "minLength": 1}}}
    publish(stack, bundle(good_files(config_schema={"type": "object"})))
    publish(stack, bundle(good_files(version="1.1.0", config_schema=strict)))
    stack.call("POST", "/installs", {"extension": "com.acme.tools", "version": "1.0.0"})
    stack.call("PATCH", "/installs/com.acme.tools", {"config": {"retries": 3}})

    alone = stack.call("PATCH", "/installs/com.acme.tools", {"version": "1.1.0"})
    assert (alone.status_code, alone.json["error"]["code"]) == (400, "CONFIG_INVALID")
    together = stack.call("PATCH", "/installs/com.acme.tools", {"version": "1.1.0", "config": {"host": "h"}})

    assert together.status_code == 200, together.json
    assert (together.json["version"], together.json["config"]) == ("1.1.0", {"host": "h"})
    back = stack.call("PATCH", "/installs/com.acme.tools", {"version": "1.0.0", "config": {"retries": 4}})
    assert (back.json["version"], back.json["config"]) == ("1.0.0", {"retries": 4})
    assert [entry["version"] for entry in back.json["history"]] == ["1.1.0"]


def test_an_install_carries_its_config_checked_against_the_versions_schema(stack: AwsStack) -> None:
    # Issue 12: a version whose schema requires a field could not be installed, since POST /installs took
    # no config and `{}` was checked instead.
    strict = {
        "type": "object",
        "required": ["host"],
        "properties": {"host": {"type": "string", "minLength": 1}, "retries": {"type": "integer"}},
    }
    publish(stack, bundle(good_files(config_schema=strict)))
    install = {"extension": "com.acme.tools", "version": "1.0.0"}

    missing = stack.call("POST", "/installs", {**install, "config": {"retries": 3}})
    assert (missing.status_code, missing.json["error"]["code"]) == (400, "CONFIG_INVALID")
    assert missing.json["error"]["message"].startswith("config.host:"), missing.json
    assert stack.call("GET", "/installs/com.acme.tools").status_code == 404
    not_an_object = stack.call("POST", "/installs", {**install, "config": ["host"]})
    assert (not_an_object.status_code, not_an_object.json["error"]["code"]) == (400, "BAD_REQUEST")

    installed = stack.call("POST", "/installs", {**install, "config": {"host": "h", "retries": 3}})
    assert installed.status_code == 201, installed.json
    assert installed.json["config"] == {"host": "h", "retries": 3}
    assert stack.call("GET", "/installs/com.acme.tools").json["config"] == {"host": "h", "retries": 3}


def test_a_patch_with_one_malformed_field_changes_nothing(stack: AwsStack) -> None:
    publish(stack, bundle())
    publish(stack, bundle(good_files(version="1.1.0")))
    stack.call("POST", "/installs", {"extension": "com.acme.tools", "version": "1.0.0"})

    for body in ({"version": "1.1.0", "enabled": "yes"}, {"version": "1.1.0", "config": [1]}):
        answer = stack.call("PATCH", "/installs/com.acme.tools", body)
        assert (answer.status_code, answer.json["error"]["code"]) == (400, "BAD_REQUEST"), body

    assert stack.call("GET", "/installs/com.acme.tools").json["version"] == "1.0.0"


def test_installs_are_confined_to_the_callers_tenant(stack: AwsStack) -> None:
    publish(stack, bundle())
    stack.call("POST", "/installs", {"extension": "com.acme.tools", "version": "1.0.0"})
    globex = auth("globex")
    assert stack.call("GET", "/installs", headers=globex).json["installs"] == []
    for method, body in (("GET", None), ("PATCH", {"enabled": False}), ("DELETE", None)):
        answer = stack.call(method, "/installs/com.acme.tools", body, globex)
        assert answer.status_code == 404 and answer.json["error"]["code"] == "NOT_INSTALLED"
    assert stack.call("GET", "/installs/com.acme.tools").json["enabled"] is True
    user = auth("acme", ("user",))
    assert stack.call("GET", "/installs", headers=user).status_code == 200
    assert stack.call("PATCH", "/installs/com.acme.tools", {"enabled": False}, user).status_code == 403


def test_installing_an_unknown_version_is_404(stack: AwsStack) -> None:
    answer = stack.call("POST", "/installs", {"extension": "com.acme.nothing", "version": "1.0.0"})
    assert answer.status_code == 404


def test_the_openapi_document_lists_exactly_the_routes() -> None:
    import app as app_module

    documented = {
        (path, method.upper())
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters" and not path.startswith("/api/ext")
    }
    routed = {
        (path, method)
        for path, methods in app_module.app.routes.items()
        for method in methods
        if not path.startswith(("/api/ext", "/admin"))
    }
    assert documented == routed
    # The gateway: one documented path for Chalice's one route per depth, with the same methods.
    gateway = {m.upper() for m in openapi_document()["paths"]["/api/ext/{extension}/{path}"]} - {"PARAMETERS"}
    assert all(
        set(methods) == gateway for path, methods in app_module.app.routes.items() if path.startswith("/api/ext")
    )


# --- what an error tells the client (issue 9, item 10) -------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def ext_records() -> Iterator[list[logging.LogRecord]]:
    """The records of the platform's ``ext`` logger (it does not propagate to pytest's handler)."""
    handler = _Records()
    level = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    yield handler.records
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


def logged_detail(records: list[logging.LogRecord], request_id: str) -> str:
    """Every field the logs hold for ``request_id``, as one string."""
    return " ".join(str(r.__dict__) for r in records if r.__dict__.get("request_id") == request_id)


def test_a_registry_failure_answers_a_generic_message_and_logs_the_detail(
    stack: AwsStack, ext_records: list[logging.LogRecord]
) -> None:
    assert stack.call("GET", "/extensions").status_code == 200
    boto3.client("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1").delete_table(
        TableName="it-extensions"
    )

    answer = stack.call("GET", "/extensions")

    assert answer.status_code == 503
    error = answer.json["error"]
    assert error["code"] == "STORAGE_ERROR"
    assert "ResourceNotFound" not in error["message"] and "registry" not in error["message"]
    assert error["request_id"] in error["message"]
    assert "ResourceNotFound" in logged_detail(ext_records, error["request_id"])


def test_a_configuration_error_answers_a_generic_message_and_logs_the_detail(
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    ext_records: list[logging.LogRecord],
) -> None:
    monkeypatch.setenv("SIGNING_TRUST_BUNDLE", "/etc/ext-platform/secret-dir/trust.pem")
    stack: AwsStack = request.getfixturevalue("stack")

    answer = stack.call("POST", "/ext-bundles/initiate-upload", {"size": 1000})

    assert answer.status_code == 500
    error = answer.json["error"]
    assert error["code"] == "SETTINGS_INVALID"
    assert "secret-dir" not in error["message"] and "SIGNING_TRUST_BUNDLE" not in error["message"]
    assert "secret-dir" in logged_detail(ext_records, error["request_id"])


# --- the order of register and store (issue 9, item 10) ------------------------------------------


class _RivalRegistersFirst(RegistryService):
    """The registry as a finalize sees it when a concurrent finalize of the same version with other bytes
    registers right after this one found the version free."""

    def __init__(self, models: Models, rival: VersionRecord) -> None:
        super().__init__(models)
        self._rival: VersionRecord | None = rival

    def existing_state(self, name: str, version: str, content_hash: str) -> ExistingState:
        state = super().existing_state(name, version, content_hash)
        if self._rival is not None:
            self.register_version(self._rival, "acme", None)
            self._rival = None
        return state


class _CopyFailsOnce(S3BundleStore):
    """The store with the bundle copy failing once, as a worker killed mid-copy would leave it."""

    failed = False

    def put_bundle_from_staging(self, staging_key: str, content_hash: str, *, source_etag: str | None = None) -> Any:
        if not self.failed:
            self.failed = True
            raise StorageError("the worker died during the copy")
        return super().put_bundle_from_staging(staging_key, content_hash, source_etag=source_etag)


def test_a_finalize_that_loses_the_race_for_its_version_stores_nothing(stack: AwsStack) -> None:
    # Anything under sha256/ is served by /ext-ui/ under its manifest's name: a loser's bytes must not get there.
    services = app_module.services()
    rival = VersionRecord.from_manifest(
        manifest(),
        content_hash="sha256:" + "cd" * 32,
        size=1,
        signature=None,
        signature_status=SignatureStatus.UNSIGNED,
        key_id=None,
        created_at=datetime.now(UTC),
        created_by=Actor(tenant="acme", sub="rival"),
    )
    services.__dict__["registry"] = _RivalRegistersFirst(services.models, rival)
    data = bundle()

    answer = publish(stack, data)

    assert answer.status_code == 409
    assert answer.json["error"]["code"] == "VERSION_EXISTS"
    assert stack.keys("sha256/") == []


def test_a_finalize_cut_off_between_register_and_store_completes_the_store_when_retried(stack: AwsStack) -> None:
    services = app_module.services()
    services.__dict__["store"] = _CopyFailsOnce(stack.s3, BUCKET)
    data = bundle()
    target = upload(stack, data)

    first = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    retried = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})

    assert first.status_code == 503
    assert retried.status_code == 200, retried.json
    # The version the cut-off attempt registered is this upload's own: the answer is an uninterrupted run's.
    assert retried.json["status"] == "finalized"
    hex_digest = content_hash(data).split(":")[1]
    assert stack.keys("sha256/") == [
        f"sha256/{hex_digest}/{n}" for n in ("bundle.tar.zst", "entry.wasm", "manifest.json", "published.json")
    ]
    versions = stack.call("GET", "/extensions/com.acme.tools/versions").json["versions"]
    assert [(v["version"], v["content_hash"]) for v in versions] == [("1.0.0", content_hash(data))]


def test_a_bundle_past_the_compression_ratio_cap_is_refused_at_publish(stack: AwsStack) -> None:
    # 20 KiB that unpack to 60 MiB: within the size limits, thousands of times past the ratio cap.
    data = zero_filled_bundle(good_files(), {"data/zeros.bin": 60 * MiB})

    answer = publish(stack, data)

    assert answer.status_code == 413
    assert answer.json["error"]["code"] == "BUNDLE_UNPACKED_TOO_LARGE"
    assert "times its compressed size" in answer.json["error"]["message"]
    assert stack.keys("sha256/") == []
