"""`extctl kv`, `extctl secrets` and `extctl uninstall --purge` against the local stack, as an admin runs them;
each tenant reaches only its own install's state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chalicelib.auth import issue_token
from devstack.stack import LocalStack, StackConfig
from extctl.api import ApiClient
from extctl.publish import publish_bundle
from tests.bundle_factory import bundle, good_files

EXTCTL = str(Path(sys.executable).parent / "extctl")
NAME = "com.acme.stateful-cli"
"""Not the name other e2e modules publish: they may share this process's moto state."""
SECRET = "canary-cli-Wm3kR9"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(StackConfig(cache_dir=tmp_path_factory.mktemp("runner-cache")))
    urls = stack.start()
    path = tmp_path_factory.mktemp("bundles") / "stateful.tar.zst"
    manifest = {
        "capabilities": ["cap:storage.kv", "cap:secrets.get"],
        "secrets": [{"name": "API_KEY", "required": True}, {"name": "OPTIONAL"}],
    }
    path.write_bytes(bundle(good_files(name=NAME, version="1.0.0", **manifest)))
    publish_bundle(ApiClient(urls.api, urls.token), path)
    yield stack
    requests.post(f"{urls.moto}/moto-api/reset", timeout=10).raise_for_status()
    stack.stop()


def token_of(local: LocalStack, tenant: str) -> str:
    return issue_token(str(local.settings.ext_auth_secret), sub=f"admin@{tenant}", tenant=tenant, roles=["admin"])


def extctl(local: LocalStack, tenant: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXT_API_URL": local.urls.api, "EXT_TOKEN": token_of(local, tenant)}
    done = subprocess.run(
        [EXTCTL, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(local: LocalStack, tenant: str, *args: str, stdin: str = "") -> str:
    done = extctl(local, tenant, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fails(local: LocalStack, code: str, tenant: str, *args: str, stdin: str = "") -> str:
    done = extctl(local, tenant, *args, stdin=stdin)
    assert (done.returncode, done.stderr.splitlines()[-1].split(":")[:2]) == (1, ["error", f" {code}"]), done.stderr
    return done.stderr


def install(local: LocalStack, tenant: str) -> None:
    ok(local, tenant, "install", NAME, "--version", "1.0.0")


def test_an_admin_reads_and_writes_kv_and_sets_secrets_from_stdin_and_purges(local: LocalStack, tmp_path: Path) -> None:
    install(local, "acme")
    outputs = [
        ok(local, "acme", "kv", "set", NAME, "sync/cursor", "42"),
        ok(local, "acme", "kv", "set", NAME, "note", stdin="from stdin"),
    ]
    (tmp_path / "blob").write_bytes(b"\0\1")
    outputs.append(ok(local, "acme", "kv", "set", NAME, "blob", "--value-file", str(tmp_path / "blob")))

    assert ok(local, "acme", "kv", "get", NAME, "sync/cursor") == "42"
    assert ok(local, "acme", "kv", "get", NAME, "note") == "from stdin"
    assert json.loads(ok(local, "acme", "kv", "get", NAME, "blob", "--json"))["value_b64"] == "AAE="
    assert ok(local, "acme", "kv", "list", NAME).splitlines() == ["blob", "note", "sync/cursor"]
    assert ok(local, "acme", "kv", "list", NAME, "--prefix", "sync/").splitlines() == ["sync/cursor"]
    fails(local, "KV_CONFLICT", "acme", "kv", "set", NAME, "note", "x", "--if-revision", "0")

    listed = ok(local, "acme", "secrets", "list", NAME)
    assert listed.splitlines() == ["API_KEY\tMISSING (required)\t-", "OPTIONAL\tnot set\t-"]
    outputs.append(ok(local, "acme", "secrets", "set", NAME, "API_KEY", stdin=SECRET + "\n"))
    assert ok(local, "acme", "secrets", "list", NAME).splitlines()[0].startswith("API_KEY\tset, required\t")
    fails(local, "SECRET_INVALID", "acme", "secrets", "set", NAME, "UNDECLARED", stdin=SECRET)
    outputs.append(ok(local, "acme", "secrets", "delete", NAME, "API_KEY"))
    fails(local, "SECRET_NOT_FOUND", "acme", "secrets", "delete", NAME, "API_KEY")
    outputs.append(ok(local, "acme", "secrets", "set", NAME, "API_KEY", stdin=SECRET))

    # Without a terminal to ask on, --purge needs --yes; nothing changes until then.
    fails(local, "USAGE", "acme", "uninstall", NAME, "--purge")
    assert ok(local, "acme", "kv", "get", NAME, "note") == "from stdin"
    purged = json.loads(ok(local, "acme", "uninstall", NAME, "--purge", "--yes"))

    assert purged == {"extension": NAME, "status": "uninstalled", "purged": {"kv_keys": 3, "secrets": 1}}
    assert all(SECRET not in text for text in outputs)
    install(local, "acme")
    assert ok(local, "acme", "kv", "list", NAME) == ""
    ok(local, "acme", "uninstall", NAME, "--purge", "--yes")


def test_another_tenant_can_neither_read_list_overwrite_nor_purge_kv_or_secrets_with_extctl(local: LocalStack) -> None:
    for tenant in ("initech", "globex"):
        install(local, tenant)
    ok(local, "initech", "kv", "set", NAME, "owner", "initech")
    ok(local, "initech", "secrets", "set", NAME, "API_KEY", stdin=SECRET)

    # globex installed the same extension: it reaches only its own, empty state.
    fails(local, "KV_NOT_FOUND", "globex", "kv", "get", NAME, "owner")
    assert ok(local, "globex", "kv", "list", NAME) == ""
    assert ok(local, "globex", "secrets", "list", NAME).splitlines()[0] == "API_KEY\tMISSING (required)\t-"
    ok(local, "globex", "kv", "set", NAME, "owner", "globex")
    fails(local, "SECRET_NOT_FOUND", "globex", "secrets", "delete", NAME, "API_KEY")
    globex_purge = json.loads(ok(local, "globex", "uninstall", NAME, "--purge", "--yes"))
    # umbrella never installed it: nothing to reach, and its purge empties only its own scope.
    fails(local, "NOT_INSTALLED", "umbrella", "kv", "get", NAME, "owner")
    fails(local, "NOT_INSTALLED", "umbrella", "secrets", "list", NAME)
    umbrella_purge = json.loads(ok(local, "umbrella", "uninstall", NAME, "--purge", "--yes"))

    assert globex_purge["purged"] == {"kv_keys": 1, "secrets": 0}
    assert umbrella_purge == {"extension": NAME, "status": "purged", "purged": {"kv_keys": 0, "secrets": 0}}
    assert ok(local, "initech", "kv", "get", NAME, "owner") == "initech"
    assert ok(local, "initech", "secrets", "list", NAME).splitlines()[0].startswith("API_KEY\tset, required\t")


def test_extctl_install_sends_a_config_from_json_or_a_file(local: LocalStack, tmp_path: Path) -> None:
    # Issue 12: a version whose config_schema requires a field is installed with --config.
    name = "com.acme.configured-cli"
    strict = {"type": "object", "required": ["host"], "properties": {"host": {"type": "string", "minLength": 1}}}
    path = tmp_path / "configured.tar.zst"
    path.write_bytes(bundle(good_files(name=name, version="1.0.0", config_schema=strict)))
    publish_bundle(ApiClient(local.urls.api, token_of(local, "acme")), path)

    stderr = fails(local, "CONFIG_INVALID", "acme", "install", name, "--version", "1.0.0", "--config", "{}")
    assert "config.host" in stderr
    fails(local, "USAGE", "acme", "install", name, "--version", "1.0.0", "--config", "{host")
    installed = json.loads(ok(local, "acme", "install", name, "--version", "1.0.0", "--config", '{"host": "a"}'))
    assert installed["config"] == {"host": "a"}
    (tmp_path / "config.json").write_text('{"host": "b"}')
    switched = json.loads(
        ok(local, "acme", "install", name, "--version", "1.0.0", "--config", f"@{tmp_path}/config.json")
    )
    assert switched["config"] == {"host": "b"}
    ok(local, "acme", "uninstall", name, "--purge", "--yes")
