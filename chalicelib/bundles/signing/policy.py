"""Trust as small policies: which names a key may sign (:class:`NamePattern`), when its certificates are
valid (:class:`Validity`), and who it signs for (:class:`TrustedKey`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from chalicelib.bundles.signing.describe import show
from chalicelib.bundles.signing.keys import PublicKey, is_supported, key_id_for, unsupported
from chalicelib.errors import SettingsInvalid

__all__ = ["ANY_NAME", "NamePattern", "PatternKind", "TrustedKey", "Validity"]

_PUBLISHER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PatternKind(Enum):
    """How a :class:`NamePattern` matches."""

    ANY = "any"
    EXACT = "exact"
    BELOW = "below"


_PATTERN_BASE_RE = re.compile(r"[a-z0-9][a-z0-9-]*(?:\.[a-z0-9][a-z0-9-]*)*")


@dataclass(frozen=True)
class NamePattern:
    """One scope entry: ``*`` (every name), ``com.acme`` (that name) or ``com.acme.*`` (names below it)."""

    kind: PatternKind
    base: str = ""

    def __post_init__(self) -> None:
        # ANY carries no base; EXACT and BELOW need a well-formed one.
        base_ok = _PATTERN_BASE_RE.fullmatch(self.base) is not None
        if base_ok == (self.kind is PatternKind.ANY):
            raise SettingsInvalid(f"scope pattern {str(self)!r} is not '*', a lowercase name, or 'name.*'")

    @classmethod
    def parse(cls, text: str) -> NamePattern:
        """Read one pattern; :class:`SettingsInvalid` for anything but the three forms."""
        value = text.strip()
        if value == "*":
            return cls(PatternKind.ANY)
        if value.endswith(".*"):
            return cls(PatternKind.BELOW, value[:-2])
        return cls(PatternKind.EXACT, value)

    def matches(self, name: str) -> bool:
        """Whether ``name`` is inside this pattern; ``com.acme.*`` excludes ``com.acme`` itself."""
        if self.kind is PatternKind.ANY:
            return True
        if self.kind is PatternKind.EXACT:
            return name == self.base
        prefix = self.base + "."
        return len(name) > len(prefix) and name.startswith(prefix)

    def __str__(self) -> str:
        return {PatternKind.ANY: "*", PatternKind.EXACT: self.base, PatternKind.BELOW: f"{self.base}.*"}[self.kind]


ANY_NAME = NamePattern(PatternKind.ANY)


@dataclass(frozen=True, order=True)
class Validity:
    """The dates of one certificate: valid from ``not_before`` to ``not_after``, both included."""

    not_before: datetime
    not_after: datetime

    def contains(self, moment: datetime) -> bool:
        return self.not_before <= moment <= self.not_after


@dataclass(frozen=True)
class TrustedKey:
    """A public key the platform trusts, for the names its patterns allow.

    ``validity`` holds the dates of the certificates the key came in (several when a certificate was
    renewed); a bare public key has none and is valid at any time.  ``publisher`` is the ``# publisher:``
    annotation: keys with the same one sign for the same publisher (see :attr:`publisher_id`).
    """

    key_id: str
    public_key: PublicKey
    patterns: tuple[NamePattern, ...] = (ANY_NAME,)
    label: str | None = None
    validity: tuple[Validity, ...] = ()
    publisher: str | None = None

    def __post_init__(self) -> None:
        if not is_supported(self.public_key):
            raise SettingsInvalid(unsupported(self.public_key))
        if self.key_id != key_id_for(self.public_key):
            raise SettingsInvalid(f"key id {self.key_id} does not belong to its public key")
        if not self.patterns:
            # An empty scope would be a key that signs nothing: almost certainly a mistake, so say so.
            raise SettingsInvalid(f"trusted key {self.key_id} has an empty scope")
        if self.publisher is not None and not _PUBLISHER_RE.fullmatch(self.publisher):
            raise SettingsInvalid(
                f"'# publisher:' {show(self.publisher)} must be 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )

    @classmethod
    def for_key(
        cls,
        public_key: PublicKey,
        patterns: Iterable[NamePattern] = (ANY_NAME,),
        label: str | None = None,
        *,
        validity: Iterable[Validity] = (),
        publisher: str | None = None,
    ) -> TrustedKey:
        """A trusted key whose id is computed from ``public_key``."""
        return cls(key_id_for(public_key), public_key, tuple(patterns), label, tuple(sorted(validity)), publisher)

    @property
    def publisher_id(self) -> str:
        """Who this key signs for: its ``# publisher:`` annotation, else the key itself (its key id)."""
        return self.publisher or self.key_id

    def allows(self, name: str) -> bool:
        """Whether this key may sign the extension ``name``."""
        return any(pattern.matches(name) for pattern in self.patterns)

    def valid_at(self, moment: datetime) -> bool:
        """Whether one of the key's certificates (if it came in any) is valid at ``moment``."""
        return not self.validity or any(window.contains(moment) for window in self.validity)

    @property
    def scope(self) -> str:
        """The patterns as written in a trust bundle's ``# scope:`` line."""
        return ", ".join(str(pattern) for pattern in self.patterns)

    @property
    def display(self) -> str:
        """How messages name this key: ``'label' (key id)`` or the bare key id."""
        return f"{self.label!r} ({self.key_id})" if self.label else self.key_id
