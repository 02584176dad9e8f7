"""Per-install key-value storage for extensions (``cap:storage.kv``, DESIGN §6c).

Typical wiring of a guest's call (the API's admin routes and purge use :class:`KvService` directly)::

    service = KvService(make_kv_models(settings))
    access = KvAccess(service, InstallScope(tenant, extension), OperationBudget(service.limits.max_operations),
                      allowed="cap:storage.kv" in granted)

The runner does this per call in ``runner_container/state.py`` and serves both ABIs from ``access`` through
``runner_container/host_services.py`` (which parses ``ext.kv`` requests with :func:`parse_core_request`).
"""

from chalicelib.kv.abi import (
    KvAccess,
    KvDeleteRequest,
    KvGetRequest,
    KvListRequest,
    KvRequest,
    KvSetRequest,
    parse_core_request,
    wit_case,
)
from chalicelib.kv.models import KvModels, create_kv_table, make_kv_models
from chalicelib.kv.service import KvEntry, KvLimits, KvPage, KvService, KvUsage, OperationBudget

__all__ = [
    "KvAccess",
    "KvDeleteRequest",
    "KvEntry",
    "KvGetRequest",
    "KvLimits",
    "KvListRequest",
    "KvModels",
    "KvPage",
    "KvRequest",
    "KvService",
    "KvSetRequest",
    "KvUsage",
    "OperationBudget",
    "create_kv_table",
    "make_kv_models",
    "parse_core_request",
    "wit_case",
]
