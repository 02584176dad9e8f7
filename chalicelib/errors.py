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
    "ALL_ERRORS",
    "BadRequest",
    "BuildFailed",
    "BundleCorrupt",
    "BundleDuplicateEntry",
    "BundleError",
    "BundleTooLarge",
    "BundleTooManyEntries",
    "BundleUnpackedTooLarge",
    "BundleUnsafePath",
    "BundleUnsupportedEntry",
    "ConfigInvalid",
    "EndpointNotFound",
    "ExtError",
    "ExtensionFailed",
    "ExtensionTimeout",
    "Forbidden",
    "HashMismatch",
    "Internal",
    "KeyInvalid",
    "ManifestFileMissing",
    "ManifestInvalid",
    "ManifestMissing",
    "NameOwned",
    "NotFound",
    "NotInstalled",
    "PayloadTooLarge",
    "RateLimited",
    "SignatureError",
    "SignatureInvalid",
    "SignatureMissing",
    "SignatureScope",
    "SignatureUntrusted",
    "StorageError",
    "ApiUnreachable",
    "ToolchainMissing",
    "Unauthenticated",
    "UploadConflict",
    "UploadExpired",
    "UploadNotFound",
    "UsageError",
    "VersionExists",
    "WasmInvalid",
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
    """The request is malformed (not JSON, a field of the wrong type)."""

    code = "BAD_REQUEST"
    http_status = 400


# --- bundle format ----------------------------------------------------------------


class BundleError(ExtError):
    """The archive itself is unacceptable."""

    code = "BUNDLE_CORRUPT"
    http_status = 400


class BundleTooLarge(BundleError):
    """The compressed bundle, or its zstd window, is over the limit."""

    code = "BUNDLE_TOO_LARGE"
    http_status = 413


class BundleCorrupt(BundleError):
    """Not zstd or not tar, truncated, more than one frame, trailing data, bad headers."""

    code = "BUNDLE_CORRUPT"


class BundleUnpackedTooLarge(BundleError):
    """A file or the whole bundle unpacks past its limit."""

    code = "BUNDLE_UNPACKED_TOO_LARGE"
    http_status = 413


class BundleTooManyEntries(BundleError):
    """More files and directories than the limit."""

    code = "BUNDLE_TOO_MANY_ENTRIES"


class BundleUnsafePath(BundleError):
    """A member path is absolute, climbs out, has control characters or is too long or deep."""

    code = "BUNDLE_UNSAFE_PATH"


class BundleUnsupportedEntry(BundleError):
    """A link, device, FIFO, sparse file or other non-file member."""

    code = "BUNDLE_UNSUPPORTED_ENTRY"


class BundleDuplicateEntry(BundleError):
    """Two members land on the same path (also across case and Unicode forms)."""

    code = "BUNDLE_DUPLICATE_ENTRY"


class ManifestMissing(BundleError):
    """No `manifest.json` at the bundle root."""

    code = "MANIFEST_MISSING"


class ManifestInvalid(BundleError):
    """`manifest.json` is not strict JSON or breaks the schema; the message names the field."""

    code = "MANIFEST_INVALID"


class ManifestFileMissing(BundleError):
    """The manifest's `entry` or `ui.entry` is not a file in the bundle."""

    code = "MANIFEST_FILE_MISSING"


class WasmInvalid(BundleError):
    """The entry module does not fit its runtime's ABI."""

    code = "WASM_INVALID"


class HashMismatch(BundleError):
    """The bytes do not have the declared sha256."""

    code = "HASH_MISMATCH"


# --- signatures -------------------------------------------------------------------


class SignatureError(ExtError):
    code = "SIGNATURE_INVALID"
    http_status = 400


class SignatureMissing(SignatureError):
    """A trust bundle is configured and the bundle is unsigned."""

    code = "SIGNATURE_MISSING"


class SignatureInvalid(SignatureError):
    """The signature envelope is malformed, for other bytes, or does not verify."""

    code = "SIGNATURE_INVALID"


class SignatureUntrusted(SignatureError):
    """The signing key is not in the trust bundle (or its certificate is not valid now)."""

    code = "SIGNATURE_UNTRUSTED"
    http_status = 403


class SignatureScope(SignatureError):
    """The signing key may not sign this extension name."""

    code = "SIGNATURE_SCOPE"
    http_status = 403


# --- registry and uploads ---------------------------------------------------------


class VersionExists(ExtError):
    """This version of the extension exists with other content."""

    code = "VERSION_EXISTS"
    http_status = 409


class NameOwned(ExtError):
    """Another publisher owns this extension name."""

    code = "NAME_OWNED"
    http_status = 409


class NotFound(ExtError):
    """No such extension or version."""

    code = "NOT_FOUND"
    http_status = 404


class UploadNotFound(ExtError):
    """No such upload session for this tenant."""

    code = "UPLOAD_NOT_FOUND"
    http_status = 404


class UploadExpired(ExtError):
    """The upload session has expired."""

    code = "UPLOAD_EXPIRED"
    http_status = 410


class UploadConflict(ExtError):
    """The upload session's state does not allow this (for example it was aborted)."""

    code = "UPLOAD_CONFLICT"
    http_status = 409


# --- access -----------------------------------------------------------------------


class Unauthenticated(ExtError):
    """Missing, malformed, expired or wrongly signed token."""

    code = "UNAUTHENTICATED"
    http_status = 401


class Forbidden(ExtError):
    """The token's roles do not allow this."""

    code = "FORBIDDEN"
    http_status = 403


class RateLimited(ExtError):
    """Too many requests; retry after the `Retry-After` seconds."""

    code = "RATE_LIMITED"
    http_status = 429


# --- gateway and runner -----------------------------------------------------------


class NotInstalled(ExtError):
    """The extension is not installed (or not enabled) for this tenant."""

    code = "NOT_INSTALLED"
    http_status = 404


class EndpointNotFound(ExtError):
    """The extension declares no endpoint for this method and path."""

    code = "ENDPOINT_NOT_FOUND"
    http_status = 404


class PayloadTooLarge(ExtError):
    """The request body is over the gateway's limit."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class ExtensionTimeout(ExtError):
    """The extension ran past its deadline."""

    code = "EXTENSION_TIMEOUT"
    http_status = 504


class ExtensionFailed(ExtError):
    """The extension trapped, ran out of memory or fuel, or answered badly."""

    code = "EXTENSION_FAILED"
    http_status = 502


# --- operational and local ----------------------------------------------------------


class ConfigInvalid(ExtError):
    """A setting or the trust bundle is invalid (an operator problem)."""

    code = "CONFIG_INVALID"
    http_status = 500


class StorageError(ExtError):
    """The object store refused or failed an operation."""

    code = "STORAGE_ERROR"
    http_status = 503


class ApiUnreachable(ExtError):
    """The CLI could not reach the API or S3 (network, DNS, TLS); retrying may help."""

    code = "API_UNREACHABLE"
    http_status = 503


class ToolchainMissing(ExtError):
    """`extctl build` cannot find clang or wasm-ld."""

    code = "TOOLCHAIN_MISSING"
    http_status = 500


class BuildFailed(ExtError):
    """The guest's sources did not compile or link; the message carries the compiler's output."""

    code = "BUILD_FAILED"
    http_status = 400


class KeyInvalid(ExtError):
    """A signing key file is missing, unreadable or of an unsupported type."""

    code = "KEY_INVALID"
    http_status = 400


class UsageError(ExtError):
    """The command line asks for something impossible (CLI only)."""

    code = "USAGE"
    http_status = 400


class Internal(ExtError):
    """An unexpected failure; the message says what to report."""

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


def error_for_code(code: str, message: str) -> ExtError:
    """Rebuild a recorded error (for example a failed upload's) from its code."""
    for cls in ALL_ERRORS:
        if cls.code == code and cls not in (BundleError, SignatureError):
            return cls(message)
    return Internal(message)


def error_table_markdown() -> str:
    """The README's error code table, one row per code."""
    rows: dict[str, tuple[int, str]] = {}
    for cls in ALL_ERRORS:
        if cls.__doc__ and cls.code not in rows and cls not in (ExtError, BundleError, SignatureError):
            rows[cls.code] = (cls.http_status, cls.__doc__.strip().splitlines()[0])
    lines = ["| code | HTTP | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{code}` | {status} | {text} |" for code, (status, text) in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(error_table_markdown())
