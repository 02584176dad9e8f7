"""Install secrets against moto DynamoDB and KMS: envelope encryption bound to its context, the
admin side and the runner side, isolation, and a value that appears in no output of any path."""

from __future__ import annotations

import base64
import itertools
import json
import pickle
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.bundles.manifest import SecretSpec
from chalicelib.config import load_settings
from chalicelib.errors import BadRequest, ExtError, SecretDenied, SecretInvalid, SecretNotFound, SecretUnavailable
from chalicelib.secrets import (
    PutSecretRequest,
    SecretModel,
    SecretReader,
    SecretsAccess,
    SecretsService,
    SecretValue,
    create_secrets_table,
    ensure_secrets_key,
    make_secret_model,
)
from chalicelib.secrets.sealing import encryption_context
from chalicelib.tenancy import InstallScope
from runner_container.host_services import core_secret_answer
from runner_container.state import InstallSecrets
from tests.log_capture import EveryLogLine

EXTENSION = "com.acme.crm"
ALIAS = "alias/ext-secrets-it"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DECLARED = (
    SecretSpec("API_KEY", "The CRM's API key", required=True),
    SecretSpec("WEBHOOK_TOKEN", None, required=False),
    SecretSpec("REGION_HINT", None, required=True),
)
_tenants = itertools.count()


class Ticks:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
            patch.delenv(name, raising=False)
        with mock_aws():
            model = make_secret_model(load_settings({"SECRETS_TABLE_NAME": "secrets-it"}))
            create_secrets_table(model)
            kms = boto3.client("kms", region_name="us-east-1")
            key_arn = ensure_secrets_key(kms, ALIAS)
            yield {"model": model, "kms": kms, "key_arn": key_arn}


@pytest.fixture
def model(aws: dict[str, Any]) -> type[SecretModel]:
    bound: type[SecretModel] = aws["model"]
    return bound


@pytest.fixture
def kms(aws: dict[str, Any]) -> Any:
    return aws["kms"]


@pytest.fixture
def admin(model: type[SecretModel], kms: Any) -> SecretsService:
    return SecretsService(model, kms, ALIAS, lambda: T0)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def reader(model: type[SecretModel], kms: Any, ticks: Ticks) -> SecretReader:
    return SecretReader(model, kms, ttl_seconds=60, monotonic=ticks)


@pytest.fixture
def scope() -> InstallScope:
    return InstallScope(f"t{next(_tenants)}", EXTENSION)


def put(admin: SecretsService, scope: InstallScope, name: str, value: str) -> Any:
    return admin.put(scope, name, PutSecretRequest.parse({"value": value}), DECLARED, by="alice")


def decrypt_calls(kms: Any) -> list[str]:
    """Every KMS Decrypt the client makes from now on (a botocore event hook: the real call still runs)."""
    calls: list[str] = []
    kms.meta.events.register("before-call.kms.Decrypt", lambda **_: calls.append("Decrypt"))
    return calls


# --- the admin side -------------------------------------------------------------------------------


def test_a_secret_set_by_an_admin_is_read_by_the_runner(
    admin: SecretsService, reader: SecretReader, scope: InstallScope
) -> None:
    status = put(admin, scope, "API_KEY", "sk_live_0123")

    assert status.to_json() == {
        "name": "API_KEY",
        "description": "The CRM's API key",
        "declared": True,
        "required": True,
        "set": True,
        "missing": False,
        "updated_at": "2026-11-26T12:00:00Z",
    }
    assert reader.get(scope, "API_KEY").reveal() == "sk_live_0123"


def test_the_list_shows_declared_names_missing_ones_and_leftovers_never_values(
    admin: SecretsService, scope: InstallScope
) -> None:
    put(admin, scope, "API_KEY", "value-one")
    put(admin, scope, "WEBHOOK_TOKEN", "value-two")
    # The install moved to a version that no longer declares WEBHOOK_TOKEN.
    declared_now = (DECLARED[0], DECLARED[2])

    listed = admin.list(scope, declared_now).to_json()

    assert [(s["name"], s["declared"], s["required"], s["set"], s["missing"]) for s in listed["secrets"]] == [
        ("API_KEY", True, True, True, False),
        ("REGION_HINT", True, True, False, True),
        ("WEBHOOK_TOKEN", False, False, True, False),
    ]
    assert "value-one" not in json.dumps(listed) and "value-two" not in json.dumps(listed)
    assert listed["secrets"][1]["updated_at"] is None


def test_only_declared_names_may_be_set(admin: SecretsService, scope: InstallScope) -> None:
    with pytest.raises(SecretInvalid, match="OTHER is not a secret the installed version declares"):
        put(admin, scope, "OTHER", "x")
    with pytest.raises(SecretInvalid, match="not a secret name"):
        put(admin, scope, "api_key", "x")
    assert admin.list(scope, ()).secrets == ()


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"value": ""}, SecretInvalid, "1 to 8192 bytes of UTF-8; it is 0"),
        ({"value": "é" * 4097}, SecretInvalid, "1 to 8192 bytes of UTF-8; it is 8194"),
        ({"value": "\ud800x"}, SecretInvalid, "lone surrogate"),
        ({"value": 42}, SecretInvalid, "`value` must be a string"),
        ({"value": "x", "note": "y"}, BadRequest, "unknown field: note"),
        (["value"], BadRequest, "JSON object"),
    ],
)
def test_a_value_is_1_byte_to_8_kib_of_utf8(body: Any, error: type[ExtError], message: str) -> None:
    with pytest.raises(error, match=message):
        PutSecretRequest.parse(body)


def test_the_largest_value_fits(admin: SecretsService, reader: SecretReader, scope: InstallScope) -> None:
    put(admin, scope, "API_KEY", "é" * 4096)
    assert reader.get(scope, "API_KEY").reveal() == "é" * 4096


def test_delete_and_purge(admin: SecretsService, reader: SecretReader, scope: InstallScope) -> None:
    put(admin, scope, "API_KEY", "a")
    put(admin, scope, "WEBHOOK_TOKEN", "b")
    neighbour = InstallScope(scope.tenant, "com.acme.neighbour")
    put(admin, neighbour, "API_KEY", "c")

    assert admin.delete(scope, "API_KEY") is True
    assert admin.delete(scope, "API_KEY") is False
    with pytest.raises(SecretNotFound):
        reader.get(scope, "API_KEY")
    assert admin.purge(scope) == 1
    assert admin.purge(scope) == 0
    assert admin.list(scope, ()).secrets == ()
    assert reader.get(neighbour, "API_KEY").reveal() == "c"


def test_another_tenant_can_neither_read_nor_list_nor_delete_nor_purge_a_secret(
    admin: SecretsService, reader: SecretReader, scope: InstallScope
) -> None:
    put(admin, scope, "API_KEY", "tenant-a-only")
    other = InstallScope(scope.tenant + "b", scope.extension)

    with pytest.raises(SecretNotFound):
        reader.get(other, "API_KEY")
    assert [s.is_set for s in admin.list(other, DECLARED).secrets] == [False, False, False]
    assert admin.delete(other, "API_KEY") is False
    assert admin.purge(other) == 0
    put(admin, other, "API_KEY", "tenant-b")
    assert reader.get(scope, "API_KEY").reveal() == "tenant-a-only"


# --- envelope encryption ------------------------------------------------------------------------------


def test_the_row_holds_only_a_wrapped_key_a_nonce_and_ciphertext(
    admin: SecretsService, model: type[SecretModel], kms: Any, aws: dict[str, Any], scope: InstallScope
) -> None:
    value = "plain-text-canary-0451"
    put(admin, scope, "API_KEY", value)
    raw = boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName=model.Meta.table_name, Key={"ns": {"S": scope.key}, "name": {"S": "API_KEY"}}
    )["Item"]

    assert value.encode() not in json.dumps(raw, default=repr).encode()
    assert all(value.encode() not in attribute.get("B", b"") for attribute in raw.values())
    assert raw["kms_key_id"]["S"] == aws["key_arn"]
    assert raw["format"]["S"] == "kms-aes256gcm/v1"
    assert len(raw["nonce"]["B"]) == 12
    assert len(raw["sealed"]["B"]) == len(value) + 16  # the GCM tag
    # KMS unwraps the data key only with the same tenant, extension and name.
    context = encryption_context(scope, "API_KEY")
    assert len(kms.decrypt(CiphertextBlob=raw["wrapped_key"]["B"], EncryptionContext=context)["Plaintext"]) == 32
    for changed in ({"tenant": "other"}, {"extension": "com.acme.other"}, {"name": "WEBHOOK_TOKEN"}):
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=raw["wrapped_key"]["B"], EncryptionContext={**context, **changed})


def test_a_sealed_row_copied_to_another_install_or_name_does_not_open(
    admin: SecretsService, reader: SecretReader, model: type[SecretModel], scope: InstallScope
) -> None:
    put(admin, scope, "API_KEY", "stolen?")
    item = model.get(scope.key, "API_KEY")
    thief = InstallScope(scope.tenant + "x", scope.extension)
    for target_scope, target_name in ((thief, "API_KEY"), (scope, "WEBHOOK_TOKEN")):
        copy = model(target_scope.key, target_name, **{k: getattr(item, k) for k in _SEALED_FIELDS})
        copy.save()
        with pytest.raises(SecretUnavailable, match=f"the stored secret {target_name} does not decrypt|KMS could not"):
            reader.get(target_scope, target_name)


_SEALED_FIELDS = ("sealed", "nonce", "wrapped_key", "kms_key_id", "format", "updated_at")


def test_each_secret_has_its_own_data_key(admin: SecretsService, model: type[SecretModel], scope: InstallScope) -> None:
    put(admin, scope, "API_KEY", "same")
    put(admin, scope, "WEBHOOK_TOKEN", "same")
    first, second = model.get(scope.key, "API_KEY"), model.get(scope.key, "WEBHOOK_TOKEN")
    assert first.wrapped_key != second.wrapped_key
    assert first.sealed != second.sealed


# --- the runner side ---------------------------------------------------------------------------------


def test_the_runner_asks_kms_once_per_version_and_period_and_sees_changes_at_once(
    admin: SecretsService, reader: SecretReader, kms: Any, ticks: Ticks, scope: InstallScope
) -> None:
    calls = decrypt_calls(kms)
    put(admin, scope, "API_KEY", "v1")

    assert [reader.get(scope, "API_KEY").reveal() for _ in range(3)] == ["v1"] * 3
    assert len(calls) == 1
    put(admin, scope, "API_KEY", "v2")
    assert reader.get(scope, "API_KEY").reveal() == "v2"
    assert len(calls) == 2
    ticks.now += 61
    assert reader.get(scope, "API_KEY").reveal() == "v2"
    assert len(calls) == 3
    admin.delete(scope, "API_KEY")
    with pytest.raises(SecretNotFound):
        reader.get(scope, "API_KEY")


def test_a_call_may_read_only_declared_names_with_the_capability(
    admin: SecretsService, reader: SecretReader, scope: InstallScope
) -> None:
    put(admin, scope, "API_KEY", "k")
    names = [spec.name for spec in DECLARED]

    with pytest.raises(SecretDenied, match=r"cap:secrets\.get"):
        SecretsAccess(reader, scope, names, allowed=False).get("API_KEY")
    access = SecretsAccess(reader, scope, ["WEBHOOK_TOKEN"], allowed=True)
    with pytest.raises(SecretDenied, match="does not declare a secret named 'API_KEY'"):
        access.get("API_KEY")
    with pytest.raises(SecretNotFound):
        access.get("WEBHOOK_TOKEN")
    assert SecretsAccess(reader, scope, names, allowed=True).get("API_KEY").reveal() == "k"


def test_a_call_reads_each_name_once(admin: SecretsService, reader: SecretReader, scope: InstallScope) -> None:
    put(admin, scope, "API_KEY", "k")
    access = SecretsAccess(reader, scope, ["API_KEY"], allowed=True)
    assert access.get("API_KEY").reveal() == "k"
    admin.delete(scope, "API_KEY")
    assert access.get("API_KEY").reveal() == "k"
    with pytest.raises(SecretNotFound):
        SecretsAccess(reader, scope, ["API_KEY"], allowed=True).get("API_KEY")


def core(access: SecretsAccess, raw_name: bytes) -> tuple[int, dict[str, Any]]:
    """The runner's ``ext.secret_get`` answer for ``raw_name``: its return code and JSON."""
    code, answer = core_secret_answer(InstallSecrets(access), raw_name)
    return code, json.loads(answer)


def test_the_core_abi_answers_the_value_or_an_error(
    admin: SecretsService, reader: SecretReader, scope: InstallScope
) -> None:
    put(admin, scope, "API_KEY", "ключ")
    access = SecretsAccess(reader, scope, ["API_KEY", "WEBHOOK_TOKEN"], allowed=True)

    assert core(access, b"API_KEY") == (0, {"value": "ключ"})
    assert core(access, b"WEBHOOK_TOKEN")[1]["error"]["code"] == "SECRET_NOT_FOUND"
    assert core(access, b"OTHER")[1]["error"]["code"] == "SECRET_DENIED"
    assert core(access, b"\xff") == (1, {"error": {"code": "SECRET_DENIED", "message": "a secret name is UTF-8 text"}})


def test_kms_and_storage_failures_are_unavailable(
    admin: SecretsService, model: type[SecretModel], scope: InstallScope
) -> None:
    put(admin, scope, "API_KEY", "k")
    elsewhere = boto3.client("kms", region_name="eu-west-1")  # the key does not exist in that region
    with pytest.raises(SecretUnavailable, match=r"KMS could not unwrap the data key: NotFoundException"):
        SecretReader(model, elsewhere).get(scope, "API_KEY")
    with pytest.raises(SecretUnavailable, match="KMS could not make a data key: NotFoundException"):
        put(SecretsService(model, elsewhere, ALIAS), scope, "API_KEY", "k")
    missing = make_secret_model(load_settings({"SECRETS_TABLE_NAME": "secrets-never-created"}))
    with pytest.raises(SecretUnavailable, match="ResourceNotFoundException"):
        SecretReader(missing, elsewhere).get(scope, "API_KEY")


def test_the_local_key_is_made_once(kms: Any) -> None:
    before = len(kms.list_keys()["Keys"])
    first = ensure_secrets_key(kms, "alias/once")
    assert ensure_secrets_key(kms, "alias/once") == first
    assert len(kms.list_keys()["Keys"]) == before + 1


# --- the value never shows --------------------------------------------------------------------------


def _every_rendering(obj: Any) -> str:
    """Every way an object (an exception with its chain, a result) could reach a log, a response or a terminal."""
    parts = [str(obj), repr(obj)]
    if isinstance(obj, BaseException):
        parts.append("".join(traceback.format_exception(obj)))
    if isinstance(obj, ExtError):
        parts += [json.dumps(obj.to_dict("req-1")), json.dumps(obj.details, default=repr)]
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        parts.append(json.dumps(to_json(), default=repr))
    return "\n".join(parts)


def test_a_secret_value_appears_in_no_log_line_message_repr_or_response_of_any_path(
    model: type[SecretModel],
    kms: Any,
    caplog: pytest.LogCaptureFixture,
    every_log_line: EveryLogLine,
    scope: InstallScope,
) -> None:
    secret = "canary-Zq8vX2-do-not-leak"
    seen: list[Any] = []

    def drive(step: Callable[[], Any]) -> None:
        try:
            seen.append(step())
        except Exception as exc:
            seen.append(exc)

    admin = SecretsService(model, kms, ALIAS, lambda: T0)
    reader = SecretReader(model, kms)
    elsewhere = boto3.client("kms", region_name="eu-west-1")
    names = [spec.name for spec in DECLARED]
    request = PutSecretRequest.parse({"value": secret})
    seen += [request, request.value, f"{request.value}", f"{request.value!r}"]
    drive(lambda: admin.put(scope, "API_KEY", request, DECLARED, by="alice"))  # set
    drive(lambda: admin.put(scope, "UNDECLARED", request, DECLARED))  # set, refused
    drive(lambda: PutSecretRequest.parse({"value": secret * 400}))  # too long
    drive(lambda: PutSecretRequest.parse({"value": secret, "extra": secret}))  # malformed
    drive(lambda: admin.list(scope, DECLARED))  # list
    drive(lambda: reader.get(scope, "API_KEY"))  # get, decrypting
    drive(lambda: reader.get(scope, "API_KEY"))  # get, cached
    access = SecretsAccess(reader, scope, names, allowed=True)
    runner_secrets = InstallSecrets(access)
    # call: the answer carries the value to the guest, so only its redacted form is checked
    drive(lambda: core_secret_answer(runner_secrets, b"API_KEY")[1].replace(secret.encode(), b"<the value>"))
    drive(lambda: access.get("NOT_DECLARED"))  # failing get: undeclared
    drive(lambda: SecretsAccess(reader, scope, names, allowed=False).get("API_KEY"))  # failing get: denied
    drive(lambda: reader.get(scope, "WEBHOOK_TOKEN"))  # failing get: not set
    drive(lambda: SecretReader(model, elsewhere).get(scope, "API_KEY"))  # KMS failure
    drive(lambda: SecretsService(model, elsewhere, ALIAS).put(scope, "API_KEY", request, DECLARED))
    item = model.get(scope.key, "API_KEY")
    moved = InstallScope(scope.tenant + "moved", scope.extension)
    model(moved.key, "API_KEY", **{k: getattr(item, k) for k in _SEALED_FIELDS}).save()
    drive(lambda: SecretReader(model, kms).get(moved, "API_KEY"))  # wrong context
    drive(lambda: admin.delete(scope, "API_KEY"))
    drive(lambda: admin.purge(moved))

    # The data keys would open the sealed values just as well: they must not show either.
    data_keys = [
        kms.decrypt(CiphertextBlob=item.wrapped_key, EncryptionContext=encryption_context(scope, "API_KEY"))[
            "Plaintext"
        ]
    ]
    needles = {secret, base64.b64encode(secret.encode()).decode(), secret.encode().hex()}
    needles |= {form for key in data_keys for form in (base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1])}
    output = "\n".join([every_log_line.text(), *(_every_rendering(obj) for obj in seen)])
    assert [needle for needle in needles if needle in output] == []
    # The paths ran and logged: the test is not vacuous.
    assert any(isinstance(obj, SecretValue) for obj in seen)
    assert {type(obj) for obj in seen} >= {SecretInvalid, SecretDenied, SecretNotFound, SecretUnavailable, BadRequest}
    assert "secrets.put" in every_log_line.json_lines and "secrets.get" in every_log_line.json_lines
    assert "botocore" in {record.name.split(".")[0] for record in caplog.records}


def test_a_secret_value_never_prints_or_pickles() -> None:
    value = SecretValue("hunter2")
    mapping = {"v": value}
    assert "hunter2" not in f"{value} {value!r} {value!s} {[value]} {mapping}"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(value)
    assert value == SecretValue("hunter2") and value != SecretValue("hunter3")
    assert value.reveal() == "hunter2"
