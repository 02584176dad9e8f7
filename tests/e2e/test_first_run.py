"""A new user's first run: `extctl dev`, then init → pack → sign → publish --install → call → UI →
disable → enable → upgrade → roll back, all through the console scripts and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

BIN = Path(sys.executable).parent
EXTCTL = str(BIN / "extctl")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("first-run")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [EXTCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"extctl {' '.join(args)} failed:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def dev(workdir: Path) -> Iterator[dict[str, str]]:
    run("keygen", "--out", "keys", cwd=workdir)
    trust = workdir / "trust.pem"
    trust.write_text("# scope: com.example.*, com.acme.*\n" + (workdir / "keys" / "signing.pub").read_text())
    log = (workdir / "dev.log").open("w")
    process = subprocess.Popen(
        [EXTCTL, "dev", "--port", "0", "--trust-bundle", str(trust), "--key", "keys/signing.key"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "TMPDIR": str(workdir)},
    )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while len(urls) < 4 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        key, _, value = line.strip().partition("=")
        urls[key] = value
    assert set(urls) == {"EXT_API_URL", "EXT_RUNNER_URL", "EXT_TOKEN", "EXT_ADMIN_URL"}, (
        workdir / "dev.log"
    ).read_text()
    yield urls
    process.terminate()
    assert process.wait(timeout=30) == 0
    log.close()


def gateway(dev: dict[str, str], path: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {dev['EXT_TOKEN']}"}
    return requests.get(f"{dev['EXT_API_URL']}/api/ext/com.acme.hello{path}", headers=headers, timeout=30)


def test_the_example_answers_as_soon_as_dev_is_ready(dev: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {dev['EXT_TOKEN']}"}
    answer = requests.get(f"{dev['EXT_API_URL']}/api/ext/com.example.hello/hello?name=dev", headers=headers, timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"message": "Hello, dev!"}
    assert dev["EXT_ADMIN_URL"].startswith(dev["EXT_API_URL"] + "/admin#token=")


def test_a_new_extension_goes_from_init_to_rollback(dev: dict[str, str], workdir: Path) -> None:
    env = {"EXT_API_URL": dev["EXT_API_URL"], "EXT_TOKEN": dev["EXT_TOKEN"]}
    run("init", "com.acme.hello", "--dir", "hello", cwd=workdir)
    run("build", "hello", cwd=workdir)
    content_hash = run("pack", "hello", "-o", "v1.tar.zst", cwd=workdir).strip().splitlines()[-1]
    run("sign", "v1.tar.zst", "--key", "keys/signing.key", cwd=workdir)
    published = json.loads(run("publish", "v1.tar.zst", "--install", cwd=workdir, env=env))
    assert published["status"] == "finalized"
    assert published["signature_status"] == "verified"
    assert published["content_hash"] == content_hash
    assert published["install"]["enabled"] is True

    answer = gateway(dev, "/hello?name=Ada")
    assert (answer.status_code, answer.json()) == (200, {"message": "Hello, Ada!"})

    ui = f"{dev['EXT_RUNNER_URL']}/ext-ui/com.acme.hello/{content_hash}/index.html"
    first = requests.get(ui, timeout=30)
    assert first.status_code == 200 and "text/html" in first.headers["Content-Type"]
    assert "immutable" in first.headers["Cache-Control"]
    again = requests.get(ui, headers={"If-None-Match": first.headers["ETag"]}, timeout=30)
    assert again.status_code == 304

    run("disable", "com.acme.hello", cwd=workdir, env=env)
    disabled = gateway(dev, "/hello")
    assert disabled.status_code == 404 and disabled.json()["error"]["code"] == "NOT_INSTALLED"
    run("enable", "com.acme.hello", cwd=workdir, env=env)
    assert gateway(dev, "/hello").status_code == 200

    manifest_path = workdir / "hello" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = "1.1.0"
    manifest_path.write_text(json.dumps(manifest, indent=2))
    run("pack", "hello", "-o", "v2.tar.zst", cwd=workdir)
    run("sign", "v2.tar.zst", "--key", "keys/signing.key", cwd=workdir)
    run("publish", "v2.tar.zst", cwd=workdir, env=env)
    upgraded = json.loads(run("install", "com.acme.hello", "--version", "1.1.0", cwd=workdir, env=env))
    assert upgraded["version"] == "1.1.0"
    assert gateway(dev, "/info").json()["version"] == "1.1.0"
    rolled = json.loads(run("rollback", "com.acme.hello", cwd=workdir, env=env))
    assert rolled["version"] == "1.0.0"
    assert gateway(dev, "/info").json()["version"] == "1.0.0"


def test_an_unsigned_bundle_is_refused_when_trust_is_configured(dev: dict[str, str], workdir: Path) -> None:
    env = {"EXT_API_URL": dev["EXT_API_URL"], "EXT_TOKEN": dev["EXT_TOKEN"]}
    run("init", "com.acme.unsigned", "--dir", "unsigned", cwd=workdir)
    run("pack", "unsigned", "-o", "unsigned.tar.zst", cwd=workdir)
    done = subprocess.run(
        [EXTCTL, "publish", "unsigned.tar.zst"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: SIGNATURE_MISSING: ")
