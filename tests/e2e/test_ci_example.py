"""docs/ci/publish-extension.yml, run against the local stack.

The workflow's own ``run:`` scripts (build, pack, sign, publish) are executed unchanged, as GitHub
Actions runs them (``bash --noprofile --norc -eo pipefail``), in a fresh extension project, with the
CLI the workflow's setup step installs (a plain ``pip install`` of the project: the CLI alone, in a
fresh virtualenv; tests/e2e/conftest.py) first on PATH, the secrets and variables the workflow
expects, and a local stack whose trust bundle holds the signing key: what CI publishes is what the
platform then serves, signed and verified.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml  # type: ignore[import-untyped]

from devstack.stack import LocalStack, StackConfig, StackUrls
from tests.e2e.conftest import CLI_INSTALL_GROUP, CliInstall

pytestmark = pytest.mark.xdist_group(CLI_INSTALL_GROUP)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "ci" / "publish-extension.yml"
EXTENSION = "com.acme.ci-demo"
LOCAL_STEPS = ("build", "pack", "sign", "publish")
"""Steps run here; ``setup`` (apt and pip) is the system's clang and :func:`tests.e2e.conftest.cli_install`."""
_EXPRESSION = re.compile(r"\$\{\{\s*(vars|secrets)\.([A-Z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class Published:
    urls: StackUrls
    project: Path
    key_id: str
    outputs: Mapping[str, str]


def workflow_job() -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text("utf-8"))["jobs"]["publish"]
    return job


def run_steps(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's ``run:`` steps by id, in order."""
    return {step["id"]: step for step in job["steps"] if "run" in step}


def resolve(env: Mapping[str, str], context: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """A step's ``env:`` with ``${{ vars.X }}`` and ``${{ secrets.X }}`` replaced; anything else fails."""

    def value(match: re.Match[str]) -> str:
        return context[match.group(1)][match.group(2)]

    resolved = {name: _EXPRESSION.sub(value, str(text)) for name, text in env.items()}
    leftover = [text for text in resolved.values() if "${{" in text]
    assert not leftover, f"unresolved expressions in the workflow's env: {leftover}"
    return resolved


def extctl(cli: CliInstall, *args: str, env: Mapping[str, str], cwd: Path) -> str:
    done = subprocess.run([str(cli.extctl), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, cli_install: CliInstall) -> Iterator[Published]:
    if not (shutil.which("clang") and shutil.which("wasm-ld")):
        pytest.skip("the workflow's build step needs clang and wasm-ld (.ci/run installs them)")
    work = tmp_path_factory.mktemp("ci")
    base_env = {
        "PATH": f"{cli_install.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(work / "home"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "RUNNER_TEMP": str(work / "runner-temp"),
        "LANG": "C.UTF-8",
    }
    (work / "runner-temp").mkdir()
    key_id = extctl(
        cli_install, "keygen", "--out", str(work / "keys"), "--name", "ci", env=base_env, cwd=work
    ).splitlines()[-1]
    public_key = (work / "keys" / "ci.pub").read_text("utf-8")
    trust_bundle = f"# name: acme CI\n# scope: com.acme.*\n{public_key}"
    project = work / "repo"
    extctl(cli_install, "init", EXTENSION, "--dir", str(project), env=base_env, cwd=work)

    stack = LocalStack(StackConfig(trust_bundle=trust_bundle, cache_dir=work / "runner-cache"))
    try:
        urls = stack.start()
        context = {
            "vars": {"EXT_API_URL": urls.api},
            "secrets": {"EXT_SIGNING_KEY": (work / "keys" / "ci.key").read_text("utf-8"), "EXT_TOKEN": urls.token},
        }
        job = workflow_job()
        job_env = resolve(job.get("env", {}), context)
        outputs = {}
        for step_id in LOCAL_STEPS:
            step = run_steps(job)[step_id]
            env = {**base_env, **job_env, **resolve(step.get("env", {}), context)}
            script = work / f"{step_id}.sh"
            script.write_text(step["run"], "utf-8")
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, f"step {step_id} failed:\n{done.stdout}\n{done.stderr}"
            outputs[step_id] = done.stdout
        yield Published(urls=urls, project=project, key_id=key_id, outputs=outputs)
    finally:
        stack.stop()


# --- the workflow file --------------------------------------------------------------------------


def test_the_workflow_builds_packs_signs_and_publishes_with_extctl_in_that_order() -> None:
    job = workflow_job()
    steps = run_steps(job)
    assert list(steps) == ["setup", *LOCAL_STEPS]
    commands = {step_id: re.findall(r"\bextctl (\w+)", step["run"]) for step_id, step in steps.items()}
    assert commands == {"setup": [], "build": ["build"], "pack": ["pack"], "sign": ["sign"], "publish": ["publish"]}
    assert job["defaults"]["run"]["shell"] == "bash"


def test_the_workflow_takes_the_key_and_the_token_from_secrets_only() -> None:
    steps = run_steps(workflow_job())
    assert steps["sign"]["env"] == {"EXT_SIGNING_KEY": "${{ secrets.EXT_SIGNING_KEY }}"}
    assert steps["publish"]["env"] == {"EXT_TOKEN": "${{ secrets.EXT_TOKEN }}"}
    assert "secrets." not in json.dumps({k: v for k, v in steps.items() if k not in ("sign", "publish")})
    assert steps["sign"]["run"].count("$EXT_SIGNING_KEY") == 1, "the key is written to a file once, never echoed"


def test_the_workflow_installs_extctl_and_the_guest_toolchain() -> None:
    setup = run_steps(workflow_job())["setup"]["run"]
    assert "clang lld" in setup
    assert 'pip install --quiet "$EXTCTL_PIP_SPEC"' in setup


# --- running it -----------------------------------------------------------------------------------


def test_the_workflow_publishes_a_signed_bundle_the_trust_bundle_verifies(published: Published) -> None:
    result = json.loads((published.project / "publish-result.json").read_text("utf-8"))
    assert result["extension"] == EXTENSION
    assert result["status"] == "finalized"
    assert result["signature_status"] == "verified"
    assert result["key_id"] == published.key_id
    assert json.loads(published.outputs["publish"]) == result


def test_the_published_content_hash_is_the_one_pack_printed(published: Published) -> None:
    packed_hash = published.outputs["pack"].splitlines()[-1]
    result = json.loads((published.project / "publish-result.json").read_text("utf-8"))
    assert result["content_hash"] == packed_hash
    versions = requests.get(
        f"{published.urls.api}/extensions/{EXTENSION}/versions",
        headers={"Authorization": f"Bearer {published.urls.token}"},
        timeout=10,
    ).json()["versions"]
    assert [(v["version"], v["content_hash"]) for v in versions] == [("1.0.0", packed_hash)]


def test_the_signing_key_does_not_outlive_the_sign_step(published: Published) -> None:
    assert (published.project / "bundle.tar.zst.sig").is_file()
    runner_temp = published.project.parent / "runner-temp"
    assert list(runner_temp.iterdir()) == []
