"""An operator moves an extension name to another publisher with `extctl transfer` and reads the audit log
with `extctl audit`, against the local stack with a trust bundle of two publishers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chalicelib.auth import issue_token
from chalicelib.bundles.pack import pack_project
from chalicelib.bundles.signing import sign_content_hash
from devstack.stack import LocalStack, StackConfig
from extctl.api import ApiClient
from extctl.publish import publish_bundle
from tests.bundle_factory import good_files, write_project

EXTCTL = str(Path(sys.executable).parent / "extctl")
NAME = "com.acme.operated"
"""Not the name other e2e modules publish: they may share this process's moto state."""
ACME = Ed25519PrivateKey.generate()
PLATFORM = Ed25519PrivateKey.generate()


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    trust = f"# publisher: acme\n# scope: com.acme.*\n{public_pem(ACME)}# publisher: platform\n{public_pem(PLATFORM)}"
    stack = LocalStack(StackConfig(trust_bundle=trust, cache_dir=tmp_path_factory.mktemp("runner-cache")))
    urls = stack.start()
    yield stack
    # moto keeps its state per process, shared by every moto server in it: leave no owned names behind.
    requests.post(f"{urls.moto}/moto-api/reset", timeout=10).raise_for_status()
    stack.stop()


def signed_bundle(tmp_path: Path, version: str, key: Ed25519PrivateKey) -> Path:
    project = write_project(tmp_path / version, good_files(name=NAME, version=version))
    packed = pack_project(project, tmp_path / f"{version}.tar.zst")
    packed.output.with_name(packed.output.name + ".sig").write_text(
        sign_content_hash(packed.content_hash, key).to_json()
    )
    return packed.output


def extctl(*args: str, token: str, api: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXTCTL, *args, "--api", api, "--token", token], capture_output=True, text=True, timeout=120, env=os.environ
    )


def test_an_operator_transfers_a_name_with_extctl_and_the_audit_shows_it(local: LocalStack, tmp_path: Path) -> None:
    urls = local.urls
    admin = ApiClient(urls.api, urls.token)
    assert publish_bundle(admin, signed_bundle(tmp_path, "1.0.0", ACME)).result["status"] == "finalized"
    # The stack's own signing secret mints the token an identity provider would give a platform operator.
    operator = issue_token(str(local.settings.ext_auth_secret), sub="olivia", tenant="ops", roles=["operator"])
    reason = "Acme handed the product over to the platform team"

    refused = extctl("transfer", NAME, "--to-publisher", "platform", "--reason", reason, token=urls.token, api=urls.api)
    moved = extctl("transfer", NAME, "--to-publisher", "platform", "--reason", reason, token=operator, api=urls.api)
    audit = extctl("audit", NAME, token=operator, api=urls.api)

    assert refused.returncode == 1 and refused.stderr.startswith("error: FORBIDDEN: "), refused.stderr
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["extension"]["owner_publisher"] == "platform"
    assert audit.returncode == 0, audit.stderr
    [line] = audit.stdout.splitlines()
    assert line.split("\t")[1:] == ["name.transfer", "olivia@ops", "publisher acme -> publisher platform", reason]
    v110 = publish_bundle(admin, signed_bundle(tmp_path, "1.1.0", PLATFORM))
    assert v110.result["status"] == "finalized"
