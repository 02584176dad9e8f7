"""Registry v2 on DynamoDB: models bound to settings, and the services built on them.

Each service takes its models (from :func:`~chalicelib.registry.models.make_models`)
and a clock, so tests run them against moto without patching.  Results are frozen
records, never pynamodb items.  Concurrency is settled by DynamoDB conditions, not
by reading first:

- a version is registered in one transaction with its extension row; the same
  (name, version) again is ``"already"`` when the content hash matches and
  ``VersionExists`` when it does not;
- finalize is claimed with a conditional write (``pending`` → ``finalizing``, or a
  stale lease taken over), and a replay gets the stored result;
- install rows change only under a revision check, and every key holds the tenant.

The modules: ``models`` (the tables), ``records`` (the frozen values), ``ownership`` (who may publish
under a name), ``service`` (:class:`RegistryService`: names, owners, versions), ``installs``,
``uploads``, ``ratelimit`` and ``concurrency`` (one service each).

Typical wiring::

    models = make_models(settings)
    registry = RegistryService(models)
    installs = InstallService(models, registry)
    uploads = UploadService(models)
    limiter = RateLimiter(models)
    concurrency = ConcurrencyLimiter(models)
"""

from __future__ import annotations

from chalicelib.registry.concurrency import ConcurrencyLimiter
from chalicelib.registry.installs import InstallChange, InstallRequest, InstallService, RollbackRequest
from chalicelib.registry.models import Models, create_tables, make_models, semver_sort_key
from chalicelib.registry.ownership import TransferRequest
from chalicelib.registry.ratelimit import RateLimiter
from chalicelib.registry.records import (
    Actor,
    AuditEvent,
    Claim,
    ClaimKind,
    ExtensionRecord,
    ExtensionView,
    HistoryEntry,
    InstallRecord,
    Owner,
    SignatureStatus,
    UploadSession,
    UploadState,
    VersionRecord,
    new_upload_id,
    utc_now,
)
from chalicelib.registry.service import RegistryService
from chalicelib.registry.uploads import UploadService

__all__ = [
    "Actor",
    "AuditEvent",
    "Claim",
    "ClaimKind",
    "ConcurrencyLimiter",
    "ExtensionRecord",
    "ExtensionView",
    "HistoryEntry",
    "InstallChange",
    "InstallRecord",
    "InstallRequest",
    "InstallService",
    "Models",
    "Owner",
    "RateLimiter",
    "RegistryService",
    "RollbackRequest",
    "SignatureStatus",
    "TransferRequest",
    "UploadService",
    "UploadSession",
    "UploadState",
    "VersionRecord",
    "create_tables",
    "make_models",
    "new_upload_id",
    "semver_sort_key",
    "utc_now",
]
