"""``make deploy`` offline: the parameter files and the commands a deploy would run (none is run)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.deploy import (
    BootstrapOutputs,
    Command,
    ParameterFileInvalid,
    bootstrap_commands,
    load_parameters,
    main,
    prepare_image_context,
    release_commands,
)
from tests.infra.cfn import failed_rules

pytestmark = pytest.mark.xdist_group("infra")

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = BootstrapOutputs("123456789012.dkr.ecr.eu-west-1.amazonaws.com/ext-platform-prod-runner", "artifacts-b")
IMAGE = f"{OUTPUTS.repository_uri}:t42"


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), "utf-8")
    return path


def check_against_template(parameters: dict[str, str], declared: dict[str, Any]) -> None:
    for name, value in parameters.items():
        assert name in declared, f"{name} is not a template parameter"
        spec = declared[name]
        if "AllowedValues" in spec:
            assert value in [str(v) for v in spec["AllowedValues"]], name
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), name
        if "MinValue" in spec:
            assert int(value) >= int(spec["MinValue"]), name


# --- parameter files -------------------------------------------------------------------------------


def test_a_parameter_file_maps_names_to_strings_and_reads_file_values(tmp_path: Path) -> None:
    (tmp_path / "trust.pem").write_text("-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n", "utf-8")
    path = write(
        tmp_path / "p.json", {"LogLevel": "INFO", "BundleMaxEntries": 10, "SigningTrustBundle": "file://trust.pem"}
    )
    assert load_parameters(path, root=tmp_path) == {
        "LogLevel": "INFO",
        "BundleMaxEntries": "10",
        "SigningTrustBundle": "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "expected a JSON object"),
        ("{", "Expecting"),
        ('{"LogLevel": true}', "LogLevel must be a string or an integer"),
        ('{"LogLevel": ["INFO"]}', "LogLevel must be a string or an integer"),
        ('{"Stage": "prod"}', "Stage is set by the deploy itself"),
        ('{"RunnerImageUri": "x"}', "RunnerImageUri is set by the deploy itself"),
        ('{"SigningTrustBundle": "file://missing.pem"}', "cannot read"),
    ],
)
def test_a_bad_parameter_file_is_refused_with_the_reason(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content, "utf-8")
    with pytest.raises(ParameterFileInvalid, match=re.escape(message)):
        load_parameters(path, root=tmp_path)


@pytest.mark.parametrize("name", ["dev.json", "prod.example.json"])
def test_the_committed_parameter_files_fit_the_template(template: dict[str, Any], name: str) -> None:
    raw = json.loads((ROOT / "infra" / "parameters" / name).read_text("utf-8"))
    literal = {key: str(value) for key, value in raw.items() if not str(value).startswith("file://")}
    check_against_template(literal, template["Parameters"])
    assert set(raw) <= set(template["Parameters"])


def test_the_production_example_satisfies_the_production_rules(template: dict[str, Any]) -> None:
    raw = json.loads((ROOT / "infra" / "parameters" / "prod.example.json").read_text("utf-8"))
    assert raw["SigningTrustBundle"] and raw["ExtAuthJwks"] and raw["ExtAuthIssuer"] and raw["ExtAuthAudience"]
    assert "ExtAuthSecret" not in raw
    assert [rule for rule in template["Rules"] if "Production" in rule] == ["ProductionFailsClosed"]
    parameters = {name: str(value) for name, value in raw.items()}
    assert failed_rules(template, {**parameters, "Stage": "prod", "RunnerImageUri": IMAGE}) == []


# --- the plan ----------------------------------------------------------------------------------------


def test_the_bootstrap_stack_is_deployed_before_its_outputs_are_read() -> None:
    deploy, describe = bootstrap_commands("prod", "eu-west-1")
    assert deploy.argv[:3] == ("aws", "cloudformation", "deploy")
    assert "ext-platform-prod-bootstrap" in deploy.argv and "infra/bootstrap.yaml" in deploy.argv
    assert describe.argv[:3] == ("aws", "cloudformation", "describe-stacks")
    assert "ext-platform-prod-bootstrap" in describe.argv


def test_a_release_builds_pushes_packages_and_deploys_in_that_order() -> None:
    commands = release_commands("prod", "eu-west-1", "t42", {"LogLevel": "INFO"}, OUTPUTS)
    programs = [command.argv[:2] for command in commands]
    assert programs[:3] == [("docker", "build"), ("docker", "login"), ("docker", "push")]
    assert programs[3:] == [(commands[3].argv[0], "-m"), ("aws", "cloudformation"), ("aws", "cloudformation")]
    build, login, push, check, package, deploy = commands
    assert build.argv[-1] == "build/runner-image" and IMAGE in build.argv
    assert login.stdin_from == ("aws", "ecr", "get-login-password", "--region", "eu-west-1")
    assert login.argv[-1] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert push.argv == ("docker", "push", IMAGE)
    assert check.argv[1:] == ("-m", "infra.check", "build/infra")
    assert package.argv[2] == "package" and "build/infra/sam.yaml" in package.argv
    assert deploy.argv[2] == "deploy" and "ext-platform-prod" in deploy.argv
    assert {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"} <= set(deploy.argv)
    overrides = deploy.argv[deploy.argv.index("--parameter-overrides") + 1 :]
    assert overrides == ("Stage=prod", f"RunnerImageUri={IMAGE}", "LogLevel=INFO")


def test_the_image_is_built_for_the_runners_architecture() -> None:
    arm = release_commands("prod", "eu-west-1", "t42", {"RunnerArchitecture": "arm64"}, OUTPUTS)[0]
    assert arm.argv[arm.argv.index("--platform") + 1] == "linux/arm64"
    with pytest.raises(ParameterFileInvalid, match="RunnerArchitecture"):
        release_commands("prod", "eu-west-1", "t42", {"RunnerArchitecture": "riscv"}, OUTPUTS)


def test_printed_commands_hide_parameter_values() -> None:
    command = Command(("aws", "cloudformation", "deploy", "--parameter-overrides", "ExtAuthSecret=s3cr3t"))
    assert "s3cr3t" not in str(command)
    assert "ExtAuthSecret=" in str(command)


def test_a_dry_run_prints_every_command_and_runs_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parameters = write(tmp_path / "p.json", {"LogLevel": "INFO"})
    argv = ["--stage", "prod", "--region", "eu-west-1", "--tag", "t1", "--parameters", str(parameters), "--dry-run"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("aws cloudformation deploy")
    assert any(line.startswith("aws ecr get-login-password") for line in printed)
    assert printed[-1].startswith("aws cloudformation deploy") and "ext-platform-prod " in printed[-1]


def test_the_image_context_holds_only_what_the_dockerfile_copies(tmp_path: Path) -> None:
    for directory in ("chalicelib/__pycache__", "runner_container", ".venv", "tests"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "chalicelib" / "config.py").write_text("", "utf-8")
    (tmp_path / "chalicelib" / "__pycache__" / "config.cpython-311.pyc").write_bytes(b"")
    (tmp_path / "runner_container" / "Dockerfile").write_text("FROM x\n", "utf-8")
    context = prepare_image_context(tmp_path)
    files = sorted(str(path.relative_to(context)) for path in context.rglob("*") if path.is_file())
    assert files == ["chalicelib/config.py", "runner_container/Dockerfile"]
    dockerfile = (ROOT / "runner_container" / "Dockerfile").read_text("utf-8")
    copied = set(re.findall(r"^COPY (\S+?)/", dockerfile, flags=re.MULTILINE))
    assert copied == {"chalicelib", "runner_container"}


@pytest.mark.parametrize("stage", ["", "Prod", "prod_1", "a-very-long-stage-name", "prod\n"])
def test_a_stage_the_template_would_refuse_stops_the_deploy_early(
    stage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--stage", stage, "--region", "eu-west-1", "--dry-run"]) == 2
    assert "the stage must match" in capsys.readouterr().err
