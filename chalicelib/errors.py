"""One exception hierarchy for the whole platform.

Every rejection the product makes is an :class:`ExtError` subclass with a stable
``code`` (part of the public contract, see DESIGN §4) and the HTTP status the API
answers with.  Library code raises these; exactly one place per surface turns
them into output (``app.py`` for HTTP, ``extctl.cli`` for the terminal, the
runner's server for its own routes).

Each code belongs to exactly one class, and defining a class registers it: the README's
table, the user messages and :func:`error_for_code` all read that one registry.  A base
that only groups errors (``BundleError``, ``KvError`` …) is declared ``abstract=True``:
it has no code, is never raised, and so can never stand in for one of its leaves.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ABSTRACT_ERRORS",
    "ALL_ERRORS",
    "ApiUnreachable",
    "AssetTooLarge",
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
    "EndpointNotFound",
    "ExtError",
    "ExtensionFailed",
    "ExtensionNotReady",
    "ExtensionTimeout",
    "Forbidden",
    "HashMismatch",
    "InstallConfigInvalid",
    "Internal",
    "KeyInvalid",
    "KvConflict",
    "KvDenied",
    "KvError",
    "KvInvalid",
    "KvNotFound",
    "KvQuotaExceeded",
    "KvUnavailable",
    "ManifestFileMissing",
    "ManifestInvalid",
    "ManifestMissing",
    "MethodNotAllowed",
    "NameOwned",
    "NotAcceptable",
    "NotFound",
    "NotInstalled",
    "PayloadTooLarge",
    "RateLimited",
    "RouteNotFound",
    "RunnerBusy",
    "SecretDenied",
    "SecretError",
    "SecretInvalid",
    "SecretNotFound",
    "SecretUnavailable",
    "SettingsInvalid",
    "SignatureError",
    "SignatureInvalid",
    "SignatureMissing",
    "SignatureScope",
    "SignatureUntrusted",
    "StorageError",
    "ToolchainMissing",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UploadConflict",
    "UploadExpired",
    "UploadNotFound",
    "UsageError",
    "VersionExists",
    "WasmInvalid",
    "error_for_code",
    "error_table_markdown",
    "error_texts",
    "errors_by_code",
]


_BY_CODE: dict[str, type[ExtError]] = {}
"""Every concrete error class by its code, in the order they are defined (filled by ``__init_subclass__``)."""


class ExtError(Exception):
    """Base of every error the platform reports.

    ``code`` is stable and machine-readable; ``message`` is for people and names
    the offending field, path or value.  ``details`` carries structured extras
    (for example ``retry_after`` seconds) that surfaces may expose.
    ``user_message`` is the code's one sentence for the person at a UI, the same
    for every instance (the admin page shows it above ``message``); every class
    with a code of its own sets it.
    """

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    user_message: ClassVar[str] = ""
    generic_message: ClassVar[str | None] = None
    """Set on the operator's failures (storage, configuration, bugs), whose ``message`` may name storage
    keys, settings, files or a dependency's own error codes: a client gets this instead (with the request
    id to quote), and the surface logs ``message`` under that request id."""
    abstract: ClassVar[bool] = True
    """A base that groups errors: no code of its own, never raised (``class X(ExtError, abstract=True)``)."""

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        """Register a concrete class under its code; refuse a class that would share or lack one."""
        super().__init_subclass__(**kwargs)
        cls.abstract = abstract
        if abstract:
            if "code" in vars(cls):
                raise TypeError(f"{cls.__name__} is abstract: its leaves carry the codes, not it")
            return
        if "code" not in vars(cls):
            raise TypeError(f"{cls.__name__} needs a code of its own (or declare it abstract=True)")
        taken = _BY_CODE.get(cls.code)
        if taken is not None:
            raise TypeError(f"{cls.__name__} and {taken.__name__} both have the code {cls.code}; a code has one class")
        _BY_CODE[cls.code] = cls

    def __init__(self, message: str, **details: Any) -> None:
        if type(self).abstract:
            raise TypeError(f"{type(self).__name__} is abstract; raise one of its leaves")
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def hides_detail(self) -> bool:
        """Whether ``message`` stays in the logs and clients get :attr:`generic_message`."""
        return self.generic_message is not None

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON error body of DESIGN §4, with the whole message (the CLI, logs)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if request_id is not None:
            body["request_id"] = request_id
        return {"error": body}

    def to_client_dict(self, request_id: str) -> dict[str, Any]:
        """The JSON error body a remote client gets: :meth:`to_dict`, with the generic message (naming the
        request id) in place of the detail when :attr:`hides_detail`."""
        body = self.to_dict(request_id)
        if self.generic_message is not None:
            body["error"]["message"] = f"{self.generic_message}; request id {request_id}"
        return body


class BadRequest(ExtError):
    """The request is malformed (not JSON, a field of the wrong type)."""

    code = "BAD_REQUEST"
    user_message = "The server did not accept the request."
    http_status = 400


class RouteNotFound(ExtError):
    """No route has this path (API Gateway's "missing authentication token")."""

    code = "ROUTE_NOT_FOUND"
    user_message = "The platform has no such address."
    http_status = 404


class MethodNotAllowed(ExtError):
    """The route does not take this HTTP method (the ``Allow`` header lists those it takes)."""

    code = "METHOD_NOT_ALLOWED"
    user_message = "The platform does not accept this kind of request here."
    http_status = 405


class NotAcceptable(ExtError):
    """The answer is binary and the request's ``Accept`` does not admit its type."""

    code = "NOT_ACCEPTABLE"
    user_message = "The answer's type is not among those the request accepts."
    http_status = 406


class UnsupportedMediaType(ExtError):
    """The request body's ``Content-Type`` is not one the route reads."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    user_message = "The request body's type is not one the platform reads here."
    http_status = 415


# --- bundle format ----------------------------------------------------------------


class BundleError(ExtError, abstract=True):
    """The archive itself is unacceptable."""

    http_status = 400


class BundleTooLarge(BundleError):
    """The compressed bundle, or its zstd window, is over the limit."""

    code = "BUNDLE_TOO_LARGE"
    user_message = "The bundle is larger than this platform accepts."
    http_status = 413


class BundleCorrupt(BundleError):
    """Not zstd or not tar, truncated, more than one frame, trailing data, bad headers."""

    code = "BUNDLE_CORRUPT"
    user_message = "This file is not a valid bundle.tar.zst: it is not zstd or tar, is truncated, or has trailing data."


class BundleUnpackedTooLarge(BundleError):
    """A file or the whole bundle unpacks past its limit."""

    code = "BUNDLE_UNPACKED_TOO_LARGE"
    user_message = "The bundle unpacks to more data than this platform accepts."
    http_status = 413


class BundleTooManyEntries(BundleError):
    """More files and directories than the limit."""

    code = "BUNDLE_TOO_MANY_ENTRIES"
    user_message = "The bundle holds more files than this platform accepts."


class BundleUnsafePath(BundleError):
    """A member path is absolute, climbs out, has control characters or is too long or deep."""

    code = "BUNDLE_UNSAFE_PATH"
    user_message = "A path inside the bundle is unsafe (absolute, climbing out with .., or too long or deep)."


class BundleUnsupportedEntry(BundleError):
    """A link, device, FIFO, sparse file or other non-file member."""

    code = "BUNDLE_UNSUPPORTED_ENTRY"
    user_message = "The bundle holds links, devices or other entries that are not plain files or folders."


class BundleDuplicateEntry(BundleError):
    """Two members land on the same path (also across case and Unicode forms)."""

    code = "BUNDLE_DUPLICATE_ENTRY"
    user_message = "Two files in the bundle have the same path."


class ManifestMissing(BundleError):
    """No `manifest.json` at the bundle root."""

    code = "MANIFEST_MISSING"
    user_message = "The bundle has no manifest.json at its root."


class ManifestInvalid(BundleError):
    """`manifest.json` is not strict JSON or breaks the schema; the message names the field."""

    code = "MANIFEST_INVALID"
    user_message = "The bundle's manifest.json is not valid."


class ManifestFileMissing(BundleError):
    """The manifest's `entry` or `ui.entry` is not a file in the bundle."""

    code = "MANIFEST_FILE_MISSING"
    user_message = "A file the manifest names (its entry or ui.entry) is not in the bundle."


class WasmInvalid(BundleError):
    """The entry module does not fit its runtime's ABI."""

    code = "WASM_INVALID"
    user_message = "The WebAssembly module does not fit the runtime's interface."


class HashMismatch(BundleError):
    """The bytes do not have the declared sha256."""

    code = "HASH_MISMATCH"
    user_message = "The uploaded bytes differ from the file's checksum: the file changed or was damaged on the way."


# --- signatures -------------------------------------------------------------------


class SignatureError(ExtError, abstract=True):
    """Base of the signature errors."""

    http_status = 400


class SignatureMissing(SignatureError):
    """A trust bundle is configured and the bundle is unsigned."""

    code = "SIGNATURE_MISSING"
    user_message = "This platform only accepts signed bundles: choose the bundle's .sig file too."


class SignatureInvalid(SignatureError):
    """The signature envelope is malformed, for other bytes, or does not verify."""

    code = "SIGNATURE_INVALID"
    user_message = "The signature does not match this bundle, or the .sig file is malformed."


class SignatureUntrusted(SignatureError):
    """The signing key is not in the trust bundle (or its certificate is not valid now)."""

    code = "SIGNATURE_UNTRUSTED"
    user_message = "The bundle is signed with a key this platform does not trust."
    http_status = 403


class SignatureScope(SignatureError):
    """The signing key may not sign this extension name."""

    code = "SIGNATURE_SCOPE"
    user_message = "The signing key is not allowed to sign extensions with this name."
    http_status = 403


# --- registry and uploads ---------------------------------------------------------


class VersionExists(ExtError):
    """This version of the extension exists with other content."""

    code = "VERSION_EXISTS"
    user_message = (
        "This version already exists with different content. Raise the version in manifest.json, then publish."
    )
    http_status = 409


class NameOwned(ExtError):
    """Another publisher owns this extension name."""

    code = "NAME_OWNED"
    user_message = "Another publisher owns this extension name."
    http_status = 409


class NotFound(ExtError):
    """No such extension or version."""

    code = "NOT_FOUND"
    user_message = "There is no such extension or version."
    http_status = 404


class UploadNotFound(ExtError):
    """No such upload session for this tenant."""

    code = "UPLOAD_NOT_FOUND"
    user_message = "The upload session no longer exists."
    http_status = 404


class UploadExpired(ExtError):
    """The upload session has expired."""

    code = "UPLOAD_EXPIRED"
    user_message = "The upload took too long and its session expired."
    http_status = 410


class UploadConflict(ExtError):
    """The upload session's state does not allow this (for example it was aborted)."""

    code = "UPLOAD_CONFLICT"
    user_message = "The upload is in a state that does not allow this step."
    http_status = 409


# --- access -----------------------------------------------------------------------


class Unauthenticated(ExtError):
    """Missing, malformed, expired or wrongly signed token."""

    code = "UNAUTHENTICATED"
    user_message = "You are not signed in, or your token has expired."
    http_status = 401


class Forbidden(ExtError):
    """The token's roles do not allow this."""

    code = "FORBIDDEN"
    user_message = "Your token does not allow this: managing extensions needs the admin role."
    http_status = 403


class RateLimited(ExtError):
    """Too many requests; retry after the `Retry-After` seconds."""

    code = "RATE_LIMITED"
    user_message = "Too many upload requests in a short time."
    http_status = 429


# --- gateway and runner -----------------------------------------------------------


class NotInstalled(ExtError):
    """The extension is not installed (or not enabled) for this tenant."""

    code = "NOT_INSTALLED"
    user_message = "This extension is not installed for your tenant."
    http_status = 404


class EndpointNotFound(ExtError):
    """The extension declares no endpoint for this method and path."""

    code = "ENDPOINT_NOT_FOUND"
    user_message = "The extension has no such endpoint."
    http_status = 404


class PayloadTooLarge(ExtError):
    """The request body is over the gateway's limit."""

    code = "PAYLOAD_TOO_LARGE"
    user_message = "The request body is too large."
    http_status = 413


class AssetTooLarge(ExtError):
    """A UI asset is larger than one runner response can carry (4 MiB where the runner is a Lambda)."""

    code = "ASSET_TOO_LARGE"
    http_status = 413
    user_message = "A file of the extension's page is too large for this platform to send."


class ExtensionTimeout(ExtError):
    """The extension ran past its deadline."""

    code = "EXTENSION_TIMEOUT"
    user_message = "The extension took too long to answer."
    http_status = 504


class ExtensionFailed(ExtError):
    """The extension trapped, ran out of memory or fuel, answered badly, or its code did not compile."""

    code = "EXTENSION_FAILED"
    user_message = "The extension failed while answering."
    http_status = 502


class ExtensionNotReady(ExtError):
    """The extension's code is still being compiled; retry after the `Retry-After` seconds."""

    code = "EXTENSION_NOT_READY"
    http_status = 503
    user_message = "The extension's new code is still being prepared; try again in a few seconds."


class RunnerBusy(ExtError):
    """The runner is at capacity (concurrent calls or UI requests, bundle loads, disk); retry after `Retry-After`."""

    code = "RUNNER_BUSY"
    http_status = 503
    user_message = "The extension runner is busy right now; try again in a few seconds."


# --- install configuration ---------------------------------------------------------


class InstallConfigInvalid(ExtError):
    """An install's `config` does not fit its version's `config_schema`; the message names the field."""

    code = "CONFIG_INVALID"
    user_message = "The extension's configuration is not valid: correct the field named below."
    http_status = 400


# --- extension state: KV (cap:storage.kv) ------------------------------------------------
# Guest-facing: a host call answers these as `{"error": {"code", "message"}}` (wasm-core@1) or as the
# `kv-error` case of the WIT world (chalicelib/kv/abi.py maps each class to its case).


class KvError(ExtError, abstract=True):
    """Base of the KV errors a guest can see."""

    http_status = 503


class KvDenied(KvError):
    """The install was not granted `cap:storage.kv`."""

    code = "KV_DENIED"
    user_message = "The extension may not use key-value storage: it does not have cap:storage.kv."
    http_status = 403


class KvNotFound(KvError):
    """No value is stored under the key."""

    code = "KV_NOT_FOUND"
    user_message = "No value is stored under this key."
    http_status = 404


class KvInvalid(KvError):
    """A key, value, prefix, cursor, limit or request breaks the KV rules; the message says which."""

    code = "KV_INVALID"
    user_message = "The key-value request is malformed, or a key or value is outside its limits."
    http_status = 400


class KvConflict(KvError):
    """A compare-and-set found another revision than the one it named."""

    code = "KV_CONFLICT"
    user_message = "The value changed since it was read: read it again, then retry."
    http_status = 409


class KvQuotaExceeded(KvError):
    """The install's keys or bytes, or the call's KV operations, would go past their quota."""

    code = "KV_QUOTA_EXCEEDED"
    user_message = "The extension's key-value storage is full, or one call made too many operations."
    http_status = 413


class KvUnavailable(KvError):
    """The KV store failed or stayed contended; retrying later may work."""

    code = "KV_UNAVAILABLE"
    user_message = "The extension's key-value storage is unavailable right now."
    http_status = 503


# --- extension state: secrets (cap:secrets.get) ----------------------------------------------
# Messages name the secret, never its value (tests/integration/test_secrets.py greps for it).


class SecretError(ExtError, abstract=True):
    """Base of the secret errors."""

    http_status = 503


class SecretInvalid(SecretError):
    """A secret's name is not declared by the installed version, or its value is not 1 B to 8 KiB of UTF-8."""

    code = "SECRET_INVALID"
    user_message = "The secret was not stored: its name is not declared by the extension, or its value is too long."
    http_status = 400


class SecretDenied(SecretError):
    """The guest has no `cap:secrets.get`, or asked for a name its manifest does not declare."""

    code = "SECRET_DENIED"
    user_message = "The extension may not read this secret."
    http_status = 403


class SecretNotFound(SecretError):
    """The secret is declared but no admin has set it for this install."""

    code = "SECRET_NOT_FOUND"
    user_message = "This secret has not been set for the install."
    http_status = 404


class SecretUnavailable(SecretError):
    """The secret store or KMS failed, or a stored secret does not decrypt."""

    code = "SECRET_UNAVAILABLE"
    user_message = "The extension's secrets cannot be read right now."
    http_status = 503


# --- operational and local ----------------------------------------------------------


class SettingsInvalid(ExtError):
    """A setting or the trust bundle is invalid (an operator problem).

    Not an install's config: that is :class:`InstallConfigInvalid` (``CONFIG_INVALID``, DESIGN §4).
    """

    code = "SETTINGS_INVALID"
    user_message = "The platform is misconfigured; tell its operator."
    http_status = 500
    generic_message = "the platform is misconfigured; its operator has the details in the logs"


class StorageError(ExtError):
    """The object store refused or failed an operation."""

    code = "STORAGE_ERROR"
    user_message = "The storage service is unavailable right now."
    http_status = 503
    generic_message = "the platform's storage failed; retry later"


class ApiUnreachable(ExtError):
    """The CLI could not reach the API or S3 (network, DNS, TLS); retrying may help."""

    code = "API_UNREACHABLE"
    user_message = "The platform's API could not be reached. Check your network, then retry."
    http_status = 503


class ToolchainMissing(ExtError):
    """`extctl build` cannot find clang or wasm-ld."""

    code = "TOOLCHAIN_MISSING"
    user_message = "The C toolchain (clang and wasm-ld) is not installed."
    http_status = 500


class BuildFailed(ExtError):
    """The guest's sources did not compile or link; the message carries the compiler's output."""

    code = "BUILD_FAILED"
    user_message = "The extension's sources did not compile."
    http_status = 400


class KeyInvalid(ExtError):
    """A signing key file is missing, unreadable or of an unsupported type."""

    code = "KEY_INVALID"
    user_message = "The signing key file cannot be used."
    http_status = 400


class UsageError(ExtError):
    """The command line asks for something impossible (CLI only)."""

    code = "USAGE"
    user_message = "The command was given options that do not fit together."
    http_status = 400


class Internal(ExtError):
    """An unexpected failure; the message says what to report."""

    code = "INTERNAL"
    user_message = "Something went wrong on the server. Quote the request id when you report it."
    http_status = 500
    generic_message = "an unexpected error occurred; report it"


def _all_subclasses(cls: type[ExtError]) -> list[type[ExtError]]:
    found: list[type[ExtError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


ALL_ERRORS: tuple[type[ExtError], ...] = (ExtError, *_all_subclasses(ExtError))
"""Every error class; a test proves the DESIGN §4 codes are all among them."""


ABSTRACT_ERRORS: tuple[type[ExtError], ...] = tuple(cls for cls in ALL_ERRORS if cls.abstract)
"""The bases that only group errors (``ExtError`` among them): no code, never raised."""


def error_for_code(code: str, message: str, **details: Any) -> ExtError:
    """Rebuild a recorded or relayed error (a failed upload's, the runner's) from its code and details.

    An unknown code becomes :class:`Internal`.
    """
    return _BY_CODE.get(code, Internal)(message, **details)


def errors_by_code() -> dict[str, type[ExtError]]:
    """The one class of each code, in the order they are defined."""
    return dict(_BY_CODE)


def error_texts() -> dict[str, str]:
    """Each code's sentence for people (``user_message``); the admin UI reads this table."""
    return {code: cls.user_message for code, cls in errors_by_code().items()}


def error_table_markdown() -> str:
    """The README's error code table, one row per code."""
    lines = ["| code | HTTP | meaning |", "| --- | --- | --- |"]
    lines += [
        f"| `{code}` | {cls.http_status} | {cls.__doc__.strip().splitlines()[0]} |"
        for code, cls in errors_by_code().items()
        if cls.__doc__
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(error_table_markdown())
