"""``make deploy STAGE=<stage>``: build and push the runner image, package, deploy with CloudFormation.

``python -m infra.deploy --stage prod [--region eu-west-1] [--tag TAG] [--dry-run]`` runs:

1. ``aws cloudformation deploy`` of ``infra/bootstrap.yaml`` as ``ext-platform-<stage>-bootstrap``
   (the runner's ECR repository and a bucket for deployment artifacts), then reads its outputs;
2. ``docker build`` of ``runner_container/Dockerfile`` for the runner's architecture, from a build
   context holding only ``chalicelib/`` and ``runner_container/`` (``build/runner-image``), an ECR
   login, ``docker push <repository>:<tag>`` (tags are immutable, so every deploy pushes a new one);
3. ``python -m infra.check build/infra``: ``chalice package`` with ``infra/template.yaml`` merged
   in, then cfn-lint, which stops the deploy on any finding;
4. ``aws cloudformation package``: uploads ``deployment.zip`` to the artifacts bucket;
5. ``aws cloudformation deploy`` of the stack ``ext-platform-<stage>`` with the parameters of
   ``infra/parameters/<stage>.json`` plus ``Stage`` and ``RunnerImageUri``.

``--dry-run`` prints the commands (with placeholders for the bootstrap outputs) and runs nothing.
Nothing here is exercised against AWS by the test suite; ``tests/infra/test_deploy.py`` checks the
plan and the parameter files offline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.check import BOOTSTRAP_TEMPLATE, ROOT

__all__ = [
    "BootstrapOutputs",
    "Command",
    "ParameterFileInvalid",
    "bootstrap_commands",
    "load_parameters",
    "parse_bootstrap_outputs",
    "prepare_image_context",
    "release_commands",
    "stack_name",
]

BUILD_DIR = Path("build") / "infra"
IMAGE_CONTEXT = Path("build") / "runner-image"
IMAGE_SOURCES = ("chalicelib", "runner_container")
"""What runner_container/Dockerfile copies; nothing else (.venv, keys, bundles) reaches the image build."""
PARAMETERS_DIR = ROOT / "infra" / "parameters"
_PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
_STAGE = re.compile(r"[a-z][a-z0-9-]{0,15}")
"""The template's Stage pattern (it names the bucket, so it is lowercase and short)."""
_FILE_PREFIX = "file://"
# Parameters the deploy itself decides; a parameter file must not set them.
_DERIVED = frozenset({"Stage", "RunnerImageUri"})


class ParameterFileInvalid(Exception):
    """A parameter file is not a JSON object of strings and numbers, or names a file that is missing."""


@dataclass(frozen=True)
class Command:
    """One program to run from the repository root; ``stdin_from``'s output is fed to its stdin."""

    argv: tuple[str, ...]
    stdin_from: tuple[str, ...] | None = None

    def __str__(self) -> str:
        text = shlex.join(_redacted(self.argv))
        return f"{shlex.join(self.stdin_from)} | {text}" if self.stdin_from else text


@dataclass(frozen=True)
class BootstrapOutputs:
    """What the bootstrap stack created: where images go and where packaged code goes."""

    repository_uri: str
    artifacts_bucket: str

    @property
    def registry(self) -> str:
        return self.repository_uri.split("/", 1)[0]


def _redacted(argv: Sequence[str]) -> list[str]:
    # Parameter values can be long PEM blocks or secrets: show their names only.
    return [arg.split("=", 1)[0] + "=…" if "=" in arg and not arg.startswith("-") else arg for arg in argv]


def stack_name(stage: str, *, bootstrap: bool = False) -> str:
    return f"ext-platform-{stage}-bootstrap" if bootstrap else f"ext-platform-{stage}"


def load_parameters(path: Path, *, root: Path = ROOT) -> dict[str, str]:
    """The stack parameters of a ``infra/parameters/<stage>.json`` file.

    The file is a JSON object ``{"ParameterName": value}``; a value ``"file://relative/path"``
    is replaced by that file's text (relative to ``root``), so a trust bundle can stay a PEM file.
    """
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ParameterFileInvalid(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ParameterFileInvalid(f"{path}: expected a JSON object of parameter names and values")
    parameters = {}
    for name, value in raw.items():
        if name in _DERIVED:
            raise ParameterFileInvalid(f"{path}: {name} is set by the deploy itself")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ParameterFileInvalid(f"{path}: {name} must be a string or an integer")
        parameters[name] = _read_file_value(str(value), root, path)
    return parameters


def _read_file_value(value: str, root: Path, source: Path) -> str:
    if not value.startswith(_FILE_PREFIX):
        return value
    target = root / value.removeprefix(_FILE_PREFIX)
    try:
        return target.read_text("utf-8")
    except OSError as exc:
        raise ParameterFileInvalid(f"{source}: cannot read {target}: {exc.strerror}") from None


def bootstrap_commands(stage: str, region: str) -> list[Command]:
    """Deploy the bootstrap stack, then print its outputs as JSON (the last command's stdout)."""
    name = stack_name(stage, bootstrap=True)
    return [
        Command(
            (
                "aws",
                "cloudformation",
                "deploy",
                "--region",
                region,
                "--stack-name",
                name,
                "--template-file",
                str(BOOTSTRAP_TEMPLATE.relative_to(ROOT)),
                "--parameter-overrides",
                f"Stage={stage}",
                "--no-fail-on-empty-changeset",
            )
        ),
        Command(
            (
                "aws",
                "cloudformation",
                "describe-stacks",
                "--region",
                region,
                "--stack-name",
                name,
                "--query",
                "Stacks[0].Outputs",
                "--output",
                "json",
            )
        ),
    ]


def parse_bootstrap_outputs(text: str) -> BootstrapOutputs:
    """The bootstrap stack's outputs from ``describe-stacks --query Stacks[0].Outputs --output json``."""
    values = {item["OutputKey"]: item["OutputValue"] for item in json.loads(text)}
    return BootstrapOutputs(values["RunnerRepositoryUri"], values["ArtifactsBucketName"])


def release_commands(
    stage: str, region: str, tag: str, parameters: Mapping[str, str], outputs: BootstrapOutputs
) -> list[Command]:
    """Build and push the image, package and lint, upload the code, deploy the stack."""
    image = f"{outputs.repository_uri}:{tag}"
    architecture = parameters.get("RunnerArchitecture", "x86_64")
    if architecture not in _PLATFORMS:
        raise ParameterFileInvalid(f"RunnerArchitecture must be one of {sorted(_PLATFORMS)}, not {architecture!r}")
    platform = _PLATFORMS[architecture]
    dockerfile = IMAGE_CONTEXT / "runner_container" / "Dockerfile"
    template = BUILD_DIR / "sam.yaml"
    packaged = BUILD_DIR / "packaged.yaml"
    overrides = [f"{name}={value}" for name, value in sorted(parameters.items())]
    return [
        Command(("docker", "build", "--platform", platform, "-f", str(dockerfile), "-t", image, str(IMAGE_CONTEXT))),
        Command(
            ("docker", "login", "--username", "AWS", "--password-stdin", outputs.registry),
            stdin_from=("aws", "ecr", "get-login-password", "--region", region),
        ),
        Command(("docker", "push", image)),
        Command((sys.executable, "-m", "infra.check", str(BUILD_DIR))),
        Command(
            (
                "aws",
                "cloudformation",
                "package",
                "--region",
                region,
                "--template-file",
                str(template),
                "--s3-bucket",
                outputs.artifacts_bucket,
                "--s3-prefix",
                stage,
                "--output-template-file",
                str(packaged),
            )
        ),
        Command(
            (
                "aws",
                "cloudformation",
                "deploy",
                "--region",
                region,
                "--stack-name",
                stack_name(stage),
                "--template-file",
                str(packaged),
                # The packaged template is larger than the 51,200 bytes CloudFormation accepts inline.
                "--s3-bucket",
                outputs.artifacts_bucket,
                "--s3-prefix",
                stage,
                "--capabilities",
                "CAPABILITY_IAM",
                "CAPABILITY_AUTO_EXPAND",
                "--no-fail-on-empty-changeset",
                "--parameter-overrides",
                f"Stage={stage}",
                f"RunnerImageUri={image}",
                *overrides,
            )
        ),
    ]


def prepare_image_context(root: Path = ROOT) -> Path:
    """Copy the image's sources (no caches) into a fresh ``build/runner-image`` and return it."""
    context = root / IMAGE_CONTEXT
    if context.exists():
        shutil.rmtree(context)
    for source in IMAGE_SOURCES:
        shutil.copytree(root / source, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return context


def _run(command: Command, env: Mapping[str, str], *, capture: bool = False) -> str:
    print(f"+ {command}", file=sys.stderr, flush=True)
    stdin = None
    if command.stdin_from is not None:
        stdin = subprocess.run(command.stdin_from, cwd=ROOT, env=env, check=True, capture_output=True).stdout
    done = subprocess.run(command.argv, cwd=ROOT, env=env, check=True, input=stdin, capture_output=capture)
    return done.stdout.decode() if capture else ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy", description="Deploy the platform to AWS.")
    parser.add_argument("--stage", required=True, help="the stage to deploy (lowercase)")
    parser.add_argument("--parameters", type=Path, help="parameter file (default: infra/parameters/STAGE.json)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S", time.gmtime()), help="runner image tag")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    return parser


def _print_plan(args: argparse.Namespace, parameters: Mapping[str, str]) -> None:
    outputs = BootstrapOutputs("<RunnerRepositoryUri>", "<ArtifactsBucketName>")
    for command in bootstrap_commands(args.stage, args.region):
        print(command)
    print(f"# copy {', '.join(IMAGE_SOURCES)} into {IMAGE_CONTEXT}")
    for command in release_commands(args.stage, args.region, args.tag, parameters, outputs):
        print(command)


def _deploy(args: argparse.Namespace, parameters: Mapping[str, str]) -> None:
    env = {**os.environ, "AWS_DEFAULT_REGION": args.region}
    deploy_bootstrap, describe_bootstrap = bootstrap_commands(args.stage, args.region)
    _run(deploy_bootstrap, env)
    outputs = parse_bootstrap_outputs(_run(describe_bootstrap, env, capture=True))
    commands = release_commands(args.stage, args.region, args.tag, parameters, outputs)
    prepare_image_context()
    for command in commands:
        _run(command, env)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if not _STAGE.fullmatch(args.stage):
        print(
            f"error: the stage must match {_STAGE.pattern} (make deploy STAGE=dev), not {args.stage!r}", file=sys.stderr
        )
        return 2
    if not args.region:
        print("error: set --region (or AWS_REGION)", file=sys.stderr)
        return 2
    try:
        parameters = load_parameters(args.parameters or PARAMETERS_DIR / f"{args.stage}.json")
        if args.dry_run:
            _print_plan(args, parameters)
        else:
            _deploy(args, parameters)
    except ParameterFileInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: {Path(str(exc.cmd[0])).name} exited {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
