"""``extctl init``: a working example extension project from ``examples/hello`` (C, the default),
``examples/hello-python`` or ``examples/hello-js`` (``wasm-component@1``).

A component project also gets its own copies of the WIT world (``wit/``) and the SDK (``sdk/``), so it
builds without the platform's checkout; ``extctl build`` makes its ``dist/main.wasm`` (components are
12–20 MB and not shipped prebuilt).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from chalicelib.bundles.manifest import Manifest
from chalicelib.errors import UsageError

__all__ = ["LANGUAGES", "TEMPLATE", "InitResult", "init_project"]

# In a checkout these are symbolic links to examples/ and sdk/; a built wheel holds copies.
_ROOT = Path(__file__).resolve().parent / "templates"
TEMPLATE = _ROOT / "hello"
_TEMPLATES = {"c": TEMPLATE, "python": _ROOT / "hello-python", "js": _ROOT / "hello-js"}
LANGUAGES = tuple(_TEMPLATES)
_SDK = _ROOT / "sdk"
_COPIED = ("manifest.json", "README.md", "src", "dist", "ui")
_GITIGNORE = "*.key\nbundle.tar.zst\nbundle.tar.zst.sig\n"
_COMPONENT_GITIGNORE = _GITIGNORE + "dist/\nnode_modules/\n__pycache__/\n"
# A JS project pins the same toolchain as the SDK's own package.json: one list of versions.
_JS_PACKAGE = {
    "private": True,
    "type": "module",
    "description": "Build tools for this extension (extctl build uses them; install once with npm install).",
    "devDependencies": json.loads((_SDK / "js" / "package.json").read_text(encoding="utf-8"))["devDependencies"],
}
_TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "module": "ES2022",
        "moduleResolution": "bundler",
        "strict": True,
        "noEmit": True,
        "paths": {"@ext-platform/sdk": ["./sdk/index.d.ts"]},
    },
    "include": ["src"],
}


@dataclass(frozen=True)
class InitResult:
    name: str
    directory: Path


def init_project(name: str, directory: Path | None = None, lang: str = "c") -> InitResult:
    """Copy the ``lang`` example into ``directory`` (default: NAME's last part) as extension ``name``.

    A C copy holds a prebuilt ``dist/main.wasm``, so it packs without a toolchain; a Python or JS copy
    holds ``wit/`` and ``sdk/`` and is built by ``extctl build``.
    """
    template = _TEMPLATES.get(lang)
    if template is None:
        raise UsageError(f"unknown language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    if not template.is_dir():
        raise UsageError(f"the example template is missing at {template}; reinstall extctl (pip install ext-platform)")
    manifest = json.loads((template / "manifest.json").read_text("utf-8"))
    manifest["name"] = name
    if isinstance(manifest.get("ui", {}).get("hooks", {}).get("appMenu"), dict):
        manifest["ui"]["hooks"]["appMenu"]["label"] = name.rsplit(".", 1)[-1].replace("-", " ").title()[:64]
    Manifest.parse(manifest)
    target = directory or Path(name.rsplit(".", 1)[-1])
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty; choose another --dir")
    target.mkdir(parents=True, exist_ok=True)
    for item in _COPIED if lang == "c" else ("manifest.json", "README.md", "src", "ui"):
        source = template / item
        if source.is_dir():
            shutil.copytree(source, target / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, target / item)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (target / ".gitignore").write_text(_GITIGNORE if lang == "c" else _COMPONENT_GITIGNORE, encoding="utf-8")
    if lang != "c":
        _copy_sdk(target, lang)
    return InitResult(name=name, directory=target)


def _copy_sdk(target: Path, lang: str) -> None:
    shutil.copytree(_SDK / "wit", target / "wit")
    if lang == "python":
        shutil.copytree(
            _SDK / "python" / "ext_platform",
            target / "sdk" / "ext_platform",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        return
    (target / "sdk").mkdir()
    for name in ("index.js", "index.d.ts"):
        shutil.copy2(_SDK / "js" / name, target / "sdk" / name)
    (target / "package.json").write_text(json.dumps(_JS_PACKAGE, indent=2) + "\n", encoding="utf-8")
    (target / "tsconfig.json").write_text(json.dumps(_TSCONFIG, indent=2) + "\n", encoding="utf-8")
