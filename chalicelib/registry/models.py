"""The DynamoDB tables of Registry v2, as pynamodb models bound to settings at run time.

The classes here describe the items; :func:`make_models` makes subclasses that
carry the table names (``REGISTRY_TABLE_PREFIX`` + ``extensions`` …) and region
of one :class:`~chalicelib.config.Settings`.  No model names a host, so pynamodb
leaves the endpoint to botocore and ``AWS_ENDPOINT_URL`` (moto, DynamoDB Local)
works without code changes.

| table | key | what |
| --- | --- | --- |
| extensions | ``name`` | who owns a name (a tenant, or a trusted publisher), signing keys seen, latest version |
| versions | ``name`` + ``version``, GSI ``by_hash`` | one published, immutable version |
| installs | ``tenant`` + ``name`` | a tenant's install: version, enabled, config, history |
| uploads | ``upload_id`` | an upload session and its finalize claim (expires by TTL) |
| ratelimits | ``key`` | fixed-window counters and calls in flight per tenant (expire by TTL) |
| audit | ``subject`` + ``event_id`` | ownership changes (operator transfers), written once, never changed |

The services built on these share :func:`storage_errors` (a table failing is ``STORAGE_ERROR``) and
:data:`WRITE_ATTEMPTS` (how often a conditional write that lost a race is tried again).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TableError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.config import Settings
from chalicelib.dynamo import bind_model, response_code
from chalicelib.errors import StorageError

__all__ = [
    "WRITE_ATTEMPTS",
    "AuditModel",
    "ExtensionModel",
    "InstallModel",
    "Models",
    "RateLimitModel",
    "UploadModel",
    "VersionModel",
    "create_tables",
    "make_models",
    "semver_sort_key",
    "storage_errors",
]

WRITE_ATTEMPTS = 5
"""How often a service tries a conditional write again after a concurrent change cancelled it."""

_P = ParamSpec("_P")
_R = TypeVar("_R")

# SemVer 2.0.0's own regular expression (semver.org), with named groups; used with fullmatch, as `$`
# would also accept a trailing newline.
_SEMVER = re.compile(
    r"(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_MAX_NUMBER_DIGITS = 99


def _number_key(digits: str) -> str:
    # A two-digit length prefix makes longer numbers sort after shorter ones, so string order is numeric order.
    if len(digits) > _MAX_NUMBER_DIGITS:
        raise ValueError(f"version number {digits[:16]}… has more than {_MAX_NUMBER_DIGITS} digits")
    return f"{len(digits):02d}{digits}"


def _prerelease_key(prerelease: str) -> str:
    # Each identifier ends with "!", below every identifier character, so a prefix sorts first
    # ("alpha" < "alpha.1" < "alpha-x"); numeric identifiers ("0…") sort below alphanumeric ("1…").
    parts = []
    for identifier in prerelease.split("."):
        tag = "0" + _number_key(identifier) if identifier.isdigit() else "1" + identifier
        parts.append(tag + "!")
    return "".join(parts)


def semver_sort_key(version: str) -> str:
    """A string whose byte order is SemVer 2.0.0 precedence.

    ``semver_sort_key(a) < semver_sort_key(b)`` exactly when ``a`` has lower
    precedence than ``b``; build metadata is ignored, as SemVer says.  Raises
    ``ValueError`` for a string that is not SemVer.
    """
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(f"{version!r} is not a SemVer 2.0.0 version")
    core = ".".join(_number_key(match.group(field)) for field in ("major", "minor", "patch"))
    prerelease = match.group("pre")
    # "~" sorts above "-", so a release comes after every prerelease of the same core version.
    return core + ("-" + _prerelease_key(prerelease) if prerelease else "~")


def _json_map(**kwargs: Any) -> MapAttribute[str, Any]:
    """A schemaless ("raw") map holding a JSON object; pynamodb's constructor is untyped."""
    return MapAttribute(**kwargs)  # type: ignore[no-untyped-call]


class ExtensionModel(Model):
    """One extension name and who owns it: a tenant (``owner_tenant``, names published without a trust bundle)
    or a trusted publisher (``owner_publisher``, names published under one); exactly one of the two is set."""

    name = UnicodeAttribute(hash_key=True)
    publisher = UnicodeAttribute()
    """The ``publisher`` of the latest version's manifest (a display name, not an identity)."""
    owner_tenant = UnicodeAttribute(null=True)
    owner_publisher = UnicodeAttribute(null=True)
    key_ids = UnicodeSetAttribute(null=True)
    latest_version = UnicodeAttribute(null=True)
    latest_version_sort = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class ByHashIndex(GlobalSecondaryIndex["VersionModel"]):  # type: ignore[no-untyped-call]
    """Versions by content hash (the runner and the UI route look bundles up by hash)."""

    class Meta:
        index_name = "by_hash"
        projection = AllProjection()

    content_hash = UnicodeAttribute(hash_key=True)


class VersionModel(Model):
    """One published version; written once, never changed."""

    name = UnicodeAttribute(hash_key=True)
    version = UnicodeAttribute(range_key=True)
    version_sort = UnicodeAttribute()
    publisher = UnicodeAttribute()
    content_hash = UnicodeAttribute()
    runtime = UnicodeAttribute()
    entry = UnicodeAttribute(null=True)
    ui = _json_map(null=True)
    endpoints = ListAttribute[Any](default=list)
    capabilities = ListAttribute[str](default=list)
    egress = ListAttribute[str](default=list)
    size = NumberAttribute()
    signature = _json_map(null=True)
    signature_status = UnicodeAttribute()
    key_id = UnicodeAttribute(null=True)
    manifest = _json_map()
    created_at = UTCDateTimeAttribute()
    created_by = _json_map()
    """``{"tenant": …, "sub": …}`` of the publisher."""
    upload_id = UnicodeAttribute(null=True)
    """The upload session that registered the version; absent on versions registered before issue 14."""
    by_hash = ByHashIndex()


class InstallModel(Model):
    """A tenant's install of one extension."""

    tenant = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    install_id = UnicodeAttribute()
    version = UnicodeAttribute()
    content_hash = UnicodeAttribute()
    enabled = BooleanAttribute()
    config = _json_map(default=dict)
    granted_capabilities = ListAttribute[str](default=list)
    history = ListAttribute[Any](default=list)
    """Earlier installs, most recent first: ``{"version", "content_hash", "at" (ISO 8601), "by"}``."""
    installed_at = UTCDateTimeAttribute()
    installed_by = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    revision = NumberAttribute(default=0)


class UploadModel(Model):
    """An upload session from initiate to finalize (or abort)."""

    upload_id = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    sub = UnicodeAttribute()
    staging_key = UnicodeAttribute()
    declared_size = NumberAttribute()
    declared_sha256 = UnicodeAttribute(null=True)
    signature = UnicodeAttribute(null=True)
    multipart_upload_id = UnicodeAttribute(null=True)
    part_size = NumberAttribute(null=True)
    state = UnicodeAttribute()
    result = _json_map(null=True)
    error_code = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    claim_id = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    finalize_started_at = UTCDateTimeAttribute(null=True)
    expires_at = UTCDateTimeAttribute()
    ttl = TTLAttribute()


class RateLimitModel(Model):
    """One fixed-window counter (``hits``), or one key's calls in flight (``calls``: call id → lease end)."""

    key = UnicodeAttribute(hash_key=True)
    # ``count`` in the table; ``Model.count`` is a pynamodb method, so the Python name differs.
    hits = NumberAttribute(attr_name="count", default=0)
    calls = _json_map(null=True)
    ttl = TTLAttribute()


class AuditModel(Model):
    """One change of who owns a name; written once (in the transaction that made the change), never changed."""

    subject = UnicodeAttribute(hash_key=True)
    """What changed: ``extension:<name>``."""
    event_id = UnicodeAttribute(range_key=True)
    """``<ISO 8601 time>#<random hex>``: events of one subject sort by time."""
    action = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    actor = _json_map()
    """``{"tenant": …, "sub": …}`` of whoever made the change."""
    from_owner = _json_map()
    to_owner = _json_map()
    """``{"tenant": …}`` or ``{"publisher": …}``."""
    reason = UnicodeAttribute()
    request_id = UnicodeAttribute(null=True)


@dataclass(frozen=True)
class Models:
    """The model classes of one deployment, bound to its table names and region."""

    extensions: type[ExtensionModel]
    versions: type[VersionModel]
    installs: type[InstallModel]
    uploads: type[UploadModel]
    ratelimits: type[RateLimitModel]
    audit: type[AuditModel]
    region: str

    def all(self) -> tuple[type[Model], ...]:
        return (self.extensions, self.versions, self.installs, self.uploads, self.ratelimits, self.audit)

    @functools.cached_property
    def connection(self) -> Connection:
        """One connection for transactions across these tables (same region, endpoint from the environment).

        Cached because building a botocore client costs far more than a request.
        """
        return Connection(region=self.region)


def make_models(settings: Settings) -> Models:
    """Model classes for the tables ``settings`` name.

    The tables live in ``STORAGE_S3_REGION``: the deployment puts the bucket
    and the tables in one region.
    """
    prefix = settings.registry_table_prefix
    region = settings.storage_s3_region
    return Models(
        extensions=bind_model(ExtensionModel, f"{prefix}extensions", region),
        versions=bind_model(VersionModel, f"{prefix}versions", region),
        installs=bind_model(InstallModel, f"{prefix}installs", region),
        uploads=bind_model(UploadModel, f"{prefix}uploads", region),
        ratelimits=bind_model(RateLimitModel, f"{prefix}ratelimits", region),
        audit=bind_model(AuditModel, f"{prefix}audit", region),
        region=region,
    )


def create_tables(models: Models, *, wait: bool = True) -> None:
    """Create every missing table (on-demand billing, TTL on); existing tables are left alone.

    For the local stack and tests; deployments create tables from ``infra/``.
    """
    for model in models.all():
        try:
            model.create_table(wait=wait, billing_mode="PAY_PER_REQUEST", ignore_update_ttl_errors=True)
        except TableError as exc:
            if response_code(exc) != "ResourceInUseException":
                raise
            # Another process created it between pynamodb's existence check and ours:
            # now it exists, so this call only waits for it and turns TTL on.
            model.create_table(wait=wait, billing_mode="PAY_PER_REQUEST", ignore_update_ttl_errors=True)


def storage_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report DynamoDB failures nobody handled as :class:`StorageError` (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except PynamoDBException as exc:
            raise StorageError(f"registry unavailable: {response_code(exc) or exc}") from exc

    return wrapper
