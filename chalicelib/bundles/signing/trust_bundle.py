"""Trust bundles: the keys the platform trusts, read from PEM text (``SIGNING_TRUST_BUNDLE``).

Each ``PUBLIC KEY`` or ``CERTIFICATE`` block may be preceded by ``# name:``, ``# scope:`` and
``# publisher:`` comment lines, which give its :class:`TrustedKey` a label, a :class:`NamePattern` scope
and the publisher it signs for.  A key may appear in several certificates (renewals); it is then trusted
at any moment one of them is valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from chalicelib.bundles.signing.keys import is_supported, key_id_for, unsupported
from chalicelib.bundles.signing.policy import ANY_NAME, NamePattern, TrustedKey, Validity
from chalicelib.errors import SettingsInvalid

__all__ = ["TrustBundle"]

_PEM_BLOCK_RE = re.compile(r"^-----BEGIN (?P<kind>[A-Z0-9 ]+)-----$.*?^-----END (?P=kind)-----$", re.M | re.S)
_PREAMBLE_KEYS = frozenset({"name", "scope", "publisher"})


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _read_preamble(text: str, start: int, end: int) -> dict[str, str]:
    """The ``# name:`` / ``# scope:`` / ``# publisher:`` lines between two PEM blocks; anything but comments is
    an error."""
    found: dict[str, str] = {}
    first_line = _line_of(text, start)
    for number, line in enumerate(text[start:end].split("\n"), start=first_line):
        if line.startswith("-----BEGIN"):
            raise SettingsInvalid(f"trust bundle line {number}: PEM block has no matching END line")
        if line and not line.startswith("#"):
            raise SettingsInvalid(f"trust bundle line {number}: text outside a PEM block must start with '#'")
        key, colon, value = line[1:].partition(":")
        key = key.strip().lower()
        if not colon or key not in _PREAMBLE_KEYS:
            continue
        if key in found:
            raise SettingsInvalid(f"trust bundle line {number}: second '# {key}:' line for the same block")
        found[key] = value.strip()
    return found


def _read_scope(number: int, scope: str | None) -> tuple[NamePattern, ...]:
    if scope is None:
        return (ANY_NAME,)
    items = [item.strip() for item in scope.split(",")]
    if not all(items):
        raise SettingsInvalid(f"trust bundle block {number}: '# scope:' has an empty pattern")
    try:
        return tuple(NamePattern.parse(item) for item in items)
    except SettingsInvalid as exc:
        raise SettingsInvalid(f"trust bundle block {number}: {exc.message}") from exc


def _read_block_key(number: int, kind: str, pem: bytes) -> tuple[PublicKeyTypes, Validity | None]:
    try:
        if kind == "PUBLIC KEY":
            return serialization.load_pem_public_key(pem), None
        if kind == "CERTIFICATE":
            cert = x509.load_pem_x509_certificate(pem)
            return cert.public_key(), Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SettingsInvalid(f"trust bundle block {number} ({kind}) cannot be parsed: {exc}") from exc
    raise SettingsInvalid(
        f"trust bundle block {number} is a {kind}; only PUBLIC KEY and CERTIFICATE blocks are allowed"
    )


@dataclass(frozen=True)
class _Block:
    """One PEM block of a trust bundle, read: its key and, for a certificate, its dates."""

    number: int
    key: TrustedKey
    validity: Validity | None


def _read_block(number: int, kind: str, pem: bytes, preamble: Mapping[str, str]) -> _Block:
    public_key, validity = _read_block_key(number, kind, pem)
    if not (isinstance(public_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) and is_supported(public_key)):
        raise SettingsInvalid(f"trust bundle block {number}: {unsupported(public_key)}")
    patterns = _read_scope(number, preamble.get("scope"))
    label = preamble.get("name") or None
    try:
        key = TrustedKey(key_id_for(public_key), public_key, patterns, label, (), preamble.get("publisher"))
    except SettingsInvalid as exc:
        raise SettingsInvalid(f"trust bundle block {number}: {exc.message}") from exc
    return _Block(number, key, validity)


def _merge_renewal(first: _Block, block: _Block, merged: TrustedKey) -> TrustedKey:
    """Add ``block``, another certificate of ``first``'s key, to the key ``merged`` so far."""
    if first.validity is None or block.validity is None:
        raise SettingsInvalid(
            f"trust bundle block {block.number} repeats the key of block {first.number} ({merged.key_id}); "
            "list each key once (only certificates of one key, such as renewals, may repeat it)"
        )
    if block.validity in merged.validity:
        raise SettingsInvalid(f"trust bundle block {block.number} repeats the certificate of block {first.number}")
    if (block.key.patterns, block.key.publisher) != (merged.patterns, merged.publisher):
        raise SettingsInvalid(
            f"trust bundle block {block.number} is another certificate of the key of block {first.number} "
            f"({merged.key_id}) with another '# scope:' or '# publisher:'; give every certificate of one key the same"
        )
    return replace(merged, validity=tuple(sorted((*merged.validity, block.validity))))


def _merge(blocks: list[_Block]) -> tuple[TrustedKey, ...]:
    """One :class:`TrustedKey` per key id, in order of first appearance; a key's certificates pool their dates."""
    first: dict[str, _Block] = {}
    merged: dict[str, TrustedKey] = {}
    for block in blocks:
        key_id = block.key.key_id
        if key_id not in first:
            first[key_id] = block
            dates = (block.validity,) if block.validity is not None else ()
            merged[key_id] = replace(block.key, validity=dates)
        else:
            merged[key_id] = _merge_renewal(first[key_id], block, merged[key_id])
    return tuple(merged.values())


@dataclass(frozen=True)
class TrustBundle:
    """The keys signatures are checked against (``SIGNING_TRUST_BUNDLE``), in bundle order."""

    keys: tuple[TrustedKey, ...]

    @classmethod
    def parse(cls, pem_text: str) -> TrustBundle:
        """Read PEM text of ``PUBLIC KEY`` / ``CERTIFICATE`` blocks, each optionally preceded by ``# name:``,
        ``# scope:`` and ``# publisher:`` lines.  Raises :class:`SettingsInvalid` naming the line or block at
        fault."""
        text = "\n".join(line.strip() for line in pem_text.splitlines())
        blocks: list[_Block] = []
        position = 0
        for number, block in enumerate(_PEM_BLOCK_RE.finditer(text), start=1):
            preamble = _read_preamble(text, position, block.start())
            blocks.append(_read_block(number, block["kind"], block[0].encode("utf-8"), preamble))
            position = block.end()
        if _read_preamble(text, position, len(text)):
            raise SettingsInvalid(
                "trust bundle: '# name:' / '# scope:' / '# publisher:' lines after the last block apply to no key"
            )
        if not blocks:
            raise SettingsInvalid("trust bundle holds no PUBLIC KEY or CERTIFICATE blocks")
        return cls(_merge(blocks))

    @classmethod
    def load(cls, source: str) -> TrustBundle:
        """Read a trust bundle from inline PEM (text containing ``-----BEGIN``) or from a file path."""
        if "-----BEGIN" in source:
            return cls.parse(source)
        path = source.strip()
        if not path:
            raise SettingsInvalid("trust bundle source is empty; give a file path or inline PEM")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsInvalid(f"cannot read trust bundle {path!r}: {exc}") from exc
        try:
            return cls.parse(text)
        except SettingsInvalid as exc:
            raise SettingsInvalid(f"{path}: {exc.message}") from exc

    @classmethod
    def from_setting(cls, value: str) -> TrustBundle | None:
        """The trust bundle of the ``SIGNING_TRUST_BUNDLE`` setting, or None when it is unset (empty)."""
        return cls.load(value) if value.strip() else None

    def find(self, key_id: str) -> TrustedKey | None:
        """The trusted key with this id, if any."""
        return next((key for key in self.keys if key.key_id == key_id), None)

    def publisher_of(self, key_id: str) -> str | None:
        """The publisher the key ``key_id`` signs for, or None when the key is not trusted."""
        key = self.find(key_id)
        return key.publisher_id if key is not None else None

    @property
    def publishers(self) -> frozenset[str]:
        """Every publisher some key signs for (see :attr:`TrustedKey.publisher_id`)."""
        return frozenset(key.publisher_id for key in self.keys)
