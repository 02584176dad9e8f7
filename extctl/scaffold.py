"""``extctl init``: a working example extension project from ``examples/hello``."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from chalicelib.bundles.manifest import Manifest
from chalicelib.errors import UsageError

__all__ = ["TEMPLATE", "InitResult", "init_project"]

TEMPLATE = Path(__file__).resolve().parent.parent / "examples" / "hello"
_COPIED = ("manifest.json", "README.md", "src", "dist", "ui")
_GITIGNORE = "*.key\nbundle.tar.zst\nbundle.tar.zst.sig\n"


@dataclass(frozen=True)
class InitResult:
    name: str
    directory: Path


def init_project(name: str, directory: Path | None = None) -> InitResult:
    """Copy the example into ``directory`` (default: NAME's last part) as extension ``name``.

    The copy holds a prebuilt ``dist/main.wasm``, so it packs without a toolchain.
    """
    if not TEMPLATE.is_dir():
        raise UsageError(f"the example template is missing at {TEMPLATE}; install extctl from a source checkout")
    manifest = json.loads((TEMPLATE / "manifest.json").read_text("utf-8"))
    manifest["name"] = name
    if isinstance(manifest.get("ui", {}).get("hooks", {}).get("appMenu"), dict):
        manifest["ui"]["hooks"]["appMenu"]["label"] = name.rsplit(".", 1)[-1].replace("-", " ").title()[:64]
    Manifest.parse(manifest)
    target = directory or Path(name.rsplit(".", 1)[-1])
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty; choose another --dir")
    target.mkdir(parents=True, exist_ok=True)
    for item in _COPIED:
        source = TEMPLATE / item
        if source.is_dir():
            shutil.copytree(source, target / item)
        elif source.is_file():
            shutil.copy2(source, target / item)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (target / ".gitignore").write_text(_GITIGNORE, encoding="utf-8")
    return InitResult(name=name, directory=target)
