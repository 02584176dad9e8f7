"""HTTP header names and values, checked whole (RFC 9110 §5.1 and §5.5).

One definition for the gateway, the runner's response check and the egress policy. Names are matched
with ``fullmatch``: ``re.match`` with ``$`` also accepts a name that ends in ``\\n``, which would split a
header line.
"""

from __future__ import annotations

import re

__all__ = ["is_header_name", "is_header_value"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_BREAKERS = re.compile(r"[\r\n\x00]")


def is_header_name(name: object) -> bool:
    """Whether ``name`` is a string that is one RFC 9110 token, and nothing else."""
    return isinstance(name, str) and _TOKEN.fullmatch(name) is not None


def is_header_value(value: object) -> bool:
    """Whether ``value`` is a string without CR, LF or NUL (which would end or split the header line)."""
    return isinstance(value, str) and _VALUE_BREAKERS.search(value) is None
