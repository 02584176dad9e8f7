"""Reproducible pack: the same tree gives the same bytes, and what packs, verifies."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
import tempfile
import unicodedata
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.bundles.pack import pack_project
from chalicelib.bundles.verify import verify_bundle
from chalicelib.errors import BundleDuplicateEntry, BundleUnsupportedEntry, ManifestFileMissing, ManifestMissing
from tests.bundle_factory import good_files, write_project

name_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_é", min_size=1, max_size=8)
ui_files = st.dictionaries(
    st.lists(name_part, min_size=1, max_size=3).map(lambda parts: "ui/" + "/".join(parts) + ".txt"),
    st.binary(max_size=2000),
    max_size=8,
)


def _no_prefix_conflicts(files: dict[str, bytes]) -> bool:
    keys = {k.casefold() for k in files}
    return len(keys) == len(files) and not any(k.removesuffix(".txt") + "/" in " ".join(keys) for k in keys)


def _create(root: Path, files: dict[str, bytes], order: list[str], mtime: int, mode: int, uid: int) -> None:
    for name in order:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[name])
        os.chmod(target, mode)
        os.utime(target, (mtime, mtime))
        if os.geteuid() == 0:
            os.chown(target, uid, uid)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=ui_files.filter(_no_prefix_conflicts), seed=st.integers(0, 2**32 - 1))
def test_pack_is_reproducible_whatever_the_order_mtimes_modes_and_owners(extra: dict[str, bytes], seed: int) -> None:
    rng = random.Random(seed)
    files = {**good_files(), **extra}
    outputs = []
    for attempt in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "project"
            order = list(files)
            rng.shuffle(order)
            old_umask = os.umask(rng.choice([0o022, 0o077, 0o002]))
            try:
                _create(
                    root,
                    files,
                    order,
                    mtime=rng.randint(0, 2**31),
                    mode=rng.choice([0o600, 0o644, 0o755]),
                    uid=attempt * 1000,
                )
            finally:
                os.umask(old_umask)
            result = pack_project(root, Path(tmp) / "out" / "bundle.tar.zst")
            outputs.append(result.output.read_bytes())
            assert {f.path for f in result.bundle.files} == set(files)
            for f in result.bundle.files:
                assert f.sha256 == hashlib.sha256(files[f.path]).hexdigest()
    assert outputs[0] == outputs[1]


def test_packed_members_carry_fixed_metadata_in_sorted_order(tmp_path: Path) -> None:
    write_project(tmp_path / "p", {**good_files(), "ui/b.js": b"b", "ui/a.js": b"a"})
    result = pack_project(tmp_path / "p", tmp_path / "bundle.tar.zst")
    raw = zstandard.ZstdDecompressor().decompress(result.output.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.encode())
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == (0o755 if member.isdir() else 0o644)
    params = zstandard.get_frame_parameters(result.output.read_bytes())
    assert params.has_checksum and params.content_size == len(raw)


def test_decomposed_unicode_names_pack_like_composed_ones(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "ui/café.txt")
    write_project(tmp_path / "a", {**good_files(), nfd: b"x"})
    write_project(tmp_path / "b", {**good_files(), unicodedata.normalize("NFC", "ui/café.txt"): b"x"})
    first = pack_project(tmp_path / "a", tmp_path / "a.tar.zst").output.read_bytes()
    second = pack_project(tmp_path / "b", tmp_path / "b.tar.zst").output.read_bytes()
    assert first == second


def test_hidden_files_and_source_are_left_out(tmp_path: Path) -> None:
    write_project(tmp_path / "p", {**good_files(), "ui/.DS_Store": b"x", "src/main.c": b"int x;", ".git/HEAD": b"r"})
    result = pack_project(tmp_path / "p", tmp_path / "bundle.tar.zst")
    assert {f.path for f in result.bundle.files} == set(good_files())


def test_symlinks_in_the_project_are_refused(tmp_path: Path) -> None:
    write_project(tmp_path / "p", good_files())
    (tmp_path / "p" / "ui" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(BundleUnsupportedEntry, match="symbolic link"):
        pack_project(tmp_path / "p", tmp_path / "bundle.tar.zst")


def test_case_colliding_names_are_refused(tmp_path: Path) -> None:
    write_project(tmp_path / "p", {**good_files(), "ui/A.js": b"1", "ui/a.js": b"2"})
    with pytest.raises(BundleDuplicateEntry):
        pack_project(tmp_path / "p", tmp_path / "bundle.tar.zst")


def test_a_project_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    with pytest.raises(ManifestMissing):
        pack_project(tmp_path / "p", tmp_path / "bundle.tar.zst")


def test_a_failed_pack_leaves_no_output(tmp_path: Path) -> None:
    files = good_files()
    del files["ui/index.html"]
    write_project(tmp_path / "p", files)
    with pytest.raises(ManifestFileMissing, match=r"ui\.entry"):
        pack_project(tmp_path / "p", tmp_path / "out" / "bundle.tar.zst")
    assert list((tmp_path / "out").iterdir()) == []


def test_pack_then_verify_round_trips(tmp_path: Path) -> None:
    write_project(tmp_path / "p", good_files())
    result = pack_project(tmp_path / "p", tmp_path / "bundle.tar.zst")
    again = verify_bundle(io.BytesIO(result.output.read_bytes()), expected_hash=result.content_hash)
    assert again.content_hash == result.content_hash
