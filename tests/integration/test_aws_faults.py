"""Faults in the AWS the platform depends on (S3, DynamoDB, SQS, KMS behind one endpoint): for a window,
requests are answered 500/503, throttled, reset or delayed by a TCP fault proxy (tests/faults.py).

Every answer the API gives meanwhile is a success or the contract's error with a documented code (never
``INTERNAL``); the SDKs' retries are bounded; and once the window closes, clients that retry what failed
converge: every upload published once, nothing lost, duplicated or half-written.

KMS, alone or with the rest: admins setting, replacing and deleting secrets, and guests reading them
through the gateway and the runner (its decrypt path, cache cold), see a value that was acknowledged or
still in flight, or ``SECRET_UNAVAILABLE``: never another value, never "not set", never a value in an
error or a log line; afterwards every secret reads back as last acknowledged and each row is whole.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

import app as app_module
from chalicelib.bundles.pack import pack_project
from chalicelib.config import load_settings
from chalicelib.errors import ToolchainMissing, errors_by_code
from chalicelib.secrets import SecretReader, make_secret_model
from chalicelib.secrets.sealing import encryption_context
from chalicelib.tenancy import InstallScope
from devstack.pump import FinalizePump
from extctl.build import build_project, find_toolchain
from runner_container.server import make_server
from runner_container.service import build_service
from tests.bundle_factory import bundle, good_files
from tests.faults import HANG, KMS, KMS_FAULTS, SQS, FaultProxy
from tests.integration.stack import AwsStack, auth, publish
from tests.integration.test_install_state_api import NAME as STATEFUL
from tests.integration.test_install_state_api import publish_version
from tests.log_capture import EveryLogLine

DOCUMENTED = set(errors_by_code()) - {"INTERNAL"}
MAX_ATTEMPTS = 5
"""The most requests one SDK call makes (chalicelib/storage/s3.py; pynamodb's own retries are fewer)."""
NAMES = [f"com.acme.fault{i}" for i in range(3)]


@pytest.fixture
def proxy(stack_env: dict[str, str]) -> Iterator[FaultProxy]:
    upstream = urlsplit(stack_env["AWS_ENDPOINT_URL"])
    proxy = FaultProxy((str(upstream.hostname), int(upstream.port or 80)))
    stack_env["AWS_ENDPOINT_URL"] = proxy.url  # the stack's SDK clients (and presigned URLs) go through it
    yield proxy
    proxy.close()


class Publisher:
    """A client publishing one bundle step by step; a failed step is retried by calling :meth:`step` again."""

    def __init__(self, stack: AwsStack, data: bytes) -> None:
        self.stack, self.data = stack, data
        self.target: dict[str, Any] | None = None
        self.uploaded = False
        self.result: dict[str, Any] | None = None
        self.answers: list[tuple[int, Any]] = []

    def step(self) -> bool:
        """Run the next step; whether it succeeded."""
        if self.target is None:
            answer = self.stack.call("POST", "/ext-bundles/initiate-upload", {"size": len(self.data)})
            self.answers.append((answer.status_code, answer.json))
            created: bool = answer.status_code == 201
            if created:
                self.target = answer.json
            return created
        if not self.uploaded:
            try:
                put = requests.put(self.target["url"], data=self.data, headers=self.target["headers"], timeout=30)
            except requests.ConnectionError:
                return False
            self.uploaded = put.status_code == 200
            return self.uploaded
        answer = self.stack.call("POST", "/ext-bundles/finalize", {"upload_id": self.target["upload_id"]})
        self.answers.append((answer.status_code, answer.json))
        finalized: bool = answer.status_code == 200
        if finalized:
            self.result = answer.json
        return finalized

    @property
    def done(self) -> bool:
        return self.result is not None


def _contract(status: int, body: Any) -> str | None:
    """``None`` for a success; the error's code when the answer is in the contract's format."""
    if status < 400:
        return None
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert {"code", "message", "request_id"} <= set(body["error"]), body
    return str(body["error"]["code"])


def _finalize_through_queue(stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> FinalizePump:
    """Finalize as deployed: the route queues it on SQS; the returned pump (not started) feeds the worker."""
    monkeypatch.setenv("FINALIZE_MODE", "queue")
    monkeypatch.setenv("FINALIZE_QUEUE_URL", stack.queue_url)
    app_module.services.cache_clear()
    arn = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return FinalizePump(stack.queue_url, arn["QueueArn"], app_module.finalize_worker)


def test_faults_in_aws_give_documented_errors_and_converge_once_they_stop(
    proxy: FaultProxy, stack: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As deployed: the route hands finalize to the worker through SQS, which the pump polls through the proxy.
    pump = _finalize_through_queue(stack, monkeypatch).start()
    try:
        _faults_then_convergence(proxy, stack)
    finally:
        pump.stop()


def _faults_then_convergence(proxy: FaultProxy, stack: AwsStack) -> None:
    base = Publisher(stack, bundle(good_files(name="com.acme.base")))
    while not base.done:
        assert base.step()
    publishers = [Publisher(stack, bundle(good_files(name=name))) for name in NAMES]
    answers: list[tuple[int, Any]] = []

    with proxy.window(rate=0.3):
        for publisher in publishers:
            while not publisher.done and publisher.step():
                pass
        for path, body in (("/installs", {"extension": "com.acme.base", "version": "1.0.0"}), ("/extensions", None)):
            method = "POST" if body else "GET"
            answer = stack.call(method, path, body)
            answers.append((answer.status_code, answer.json))
    assert sum(proxy.injected.values()) > 0, "no fault was injected"
    during = answers + [a for p in publishers for a in p.answers]
    codes = {_contract(status, body) for status, body in during} - {None}
    assert codes <= DOCUMENTED, [a for a in during if _contract(*a) not in DOCUMENTED and a[0] >= 400]

    # After the window, clients retry what failed, a bounded number of times.
    for publisher in publishers:
        for _ in range(5):
            if publisher.done or (publisher.step() and publisher.done):
                break
        assert publisher.done, publisher.answers[-1:]
    installed = stack.call("POST", "/installs", {"extension": "com.acme.base", "version": "1.0.0"})
    assert installed.status_code in (200, 201), installed.json

    # Converged: each upload is one version, each stored hash complete, nothing staged or half-copied.
    hashes = {p.result["content_hash"].split(":")[1] for p in (base, *publishers) if p.result}
    stored = stack.keys("sha256/")
    assert {key.split("/")[1] for key in stored} == hashes
    objects = sorted(key.rsplit("/", 1)[1] for key in stored)
    assert objects == sorted(name for _ in hashes for name in _object_names(stack, base))
    for name in NAMES:
        extension = stack.call("GET", f"/extensions/{name}", headers=auth())
        assert [v["version"] for v in extension.json["versions"]] == ["1.0.0"]
    assert stack.keys("staging/") == []
    assert stack.s3.list_multipart_uploads(Bucket=stack.settings.storage_s3_bucket).get("Uploads", []) == []
    listed = stack.call("GET", "/installs").json["installs"]
    assert [i["extension"] for i in listed] == ["com.acme.base"]


def _object_names(stack: AwsStack, publisher: Publisher) -> list[str]:
    assert publisher.result is not None
    hex_digest = publisher.result["content_hash"].split(":")[1]
    return [key.rsplit("/", 1)[1] for key in stack.keys(f"sha256/{hex_digest}/")]


def test_a_connection_reset_by_dynamodb_is_a_storage_error_not_a_crash(proxy: FaultProxy, stack: AwsStack) -> None:
    # botocore's connection errors carry `response=None`: pynamodb's `cause_response_code` raised on them,
    # and a reset became `500 INTERNAL`.
    with proxy.window(rate=1.0, faults=("reset",)):
        answer = stack.call("GET", "/extensions")
    assert (answer.status_code, _contract(answer.status_code, answer.json)) == (503, "STORAGE_ERROR")


def test_a_total_outage_answers_storage_error_after_a_bounded_number_of_attempts(
    proxy: FaultProxy, stack: AwsStack
) -> None:
    with proxy.window(rate=1.0, faults=("503",)):
        before = proxy.chunks
        outage = stack.call("GET", "/extensions")
        attempts = proxy.chunks - before
    assert (outage.status_code, _contract(outage.status_code, outage.json)) == (503, "STORAGE_ERROR")
    assert 1 < attempts <= MAX_ATTEMPTS


def test_a_finalize_whose_queue_is_down_answers_storage_error_and_succeeds_when_sent_again(
    proxy: FaultProxy, stack: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    pump = _finalize_through_queue(stack, monkeypatch)
    publisher = Publisher(stack, bundle(good_files(name="com.acme.queued")))
    assert publisher.step() and publisher.step()  # initiated, uploaded

    for fault in ("reset", "503"):
        with proxy.window(rate=1.0, faults=(fault,), only=SQS):
            before = proxy.targets["AmazonSQS.SendMessage"]
            assert not publisher.step()
            sent = proxy.targets["AmazonSQS.SendMessage"] - before
        status, body = publisher.answers[-1]
        assert (status, _contract(status, body)) == (503, "STORAGE_ERROR"), fault
        assert 1 < sent <= MAX_ATTEMPTS

    pump.start()
    try:
        assert publisher.step(), publisher.answers[-1]
    finally:
        pump.stop()
    assert publisher.result is not None and publisher.result["status"] == "finalized"


def test_an_s3_operation_in_an_outage_gives_up_after_five_requests(proxy: FaultProxy, stack: AwsStack) -> None:
    with proxy.window(rate=1.0, faults=("503",)):
        before = proxy.chunks
        with pytest.raises(ClientError) as raised:
            stack.s3.head_object(Bucket=stack.settings.storage_s3_bucket, Key="sha256/none")
        attempts = proxy.chunks - before
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert attempts == MAX_ATTEMPTS


# --- KMS: secrets set by admins and read by guests while KMS (alone or with the rest) fails -------------

REPO = Path(__file__).resolve().parents[2]
STATE_PROXY = REPO / "tests" / "fixtures" / "c" / "state-proxy"
PROXY_NAME = "com.acme.state-proxy"
KMS_MAX_ATTEMPTS = 3
"""The most requests one KMS call makes (the client of chalicelib/secrets/sealing.py)."""
SEALED_ATTRIBUTES = {"ns", "name", "sealed", "nonce", "wrapped_key", "kms_key_id", "format", "updated_at"}
SCOPES = {"kms": KMS, "all": None}
"""Which requests a window faults: KMS's alone (S3 and DynamoDB healthy), or every service's."""


class Admin:
    """An admin setting and deleting one install's secrets over the API, and what each answer told them.

    A name's value is what was last acknowledged (``None``: deleted) or one still in flight: sent, but the
    answer was an error, so it may or may not have been stored until a retry is acknowledged.
    """

    def __init__(self, stack: AwsStack, extension: str, run: str) -> None:
        self.stack, self.extension, self.run = stack, extension, run
        self.acknowledged: dict[str, str | None] = {}
        self.in_flight: dict[str, list[str | None]] = {}
        self.sent: list[str] = []
        self.answers: list[tuple[int, Any]] = []

    def value(self, name: str, round_: int) -> str:
        """A value no other step uses, recognisable wherever it might leak."""
        value = f"sk-{self.run}-{name}-{round_}-canary"
        self.sent.append(value)
        return value

    def put(self, name: str, value: str) -> bool:
        answer = self.stack.call("PUT", f"/installs/{self.extension}/secrets/{name}", {"value": value})
        return self._record(name, value, answer, answer.status_code == 200)

    def delete(self, name: str) -> bool:
        answer = self.stack.call("DELETE", f"/installs/{self.extension}/secrets/{name}")
        gone = answer.status_code == 404 and _contract(answer.status_code, answer.json) == "SECRET_NOT_FOUND"
        if gone:  # "not set" must be true: no value of it may be stored
            assert None in self.allowed(name), (name, self.allowed(name))
            stored = [row for row in _rows(self.stack) if row["ns"]["S"] == f"acme/{self.extension}"]
            assert name not in {row["name"]["S"] for row in stored}, name
        return self._record(name, None, answer, answer.status_code == 200 or gone)

    def _record(self, name: str, value: str | None, answer: Any, done: bool) -> bool:
        self.answers.append((answer.status_code, answer.json))
        if done:
            self.acknowledged[name], self.in_flight[name] = value, []
        else:
            self.in_flight.setdefault(name, []).append(value)
        return done

    def allowed(self, name: str) -> set[str | None]:
        """What ``name`` may hold now: the acknowledged value (``None`` for none) or one in flight."""
        return {self.acknowledged.get(name), *self.in_flight.get(name, [])}

    def settle(self) -> None:
        """Retry each name's last unacknowledged step until acknowledged, as a client would (5 tries)."""
        for name, pending in list(self.in_flight.items()):
            if not pending:
                continue
            last = pending[-1]
            for _ in range(5):
                if self.put(name, last) if last is not None else self.delete(name):
                    break
            assert not self.in_flight[name], (name, self.answers[-1:])

    def expected(self) -> dict[str, str]:
        return {name: value for name, value in self.acknowledged.items() if value is not None}


def _leaks(admin: Admin, stack: AwsStack, texts: list[str]) -> list[str]:
    """The values, and the data keys of the rows left, that appear in ``texts``."""
    kms = boto3.client("kms", endpoint_url=stack.endpoint, region_name="us-east-1")
    needles = set(admin.sent)
    for item in _rows(stack):
        scope = InstallScope(*item["ns"]["S"].split("/", 1))
        context = encryption_context(scope, item["name"]["S"])
        key = kms.decrypt(CiphertextBlob=item["wrapped_key"]["B"], EncryptionContext=context)["Plaintext"]
        needles |= {key.hex(), repr(key)[2:-1], base64.b64encode(key).decode()}
    joined = "\n".join(texts)
    assert "secrets.put" in joined and "botocore" in joined, "nothing was logged: the search would be vacuous"
    return sorted(needle for needle in needles if needle in joined)


def _rows(stack: AwsStack) -> list[dict[str, Any]]:
    """The secrets table as stored (straight from moto, not through the proxy)."""
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1")
    items: list[dict[str, Any]] = dynamodb.scan(TableName=stack.settings.secrets_table_name, ConsistentRead=True)[
        "Items"
    ]
    return items


def _assert_whole(stack: AwsStack, expected: dict[str, str], extension: str) -> None:
    """The table holds exactly ``expected``'s names for ``extension``, each row whole."""
    rows = [item for item in _rows(stack) if item["ns"]["S"] == f"acme/{extension}"]
    assert sorted(item["name"]["S"] for item in rows) == sorted(expected)
    for item in rows:
        assert set(item) >= SEALED_ATTRIBUTES, sorted(item)
        assert item["format"]["S"] == "kms-aes256gcm/v1"
        assert len(item["nonce"]["B"]) == 12 and item["wrapped_key"]["B"] and item["sealed"]["B"]


def test_a_kms_outage_refuses_a_secret_as_unavailable_after_a_bounded_number_of_attempts(
    proxy: FaultProxy, stack: AwsStack, every_log_line: EveryLogLine
) -> None:
    publish_version(stack, "1.0.0")
    assert stack.call("POST", "/installs", {"extension": STATEFUL, "version": "1.0.0"}).status_code == 201
    admin = Admin(stack, STATEFUL, "outage")
    for round_, fault in enumerate(KMS_FAULTS):
        value = admin.value("API_KEY", round_)
        with proxy.window(rate=1.0, faults=(fault,), only=KMS):
            before = proxy.targets["TrentService.GenerateDataKey"]
            stored = admin.put("API_KEY", value)
            attempts = proxy.targets["TrentService.GenerateDataKey"] - before
        status, body = admin.answers[-1]
        if fault == "slow":  # late, not lost: it succeeds
            assert stored and attempts == 1
            continue
        assert (status, _contract(status, body)) == (503, "SECRET_UNAVAILABLE"), (fault, body)
        assert 1 < attempts <= KMS_MAX_ATTEMPTS, (fault, attempts)
    # Only the value sent during the slow window was stored; the refused ones left nothing behind.
    _assert_whole(stack, admin.expected(), STATEFUL)
    assert admin.expected() == {"API_KEY": admin.sent[KMS_FAULTS.index("slow")]}
    assert _leaks(admin, stack, [every_log_line.text(), repr(admin.answers)]) == []


@pytest.mark.parametrize("faulted", sorted(SCOPES))
def test_admins_setting_and_deleting_secrets_during_kms_faults_see_documented_answers_and_converge(
    proxy: FaultProxy, stack: AwsStack, every_log_line: EveryLogLine, faulted: str
) -> None:
    publish_version(stack, "1.0.0")
    assert stack.call("POST", "/installs", {"extension": STATEFUL, "version": "1.0.0"}).status_code == 201
    admin = Admin(stack, STATEFUL, faulted)
    with proxy.window(rate=0.5, faults=KMS_FAULTS, only=SCOPES[faulted]):
        for round_ in range(12):
            admin.put("API_KEY", admin.value("API_KEY", round_))
            if round_ % 3 == 2:
                admin.delete("WEBHOOK_TOKEN")
            else:
                admin.put("WEBHOOK_TOKEN", admin.value("WEBHOOK_TOKEN", round_))
    assert sum(proxy.injected.values()) > 0, "no fault was injected"
    failed = [answer for answer in admin.answers if answer[0] >= 400]
    assert failed, "every step succeeded: the window tested nothing"
    codes = {_contract(status, body) for status, body in admin.answers} - {None}
    assert codes <= DOCUMENTED, failed
    if faulted == "kms":
        assert codes == {"SECRET_UNAVAILABLE"}

    admin.settle()
    listed = stack.call("GET", f"/installs/{STATEFUL}/secrets").json["secrets"]
    assert {entry["name"]: entry["set"] for entry in listed} == {
        name: name in admin.expected() for name in ("API_KEY", "WEBHOOK_TOKEN")
    }
    _assert_whole(stack, admin.expected(), STATEFUL)
    kms = boto3.client("kms", endpoint_url=stack.endpoint, region_name="us-east-1")
    reader = SecretReader(make_secret_model(stack.settings), kms)
    scope = InstallScope("acme", STATEFUL)
    assert {name: reader.get(scope, name).reveal() for name in admin.expected()} == admin.expected()
    assert _leaks(admin, stack, [every_log_line.text(), repr(admin.answers)]) == []


@pytest.fixture(scope="module")
def state_proxy_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """``tests/fixtures/c/state-proxy``, built: a guest that reads the secret its query names and reports
    the host's answer exactly (``{"calls", "ok", "last": {"value"} | {"error"}}``)."""
    try:
        find_toolchain()
    except ToolchainMissing as exc:
        pytest.skip(f"needs clang and wasm-ld to build guests: {exc.message}")
    project = tmp_path_factory.mktemp("state-proxy") / "state-proxy"
    shutil.copytree(STATE_PROXY, project)
    for name in ("ext", "json", "base64"):
        for suffix in (".c", ".h"):
            shutil.copy(REPO / "examples" / "hello" / "src" / f"{name}{suffix}", project / "src")
    build_project(project)
    return pack_project(project, project.parent / "proxy.tar.zst").output.read_bytes()


@pytest.fixture
def gateway(
    proxy: FaultProxy, stack: AwsStack, state_proxy_bundle: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[AwsStack]:
    """The stack with a runner over HTTP whose S3, DynamoDB and KMS are behind the proxy as well, and the
    state-proxy guest published (faults off) and installed for acme, its code compiled."""
    monkeypatch.setenv("RUNNER_AUTH_TOKEN", secrets.token_urlsafe(16))
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "runner-cache"))
    monkeypatch.setenv("EXT_GATEWAY_TIMEOUT_MS", "30000")
    server = make_server(build_service(load_settings(dict(os.environ))), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("RUNNER_BASE_URL", server.url)
    monkeypatch.setenv("RUNNER_PUBLIC_BASE", server.url)
    app_module.services.cache_clear()
    try:
        published = publish(stack, state_proxy_bundle)
        assert published.status_code == 200, published.json
        installed = stack.call("POST", "/installs", {"extension": PROXY_NAME, "version": "1.0.0"})
        assert installed.status_code == 201, installed.json
        deadline = time.monotonic() + 120
        while _guest_read(stack, "API_KEY") != ("error", "SECRET_NOT_FOUND"):  # compiled, and nothing set yet
            assert time.monotonic() < deadline, "the guest never answered"
            time.sleep(0.2)
        yield stack
    finally:
        server.shutdown()


def _guest_read(stack: AwsStack, name: str) -> tuple[str, str | None]:
    """One guest call reading ``name``: ``("value", v)``, ``("error", the host's code)`` or
    ``("platform", the gateway's error code)``."""
    answer = stack.call("GET", f"/api/ext/{PROXY_NAME}/proxy?fn=secret&arg={name}")
    if answer.status_code != 200:
        return "platform", _contract(answer.status_code, answer.json)
    last = answer.json["last"]
    if "value" in last:
        return "value", str(last["value"])
    assert set(last) == {"error"} and set(last["error"]) == {"code", "message"}, last
    return "error", str(last["error"]["code"])


@pytest.mark.parametrize("faulted", sorted(SCOPES))
def test_guests_reading_secrets_during_kms_faults_get_an_allowed_value_or_unavailable_and_converge(
    proxy: FaultProxy, gateway: AwsStack, every_log_line: EveryLogLine, faulted: str
) -> None:
    admin = Admin(gateway, PROXY_NAME, f"guest-{faulted}")
    # A total KMS outage, the runner's cache cold for a new value: a clear failure after a few Decrypt
    # attempts, also when KMS hangs (the read timeout gives up well inside the call's deadline).
    for round_, fault in enumerate(("500", HANG)):
        assert admin.put("API_KEY", admin.value("API_KEY", -1 - round_))
        with proxy.window(rate=1.0, faults=(fault,), only=KMS):
            before = proxy.targets["TrentService.Decrypt"]
            assert _guest_read(gateway, "API_KEY") == ("error", "SECRET_UNAVAILABLE"), fault
            attempts = proxy.targets["TrentService.Decrypt"] - before
        assert 1 < attempts <= KMS_MAX_ATTEMPTS, (fault, attempts)

    reads: list[tuple[str, str | None]] = []
    with proxy.window(rate=0.5, faults=KMS_FAULTS, only=SCOPES[faulted]):
        for round_ in range(10):  # each new value is a version the runner has not decrypted yet
            for name in ("API_KEY", "OTHER"):
                if name == "OTHER" and round_ % 3 == 2:
                    admin.delete(name)
                else:
                    admin.put(name, admin.value(name, round_))
                read = _guest_read(gateway, name)
                reads.append(read)
                allowed = admin.allowed(name)
                if read[0] == "value":
                    assert read[1] in allowed, (name, read, allowed)
                elif read[0] == "error":
                    assert read[1] == "SECRET_UNAVAILABLE" or (read[1] == "SECRET_NOT_FOUND" and None in allowed), read
                else:
                    assert read[1] in DOCUMENTED, read
    assert sum(proxy.injected.values()) > 0, "no fault was injected"
    refused = [read for read in reads if read[0] != "value"] + [a for a in admin.answers if a[0] >= 400]
    assert refused and any(kind == "value" for kind, _ in reads), "the window tested nothing"
    codes = {_contract(status, body) for status, body in admin.answers} - {None}
    assert codes <= DOCUMENTED, admin.answers

    admin.settle()
    _assert_whole(gateway, admin.expected(), PROXY_NAME)
    for name in ("API_KEY", "OTHER"):
        expected = admin.acknowledged[name]
        assert _guest_read(gateway, name) == (("value", expected) if expected else ("error", "SECRET_NOT_FOUND"))
    assert _leaks(admin, gateway, [every_log_line.text(), repr(admin.answers)]) == []
