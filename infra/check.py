"""Package the AWS stack offline and lint it: ``python -m infra.check [OUT_DIR]``.

``chalice package --stage aws --merge-template infra/template.yaml`` writes the whole
stack (Chalice's API and worker plus ``infra/template.yaml``) as ``sam.yaml`` with its
``deployment.zip``.  It needs no AWS credentials; the first run downloads the Lambda
wheels of ``requirements.txt`` from PyPI into ``.chalice/deployments/`` and later runs
reuse them, so packaging takes a second or two.  ``cfn-lint`` then validates the
packaged stack and ``infra/bootstrap.yaml`` without calling AWS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BOOTSTRAP_TEMPLATE",
    "CHALICE_STAGE",
    "MERGE_TEMPLATE",
    "ROOT",
    "PackagingFailed",
    "Packaged",
    "lint",
    "package",
]

ROOT = Path(__file__).resolve().parent.parent
MERGE_TEMPLATE = ROOT / "infra" / "template.yaml"
BOOTSTRAP_TEMPLATE = ROOT / "infra" / "bootstrap.yaml"
CHALICE_STAGE = "aws"
"""The stage of ``.chalice/config.json`` that describes the AWS deployment."""
_LINT_REGIONS = ["us-east-1"]


class PackagingFailed(Exception):
    """``chalice package`` exited non-zero; the message carries its output."""


@dataclass(frozen=True)
class Packaged:
    """What ``chalice package`` wrote."""

    template: Path
    deployment_zip: Path


def _tool(name: str) -> str:
    # The console scripts live next to this interpreter (.venv/bin); no PATH lookup.
    return str(Path(sys.executable).with_name(name))


def package(out_dir: Path, *, region: str | None = None) -> Packaged:
    """Run ``chalice package`` for the AWS stage into ``out_dir`` (which must not exist yet).

    ``region`` only tells Chalice which partition to write for (AWS is never called);
    it defaults to ``AWS_DEFAULT_REGION``, then ``us-east-1``.  Raises
    :class:`PackagingFailed` with Chalice's output when packaging fails.
    """
    env = dict(os.environ)
    env["AWS_DEFAULT_REGION"] = region or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    command = [_tool("chalice"), "package", "--stage", CHALICE_STAGE, "--merge-template", str(MERGE_TEMPLATE)]
    done = subprocess.run([*command, str(out_dir)], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PackagingFailed(f"chalice package exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return Packaged(template=out_dir / "sam.yaml", deployment_zip=out_dir / "deployment.zip")


def lint(template: Path) -> list[str]:
    """cfn-lint's findings for ``template`` (errors, warnings and informational), one line each."""
    # Imported here: cfn-lint loads every resource schema, which packaging alone does not need.
    from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped]

    matches = lint_file(template, config=ManualArgs(include_checks=["I"], regions=_LINT_REGIONS))
    return [f"{match.rule.id} {match.message} ({match.filename}:{match.linenumber})" for match in matches]


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else ROOT / "build" / "infra"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        packaged = package(out_dir)
    except PackagingFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    findings = {path: lint(path) for path in (packaged.template, BOOTSTRAP_TEMPLATE)}
    for path, lines in findings.items():
        for line in lines:
            print(f"{path.name}: {line}", file=sys.stderr)
    if any(findings.values()):
        return 1
    print(f"packaged and linted: {packaged.template} ({packaged.deployment_zip.stat().st_size} byte deployment.zip)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
