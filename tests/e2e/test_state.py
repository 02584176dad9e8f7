"""KV and secrets end to end on the local stack: the C example published, installed and called through the
gateway, its counter kept in the KV table and its upstream call carrying a secret an admin set with
``extctl secrets set`` (the value on stdin, through ``PUT /installs/{extension}/secrets/{name}``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chalicelib.bundles.pack import pack_project
from devstack.stack import LocalStack, StackConfig, StackUrls
from extctl.api import ApiClient
from extctl.publish import publish_bundle
from tests.integration.state_fixtures import Upstream, recording_upstream

ROOT = Path(__file__).resolve().parents[2]
HELLO = "com.example.hello"
API_KEY = "sk-e2e-4f1c-recognisable-0xBADC0DE"
EXTCTL = str(Path(sys.executable).parent / "extctl")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with recording_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[LocalStack]:
    allow = {"EXT_EGRESS_ALLOWLIST": upstream.address, "EXT_EGRESS_ALLOW_PRIVATE": "true"}
    stack = LocalStack(StackConfig(cache_dir=tmp_path_factory.mktemp("runner-cache"), settings=allow))
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def installed(local: LocalStack, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> StackUrls:
    """The C example, its egress list also naming the local upstream, published and installed in tenant dev."""
    project = tmp_path_factory.mktemp("hello") / "hello"
    shutil.copytree(ROOT / "examples" / "hello", project)
    manifest = json.loads((project / "manifest.json").read_text("utf-8"))
    manifest["egress"] = [*manifest["egress"], upstream.address]
    (project / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    bundle = pack_project(project, project.parent / "hello.tar.zst").output
    urls = local.urls
    api = ApiClient(urls.api, urls.token)
    publish_bundle(api, bundle)
    api.post("/installs", {"extension": HELLO, "version": manifest["version"]})
    return urls


def gateway(urls: StackUrls, method: str, path: str) -> requests.Response:
    """One gateway call, retried while the extension's code is still being compiled."""
    headers = {"Authorization": f"Bearer {urls.token}"}
    deadline = time.monotonic() + 60
    while True:
        answer = requests.request(method, f"{urls.api}/api/ext/{HELLO}{path}", headers=headers, timeout=30)
        not_ready = answer.status_code == 503 and answer.json()["error"]["code"] == "EXTENSION_NOT_READY"
        if not not_ready or time.monotonic() > deadline:
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))


def test_the_counter_counts_across_calls_through_the_gateway(installed: StackUrls) -> None:
    counts = [gateway(installed, "POST", "/counter") for _ in range(3)]
    assert [(answer.status_code, answer.json()) for answer in counts] == [
        (200, {"count": 1}),
        (200, {"count": 2}),
        (200, {"count": 3}),
    ]


def set_secret_as_an_admin(urls: StackUrls, name: str, value: str) -> None:
    """``extctl secrets set`` with the value on stdin, as an admin types it."""
    done = subprocess.run(
        [EXTCTL, "secrets", "set", HELLO, name],
        input=value,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EXT_API_URL": urls.api, "EXT_TOKEN": urls.token},
    )
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout + done.stderr


def test_the_upstream_call_carries_the_secret_an_admin_set(installed: StackUrls, upstream: Upstream) -> None:
    url = f"http://{upstream.address}/v1/me"
    before = gateway(installed, "GET", f"/upstream?url={url}")
    assert before.status_code == 404
    assert before.json()["error"]["code"] == "SECRET_NOT_FOUND"
    assert upstream.seen == []

    set_secret_as_an_admin(installed, "API_KEY", API_KEY)

    after = gateway(installed, "GET", f"/upstream?url={url}")
    assert after.status_code == 200
    assert after.json() == {"x-api-key": API_KEY, "path": "/v1/me"}
    assert upstream.seen == [API_KEY]
