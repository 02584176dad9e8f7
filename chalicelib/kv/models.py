"""The KV table (``KV_TABLE_NAME``): one item per stored key, one usage item per install.

| item | ``ns`` (hash key) | ``key`` (range key) | attributes |
| --- | --- | --- | --- |
| entry | ``tenant/extension`` | the guest's key | ``value`` (bytes), ``revision``, ``size`` |
| usage | ``tenant/extension#usage`` | ``usage`` | ``keys``, ``bytes``: the sums over the entries |

Entries of one install share a partition, so ``list`` is one Query in key order (DynamoDB orders
string range keys by their UTF-8 bytes, which is code point order).  The usage item lives in a
partition of its own (``#`` is in neither a tenant id nor an extension name), so no listing ever
meets it; every write that changes the sums updates it in the same transaction as the entry.
Like the registry's models, these name no host: ``AWS_ENDPOINT_URL`` reaches moto.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import TableError
from pynamodb.models import Model

from chalicelib.config import Settings
from chalicelib.dynamo import bind_model, response_code

__all__ = [
    "USAGE_KEY",
    "KvEntryModel",
    "KvModels",
    "KvUsageModel",
    "create_kv_table",
    "make_kv_models",
    "usage_partition",
]

USAGE_KEY = "usage"


def usage_partition(namespace: str) -> str:
    """The ``ns`` of the usage item of ``namespace``."""
    return f"{namespace}#usage"


class KvEntryModel(Model):
    """One stored key of one install."""

    ns = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    value = BinaryAttribute(legacy_encoding=False, null=True)
    """Null for an empty value: DynamoDB stores no empty binary in pynamodb's encoding."""
    revision = NumberAttribute()
    size = NumberAttribute()
    """UTF-8 bytes of the key plus bytes of the value: what the entry counts against the install's quota."""


class KvUsageModel(Model):
    """The sums over one install's entries, kept exact by transactions."""

    ns = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    stored_keys = NumberAttribute(attr_name="keys", default=0)
    stored_bytes = NumberAttribute(attr_name="bytes", default=0)


@dataclass(frozen=True)
class KvModels:
    """The two item classes of one KV table, bound to its name and region."""

    entries: type[KvEntryModel]
    usage: type[KvUsageModel]
    region: str

    @functools.cached_property
    def connection(self) -> Connection:
        """The connection transactions run on (cached: building a botocore client costs more than a request)."""
        return Connection(region=self.region)


def make_kv_models(settings: Settings) -> KvModels:
    """Model classes for ``KV_TABLE_NAME`` in ``STORAGE_S3_REGION`` (the deployment's one region)."""
    region = settings.storage_s3_region
    return KvModels(
        entries=bind_model(KvEntryModel, settings.kv_table_name, region),
        usage=bind_model(KvUsageModel, settings.kv_table_name, region),
        region=region,
    )


def create_kv_table(models: KvModels, *, wait: bool = True) -> None:
    """Create the KV table when it is missing (local stack and tests; deployments use ``infra/``)."""
    try:
        models.entries.create_table(wait=wait, billing_mode="PAY_PER_REQUEST")
    except TableError as exc:
        if response_code(exc) != "ResourceInUseException":
            raise
