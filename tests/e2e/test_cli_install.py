"""`pip install` of the project gives an extension author a working `extctl` on its own (issue 13, item 1):
no Chalice, moto, pynamodb, boto3 or wasmtime, and the whole author's path (init, keygen, pack, sign,
verify, publish, install) against a local stack, which runs here in the development venv as a
platform would run elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.stack import LocalStack, StackConfig, StackUrls
from tests.e2e.conftest import CLI_INSTALL_GROUP, CLI_REQUIREMENTS, CliInstall

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(CLI_INSTALL_GROUP)]

SERVER_PACKAGES = ("chalice", "moto", "pynamodb", "boto3", "botocore", "wasmtime", "jwt", "werkzeug")
"""What the platform needs and an author's CLI must not: each must be missing from the CLI's venv."""
EXTENSION = "com.acme.alone"


def run(cli: CliInstall, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``extctl ARGS`` from the CLI-only venv, with an environment that points at nothing else."""
    environment = {"PATH": f"{cli.bin}{os.pathsep}/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", **(env or {})}
    return subprocess.run(
        [str(cli.extctl), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_cli_installs_with_only_what_authoring_and_publishing_need(cli_install: CliInstall) -> None:
    probe = "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])"
    present = subprocess.run(
        [str(cli_install.python), "-c", probe, *SERVER_PACKAGES], capture_output=True, text=True, check=True
    ).stdout.strip()
    without_pip = subprocess.run(
        [str(cli_install.python), "-m", "pip", "--version"], capture_output=True, text=True, check=False
    )
    installed = {
        path.name.split("-", 1)[0].lower().replace("_", "-")
        for path in (cli_install.venv / "lib").glob("python3*/site-packages/*.dist-info")
    }
    pinned = {
        line.split("==", 1)[0].strip().lower().replace("_", "-")
        for line in CLI_REQUIREMENTS.read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }

    assert present == "[]"
    assert without_pip.returncode != 0, "the venv was made without pip, so it holds only what the install put there"
    # requirements-cli.txt is the closure of the base dependencies: what pip resolved, no more, no less.
    assert installed == pinned | {"ext-platform"}


def test_extctl_dev_without_the_server_packages_says_how_to_get_them(cli_install: CliInstall, tmp_path: Path) -> None:
    done = run(cli_install, "dev", "--no-example", "--port", "0", cwd=tmp_path)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: USAGE: extctl dev runs the whole platform")
    assert "pip install 'ext-platform[server]'" in done.stderr


def test_extctl_help_lists_every_command_without_the_server_packages(cli_install: CliInstall, tmp_path: Path) -> None:
    shown = ok(run(cli_install, "--help", cwd=tmp_path))

    for command in ("init", "build", "pack", "sign", "verify", "publish", "install", "dev"):
        assert f"    {command} " in shown or f"    {command}\n" in shown, command


@pytest.fixture
def stack_with_trust(tmp_path: Path, cli_install: CliInstall) -> Iterator[tuple[StackUrls, str]]:
    """A local stack whose trust bundle holds a key the CLI-only venv made; yields its URLs and key id."""
    key_id = ok(run(cli_install, "keygen", "--out", "keys", "--name", "author", cwd=tmp_path)).splitlines()[-1]
    trust = f"# name: acme\n# scope: com.acme.*\n{(tmp_path / 'keys' / 'author.pub').read_text('utf-8')}"
    stack = LocalStack(StackConfig(trust_bundle=trust, cache_dir=tmp_path / "runner-cache"))
    try:
        yield stack.start(), key_id
    finally:
        stack.stop()


def test_the_cli_alone_takes_a_new_extension_from_init_to_an_answer_through_the_gateway(
    cli_install: CliInstall, tmp_path: Path, stack_with_trust: tuple[StackUrls, str]
) -> None:
    urls, key_id = stack_with_trust
    api = {"EXT_API_URL": urls.api, "EXT_TOKEN": urls.token}

    ok(run(cli_install, "init", EXTENSION, "--dir", "alone", cwd=tmp_path))
    content_hash = ok(run(cli_install, "pack", "alone", cwd=tmp_path)).splitlines()[-1]
    ok(run(cli_install, "sign", "alone/bundle.tar.zst", "--key", "keys/author.key", cwd=tmp_path))
    trust = f"# name: acme\n# scope: com.acme.*\n{(tmp_path / 'keys' / 'author.pub').read_text('utf-8')}"
    verified = json.loads(
        ok(run(cli_install, "verify", "alone/bundle.tar.zst", "--trust-bundle", trust, "--json", cwd=tmp_path))
    )
    published = json.loads(ok(run(cli_install, "publish", "alone/bundle.tar.zst", "--install", cwd=tmp_path, env=api)))
    answer = requests.get(
        f"{urls.api}/api/ext/{EXTENSION}/hello",
        params={"name": "author"},
        headers={"Authorization": f"Bearer {urls.token}"},
        timeout=60,
    )

    assert verified["content_hash"] == content_hash
    assert verified["signature"] == {**verified["signature"], "status": "verified", "key_id": key_id}
    assert published["content_hash"] == content_hash
    assert published["signature_status"] == "verified"
    assert published["install"]["extension"] == EXTENSION
    assert answer.status_code == 200, answer.text
    assert "author" in answer.text
