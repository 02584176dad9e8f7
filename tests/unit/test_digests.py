"""The one parse of sha256 digests (chalicelib.bundles.digests) every module uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.bundles.digests import format_content_hash, hex_digest_of

HEX = "ab" * 32


@given(st.binary(min_size=32, max_size=32))
def test_a_formatted_content_hash_parses_back_to_its_digest(raw: bytes) -> None:
    assert hex_digest_of(format_content_hash(raw.hex())) == raw.hex()


@pytest.mark.parametrize(
    ("value", "bare_ok", "expected"),
    [
        (f"sha256:{HEX}", False, HEX),
        (f"sha256:{HEX}", True, HEX),
        (HEX, True, HEX),
        (HEX, False, None),
        (f"sha256:{HEX.upper()}", False, None),
        (f"sha256:{HEX}0", False, None),
        (f"sha256:{HEX}\n", False, None),
        (f"sha512:{HEX}", True, None),
        ("sha256:", True, None),
        ("", True, None),
    ],
)
def test_only_lowercase_64_digit_sha256_digests_parse(value: str, bare_ok: bool, expected: str | None) -> None:
    assert hex_digest_of(value, bare_ok=bare_ok) == expected
