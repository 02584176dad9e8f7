"""The secrets table (``SECRETS_TABLE_NAME``): one item per secret of an install, sealed.

| attribute | what |
| --- | --- |
| ``ns`` (hash key) | ``tenant/extension`` |
| ``name`` (range key) | the declared name (``API_KEY``) |
| ``sealed``, ``nonce`` | the AES-256-GCM ciphertext (with its tag) and its nonce |
| ``wrapped_key``, ``kms_key_id`` | the data key as KMS wrapped it, and which KMS key did |
| ``format``, ``updated_at``, ``updated_by`` | ``kms-aes256gcm/v1``; when and by whom it was set |

Each secret has a data key of its own.  No attribute holds a value in the clear.
"""

from __future__ import annotations

from pynamodb.attributes import BinaryAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import TableError
from pynamodb.models import Model

from chalicelib.config import Settings
from chalicelib.dynamo import bind_model, response_code

__all__ = ["SecretModel", "create_secrets_table", "make_secret_model"]


class SecretModel(Model):
    """One sealed secret of one install."""

    ns = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    sealed = BinaryAttribute(legacy_encoding=False)
    """AES-256-GCM ciphertext and tag of the UTF-8 value."""
    nonce = BinaryAttribute(legacy_encoding=False)
    wrapped_key = BinaryAttribute(legacy_encoding=False)
    """The KMS ``CiphertextBlob`` of this secret's data key."""
    kms_key_id = UnicodeAttribute()
    """The ARN of the KMS key that wrapped the data key (decrypt asks for exactly that key)."""
    format = UnicodeAttribute()
    updated_at = UTCDateTimeAttribute()
    updated_by = UnicodeAttribute(null=True)


def make_secret_model(settings: Settings) -> type[SecretModel]:
    """The model class for ``SECRETS_TABLE_NAME`` in ``STORAGE_S3_REGION``."""
    return bind_model(SecretModel, settings.secrets_table_name, settings.storage_s3_region)


def create_secrets_table(model: type[SecretModel], *, wait: bool = True) -> None:
    """Create the secrets table when it is missing (local stack and tests; deployments use ``infra/``)."""
    try:
        model.create_table(wait=wait, billing_mode="PAY_PER_REQUEST")
    except TableError as exc:
        if response_code(exc) != "ResourceInUseException":
            raise
