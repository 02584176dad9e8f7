"""One exception hierarchy for the whole platform.

Every rejection the product makes is an :class:`ExtError` subclass with a stable
``code`` (part of the public contract, see DESIGN §4) and the HTTP status the API
answers with.  Library code raises these; exactly one place per surface turns
them into output (``app.py`` for HTTP, ``extctl.cli`` for the terminal, the
runner's server for its own routes).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ExtError",
    "BadRequest",
    "BundleError",
    "BundleTooLarge",
    "BundleCorrupt",
    "BundleUnpackedTooLarge",
    "BundleTooManyEntries",
    "BundleUnsafePath",
    "BundleUnsupportedEntry",
    "BundleDuplicateEntry",
    "ManifestMissing",
    "ManifestInvalid",
    "ManifestFileMissing",
    "WasmInvalid",
    "HashMismatch",
    "SignatureError",
    "SignatureMissing",
    "SignatureInvalid",
    "SignatureUntrusted",
    "SignatureScope",
    "VersionExists",
    "NameOwned",
    "NotFound",
    "UploadNotFound",
    "UploadExpired",
    "UploadConflict",
    "Unauthenticated",
    "Forbidden",
    "RateLimited",
    "NotInstalled",
    "EndpointNotFound",
    "PayloadTooLarge",
    "ExtensionTimeout",
    "ExtensionFailed",
    "ConfigInvalid",
    "StorageError",
    "ToolchainMissing",
    "KeyInvalid",
    "UsageError",
    "Internal",
    "ALL_ERRORS",
]


class ExtError(Exception):
    """Base of every error the platform reports.

    ``code`` is stable and machine-readable; ``message`` is for people and names
    the offending field, path or value.  ``details`` carries structured extras
    (for example ``retry_after`` seconds) that surfaces may expose.
    """

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON error body of DESIGN §4."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if request_id is not None:
            body["request_id"] = request_id
        return {"error": body}


class BadRequest(ExtError):
    code = "BAD_REQUEST"
    http_status = 400


# --- bundle format ----------------------------------------------------------------


class BundleError(ExtError):
    """The archive itself is unacceptable."""

    code = "BUNDLE_CORRUPT"
    http_status = 400


class BundleTooLarge(BundleError):
    code = "BUNDLE_TOO_LARGE"
    http_status = 413


class BundleCorrupt(BundleError):
    code = "BUNDLE_CORRUPT"


class BundleUnpackedTooLarge(BundleError):
    code = "BUNDLE_UNPACKED_TOO_LARGE"
    http_status = 413


class BundleTooManyEntries(BundleError):
    code = "BUNDLE_TOO_MANY_ENTRIES"


class BundleUnsafePath(BundleError):
    code = "BUNDLE_UNSAFE_PATH"


class BundleUnsupportedEntry(BundleError):
    code = "BUNDLE_UNSUPPORTED_ENTRY"


class BundleDuplicateEntry(BundleError):
    code = "BUNDLE_DUPLICATE_ENTRY"


class ManifestMissing(BundleError):
    code = "MANIFEST_MISSING"


class ManifestInvalid(BundleError):
    code = "MANIFEST_INVALID"


class ManifestFileMissing(BundleError):
    code = "MANIFEST_FILE_MISSING"


class WasmInvalid(BundleError):
    code = "WASM_INVALID"


class HashMismatch(BundleError):
    code = "HASH_MISMATCH"


# --- signatures -------------------------------------------------------------------


class SignatureError(ExtError):
    code = "SIGNATURE_INVALID"
    http_status = 400


class SignatureMissing(SignatureError):
    code = "SIGNATURE_MISSING"


class SignatureInvalid(SignatureError):
    code = "SIGNATURE_INVALID"


class SignatureUntrusted(SignatureError):
    code = "SIGNATURE_UNTRUSTED"
    http_status = 403


class SignatureScope(SignatureError):
    code = "SIGNATURE_SCOPE"
    http_status = 403


# --- registry and uploads ---------------------------------------------------------


class VersionExists(ExtError):
    code = "VERSION_EXISTS"
    http_status = 409


class NameOwned(ExtError):
    code = "NAME_OWNED"
    http_status = 409


class NotFound(ExtError):
    code = "NOT_FOUND"
    http_status = 404


class UploadNotFound(ExtError):
    code = "UPLOAD_NOT_FOUND"
    http_status = 404


class UploadExpired(ExtError):
    code = "UPLOAD_EXPIRED"
    http_status = 410


class UploadConflict(ExtError):
    """The upload session is in a state that does not allow the operation."""

    code = "UPLOAD_CONFLICT"
    http_status = 409


# --- access -----------------------------------------------------------------------


class Unauthenticated(ExtError):
    code = "UNAUTHENTICATED"
    http_status = 401


class Forbidden(ExtError):
    code = "FORBIDDEN"
    http_status = 403


class RateLimited(ExtError):
    code = "RATE_LIMITED"
    http_status = 429


# --- gateway and runner -----------------------------------------------------------


class NotInstalled(ExtError):
    code = "NOT_INSTALLED"
    http_status = 404


class EndpointNotFound(ExtError):
    code = "ENDPOINT_NOT_FOUND"
    http_status = 404


class PayloadTooLarge(ExtError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class ExtensionTimeout(ExtError):
    code = "EXTENSION_TIMEOUT"
    http_status = 504


class ExtensionFailed(ExtError):
    code = "EXTENSION_FAILED"
    http_status = 502


# --- operational and local ----------------------------------------------------------


class ConfigInvalid(ExtError):
    code = "CONFIG_INVALID"
    http_status = 500


class StorageError(ExtError):
    code = "STORAGE_ERROR"
    http_status = 503


class ToolchainMissing(ExtError):
    code = "TOOLCHAIN_MISSING"
    http_status = 500


class KeyInvalid(ExtError):
    code = "KEY_INVALID"
    http_status = 400


class UsageError(ExtError):
    code = "USAGE"
    http_status = 400


class Internal(ExtError):
    code = "INTERNAL"
    http_status = 500


def _all_subclasses(cls: type[ExtError]) -> list[type[ExtError]]:
    found: list[type[ExtError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


ALL_ERRORS: tuple[type[ExtError], ...] = (ExtError, *_all_subclasses(ExtError))
"""Every error class; a test proves the DESIGN §4 codes are all among them."""
