"""`extctl dev --watch DIR` on a copy of the C example: an edit answers through the gateway, a broken build
prints its error and the watch goes on, and the dev versions are SemVer prereleases of the manifest's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from extctl.watch import dev_version
from tests.e2e.test_first_run import EXTCTL

ROOT = Path(__file__).resolve().parents[2]
NAME = "com.acme.watched"
GREETING = '"{\\"message\\":\\"Hello, "'


@dataclass
class Dev:
    process: subprocess.Popen[str]
    urls: dict[str, str]
    log: Path
    project: Path
    state: Path

    def watch_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("[")]

    def wait_for(self, what: Callable[[list[str]], bool], timeout_s: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.watch_lines()
            if what(lines):
                return lines
            time.sleep(0.1)
        raise AssertionError(f"timed out; dev said:\n{self.log.read_text()[-4000:]}")

    def hello(self) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.urls['EXT_TOKEN']}"}
        return requests.get(f"{self.urls['EXT_API_URL']}/api/ext/{NAME}/hello?name=Ada", headers=headers, timeout=30)


def copy_example(directory: Path) -> Path:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    shutil.copytree(ROOT / "examples" / "hello", directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, "name": NAME}, indent=2))
    return directory


def start_dev(work: Path, project: Path, *extra: str) -> Dev:
    log = work / "dev.log"
    state = work / "state"
    env = {**os.environ, "TMPDIR": str(work), "EXTCTL_STATE_DIR": str(state)}
    process = subprocess.Popen(
        [EXTCTL, "dev", "--port", "0", "--no-example", "--watch", str(project), *extra],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < 4:
        line = process.stdout.readline()
        assert line, log.read_text()
        key, _, value = line.strip().partition("=")
        urls[key] = value
    return Dev(process, urls, log, project, state)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    work = tmp_path_factory.mktemp("watch")
    started = start_dev(work, copy_example(work / "project"))
    yield started
    started.process.terminate()
    assert started.process.wait(timeout=60) == 0


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_dev_versions_are_prereleases_of_the_manifests_version() -> None:
    assert dev_version("1.2.0", 3) == "1.2.0-dev.3"
    assert dev_version("1.2.0-rc.1", 2) == "1.2.0-rc.1.dev.2"
    assert dev_version("1.2.0+build.5", 1) == "1.2.0-dev.1"


def test_the_project_is_installed_when_dev_starts(dev: Dev) -> None:
    lines = dev.wait_for(lambda lines: len(lines) >= 1)
    assert f"{NAME}@1.0.0-dev.1 installed in " in lines[0]
    assert (dev.state / "dev.json").is_file()
    assert dev.hello().json() == {"message": "Hello, Ada!"}
    ui = lines[0].split("; UI ", 1)[1]
    page = requests.get(ui, timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]


def test_an_edit_answers_through_the_gateway(dev: Dev) -> None:
    dev.wait_for(lambda lines: len(lines) >= 1)
    before = len(dev.watch_lines())
    edit(dev.project / "src" / "main.c", GREETING, GREETING.replace("Hello", "Howdy"))
    lines = dev.wait_for(lambda lines: len(lines) > before)
    assert " installed in " in lines[-1], lines[-1]
    assert dev.hello().json() == {"message": "Howdy, Ada!"}
    version = requests.get(
        f"{dev.urls['EXT_API_URL']}/installs/{NAME}",
        headers={"Authorization": f"Bearer {dev.urls['EXT_TOKEN']}"},
        timeout=30,
    ).json()["version"]
    assert version == f"1.0.0-dev.{len(lines)}"
    assert json.loads((dev.project / "manifest.json").read_text())["version"] == "1.0.0"


def test_a_broken_build_prints_its_error_and_the_watch_goes_on(dev: Dev) -> None:
    dev.wait_for(lambda lines: len(lines) >= 1)
    main = dev.project / "src" / "main.c"
    before = len(dev.watch_lines())
    edit(main, "static Reply route_hello(", "static Reply route_hello(}")
    lines = dev.wait_for(lambda lines: len(lines) > before)
    assert f"{NAME}: BUILD_FAILED: compiling src/main.c failed" in lines[-1]
    assert "still watching" in dev.log.read_text()
    answer_before = dev.hello().json()

    edit(main, "static Reply route_hello(}", "static Reply route_hello(")
    edit(
        main,
        GREETING.replace("Hello", "Howdy") if "Howdy" in main.read_text() else GREETING,
        '"{\\"message\\":\\"Hi, "',
    )
    lines = dev.wait_for(lambda lines: len(lines) > before + 1)
    assert " installed in " in lines[-1], lines[-1]
    assert answer_before != dev.hello().json() == {"message": "Hi, Ada!"}


def test_touching_a_file_without_changing_it_publishes_nothing(dev: Dev) -> None:
    dev.wait_for(lambda lines: len(lines) >= 1)
    before = len(dev.watch_lines())
    (dev.project / "ui" / "index.html").touch()
    time.sleep(3)
    assert len(dev.watch_lines()) == before
