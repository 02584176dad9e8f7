"""Registry v2 on DynamoDB: models bound to settings, and the services built on them.

Typical wiring::

    models = make_models(settings)
    registry = RegistryService(models)
    installs = InstallService(models, registry)
    uploads = UploadService(models)
    limiter = RateLimiter(models)
"""

from __future__ import annotations

from chalicelib.registry.models import Models, create_tables, make_models, semver_sort_key
from chalicelib.registry.service import (
    Actor,
    Claim,
    ClaimKind,
    ExtensionRecord,
    HistoryEntry,
    InstallRecord,
    InstallService,
    RateLimiter,
    RegistryService,
    SignatureStatus,
    UploadService,
    UploadSession,
    UploadState,
    VersionRecord,
    new_upload_id,
    utc_now,
)

__all__ = [
    "Actor",
    "Claim",
    "ClaimKind",
    "ExtensionRecord",
    "HistoryEntry",
    "InstallRecord",
    "InstallService",
    "Models",
    "RateLimiter",
    "RegistryService",
    "SignatureStatus",
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
