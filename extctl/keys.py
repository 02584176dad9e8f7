"""Key files and signing for the CLI: ``keygen`` and ``sign``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from chalicelib.bundles.signing import generate_ed25519_keypair, key_id_for, load_private_key, sign_content_hash
from chalicelib.bundles.verify import verify_file
from chalicelib.config import load_settings
from chalicelib.errors import KeyInvalid, UsageError

__all__ = ["KeyPair", "SignedBundle", "sign_bundle_file", "write_keypair"]


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


@dataclass(frozen=True)
class SignedBundle:
    path: Path
    content_hash: str
    key_id: str


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise UsageError(f"{path} already exists; pass --force to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def write_keypair(directory: Path, name: str, *, force: bool = False) -> KeyPair:
    """Write ``name.key`` (PEM, mode 0600) and ``name.pub`` into ``directory``."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_ed25519_keypair()
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    _write_new(private_path, private_pem, 0o600, force)
    _write_new(public_path, public_pem, 0o644, force)
    return KeyPair(private_path, public_path, key_id_for(load_pem_public_key(public_pem)))


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyInvalid(f"key file {path} does not exist") from None


def sign_bundle_file(bundle: Path, key_path: Path, output: Path | None = None) -> SignedBundle:
    """Verify ``bundle`` as finalize would, then write its signature envelope."""
    password = os.environ.get("EXTCTL_KEY_PASSWORD")
    key = load_private_key(_read_key(key_path), password.encode() if password else None)
    verified = verify_file(bundle, load_settings().bundle_limits)
    envelope = sign_content_hash(verified.content_hash, key)
    target = output or bundle.with_name(bundle.name + ".sig")
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(envelope.to_json(), encoding="utf-8")
    os.replace(temp, target)
    return SignedBundle(target, verified.content_hash, envelope.key_id)
