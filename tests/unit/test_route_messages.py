"""The request types the routes parse bodies into, and the JSON of the results the services return."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.errors import BadRequest
from chalicelib.registry import InstallChange, InstallRequest, RollbackRequest, UploadState
from chalicelib.storage.multipart import UploadedPart
from chalicelib.storage.presign import PresignedPart
from chalicelib.uploads.messages import (
    AbortRequest,
    AbortResult,
    FinalizeRequest,
    FinalizeResult,
    InitiateRequest,
    UploadStatus,
    UploadTarget,
)

SHA = "ab" * 32
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- uploads --------------------------------------------------------------------------------


def test_an_initiate_body_is_read_into_its_request_and_the_sha256_prefix_dropped() -> None:
    assert InitiateRequest.parse({"size": 10, "sha256": f"sha256:{SHA}"}) == InitiateRequest(size=10, sha256=SHA)
    assert InitiateRequest.parse({"size": 10}) == InitiateRequest(size=10)


def test_the_size_limit_is_not_the_parsers_business() -> None:
    # BUNDLE_TOO_LARGE depends on the settings: the pipeline checks it.
    assert InitiateRequest.parse({"size": 10**15}).size == 10**15


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "`size`"),
        ({"size": "big"}, "`size`"),
        ({"size": True}, "`size`"),
        ({"size": 0}, "`size`"),
        ({"size": 1, "sha256": "AB" * 32}, "`sha256`"),
        ({"size": 1, "sha256": 7}, "`sha256`"),
        ({"size": 1, "signature": 7}, "`signature`"),
    ],
)
def test_a_malformed_initiate_body_names_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        InitiateRequest.parse(body)


def test_a_finalize_body_carries_its_parts_or_none() -> None:
    parsed = FinalizeRequest.parse({"upload_id": "u1", "parts": [{"part_number": 2, "etag": '"x"'}]})
    assert parsed == FinalizeRequest(upload_id="u1", parts=(UploadedPart(2, '"x"'),))
    assert FinalizeRequest.parse({"upload_id": "u1"}).parts is None
    assert FinalizeRequest.parse({"upload_id": "u1", "parts": []}).parts == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "`upload_id` is required"),
        ({"upload_id": ""}, "`upload_id` is required"),
        ({"upload_id": "u", "parts": {}}, "`parts` must be a list"),
        ({"upload_id": "u", "parts": [{"part_number": True, "etag": "e"}]}, "integer `part_number`"),
        ({"upload_id": "u", "parts": [{"part_number": 1}]}, "string `etag`"),
    ],
)
def test_a_malformed_finalize_body_is_a_bad_request(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        FinalizeRequest.parse(body)
    if "parts" not in body:
        with pytest.raises(BadRequest, match=message):
            AbortRequest.parse(body)


def test_a_put_target_and_a_multipart_target_have_their_own_fields() -> None:
    put = UploadTarget("u1", 10, "PUT", T0, url="https://s3/x", headers={"content-type": "application/zstd"})
    assert put.to_json() == {
        "upload_id": "u1",
        "size": 10,
        "method": "PUT",
        "url": "https://s3/x",
        "headers": {"content-type": "application/zstd"},
        "expires_at": "2026-01-02T03:04:05+00:00",
    }
    parts = (PresignedPart(1, "https://s3/1"), PresignedPart(2, "https://s3/2"))
    multipart = UploadTarget("u2", 9, "MULTIPART", T0, part_size=5, parts=parts)
    assert multipart.to_json() == {
        "upload_id": "u2",
        "size": 9,
        "method": "MULTIPART",
        "part_size": 5,
        "parts": [{"part_number": 1, "url": "https://s3/1"}, {"part_number": 2, "url": "https://s3/2"}],
        "headers": {},
        "expires_at": "2026-01-02T03:04:05+00:00",
    }


def test_a_stored_finalize_result_reads_back_as_the_same_answer() -> None:
    result = FinalizeResult("u1", f"sha256:{SHA}", "com.acme.x", "1.0.0", "finalized", "unsigned", None, 42)

    assert FinalizeResult.from_json(result.to_json()) == result
    assert list(result.to_json()) == [
        "upload_id",
        "content_hash",
        "extension",
        "version",
        "status",
        "signature_status",
        "key_id",
        "size",
    ]
    assert AbortResult("u1").to_json() == {"upload_id": "u1", "status": "aborted"}


def test_an_upload_status_shows_what_its_state_has() -> None:
    result = FinalizeResult("u1", f"sha256:{SHA}", "com.acme.x", "1.0.0", "finalized", "unsigned", None, 42)
    base = {"upload_id": "u1", "size": 42, "sha256": None, "expires_at": "2026-01-02T03:04:05+00:00"}

    finalized = UploadStatus("u1", UploadState.FINALIZED, 42, None, T0, result=result)
    assert finalized.to_json() == {**base, "state": "finalized", "result": result.to_json()}
    failed = UploadStatus("u1", UploadState.FAILED, 42, None, T0, error_code="HASH_MISMATCH", error_message="m")
    assert failed.to_json() == {**base, "state": "failed", "error": {"code": "HASH_MISMATCH", "message": "m"}}
    resuming = UploadStatus(
        "u1",
        UploadState.PENDING,
        42,
        None,
        T0,
        part_size=5,
        uploaded_parts=(UploadedPart(1, '"e"', 5),),
        parts=(PresignedPart(2, "https://s3/2"),),
    )
    assert resuming.to_json() == {
        **base,
        "state": "pending",
        "method": "MULTIPART",
        "part_size": 5,
        "uploaded_parts": [{"part_number": 1, "etag": '"e"', "size": 5}],
        "parts": [{"part_number": 2, "url": "https://s3/2"}],
    }


# --- installs -------------------------------------------------------------------------------


def test_an_install_body_names_an_extension_and_a_version() -> None:
    assert InstallRequest.parse({"extension": "com.acme.x", "version": "1.0.0"}) == InstallRequest(
        "com.acme.x", "1.0.0"
    )
    with pytest.raises(BadRequest, match="`version` must be a non-empty string"):
        InstallRequest.parse({"extension": "com.acme.x", "version": ""})


def test_an_install_change_keeps_only_what_was_sent() -> None:
    assert InstallChange.parse({"enabled": False}) == InstallChange(enabled=False)
    both = InstallChange.parse({"version": "2.0.0", "config": {"host": "h"}})
    assert both == InstallChange(version="2.0.0", config={"host": "h"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "send one or more of `enabled`, `version`, `config`$"),
        ({"enabled": True, "colour": "red"}, r"\(not \['colour'\]\)"),
        ({"enabled": "yes"}, "`enabled` must be true or false"),
        ({"version": 2}, "`version` must be a non-empty string"),
        ({"config": [1]}, "config must be a JSON object"),
        ({"config": None}, "config must be a JSON object"),
        ({"config": {"big": "x" * 16384}}, "at most 16384 bytes"),
    ],
)
def test_a_malformed_install_change_is_a_bad_request_before_anything_is_written(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        InstallChange.parse(body)


def test_a_rollback_names_a_version_or_none() -> None:
    assert RollbackRequest.parse({}) == RollbackRequest(None)
    assert RollbackRequest.parse({"version": None}) == RollbackRequest(None)
    assert RollbackRequest.parse({"version": "1.0.0"}) == RollbackRequest("1.0.0")
    with pytest.raises(BadRequest, match="`version` must be a non-empty string"):
        RollbackRequest.parse({"version": ""})
