"""The CLI as an extension author installs it: a wheel of this checkout in a fresh virtualenv, alone.

Built once per test session (a wheel ~7 s, the install ~20 s from pip's cache); the tests that use it
share an xdist group so one worker builds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI_REQUIREMENTS = ROOT / "requirements-cli.txt"
CLI_INSTALL_GROUP = "cli-install"
"""The xdist group of every test that uses :func:`cli_install`."""


@dataclass(frozen=True)
class CliInstall:
    """A virtualenv holding the project's wheel and what its base dependencies pull in, nothing else."""

    venv: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def extctl(self) -> Path:
        return self.bin / "extctl"

    @property
    def python(self) -> Path:
        return self.bin / "python"


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _copy_checkout(target: Path) -> None:
    """The checkout's files as git sees them (tracked and new, not ignored), symbolic links kept.

    Building in a copy keeps setuptools' ``build/`` out of the checkout, and with it any file a
    former build left there, which setuptools would put in the wheel.
    """
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source, copy = ROOT / name, target / name
        if not os.path.lexists(source):
            continue  # deleted in the work tree, not yet in the index
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, copy)


@pytest.fixture(scope="session")
def cli_install(tmp_path_factory: pytest.TempPathFactory) -> CliInstall:
    work = tmp_path_factory.mktemp("cli-install")
    checkout = work / "checkout"
    _copy_checkout(checkout)
    pip = (sys.executable, "-m", "pip")
    # The development venv's setuptools builds it, as `pip install .` would in an isolated environment.
    _run(*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", work / "wheels", checkout)
    (wheel,) = (work / "wheels").glob("ext_platform-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    # A plain install of the wheel: pip resolves the base dependencies from the wheel's metadata; the
    # CLI's pins (as constraints, not requirements) only fix the versions it picks.
    _run(*pip, "--python", venv / "bin" / "python", "install", "--quiet", "--constraint", CLI_REQUIREMENTS, wheel)
    return CliInstall(venv=venv, wheel=wheel)
