"""Envelope encryption of one secret with KMS, and the value type that never prints itself.

Sealing a value (the API, whose role may only ``GenerateDataKey``):

1. ``GenerateDataKey`` (AES-256) under the configured KMS key, with the encryption context
   ``{tenant, extension, name}``: KMS binds the data key to this one secret of this one install;
2. AES-256-GCM over the UTF-8 value with a random 96-bit nonce, the same context (and the format)
   as associated data, so a sealed value moved to another row fails even before KMS is asked;
3. the plaintext data key is dropped; the row keeps the wrapped key, the nonce and the ciphertext.

Unsealing (the runner, whose role may only ``Decrypt``) asks KMS to unwrap the data key with the
context of the row being read, then opens the ciphertext.  The value only ever leaves this module
as a :class:`SecretValue`.

botocore logs every response body at DEBUG, which for ``GenerateDataKey`` and ``Decrypt`` holds the
plaintext data key: :func:`silence_response_bodies` drops those lines (both services call it).

Both sides build their KMS client with :func:`make_kms_client`: at most ``KMS_MAX_ATTEMPTS`` requests per
call and short timeouts, so a KMS that fails or hangs costs a guest call at most about 9 s
(3 × 2 s, plus standard mode's backoff of up to 1 s and 2 s), inside the gateway's 10 s deadline, and it
hears ``SECRET_UNAVAILABLE`` rather than its own timeout (``tests/integration/test_aws_faults.py``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib.config import Settings
from chalicelib.errors import SecretInvalid, SecretUnavailable
from chalicelib.tenancy import InstallScope

__all__ = [
    "FORMAT",
    "KMS_MAX_ATTEMPTS",
    "MAX_SECRET_BYTES",
    "Sealed",
    "SecretValue",
    "encryption_context",
    "ensure_secrets_key",
    "make_kms_client",
    "seal",
    "silence_response_bodies",
    "unseal",
]

FORMAT = "kms-aes256gcm/v1"
MAX_SECRET_BYTES = 8 * 1024
_NONCE_BYTES = 12
KMS_MAX_ATTEMPTS = 3
"""Requests one KMS call may make (botocore's standard retry mode: throttling, 5xx and resets are retried)."""
_KMS_CONNECT_TIMEOUT_SECONDS = 1
_KMS_READ_TIMEOUT_SECONDS = 2
"""KMS answers in milliseconds; botocore's default of 60 s per attempt would outlast any call's deadline."""


def make_kms_client(settings: Settings) -> Any:
    """The KMS client of ``settings``' region, with bounded retries and timeouts (the module's docstring)."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": KMS_MAX_ATTEMPTS},
        connect_timeout=_KMS_CONNECT_TIMEOUT_SECONDS,
        read_timeout=_KMS_READ_TIMEOUT_SECONDS,
    )
    return boto3.client("kms", region_name=settings.storage_s3_region, config=config)


class SecretValue:
    """A secret's plaintext; its ``repr``, ``str`` and format say ``<redacted>``; :meth:`reveal` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plaintext, for the one place that needs it (the guest's memory, the sealing step)."""
        return self._value

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("a secret value cannot be pickled")

    def utf8(self) -> bytes:
        """The value as 1 B to 8 KiB of UTF-8; :class:`SecretInvalid` (without the value) otherwise."""
        try:
            encoded = self._value.encode("utf-8")
        except UnicodeEncodeError:
            raise SecretInvalid("the value must be valid UTF-8 text (it holds a lone surrogate)") from None
        if not 1 <= len(encoded) <= MAX_SECRET_BYTES:
            raise SecretInvalid(f"the value must be 1 to {MAX_SECRET_BYTES} bytes of UTF-8; it is {len(encoded)}")
        return encoded


@dataclass(frozen=True)
class Sealed:
    """What the table keeps of one secret."""

    wrapped_key: bytes = field(repr=False)
    kms_key_id: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)


def encryption_context(scope: InstallScope, name: str) -> dict[str, str]:
    """The KMS encryption context of one secret: it names the tenant, the extension and the secret."""
    return {"tenant": scope.tenant, "extension": scope.extension, "name": name}


def _associated_data(context: Mapping[str, str]) -> bytes:
    return json.dumps({"format": FORMAT, **context}, sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(kms: Any, key_id: str, scope: InstallScope, name: str, value: SecretValue) -> Sealed:
    """Encrypt ``value`` under a fresh data key that KMS wraps under ``key_id``.

    Raises :class:`SecretInvalid` for a value outside 1 B to 8 KiB of UTF-8 and
    :class:`SecretUnavailable` when KMS fails; neither message holds the value.
    """
    plaintext = value.utf8()
    context = encryption_context(scope, name)
    try:
        answer = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    except (ClientError, BotoCoreError) as exc:
        _kms_failed("make a data key", exc)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(answer["Plaintext"]).encrypt(nonce, plaintext, _associated_data(context))
    return Sealed(wrapped_key=answer["CiphertextBlob"], kms_key_id=answer["KeyId"], nonce=nonce, ciphertext=ciphertext)


def unseal(kms: Any, scope: InstallScope, name: str, sealed: Sealed) -> SecretValue:
    """Decrypt a sealed secret read from ``scope``'s row ``name``.

    Raises :class:`SecretUnavailable` when KMS refuses (another context: the row was moved; no
    permission; KMS down) or the ciphertext does not open.
    """
    context = encryption_context(scope, name)
    try:
        answer = kms.decrypt(CiphertextBlob=sealed.wrapped_key, EncryptionContext=context, KeyId=sealed.kms_key_id)
    except (ClientError, BotoCoreError) as exc:
        _kms_failed("unwrap the data key", exc)
    try:
        plaintext = AESGCM(answer["Plaintext"]).decrypt(sealed.nonce, sealed.ciphertext, _associated_data(context))
    except (InvalidTag, ValueError):
        raise SecretUnavailable(f"the stored secret {name} does not decrypt for this install") from None
    return SecretValue(plaintext.decode("utf-8"))


def _kms_failed(step: str, exc: ClientError | BotoCoreError) -> NoReturn:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
    raise SecretUnavailable(f"KMS could not {step}: {code or 'no answer'}") from None


def ensure_secrets_key(kms: Any, alias: str) -> str:
    """The ARN of the symmetric key ``alias`` names, created with the alias when missing (local stack only)."""
    try:
        arn: str = kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
        return arn
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NotFoundException":
            raise
    metadata = kms.create_key(Description="Envelope key of the extensions' secrets (local)")["KeyMetadata"]
    kms.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    created: str = metadata["Arn"]
    return created


class _NoResponseBodies(logging.Filter):
    """Drops botocore's ``Response body`` DEBUG lines: KMS answers hold plaintext data keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Response body"))


_BODY_FILTER = _NoResponseBodies()


def silence_response_bodies() -> None:
    """Keep botocore from ever logging a response body (idempotent).

    A logger's own filter runs before its records reach any handler, whatever level an operator
    sets; the request side carries no plaintext (the value is sealed before it leaves the process).
    """
    logger = logging.getLogger("botocore.parsers")
    if _BODY_FILTER not in logger.filters:
        logger.addFilter(_BODY_FILTER)
