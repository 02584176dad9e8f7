"""Every setting of the platform, in one table.

The API, the finalize worker, the runner and the CLI all read their settings
through :func:`load_settings`, so the same environment gives the same values
everywhere (a parity test holds them to it).  Each row of :data:`SETTINGS` names
the environment variable, its type, its default and what it does; the README's
settings table is generated from it (``python -m chalicelib.config``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import SettingsInvalid

__all__ = [
    "SETTINGS",
    "BundleLimits",
    "Setting",
    "Settings",
    "check_combinations",
    "load_settings",
    "settings_table_markdown",
]

MiB = 1024 * 1024


def _parse_int(raw: str) -> int:
    value = int(raw.strip().replace("_", ""))
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in re.split(r"[,\s]+", raw) if item.strip())


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _parse_prefix(raw: str) -> str:
    value = raw.strip().strip("/")
    if not value or ".." in value.split("/"):
        raise ValueError("must be a relative key prefix such as 'sha256/'")
    return value + "/"


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    default: Any
    doc: str
    minimum: int | None = None


def _row(env: str, parse: Callable[[str], Any], default: Any, doc: str, minimum: int | None = None) -> Setting:
    return Setting(env=env, attr=env.lower(), parse=parse, default=default, doc=doc, minimum=minimum)


SETTINGS: tuple[Setting, ...] = (
    # storage
    _row(
        "STORAGE_S3_BUCKET",
        _parse_str,
        "ext-bundles",
        "Bucket holding staging uploads and the content-addressed store.",
    ),
    _row("STORAGE_S3_ENDPOINT", _parse_str, "", "S3 endpoint URL (MinIO, moto). Empty: `AWS_ENDPOINT_URL`, then AWS."),
    _row("STORAGE_S3_REGION", _parse_str, "us-east-1", "Region used to sign S3 requests."),
    _row("STORAGE_S3_FORCE_PATH_STYLE", _parse_bool, False, "Path-style S3 URLs (needed by MinIO and moto)."),
    _row("BUNDLE_STORE_BASE", _parse_prefix, "sha256/", "Key prefix of the immutable content-addressed store."),
    _row("STAGING_PREFIX", _parse_prefix, "staging/", "Key prefix of upload staging objects (expire after a day)."),
    _row("REGISTRY_TABLE_PREFIX", _parse_str, "ext-", "Prefix of the DynamoDB table names."),
    # upload pipeline
    _row("UPLOAD_MULTIPART_THRESHOLD_BYTES", _parse_int, 16 * MiB, "Uploads above this size use multipart.", 5 * MiB),
    _row("UPLOAD_PART_BYTES", _parse_int, 8 * MiB, "Part size of multipart uploads.", 5 * MiB),
    _row("UPLOAD_URL_TTL_SECONDS", _parse_int, 900, "Lifetime of presigned upload URLs.", 60),
    _row("UPLOAD_SESSION_TTL_SECONDS", _parse_int, 86400, "Lifetime of an upload session.", 900),
    _row(
        "FINALIZE_MODE",
        _choice("inline", "queue"),
        "inline",
        "`inline`: the finalize route does the work. `queue`: it hands the upload to the finalize worker "
        "(through `FINALIZE_QUEUE_URL`) and waits for its answer, so the API needs no write access to the store.",
    ),
    _row("FINALIZE_QUEUE_URL", _parse_str, "", "The finalize worker's queue, for `FINALIZE_MODE=queue`."),
    _row("UPLOAD_RATE_LIMIT_PER_MINUTE", _parse_int, 30, "Upload API calls per tenant per minute (0 = unlimited)."),
    # bundle limits (DESIGN §4)
    _row("BUNDLE_MAX_COMPRESSED_BYTES", _parse_int, 200 * MiB, "Largest accepted `bundle.tar.zst`.", 1024),
    _row("BUNDLE_MAX_UNPACKED_BYTES", _parse_int, 512 * MiB, "Largest total size of the files in a bundle.", 1024),
    _row("BUNDLE_MAX_ENTRIES", _parse_int, 5000, "Most files and directories in a bundle.", 1),
    _row("BUNDLE_MAX_FILE_BYTES", _parse_int, 64 * MiB, "Largest single file in a bundle.", 1024),
    _row("BUNDLE_MAX_PATH_BYTES", _parse_int, 240, "Longest path inside a bundle, in UTF-8 bytes.", 16),
    _row("BUNDLE_MAX_PATH_DEPTH", _parse_int, 16, "Deepest path inside a bundle, in segments.", 1),
    _row(
        "BUNDLE_MAX_WINDOW_BYTES",
        _parse_int,
        32 * MiB,
        "Largest zstd window; larger frames are refused undecoded.",
        1024,
    ),
    _row(
        "BUNDLE_MAX_COMPRESSION_RATIO",
        _parse_int,
        100,
        "Most a bundle may expand: its decompressed bytes over its compressed bytes, checked as it streams "
        "(real bundles stay below 65; a zip bomb is in the thousands).",
        2,
    ),
    _row(
        "BUNDLE_MAX_COMPRESSION_FLOOR_BYTES",
        _parse_int,
        16 * MiB,
        "Decompressed bytes any bundle may reach whatever its ratio, so small bundles are never refused.",
        1024,
    ),
    _row("MANIFEST_MAX_BYTES", _parse_int, 64 * 1024, "Largest `manifest.json`.", 1024),
    # signatures
    _row("SIGNING_TRUST_BUNDLE", _parse_str, "", "Trust bundle (path or inline PEM). Set: signatures fail closed."),
    # auth
    _row("EXT_AUTH_SECRET", _parse_str, "", "HS256 secret for tokens (dev and tests)."),
    _row(
        "EXT_AUTH_JWKS",
        _parse_str,
        "",
        "JWKS (path, URL or inline JSON) for RS256/ES256 tokens in production; needs `EXT_AUTH_ISSUER` and "
        "`EXT_AUTH_AUDIENCE`.",
    ),
    _row("EXT_AUTH_ISSUER", _parse_str, "", "Required `iss` claim when set; must be set with `EXT_AUTH_JWKS`."),
    _row("EXT_AUTH_AUDIENCE", _parse_str, "", "Required `aud` claim when set; must be set with `EXT_AUTH_JWKS`."),
    # gateway
    _row(
        "RUNNER_FUNCTION_NAME", _parse_str, "", "Runner Lambda to invoke (AWS). Takes precedence over RUNNER_BASE_URL."
    ),
    _row("RUNNER_BASE_URL", _parse_str, "", "Runner HTTP base URL (local and self-hosted)."),
    _row("RUNNER_PUBLIC_BASE", _parse_str, "", "Public base URL of the runner's `/ext-ui/` assets."),
    _row("RUNNER_AUTH_TOKEN", _parse_str, "", "Shared secret the gateway presents to the runner's HTTP mode."),
    _row(
        "RUNNER_LOG_GROUP",
        _parse_str,
        "",
        "CloudWatch Logs group of the runner, where `GET /installs/{name}/logs` (`extctl logs`) reads an install's "
        "lines (AWS); empty: the runner's HTTP mode at `RUNNER_BASE_URL` keeps them.",
    ),
    _row("EXT_GATEWAY_TIMEOUT_MS", _parse_int, 10_000, "Gateway's deadline for one runner call.", 100),
    _row("EXT_GATEWAY_MAX_BODY_BYTES", _parse_int, 4 * MiB, "Largest request body forwarded to an extension.", 0),
    _row(
        "EXT_GATEWAY_RATE_LIMIT_PER_MINUTE",
        _parse_int,
        600,
        "Gateway calls per tenant and extension per minute (0 = off).",
    ),
    _row(
        "EXT_GATEWAY_TENANT_CONCURRENCY",
        _parse_int,
        10,
        "Runner calls one tenant may have in flight at once, across every gateway instance (0 = no cap); "
        "more get `503 RUNNER_BUSY`. Keep it well below the runner's reserved concurrency.",
    ),
    _row(
        "EXT_GATEWAY_INSTALL_CACHE_MS",
        _parse_int,
        1000,
        "How long a gateway instance reuses a tenant's install record (0 = read every call).",
    ),
    # runner
    _row(
        "RUNNER_CACHE_DIR",
        _parse_str,
        "/tmp/ext-runner-cache",
        "Where the runner keeps verified bundles and compiled code.",
    ),
    _row("RUNNER_CACHE_MAX_BYTES", _parse_int, 1024 * MiB, "LRU bound of the runner's disk cache.", MiB),
    _row("RUNNER_MODULE_CACHE_ENTRIES", _parse_int, 32, "Compiled modules kept in memory per runner process.", 1),
    _row(
        "RUNNER_MAX_COLD_LOADS",
        _parse_int,
        4,
        "Bundles one runner process downloads and unpacks at once, for calls and for UI each; "
        "more wait up to 5 s, then get `503 RUNNER_BUSY`.",
        1,
    ),
    _row(
        "RUNNER_UI_MAX_CONCURRENCY",
        _parse_int,
        64,
        "UI requests one runner process serves at once (HTTP mode; in AWS the UI function's reserved "
        "concurrency); more wait up to 1 s for a slot, then get `503 RUNNER_BUSY`.",
        1,
    ),
    _row("RUNNER_DEFAULT_TIMEOUT_MS", _parse_int, 5000, "Per-call deadline when the manifest asks for none.", 10),
    _row(
        "RUNNER_MAX_TIMEOUT_MS",
        _parse_int,
        25_000,
        "Platform maximum for manifest `limits.timeout_ms` (below API Gateway's 29 s).",
        10,
    ),
    _row("RUNNER_DEFAULT_MEMORY_MB", _parse_int, 128, "Per-call linear memory cap when the manifest asks for none.", 1),
    _row("RUNNER_MAX_MEMORY_MB", _parse_int, 512, "Platform maximum for manifest `limits.memory_mb`.", 1),
    _row("RUNNER_FUEL", _parse_int, 0, "Fuel (instructions) per call; 0 turns fuel metering off."),
    _row(
        "RUNNER_MAX_CONCURRENT_CALLS",
        _parse_int,
        32,
        "Calls one runner process executes at once in HTTP mode; more wait up to 1 s for a slot, then get "
        "`503 RUNNER_BUSY` (Lambda runs one).",
        1,
    ),
    # compile jobs (runner_container/compiler.py)
    _row(
        "RUNNER_COMPILE_FUNCTION_NAME",
        _parse_str,
        "",
        "Lambda that runs compile jobs (AWS); the finalize worker and the runner invoke it asynchronously. "
        "Empty: the runner runs them itself, in the background.",
    ),
    _row(
        "RUNNER_COMPILE_MAX_WASM_BYTES",
        _parse_int,
        32 * MiB,
        "Largest WebAssembly code a compile job accepts; larger code is recorded as failed.",
        1024,
    ),
    _row(
        "RUNNER_COMPILE_TIMEOUT_MS",
        _parse_int,
        120_000,
        "Wall-clock limit of one compile job (its child process is killed past it; CPU time is capped too).",
        100,
    ),
    _row(
        "RUNNER_COMPILE_MEMORY_MB",
        _parse_int,
        2048,
        "Address-space limit of one compile job's child process.",
        64,
    ),
    _row(
        "RUNNER_COMPILE_CONCURRENCY",
        _parse_int,
        1,
        "Compile jobs one runner process runs at once (each may use `RUNNER_COMPILE_MEMORY_MB`).",
        1,
    ),
    _row(
        "RUNNER_INLINE_COMPILE_MAX_BYTES",
        _parse_int,
        1 * MiB,
        "Code up to this size with no compile outcome yet may compile during a call, within half of the "
        "call's remaining time; larger code answers `503 EXTENSION_NOT_READY` while a compile job runs "
        "(0 = never).",
    ),
    _row(
        "RUNNER_MAX_RESPONSE_BYTES",
        _parse_int,
        4 * MiB,
        "Largest response an extension may return (base64 must fit Lambda's 6 MB).",
        1024,
    ),
    # egress
    _row(
        "EXT_EGRESS_ALLOWLIST",
        _parse_list,
        (),
        "Hosts any extension may fetch: `host`, `*.suffix`, either with `:port`; an entry without a port "
        "allows 80 and 443 only. Empty denies all.",
    ),
    _row("EXT_EGRESS_ALLOW_PRIVATE", _parse_bool, False, "Allow fetches to loopback/private addresses (tests only)."),
    _row("EXT_HTTP_FETCH_MAX_BYTES", _parse_int, 2 * MiB, "Largest response body `http_fetch` returns.", 1024),
    _row(
        "EXT_HTTP_FETCH_TIMEOUT_MS",
        _parse_int,
        3000,
        "Deadline of one `http_fetch`, redirects and name lookup included (also bounded by the call deadline).",
        10,
    ),
    # extension state (cap:storage.kv, cap:secrets.get)
    _row(
        "KV_TABLE_NAME",
        _parse_str,
        "ext-kv",
        "DynamoDB table of the extensions' key-value data (the runner for guests, the API for admins and purge).",
    ),
    _row(
        "SECRETS_TABLE_NAME",
        _parse_str,
        "ext-secrets",
        "DynamoDB table of the installs' secrets, each sealed with its own KMS data key.",
    ),
    _row(
        "SECRETS_KMS_KEY_ID",
        _parse_str,
        "alias/ext-secrets",
        "KMS key (id, ARN or alias) that seals secrets: the API may only make data keys, the runner only decrypt.",
    ),
    # observability
    _row("LOG_LEVEL", _parse_str, "INFO", "Log level of the structured JSON logs."),
)


@dataclass(frozen=True)
class BundleLimits:
    """The limits of DESIGN §4; every one is enforced before the resource is spent."""

    max_compressed_bytes: int = 200 * MiB
    max_unpacked_bytes: int = 512 * MiB
    max_entries: int = 5000
    max_file_bytes: int = 64 * MiB
    max_path_bytes: int = 240
    max_path_depth: int = 16
    max_window_bytes: int = 32 * MiB
    max_manifest_bytes: int = 64 * 1024
    max_compression_ratio: int = 100
    compression_floor_bytes: int = 16 * MiB


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with :func:`load_settings`."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def bundle_limits(self) -> BundleLimits:
        return BundleLimits(
            max_compressed_bytes=self.values["bundle_max_compressed_bytes"],
            max_unpacked_bytes=self.values["bundle_max_unpacked_bytes"],
            max_entries=self.values["bundle_max_entries"],
            max_file_bytes=self.values["bundle_max_file_bytes"],
            max_path_bytes=self.values["bundle_max_path_bytes"],
            max_path_depth=self.values["bundle_max_path_depth"],
            max_window_bytes=self.values["bundle_max_window_bytes"],
            max_manifest_bytes=self.values["manifest_max_bytes"],
            max_compression_ratio=self.values["bundle_max_compression_ratio"],
            compression_floor_bytes=self.values["bundle_max_compression_floor_bytes"],
        )

    def replace(self, **changes: Any) -> Settings:
        unknown = set(changes) - set(self.values)
        if unknown:
            raise SettingsInvalid(f"unknown settings: {', '.join(sorted(unknown))}")
        values = {**self.values, **changes}
        check_combinations(values)
        return Settings(values=values)


def check_combinations(values: Mapping[str, Any]) -> None:
    """Refuse settings that are each valid but unsafe together; raises :class:`SettingsInvalid`.

    A JWKS needs an issuer and an audience: an identity provider signs tokens for every application it
    serves with the same keys, so only ``iss`` and ``aud`` tell a token meant for this platform from one
    meant for another.
    """
    if values.get("ext_auth_jwks") and not (values.get("ext_auth_issuer") and values.get("ext_auth_audience")):
        raise SettingsInvalid(
            "EXT_AUTH_JWKS is set, so EXT_AUTH_ISSUER and EXT_AUTH_AUDIENCE must be set too: without them a "
            "token the identity provider issued for another application would be accepted"
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``env`` (default: the process environment).

    Raises :class:`SettingsInvalid` naming the variable when a value does not parse, and when values
    conflict (:func:`check_combinations`).
    """
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = source.get(setting.env)
        if raw is None or raw.strip() == "":
            values[setting.attr] = setting.default
            continue
        try:
            value = setting.parse(raw)
        except ValueError as exc:
            raise SettingsInvalid(f"{setting.env}={raw!r} is invalid: {exc}") from None
        if setting.minimum is not None and value < setting.minimum:
            raise SettingsInvalid(f"{setting.env}={raw!r} is invalid: must be at least {setting.minimum}")
        values[setting.attr] = value
    check_combinations(values)
    return Settings(values=values)


def _default_text(setting: Setting) -> str:
    default = setting.default
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, tuple):
        return "(empty)" if not default else "`" + ",".join(default) + "`"
    if default == "":
        return "(empty)"
    if isinstance(default, int) and default >= MiB and default % MiB == 0:
        return f"`{default}` ({default // MiB} MiB)"
    return f"`{default}`"


def settings_table_markdown() -> str:
    """The README's settings table, generated from :data:`SETTINGS`."""
    lines = ["| variable | default | what it does |", "| --- | --- | --- |"]
    lines += [f"| `{s.env}` | {_default_text(s)} | {s.doc} |" for s in SETTINGS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table_markdown())
