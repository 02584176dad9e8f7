"""The registry's sortable SemVer key orders versions by SemVer 2.0.0 precedence."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.registry.models import semver_sort_key

# The precedence example of semver.org §11, lowest first, plus a few of our own.
ORDERED = [
    "0.0.1",
    "0.9.0",
    "0.10.0",
    "1.0.0-0",
    "1.0.0-1",
    "1.0.0-2",
    "1.0.0-10",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-alpha-x",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0-rc.1",
    "2.0.0",
    "10.0.0",
    "123456789012.0.0",
]


def test_the_semver_org_examples_sort_in_precedence_order():
    keys = [semver_sort_key(version) for version in ORDERED]

    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_a_release_sorts_after_all_its_prereleases():
    assert semver_sort_key("1.0.0-zzz.999") < semver_sort_key("1.0.0") < semver_sort_key("1.0.1-0")


def test_numeric_prerelease_identifiers_compare_numerically_and_below_alphanumeric():
    assert semver_sort_key("1.0.0-beta.2") < semver_sort_key("1.0.0-beta.11")
    assert semver_sort_key("1.0.0-beta.99") < semver_sort_key("1.0.0-beta.a")


def test_a_longer_prerelease_sorts_after_its_prefix():
    assert semver_sort_key("1.0.0-alpha") < semver_sort_key("1.0.0-alpha.0")


def test_build_metadata_does_not_change_precedence():
    assert semver_sort_key("1.0.0+build.5") == semver_sort_key("1.0.0") == semver_sort_key("1.0.0+other")
    assert semver_sort_key("1.0.0-rc.1+b") == semver_sort_key("1.0.0-rc.1")


@pytest.mark.parametrize(
    "bad", ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0-a..b", "1.0.0+", "", "1.0.0\n", "1.0.0-rc.1\n"]
)
def test_strings_that_are_not_semver_have_no_key(bad):
    with pytest.raises(ValueError, match="not a SemVer"):
        semver_sort_key(bad)


def _reference_key(version: str) -> tuple[object, ...]:
    """Precedence per SemVer §11, written the obvious way, to check the string key against."""
    core, _, prerelease = version.split("+")[0].partition("-")
    numbers = tuple(int(part) for part in core.split("."))
    if not prerelease:
        return (numbers, 1, ())
    identifiers = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split("."))
    return (numbers, 0, identifiers)


_number = st.integers(min_value=0, max_value=10**14).map(str)
_alnum = st.from_regex(re.compile(r"[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*"), fullmatch=True).filter(lambda s: len(s) < 12)
_identifier = st.one_of(_number, _alnum)
_version = st.builds(
    lambda core, pre: ".".join(core) + (("-" + ".".join(pre)) if pre else ""),
    st.lists(_number, min_size=3, max_size=3),
    st.lists(_identifier, max_size=4),
)


@given(_version, _version)
def test_key_order_matches_semver_precedence(a, b):
    ka, kb = semver_sort_key(a), semver_sort_key(b)
    ra, rb = _reference_key(a), _reference_key(b)

    assert (ka < kb) == (ra < rb)
    assert (ka == kb) == (ra == rb)
