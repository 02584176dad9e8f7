"""Member path normalization: one normal form, every unsafe spelling refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.paths import ROOT, collision_key, normalize_member_path
from chalicelib.errors import BundleUnsafePath

segment = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="/\\\x7f"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and all(not 0x80 <= ord(c) < 0xA0 for c in s))


@given(st.lists(segment, min_size=1, max_size=6))
def test_normal_paths_are_their_own_normal_form(parts: list[str]) -> None:
    path = "/".join(parts)
    assert normalize_member_path(path, max_bytes=10_000) == path
    assert normalize_member_path("./" + path, max_bytes=10_000) == path
    assert normalize_member_path(path + "/", max_bytes=10_000) == path


@given(st.lists(segment, min_size=0, max_size=4), st.lists(segment, min_size=0, max_size=4))
def test_dot_dot_anywhere_is_refused(before: list[str], after: list[str]) -> None:
    with pytest.raises(BundleUnsafePath):
        normalize_member_path("/".join([*before, "..", *after]))


@given(st.text(max_size=40))
def test_normalization_never_yields_an_unsafe_path(raw: str) -> None:
    try:
        path = normalize_member_path(raw)
    except BundleUnsafePath:
        return
    if path == ROOT:
        return
    assert not path.startswith("/")
    assert "\\" not in path
    assert all(seg not in ("", ".", "..") for seg in path.split("/"))
    assert all(ord(c) >= 0x20 and c != "\x7f" for c in path)


@pytest.mark.parametrize("root", [".", "./", ""])
def test_the_archive_root_normalizes_to_root(root: str) -> None:
    assert normalize_member_path(root) == ROOT


def test_limits_are_enforced() -> None:
    with pytest.raises(BundleUnsafePath, match="bytes long"):
        normalize_member_path("é" * 121)
    assert normalize_member_path("é" * 120) == "é" * 120
    with pytest.raises(BundleUnsafePath, match="levels deep"):
        normalize_member_path("/".join("a" * 17))


def test_case_and_unicode_variants_collide() -> None:
    assert collision_key("UI/Index.HTML") == collision_key("ui/index.html")
    assert collision_key("ui/e\u0301") == collision_key("ui/\u00e9")
    assert collision_key("ui/a") != collision_key("ui/b")
