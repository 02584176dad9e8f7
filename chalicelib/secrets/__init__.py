"""Sealed per-install secrets for extensions (``cap:secrets.get``, DESIGN §5 and §6c).

Typical wiring::

    model = make_secret_model(settings)
    kms = make_kms_client(settings)
    admin = SecretsService(model, kms, settings.secrets_kms_key_id)          # the API
    reader = SecretReader(model, kms)                                        # the runner
    access = SecretsAccess(reader, InstallScope(tenant, extension), declared_names,
                           allowed="cap:secrets.get" in granted)

The runner builds the access per call in ``runner_container/state.py`` and serves both ABIs from it through
``runner_container/host_services.py``.
"""

from chalicelib.secrets.models import SecretModel, create_secrets_table, make_secret_model
from chalicelib.secrets.sealing import (
    KMS_MAX_ATTEMPTS,
    MAX_SECRET_BYTES,
    SecretValue,
    ensure_secrets_key,
    make_kms_client,
)
from chalicelib.secrets.service import (
    PutSecretRequest,
    SecretList,
    SecretReader,
    SecretsAccess,
    SecretsService,
    SecretStatus,
    wit_case,
)

__all__ = [
    "KMS_MAX_ATTEMPTS",
    "MAX_SECRET_BYTES",
    "PutSecretRequest",
    "SecretList",
    "SecretModel",
    "SecretReader",
    "SecretStatus",
    "SecretValue",
    "SecretsAccess",
    "SecretsService",
    "create_secrets_table",
    "ensure_secrets_key",
    "make_kms_client",
    "make_secret_model",
    "wit_case",
]
