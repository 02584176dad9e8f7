"""The offline extctl commands, run as a user runs them: the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from chalicelib.bundles.signing import key_id_for

EXTCTL = shutil.which("extctl", path=str(Path(__file__).resolve().parents[2] / ".venv" / "bin")) or "extctl"


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SIGNING_TRUST_BUNDLE"}
    full_env.update(env or {})
    return subprocess.run([EXTCTL, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=120)


def ok(*args: str | Path, cwd: Path) -> str:
    done = run(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def fails(code: str, *args: str | Path, cwd: Path) -> str:
    done = run(*args, cwd=cwd)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: {code}: "), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ok("init", "com.acme.hello", "--dir", "hello", cwd=tmp_path)
    return tmp_path / "hello"


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    out = ok("keygen", "--out", "keys", "--name", "release", cwd=tmp_path)
    private, public = tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert out.strip().splitlines()[-1] == key_id_for(load_pem_public_key(public.read_bytes()))
    fails("USAGE", "keygen", "--out", "keys", "--name", "release", cwd=tmp_path)


def test_init_creates_a_project_that_packs_without_a_toolchain(project: Path, tmp_path: Path) -> None:
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["name"] == "com.acme.hello"
    for part in ("src/main.c", "dist/main.wasm", "ui/index.html", "ui/app.js", "ui/style.css"):
        assert (project / part).is_file(), part
    out = ok("pack", project, cwd=tmp_path)
    last = out.strip().splitlines()[-1]
    assert last.startswith("sha256:") and len(last) == 71
    assert (project / "bundle.tar.zst").is_file()


def test_init_refuses_a_bad_name_and_a_non_empty_directory(tmp_path: Path, project: Path) -> None:
    fails("MANIFEST_INVALID", "init", "Not A Name", "--dir", "x", cwd=tmp_path)
    fails("USAGE", "init", "com.acme.other", "--dir", project, cwd=tmp_path)


def test_pack_is_reproducible_across_runs(project: Path, tmp_path: Path) -> None:
    first = ok("pack", project, "-o", tmp_path / "a.tar.zst", cwd=tmp_path)
    os.utime(project / "ui" / "index.html", (1, 1))
    second = ok("pack", project, "-o", tmp_path / "b.tar.zst", cwd=tmp_path)
    assert first.splitlines()[-1] == second.splitlines()[-1]
    assert (tmp_path / "a.tar.zst").read_bytes() == (tmp_path / "b.tar.zst").read_bytes()


def test_sign_then_verify_with_a_trust_bundle(project: Path, tmp_path: Path) -> None:
    ok("keygen", "--out", "keys", cwd=tmp_path)
    ok("pack", project, "-o", "bundle.tar.zst", cwd=tmp_path)
    ok("sign", "bundle.tar.zst", "--key", "keys/signing.key", cwd=tmp_path)
    envelope = json.loads((tmp_path / "bundle.tar.zst.sig").read_text())
    assert envelope["format"] == "ext-bundle-signature/v1"
    report = json.loads(ok("verify", "bundle.tar.zst", "--trust-bundle", "keys/signing.pub", "--json", cwd=tmp_path))
    assert report["valid"] is True
    assert report["signature"]["status"] == "verified"
    assert report["content_hash"] == envelope["content_hash"]
    assert report["manifest"]["name"] == "com.acme.hello"
    unscoped = ok("verify", "bundle.tar.zst", cwd=tmp_path)
    assert "signature: unverified" in unscoped


def test_verify_fails_closed_with_a_trust_bundle(project: Path, tmp_path: Path) -> None:
    ok("keygen", "--out", "keys", cwd=tmp_path)
    ok("keygen", "--out", "keys", "--name", "other", cwd=tmp_path)
    ok("pack", project, "-o", "bundle.tar.zst", cwd=tmp_path)
    fails("SIGNATURE_MISSING", "verify", "bundle.tar.zst", "--trust-bundle", "keys/signing.pub", cwd=tmp_path)
    ok("sign", "bundle.tar.zst", "--key", "keys/other.key", cwd=tmp_path)
    fails("SIGNATURE_UNTRUSTED", "verify", "bundle.tar.zst", "--trust-bundle", "keys/signing.pub", cwd=tmp_path)
    scoped = tmp_path / "scoped.pem"
    scoped.write_text("# scope: com.other.*\n" + (tmp_path / "keys" / "other.pub").read_text())
    fails("SIGNATURE_SCOPE", "verify", "bundle.tar.zst", "--trust-bundle", scoped, cwd=tmp_path)


def test_verify_json_reports_the_error_too(tmp_path: Path) -> None:
    (tmp_path / "junk.tar.zst").write_bytes(b"not a bundle")
    done = run("verify", "junk.tar.zst", "--json", cwd=tmp_path)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {
        "valid": False,
        "error": {"code": "BUNDLE_CORRUPT", "message": "not a zstd stream (bad magic bytes)"},
    }
    assert done.stderr.startswith("error: BUNDLE_CORRUPT: ")


def test_a_tampered_bundle_fails_its_signature(project: Path, tmp_path: Path) -> None:
    ok("keygen", "--out", "keys", cwd=tmp_path)
    ok("pack", project, "-o", "bundle.tar.zst", cwd=tmp_path)
    ok("sign", "bundle.tar.zst", "--key", "keys/signing.key", cwd=tmp_path)
    (project / "ui" / "index.html").write_text("<p>changed</p>")
    ok("pack", project, "-o", "bundle.tar.zst", cwd=tmp_path)
    fails("SIGNATURE_INVALID", "verify", "bundle.tar.zst", "--trust-bundle", "keys/signing.pub", cwd=tmp_path)


def test_errors_have_codes_and_usage_errors_exit_2(tmp_path: Path) -> None:
    fails("IO_ERROR", "verify", "missing.tar.zst", cwd=tmp_path)
    fails("KEY_INVALID", "sign", "missing.tar.zst", "--key", "missing.key", cwd=tmp_path)
    done = run("sign", "x", cwd=tmp_path)
    assert done.returncode == 2 and "--key" in done.stderr
    done = run(cwd=tmp_path)
    assert done.returncode == 2
