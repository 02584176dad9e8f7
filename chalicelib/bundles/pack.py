"""Reproducible packing of an extension project into ``bundle.tar.zst``.

The same tree gives the same bytes on any machine, whatever the mtimes, modes,
owners, umask, file-system order or Unicode normalization of the names: members
are sorted by their UTF-8 names (NFC), carry mtime 0, uid/gid 0, empty user and
group names and fixed modes (0644 files, 0755 directories), and the tar is
compressed by a pinned zstd at a fixed level, single-threaded, with content size
and checksum.

What goes in: ``manifest.json``, the ``dist/`` and ``ui/`` trees, and the
manifest's ``entry`` wherever it lives.  Hidden names (starting with ``.``) and
OS litter are left out; links and special files are refused.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from chalicelib.bundles.manifest import Manifest
from chalicelib.bundles.paths import collision_key, normalize_member_path
from chalicelib.bundles.verify import VerifiedBundle, verify_file
from chalicelib.config import BundleLimits
from chalicelib.errors import BundleDuplicateEntry, BundleUnsupportedEntry, ManifestMissing

__all__ = ["PACK_LEVEL", "Member", "PackResult", "collect_members", "pack_project", "write_bundle"]

PACK_LEVEL = 12
"""zstd level of every bundle (the bench reports why: close to level 19's ratio
at many times its speed)."""

INCLUDED_TREES = ("dist", "ui")
_SKIPPED_NAMES = frozenset({"Thumbs.db", "desktop.ini", "__pycache__"})
_SPOOL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Member:
    """One entry of the archive: its bundle path and, for files, the source."""

    path: str
    source: Path | None


@dataclass(frozen=True)
class PackResult:
    output: Path
    content_hash: str
    size: int
    bundle: VerifiedBundle


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_NAMES


def _walk(root: Path, prefix: str, members: dict[str, Member]) -> None:
    with os.scandir(root) as entries:
        for entry in entries:
            if _skipped(entry.name):
                continue
            path = f"{prefix}/{_nfc(entry.name)}"
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise BundleUnsupportedEntry(f"{path} is a symbolic link; bundles hold only files and directories")
            if stat.S_ISDIR(mode):
                _add(members, Member(path, None))
                _walk(Path(entry.path), path, members)
            elif stat.S_ISREG(mode):
                _add(members, Member(path, Path(entry.path)))
            else:
                raise BundleUnsupportedEntry(f"{path} is not a regular file or directory")


def _add(members: dict[str, Member], member: Member) -> None:
    normalize_member_path(member.path)
    key = collision_key(member.path)
    existing = members.get(key)
    if existing is not None and existing.path != member.path:
        raise BundleDuplicateEntry(f"{member.path!r} and {existing.path!r} name the same file on some systems")
    members[key] = member


def collect_members(project: Path) -> list[Member]:
    """The members of the project's bundle, in archive order."""
    manifest_path = project / "manifest.json"
    if not manifest_path.is_file():
        raise ManifestMissing(f"{project} has no manifest.json")
    manifest = Manifest.parse(manifest_path.read_bytes())
    members: dict[str, Member] = {}
    _add(members, Member("manifest.json", manifest_path))
    for tree in INCLUDED_TREES:
        if (project / tree).is_dir() and not (project / tree).is_symlink():
            _add(members, Member(tree, None))
            _walk(project / tree, tree, members)
    entry = project / manifest.entry
    if entry.is_file():
        parts = manifest.entry.split("/")
        for depth in range(1, len(parts)):
            _add(members, Member("/".join(parts[:depth]), None))
        _add(members, Member(manifest.entry, entry))
    return sorted(members.values(), key=lambda m: m.path.encode("utf-8"))


def _tar_info(member: Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.path)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if member.source is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = member.source.stat().st_size
    return info


def write_bundle(members: list[Member], out: BinaryIO, *, level: int = PACK_LEVEL) -> None:
    """Write the reproducible ``bundle.tar.zst`` of ``members`` to ``out``."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as tar_file:
        with tarfile.open(fileobj=tar_file, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for member in members:
                info = _tar_info(member)
                if member.source is None:
                    tar.addfile(info)
                    continue
                with member.source.open("rb") as handle:
                    tar.addfile(info, handle)
        size = tar_file.tell()
        tar_file.seek(0)
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True, threads=0)
        compressor.copy_stream(tar_file, out, size=size, read_size=1024 * 1024, write_size=1024 * 1024)


def pack_project(
    project: Path,
    output: Path,
    *,
    level: int = PACK_LEVEL,
    limits: BundleLimits | None = None,
) -> PackResult:
    """Pack ``project`` into ``output`` (atomically) and verify the result.

    The verification is the same one finalize runs, so a bundle that packs is a
    bundle the platform accepts (signatures aside).
    """
    members = collect_members(project)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".bundle-", suffix=".tmp", dir=output.parent)
    temp = Path(temp_name)
    try:
        with open(fd, "wb") as handle:
            write_bundle(members, handle, level=level)
        bundle = verify_file(temp, limits)
        os.chmod(temp, 0o644)
        os.replace(temp, output)
    finally:
        temp.unlink(missing_ok=True)
    return PackResult(output=output, content_hash=bundle.content_hash, size=bundle.compressed_size, bundle=bundle)
