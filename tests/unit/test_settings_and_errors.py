"""The settings table and the error hierarchy: complete, validated, documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import SETTINGS, load_settings, settings_table_markdown
from chalicelib.errors import (
    ABSTRACT_ERRORS,
    ALL_ERRORS,
    BundleError,
    ExtError,
    HashMismatch,
    InstallConfigInvalid,
    Internal,
    KvError,
    KvUnavailable,
    SettingsInvalid,
    error_for_code,
    error_table_markdown,
    error_texts,
    errors_by_code,
)

ROOT = Path(__file__).resolve().parents[2]

DESIGN_CODES = [
    "BUNDLE_TOO_LARGE",
    "BUNDLE_CORRUPT",
    "BUNDLE_UNPACKED_TOO_LARGE",
    "BUNDLE_TOO_MANY_ENTRIES",
    "BUNDLE_UNSAFE_PATH",
    "BUNDLE_UNSUPPORTED_ENTRY",
    "BUNDLE_DUPLICATE_ENTRY",
    "MANIFEST_MISSING",
    "MANIFEST_INVALID",
    "MANIFEST_FILE_MISSING",
    "WASM_INVALID",
    "HASH_MISMATCH",
    "SIGNATURE_MISSING",
    "SIGNATURE_INVALID",
    "SIGNATURE_UNTRUSTED",
    "SIGNATURE_SCOPE",
    "VERSION_EXISTS",
    "NAME_OWNED",
    "UPLOAD_NOT_FOUND",
    "UPLOAD_EXPIRED",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "RATE_LIMITED",
    "NOT_INSTALLED",
    "ENDPOINT_NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "EXTENSION_TIMEOUT",
    "EXTENSION_FAILED",
    "EXTENSION_NOT_READY",
    "RUNNER_BUSY",
    "CONFIG_INVALID",
    "SECRET_INVALID",
]

DESIGN_SETTINGS = [
    "STORAGE_S3_BUCKET",
    "STORAGE_S3_ENDPOINT",
    "STORAGE_S3_REGION",
    "STORAGE_S3_FORCE_PATH_STYLE",
    "BUNDLE_STORE_BASE",
    "REGISTRY_TABLE_PREFIX",
    "RUNNER_FUNCTION_NAME",
    "RUNNER_BASE_URL",
    "RUNNER_PUBLIC_BASE",
    "RUNNER_CACHE_DIR",
    "RUNNER_CACHE_MAX_BYTES",
    "EXT_GATEWAY_TIMEOUT_MS",
    "EXT_GATEWAY_MAX_BODY_BYTES",
    "SIGNING_TRUST_BUNDLE",
    "EXT_EGRESS_ALLOWLIST",
    "EXT_AUTH_SECRET",
    "EXT_AUTH_JWKS",
]


def test_every_design_error_code_has_a_class_with_an_http_status() -> None:
    codes = {cls.code: cls.http_status for cls in ALL_ERRORS}
    for code in DESIGN_CODES:
        assert code in codes, code
        assert 400 <= codes[code] <= 599


def test_error_bodies_have_the_contract_shape() -> None:
    error = next(cls for cls in ALL_ERRORS if cls.code == "HASH_MISMATCH")("bytes differ")
    assert error.to_dict("req-1") == {
        "error": {"code": "HASH_MISMATCH", "message": "bytes differ", "request_id": "req-1"}
    }
    assert str(error) == "HASH_MISMATCH: bytes differ"
    assert isinstance(error, ExtError)


def test_every_design_setting_is_in_the_table() -> None:
    names = {s.env for s in SETTINGS}
    assert set(DESIGN_SETTINGS) <= names
    assert len(names) == len(SETTINGS)


def test_defaults_match_the_design_limits() -> None:
    limits = load_settings({}).bundle_limits
    MiB = 1024 * 1024
    assert (limits.max_compressed_bytes, limits.max_unpacked_bytes, limits.max_entries) == (200 * MiB, 512 * MiB, 5000)
    assert (limits.max_file_bytes, limits.max_path_bytes, limits.max_path_depth) == (64 * MiB, 240, 16)
    assert (limits.max_window_bytes, limits.max_manifest_bytes) == (32 * MiB, 64 * 1024)


def test_values_are_parsed_and_invalid_ones_name_the_variable() -> None:
    settings = load_settings(
        {
            "BUNDLE_MAX_ENTRIES": "10_000",
            "STORAGE_S3_FORCE_PATH_STYLE": "yes",
            "EXT_EGRESS_ALLOWLIST": "a.com, *.b.io",
            "BUNDLE_STORE_BASE": "/blobs",
        }
    )
    assert settings.bundle_limits.max_entries == 10_000
    assert settings.storage_s3_force_path_style is True
    assert settings.ext_egress_allowlist == ("a.com", "*.b.io")
    assert settings.bundle_store_base == "blobs/"
    with pytest.raises(SettingsInvalid, match="BUNDLE_MAX_ENTRIES"):
        load_settings({"BUNDLE_MAX_ENTRIES": "many"})
    with pytest.raises(SettingsInvalid, match="at least"):
        load_settings({"BUNDLE_MAX_ENTRIES": "0"})
    with pytest.raises(SettingsInvalid, match="STORAGE_S3_FORCE_PATH_STYLE"):
        load_settings({"STORAGE_S3_FORCE_PATH_STYLE": "maybe"})


def _block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def test_the_readme_settings_table_is_generated_from_the_code() -> None:
    assert _block("settings") == settings_table_markdown(), "regenerate with: python -m chalicelib.config"


def test_the_readme_error_table_is_generated_from_the_code() -> None:
    assert _block("errors") == error_table_markdown(), "regenerate with: python -m chalicelib.errors"


def test_every_error_code_has_a_sentence_for_people_of_its_own() -> None:
    # The admin UI shows these (served as /admin/errors.json); a class that inherited its
    # parent's sentence would describe another error.
    concrete = [cls for cls in ALL_ERRORS if cls not in (ExtError, *ABSTRACT_ERRORS)]
    inheriting = [cls.__name__ for cls in concrete if "user_message" not in vars(cls)]
    assert inheriting == []
    texts = error_texts()
    assert set(texts) == {cls.code for cls in ALL_ERRORS}
    assert [code for code, text in texts.items() if not (text[:1].isupper() and text.endswith("."))] == []


def _failing_stage(stage: Any) -> None:
    from chalicelib.errors import HashMismatch

    with stage("thing.verify", upload_id="u1") as learned:
        learned["content_hash"] = "sha256:" + "a" * 64
        raise HashMismatch("bytes differ")


def test_log_lines_carry_bound_fields_and_stage_outcomes() -> None:
    import io
    import json as json_module
    import logging

    from chalicelib.errors import HashMismatch
    from chalicelib.logs import LOGGER, JsonFormatter, bind, log_event, stage

    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        with bind(request_id="req-7", tenant="acme"):
            log_event("thing.done", upload_id="u1")
            with pytest.raises(HashMismatch):
                _failing_stage(stage)
        log_event("after")
    finally:
        LOGGER.removeHandler(handler)
    lines = [json_module.loads(line) for line in sink.getvalue().splitlines()]
    assert lines[0]["request_id"] == "req-7" and lines[0]["tenant"] == "acme" and lines[0]["upload_id"] == "u1"
    assert lines[1]["event"] == "thing.verify" and lines[1]["outcome"] == "HASH_MISMATCH"
    assert lines[1]["content_hash"].startswith("sha256:") and lines[1]["duration_ms"] >= 0
    assert "request_id" not in lines[2]


def test_each_code_has_one_meaning() -> None:
    # CONFIG_INVALID was once both an operator's bad setting (500) and, per DESIGN, a tenant's bad
    # install config (400): one code, two meanings. Operator settings now have SETTINGS_INVALID.
    concrete = [cls for cls in ALL_ERRORS if cls not in (ExtError, *ABSTRACT_ERRORS)]
    codes = [cls.code for cls in concrete]
    assert sorted(code for code in set(codes) if codes.count(code) > 1) == []
    assert (InstallConfigInvalid.code, InstallConfigInvalid.http_status) == ("CONFIG_INVALID", 400)
    assert (SettingsInvalid.code, SettingsInvalid.http_status) == ("SETTINGS_INVALID", 500)


def test_every_code_rebuilds_its_own_class() -> None:
    # A recorded upload failure or a relayed runner error comes back as the class of its code, never a base.
    concrete = [cls for cls in ALL_ERRORS if cls not in ABSTRACT_ERRORS]
    assert list(errors_by_code().values()) == concrete
    for code, cls in errors_by_code().items():
        assert type(error_for_code(code, "m", retry_after=2)) is cls
    assert type(error_for_code("KV_UNAVAILABLE", "m")) is KvUnavailable


def test_an_internal_code_rebuilds_the_internal_error_whose_detail_stays_in_the_logs() -> None:
    rebuilt = error_for_code("INTERNAL", "/var/task/app.py line 7")
    assert type(rebuilt) is Internal
    assert rebuilt.hides_detail
    assert type(error_for_code("NO_SUCH_CODE", "m")) is Internal


def test_abstract_bases_have_no_code_and_cannot_be_raised() -> None:
    assert {BundleError, KvError, ExtError} <= set(ABSTRACT_ERRORS)
    for base in ABSTRACT_ERRORS:
        assert base is ExtError or "code" not in vars(base), base.__name__
        with pytest.raises(TypeError, match="abstract"):
            base("m")


def test_a_base_that_carries_a_leafs_code_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match="both have the code HASH_MISMATCH"):

        class ShadowingBase(ExtError):
            code = "HASH_MISMATCH"

    with pytest.raises(TypeError, match="abstract: its leaves carry the codes"):

        class AbstractWithCode(ExtError, abstract=True):
            code = "SOMETHING_NEW"


def test_a_class_that_would_inherit_its_parents_code_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match="needs a code of its own"):

        class InheritsHashMismatch(HashMismatch):
            pass


def test_the_readme_error_table_has_a_row_for_every_code() -> None:
    rows = error_table_markdown().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(errors_by_code())
