"""The CLI's modules and the bundle code it shares with the platform import without the platform's server
packages, which a plain `pip install` of the project leaves out (issue 13, item 1).

A fast guard beside tests/e2e/test_cli_install.py (which installs the wheel for real): a fresh
interpreter whose import system refuses the server packages imports every module on the CLI's path.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import chalicelib.bundles
import extctl

SERVER_PACKAGES = ("boto3", "botocore", "chalice", "jwt", "moto", "pynamodb", "wasmtime", "werkzeug")
CLI_PATH = sorted(
    [
        "chalicelib.config",
        "chalicelib.errors",
        "chalicelib.bundles",
        *(info.name for info in pkgutil.walk_packages(chalicelib.bundles.__path__, prefix="chalicelib.bundles.")),
        *(info.name for info in pkgutil.iter_modules(extctl.__path__, prefix="extctl.")),
    ]
)

_WITHOUT_SERVER_PACKAGES = """
import importlib, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Refuse())
for module in sys.argv[2].split(","):
    importlib.import_module(module)
from extctl.cli import build_parser
build_parser()
leaked = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
assert not leaked, leaked
"""


def test_every_module_on_the_clis_path_imports_without_the_server_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SERVER_PACKAGES, ",".join(SERVER_PACKAGES), ",".join(CLI_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr


def test_the_guard_refuses_what_it_should() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SERVER_PACKAGES, ",".join(SERVER_PACKAGES), "devstack.stack"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
