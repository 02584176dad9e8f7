"""A new user's loop in Python and in JavaScript: `extctl dev`, then init → edit the handler → build → pack →
publish --install → call through the gateway (retrying `EXTENSION_NOT_READY` after its `Retry-After`, as a
client would, while the runner's compile job compiles the component) → the UI from the runner's /ext-ui/ URL →
the template's state endpoints: ``POST /counter`` counting in KV, and ``GET /upstream`` carrying the ``API_KEY``
secret set with ``extctl secrets set`` to a local server that records the header (admitted by the project's
manifest, edited as the user would, and by the platform's allowlist).

The Python extension also carries the hostile component fixture's handlers (tests/fixtures/components/
hostile-python), so one build and one compile show both the loop and that misbehaving calls are contained
through the gateway while the runner keeps serving (the stack allows private addresses for the local
upstream, so loopback is refused here by the egress lists; the address check's loopback refusal is
tests/integration/runner/test_component.py's); a component importing ``wasi:http`` is refused by
``extctl pack`` and, uploaded by hand, by the platform's finalize. Everything goes through the console
scripts and HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.bundle_factory import bundle, good_files
from tests.components import FIXTURES, dummy_component, wit_with
from tests.integration.state_fixtures import Upstream, recording_upstream

# A test here waits for a componentize build and a compile job (each up to a minute or two on a loaded
# 2-core machine): pytest-timeout's 300 s hang guard would cut a healthy run.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
EXTCTL = str(BIN / "extctl")
COMPILE_WAIT_S = 300
HOSTILE_HANDLERS = (
    "loop",
    "memory",
    "recursion",
    "fetch_metadata",
    "fetch_loopback",
    "socket",
    "resolve",
    "stdout_flood",
    "status_999",
    "crlf_header",
)
HOSTILE_EGRESS = ("169.254.169.254",)
WASI_HTTP_WIT = "package wasi:http@0.2.0;\ninterface outgoing-handler {\n  handle: func(url: string) -> u32;\n}\n"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(
        [EXTCTL, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"extctl {' '.join(args)} failed:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def refused(*args: str, cwd: Path) -> str:
    """``extctl``'s refusal (its stderr) of a command that must fail with a clear error."""
    done = subprocess.run([EXTCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("components-e2e")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with recording_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def dev(workdir: Path, upstream: Upstream) -> Iterator[dict[str, str]]:
    log = (workdir / "dev.log").open("w")
    process = subprocess.Popen(
        [EXTCTL, "dev", "--port", "0", "--no-example"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        # The platform's allowlist lists what the hostile handlers fetch, so the address checks refuse them,
        # and the local upstream, on loopback, which only EXT_EGRESS_ALLOW_PRIVATE lets them reach.
        env={
            **os.environ,
            "TMPDIR": str(workdir),
            "EXT_EGRESS_ALLOWLIST": ",".join((*HOSTILE_EGRESS, upstream.address)),
            "EXT_EGRESS_ALLOW_PRIVATE": "true",
        },
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
    assert process.wait(timeout=60) == 0
    log.close()


def api_env(dev: dict[str, str]) -> dict[str, str]:
    return {"EXT_API_URL": dev["EXT_API_URL"], "EXT_TOKEN": dev["EXT_TOKEN"]}


def gateway(dev: dict[str, str], extension: str, path: str, method: str = "GET") -> requests.Response:
    headers = {"Authorization": f"Bearer {dev['EXT_TOKEN']}"}
    url = f"{dev['EXT_API_URL']}/api/ext/{extension}{path}"
    return requests.request(method, url, headers=headers, timeout=60)


def when_ready(dev: dict[str, str], extension: str, path: str) -> requests.Response:
    """The gateway's answer once the code is compiled: ``EXTENSION_NOT_READY`` is retried after its
    ``Retry-After``, as a client would."""
    deadline = time.monotonic() + COMPILE_WAIT_S
    while True:
        answer = gateway(dev, extension, path)
        if answer.status_code != 503 or answer.json()["error"]["code"] != "EXTENSION_NOT_READY":
            return answer
        assert time.monotonic() < deadline, "the compile job never finished"
        time.sleep(int(answer.headers["Retry-After"]))


def error_code(answer: requests.Response) -> str:
    return str(answer.json()["error"]["code"])


def publish(dev: dict[str, str], workdir: Path, project: str) -> dict[str, Any]:
    """build → pack → publish --install, as the user types them; the publish result."""
    run("build", project, cwd=workdir)
    content_hash = run("pack", project, "-o", f"{project}.tar.zst", cwd=workdir).strip().splitlines()[-1]
    published: dict[str, Any] = json.loads(
        run("publish", f"{project}.tar.zst", "--install", cwd=workdir, env=api_env(dev))
    )
    assert (published["status"], published["content_hash"]) == ("finalized", content_hash)
    assert published["install"]["enabled"] is True
    return published


def assert_ui_loads(dev: dict[str, str], extension: str, content_hash: str) -> None:
    base = f"{dev['EXT_RUNNER_URL']}/ext-ui/{extension}/{content_hash}/"
    page = requests.get(base, timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "sandbox allow-scripts" in page.headers["Content-Security-Policy"]
    for asset in ("app.js", "style.css"):
        assert f'"{asset}"' in page.text
        assert requests.get(base + asset, timeout=30).status_code == 200


def admit_upstream(project: Path, upstream: Upstream) -> None:
    """Add the local upstream to the project's manifest ``egress``, as the user would edit it."""
    manifest = json.loads((project / "manifest.json").read_text("utf-8"))
    manifest["egress"] += [upstream.address]
    (project / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")


def assert_state_works(dev: dict[str, str], workdir: Path, extension: str, upstream: Upstream) -> None:
    """The template's counter counts 1 then 2 through the gateway, and ``/upstream`` sends the ``API_KEY`` an
    admin sets with ``extctl secrets set`` (the value on stdin) to the local upstream, which records it."""
    counts = [gateway(dev, extension, "/counter", method="POST") for _ in range(2)]
    assert [(answer.status_code, answer.json()) for answer in counts] == [(200, {"count": 1}), (200, {"count": 2})]

    key = f"sk-{extension}-e2e-0xC0FFEE"
    run("secrets", "set", extension, "API_KEY", cwd=workdir, env=api_env(dev), stdin=key)
    already = len(upstream.seen)
    answer = gateway(dev, extension, f"/upstream?url=http://{upstream.address}/v1/me")
    assert (answer.status_code, answer.json()) == (200, {"x-api-key": key, "path": "/v1/me"})
    assert upstream.seen[already:] == [key]


def add_hostile_handlers(project: Path) -> None:
    """Append the hostile fixture's handlers to the project's app.py, with an endpoint each."""
    fixture = (FIXTURES / "hostile-python" / "src" / "app.py").read_text("utf-8")
    with (project / "src" / "app.py").open("a", encoding="utf-8") as app:
        app.write("\n\n# --- the hostile fixture's handlers ---\n" + fixture)
    manifest = json.loads((project / "manifest.json").read_text("utf-8"))
    endpoints = [{"method": "GET", "path": f"/{name}", "handler": name} for name in HOSTILE_HANDLERS]
    manifest["api"]["endpoints"] += endpoints
    manifest["egress"] += HOSTILE_EGRESS
    manifest["limits"] = {"timeout_ms": 2000}
    (project / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")


def test_a_python_extension_goes_from_init_to_a_call_and_its_hostile_calls_are_contained(
    dev: dict[str, str], workdir: Path, upstream: Upstream
) -> None:
    run("init", "com.acme.py", "--lang", "python", cwd=workdir)
    app = workdir / "py" / "src" / "app.py"
    source = app.read_text("utf-8")
    edited = source.replace(
        'Response.json({"message": f"Hello, {name}!"})', 'Response.json({"hi": name, "lang": "py"})'
    )
    assert edited != source
    app.write_text(edited, "utf-8")
    add_hostile_handlers(workdir / "py")
    admit_upstream(workdir / "py", upstream)

    published = publish(dev, workdir, "py")

    answer = when_ready(dev, "com.acme.py", "/hello?name=Ada")
    assert (answer.status_code, answer.json()) == (200, {"hi": "Ada", "lang": "py"})
    assert_ui_loads(dev, "com.acme.py", published["content_hash"])
    assert_state_works(dev, workdir, "com.acme.py", upstream)

    def serving() -> None:
        assert gateway(dev, "com.acme.py", "/hello?name=again").json() == {"hi": "again", "lang": "py"}

    loop = gateway(dev, "com.acme.py", "/loop")
    assert (loop.status_code, error_code(loop)) == (504, "EXTENSION_TIMEOUT")
    serving()
    memory = gateway(dev, "com.acme.py", "/memory")
    assert memory.status_code == 500 and "MemoryError" in memory.text
    recursion = gateway(dev, "com.acme.py", "/recursion")
    assert (recursion.status_code, error_code(recursion)) == (502, "EXTENSION_FAILED")
    serving()
    # Listed in the manifest's egress and the allowlist, refused by the address checks all the same (even
    # with private addresses allowed).
    refusal = gateway(dev, "com.acme.py", "/fetch_metadata").json()
    assert refusal["refused"] == "denied" and "cloud metadata" in refusal["message"], refusal
    # Loopback is reachable at the upstream's port only: the platform's own API is not in the egress list.
    api_port = urlsplit(dev["EXT_API_URL"]).port
    refusal = gateway(dev, "com.acme.py", f"/fetch_loopback?url=http://127.0.0.1:{api_port}/").json()
    assert refusal["refused"] == "denied" and f"port {api_port} of host '127.0.0.1'" in refusal["message"], refusal
    for lookup in ("socket", "resolve"):
        assert gateway(dev, "com.acme.py", f"/{lookup}").json()["refused"] not in (None, "")
    assert gateway(dev, "com.acme.py", "/stdout_flood").status_code == 200
    for bad in ("status_999", "crlf_header"):
        answer = gateway(dev, "com.acme.py", f"/{bad}")
        assert (answer.status_code, error_code(answer)) == (502, "EXTENSION_FAILED")
        assert "set-cookie" not in {name.lower() for name in answer.headers}
    serving()


def test_a_component_importing_wasi_http_is_refused_by_pack_and_by_the_platform(
    dev: dict[str, str], workdir: Path
) -> None:
    project = workdir / "with-http"
    wit = wit_with(
        project / "work",
        "world with-http {\n  include extension;\n  import wasi:http/outgoing-handler@0.2.0;\n}\n",
        {"http": WASI_HTTP_WIT},
    )
    files = good_files(name="com.acme.http", runtime="wasm-component@1")
    files["dist/main.wasm"] = dummy_component(project / "work", "with-http", wit)
    for path, data in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_bytes(data)
    import_named = "imports instance 'wasi:http/outgoing-handler@0.2.0'"

    assert "WASM_INVALID" in (message := refused("pack", str(project), "-o", "with-http.tar.zst", cwd=workdir))
    assert import_named in message

    # The same bytes uploaded without extctl's local checks: the platform's finalize refuses them.
    data = bundle(files)
    auth = {"Authorization": f"Bearer {dev['EXT_TOKEN']}"}
    target = requests.post(
        f"{dev['EXT_API_URL']}/ext-bundles/initiate-upload",
        json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        headers=auth,
        timeout=30,
    ).json()
    assert target["method"] == "PUT", target
    assert requests.put(target["url"], data=data, headers=target["headers"], timeout=30).ok
    finalize = requests.post(
        f"{dev['EXT_API_URL']}/ext-bundles/finalize", json={"upload_id": target["upload_id"]}, headers=auth, timeout=60
    )
    assert (finalize.status_code, error_code(finalize)) == (400, "WASM_INVALID")
    assert import_named in finalize.json()["error"]["message"]


def test_a_javascript_extension_goes_from_init_to_a_call(
    dev: dict[str, str], workdir: Path, upstream: Upstream
) -> None:
    run("init", "com.acme.js", "--lang", "js", cwd=workdir)
    main = workdir / "js" / "src" / "main.ts"
    source = main.read_text("utf-8")
    edited = source.replace("Response.json({ message: `Hello, ${name}!` })", 'Response.json({ hi: name, lang: "js" })')
    assert edited != source
    main.write_text(edited, "utf-8")
    admit_upstream(workdir / "js", upstream)

    published = publish(dev, workdir, "js")

    answer = when_ready(dev, "com.acme.js", "/hello?name=Ada")
    assert (answer.status_code, answer.json()) == (200, {"hi": "Ada", "lang": "js"})
    assert_ui_loads(dev, "com.acme.js", published["content_hash"])
    assert_state_works(dev, workdir, "com.acme.js", upstream)
