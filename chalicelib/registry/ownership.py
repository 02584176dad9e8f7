"""Who owns an extension name, and who may publish under it (docs/signing.md, "Who owns a name").

- **without a trust bundle** (local development) the first tenant to publish a name owns it, with the
  manifest's ``publisher``; another tenant, or another ``publisher``, gets ``NAME_OWNED``;
- **with a trust bundle** a name belongs to the *trusted publisher* whose key signed its first version
  (the key's ``# publisher:`` annotation, else the key itself), whichever tenant uploaded it: any tenant may
  upload a bundle that publisher signed, and no key of another publisher may publish under the name;
- a name a tenant claimed before (signed versions, but before ownership followed keys) passes to the
  publisher its versions were signed for at that publisher's next version (an audited ``name.adopt``);
- an operator can move a name to another owner (:class:`TransferRequest`, an audited ``name.transfer``).

The rules are pure functions of what was read; :class:`~chalicelib.registry.service.RegistryService`
makes every write conditional on the owner it read (:func:`owner_is`), so a change in between cancels it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pynamodb.expressions.condition import Condition

from chalicelib.bundles.signing import TrustBundle
from chalicelib.errors import BadRequest, NameOwned
from chalicelib.registry.models import ExtensionModel
from chalicelib.registry.records import ExtensionRecord, Owner

__all__ = ["Claimant", "Decision", "TransferRequest", "check_new_owner", "decide", "owner_is"]

_MAX_REASON_CHARS = 1000
# The syntax of a token's ``tenant`` claim (chalicelib/auth.py).
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class Decision(Enum):
    """What registering a version does to its name's row."""

    CLAIM = "claim"
    """The name is free: the publishing owner takes it."""
    KEEP = "keep"
    """The name is already the publishing owner's."""
    ADOPT = "adopt"
    """A tenant-owned name passes to the trusted publisher its versions were signed for."""


@dataclass(frozen=True)
class Claimant:
    """Who is publishing: the uploading tenant, the manifest's ``publisher``, and the trusted publisher whose
    key signed the bundle (None without a trust bundle)."""

    tenant: str
    publisher: str
    trusted_publisher: str | None

    @property
    def owner(self) -> Owner:
        """The owner the name gets when this claimant claims it."""
        if self.trusted_publisher is not None:
            return Owner(publisher=self.trusted_publisher)
        return Owner(tenant=self.tenant)


@dataclass(frozen=True)
class TransferRequest:
    """``POST /extensions/{name}/transfer``: the new owner and why."""

    to: Owner
    reason: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> TransferRequest:
        """Read ``{"to_publisher" | "to_tenant": …, "reason": …}``; :class:`BadRequest` names what is wrong."""
        unknown = sorted(set(body) - {"to_publisher", "to_tenant", "reason"})
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)}; send to_publisher or to_tenant, and reason")
        targets = {field: body[field] for field in ("to_publisher", "to_tenant") if field in body}
        if len(targets) != 1:
            raise BadRequest("send exactly one of `to_publisher` and `to_tenant`")
        ((field, target),) = targets.items()
        if not isinstance(target, str) or not target:
            raise BadRequest(f"`{field}` must be a non-empty string")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("`reason` is required: say why the name changes hands (it is kept in the audit log)")
        if len(reason) > _MAX_REASON_CHARS:
            raise BadRequest(f"`reason` is longer than {_MAX_REASON_CHARS} characters")
        if field == "to_tenant" and not _TENANT.fullmatch(target):
            raise BadRequest(f"`to_tenant` {target[:70]!r} is not a tenant id")
        owner = Owner(publisher=target) if field == "to_publisher" else Owner(tenant=target)
        return cls(to=owner, reason=reason.strip())


def decide(existing: ExtensionRecord | None, name: str, claimant: Claimant, trust: TrustBundle | None) -> Decision:
    """What publishing under ``name`` does to its row; :class:`NameOwned` when ``claimant`` may not."""
    if existing is None:
        return Decision.CLAIM
    owner = existing.owner
    if owner.publisher is not None:
        if claimant.trusted_publisher == owner.publisher:
            return Decision.KEEP
        raise NameOwned(_publisher_owned(name, owner.publisher, claimant.trusted_publisher))
    if claimant.trusted_publisher is None:
        _check_tenant_owner(existing, name, claimant)
        return Decision.KEEP
    # A trust bundle decides, but a tenant claimed the name: the publisher its versions were signed for
    # takes it over; if none of its signing keys is trusted any more, only the owning tenant may.
    signed_for = {trust.publisher_of(key_id) for key_id in existing.key_ids} if trust else set()
    signed_for.discard(None)
    if claimant.trusted_publisher in signed_for:
        return Decision.ADOPT
    if signed_for:
        raise NameOwned(
            _publisher_owned(name, ", ".join(sorted(str(p) for p in signed_for)), claimant.trusted_publisher)
        )
    _check_tenant_owner(existing, name, claimant)
    return Decision.ADOPT


def check_new_owner(owner: Owner, trust: TrustBundle | None) -> None:
    """Raise :class:`BadRequest` unless ``owner`` can hold a name: with a trust bundle one of its publishers,
    without one a tenant."""
    if trust is None:
        if owner.tenant is None:
            raise BadRequest("without a trust bundle names belong to tenants: send `to_tenant`")
        return
    if owner.publisher is None:
        raise BadRequest("with a trust bundle names belong to publishers: send `to_publisher`")
    if owner.publisher not in trust.publishers:
        known = ", ".join(sorted(trust.publishers))
        raise BadRequest(f"no key of the trust bundle signs for publisher {owner.publisher!r}; its publishers: {known}")


def owner_is(extensions: type[ExtensionModel], owner: Owner) -> Condition:
    """The condition that the row's owner is still ``owner``, as read."""
    condition: Condition
    if owner.tenant is not None:
        condition = (extensions.owner_tenant == owner.tenant) & extensions.owner_publisher.does_not_exist()
    else:
        condition = (extensions.owner_publisher == str(owner.publisher)) & extensions.owner_tenant.does_not_exist()
    return condition


def _publisher_owned(name: str, owner: str, signer: str | None) -> str:
    if signer is None:
        return (
            f"extension name {name!r} belongs to publisher {owner!r}; "
            "only bundles signed by its keys, verified against a trust bundle, may publish under it"
        )
    return (
        f"extension name {name!r} belongs to publisher {owner!r}, and this bundle is signed for publisher "
        f"{signer!r}; an operator can transfer the name"
    )


def _check_tenant_owner(existing: ExtensionRecord, name: str, claimant: Claimant) -> None:
    if existing.owner_tenant != claimant.tenant:
        raise NameOwned(f"extension name {name!r} belongs to another publisher")
    if existing.publisher != claimant.publisher:
        raise NameOwned(
            f"extension name {name!r} is published as {existing.publisher!r}; "
            f"a new version cannot change the publisher to {claimant.publisher!r}"
        )
