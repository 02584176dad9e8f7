"""Config parity: the API, the finalize worker and the runner read the same settings the same way.

All three read their settings through ``chalicelib.config.load_settings`` (one table, one set of
defaults); these tests hold the deployed environment to it: every variable the stack sets is a
setting, a setting set on several functions has one value, the settings the functions must agree
on reach every function that reads them, and the template's parameters default to the table's
defaults.  They also hold the code to reading the environment only through that table.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import SETTINGS, Setting, load_settings
from tests.infra.cfn import Stack

pytestmark = pytest.mark.xdist_group("infra")

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("APIHandler", "FinalizeWorker", "Runner", "RunnerUi", "Compiler")
BY_NAME = {setting.env: setting for setting in SETTINGS}

NOT_SETTINGS = frozenset({"FINALIZE_QUEUE_NAME"})
"""Variables read outside the settings table, on purpose: app.py names the worker's queue with
FINALIZE_QUEUE_NAME when ``chalice package`` runs (the template then points the worker at its own
queue).  AWS_* variables belong to the Lambda runtime and boto3, and are allowed too."""

BUNDLE_LIMITS = (*(s.env for s in SETTINGS if s.env.startswith("BUNDLE_MAX_")), "MANIFEST_MAX_BYTES")
EVERYWHERE = ("STORAGE_S3_BUCKET", "STORAGE_S3_REGION", "BUNDLE_STORE_BASE", "STAGING_PREFIX", "SIGNING_TRUST_BUNDLE")
MUST_AGREE: dict[str, tuple[str, ...]] = {
    # where bundles are, how they are verified and whose signatures count: publish and run must agree
    **dict.fromkeys((*EVERYWHERE, "LOG_LEVEL", *BUNDLE_LIMITS), FUNCTIONS),
    # the registry and the runner, which both publishing paths (API route and worker) use
    "REGISTRY_TABLE_PREFIX": ("APIHandler", "FinalizeWorker"),
    "RUNNER_FUNCTION_NAME": ("APIHandler",),
    # who asks for compile jobs, and the code they produce: a runner reads the compile function's
    # outcomes under the engine fingerprint (fuel) and the limits id (the three compile limits)
    "RUNNER_COMPILE_FUNCTION_NAME": ("FinalizeWorker", "Runner"),
    **dict.fromkeys(
        ("RUNNER_FUEL", "RUNNER_COMPILE_MAX_WASM_BYTES", "RUNNER_COMPILE_TIMEOUT_MS", "RUNNER_COMPILE_MEMORY_MB"),
        ("Runner", "Compiler"),
    ),
    # secrets are written by the API and read by the runner: both must name the same table
    "SECRETS_TABLE_NAME": ("APIHandler", "Runner"),
    # KV data is read and written by the runner (guests) and the API (admins, purge)
    "KV_TABLE_NAME": ("APIHandler", "Runner"),
}
API_ONLY = (
    "EXT_AUTH_SECRET",
    "EXT_AUTH_JWKS",
    "EXT_AUTH_ISSUER",
    "EXT_AUTH_AUDIENCE",
    "RUNNER_PUBLIC_BASE",
    # the API reads the runner's log lines for GET /installs/{name}/logs
    "RUNNER_LOG_GROUP",
    # only the API seals secrets; the runner decrypts with the key each sealed row names
    "SECRETS_KMS_KEY_ID",
)


def parameter_name(env: str) -> str:
    """The template parameter of a setting: BUNDLE_MAX_ENTRIES -> BundleMaxEntries."""
    return "".join(word.capitalize() for word in env.split("_"))


def environments(stack: Stack) -> dict[str, dict[str, Any]]:
    """Function → its raw (unresolved) environment variables."""
    return {f: stack.resources[f]["Properties"]["Environment"]["Variables"] for f in FUNCTIONS}


def test_every_variable_the_stack_sets_is_a_setting(stack: Stack) -> None:
    for function, variables in environments(stack).items():
        unknown = {name for name in variables if name not in BY_NAME and name not in NOT_SETTINGS}
        assert not unknown, f"{function} sets {sorted(unknown)}, which chalicelib/config.py does not read"


def test_a_setting_set_on_several_functions_has_one_value(stack: Stack) -> None:
    values: dict[str, dict[str, Any]] = {}
    for function, variables in environments(stack).items():
        for name, value in variables.items():
            values.setdefault(name, {})[function] = value
    for name, per_function in values.items():
        distinct = {repr(value) for value in per_function.values()}
        assert len(distinct) == 1, f"{name} differs between {sorted(per_function)}: {sorted(distinct)}"


@pytest.mark.parametrize("env", sorted(MUST_AGREE))
def test_settings_that_must_agree_reach_every_function_that_reads_them(stack: Stack, env: str) -> None:
    variables = environments(stack)
    missing = [function for function in MUST_AGREE[env] if env not in variables[function]]
    assert not missing, f"{env} is not set on {missing}; they would fall back to the default"


def test_only_the_api_names_the_runner_function_the_worker_asks_only_the_compile_function(stack: Stack) -> None:
    # The worker's one use of the runner side is a compile job after publish, which the compile function runs.
    variables = environments(stack)
    assert [function for function in FUNCTIONS if "RUNNER_FUNCTION_NAME" in variables[function]] == ["APIHandler"]
    assert "RUNNER_COMPILE_FUNCTION_NAME" in variables["FinalizeWorker"]


def test_credentials_and_api_only_settings_stay_on_the_api(stack: Stack) -> None:
    variables = environments(stack)
    for env in API_ONLY:
        assert env in variables["APIHandler"], env
        assert all(env not in variables[function] for function in FUNCTIONS if function != "APIHandler"), env


def test_storage_settings_name_the_bucket_and_prefixes_the_policies_protect(stack: Stack) -> None:
    bucket = stack.resolve(stack.resources["BundleBucket"]["Properties"])
    notification_prefix = bucket["NotificationConfiguration"]["QueueConfigurations"][0]["Filter"]["S3Key"]["Rules"]
    expiring = [rule["Prefix"] for rule in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in rule]
    store_rules = stack.resolve(stack.resources["BundleBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"])
    protected = {s["Resource"] for s in store_rules if "Store" in s["Sid"]}
    for function in FUNCTIONS:
        settings = load_settings(stack.resolve(stack.resources[function]["Properties"]["Environment"]["Variables"]))
        assert settings.storage_s3_bucket == bucket["BucketName"]
        assert notification_prefix == [{"Name": "prefix", "Value": settings.staging_prefix}]
        assert expiring == [settings.staging_prefix]
        assert protected == {f"arn:aws:s3:::{settings.storage_s3_bucket}/{settings.bundle_store_base}*"}


def test_the_registry_prefix_names_the_tables(template: dict[str, Any]) -> None:
    stack = Stack(template, {"RegistryTablePrefix": "acme-"})
    tables = {stack.resolve(t["Properties"]["TableName"]) for t in stack.of_type("AWS::DynamoDB::Table").values()}
    for function in ("APIHandler", "FinalizeWorker"):
        settings = load_settings(stack.resolve(stack.resources[function]["Properties"]["Environment"]["Variables"]))
        suffixes = {name.removeprefix(settings.registry_table_prefix) for name in tables}
        assert suffixes == {"extensions", "versions", "installs", "uploads", "ratelimits", "audit", "kv", "secrets"}
    for function in ("APIHandler", "Runner"):
        settings = load_settings(stack.resolve(stack.resources[function]["Properties"]["Environment"]["Variables"]))
        assert settings.secrets_table_name == "acme-secrets"
    runner = stack.resolve(stack.resources["Runner"]["Properties"]["Environment"]["Variables"])
    assert load_settings(runner).kv_table_name == "acme-kv"


def setting_parameters(stack: Stack) -> Iterator[tuple[Setting, str, dict[str, Any]]]:
    for setting in SETTINGS:
        name = parameter_name(setting.env)
        if name in stack.template["Parameters"]:
            yield setting, name, stack.template["Parameters"][name]


def test_parameters_named_after_settings_feed_exactly_those_settings(stack: Stack) -> None:
    variables = environments(stack)
    for setting, name, _ in setting_parameters(stack):
        users = [function for function in FUNCTIONS if setting.env in variables[function]]
        assert users, f"parameter {name} reaches no function"
        for function in users:
            value = variables[function][setting.env]
            # RUNNER_PUBLIC_BASE falls back to the runner's function URL when the parameter is empty.
            fed = value == {"Ref": name} or (setting.env == "RUNNER_PUBLIC_BASE" and {"Ref": name} in value["Fn::If"])
            assert fed, f"{function} sets {setting.env} to {value}, not to parameter {name}"


def test_parameters_default_to_the_settings_table_defaults(stack: Stack) -> None:
    for setting, name, parameter in setting_parameters(stack):
        default = str(parameter.get("Default", ""))
        parsed = setting.parse(default) if default else setting.default
        assert parsed == setting.default, f"{name} defaults to {default!r}, {setting.env} to {setting.default!r}"
        if setting.minimum is not None and "MinValue" in parameter:
            assert int(parameter["MinValue"]) >= setting.minimum, name


def test_the_template_defaults_are_valid_settings_for_every_function(stack: Stack) -> None:
    for function in FUNCTIONS:
        load_settings(stack.resolve(stack.resources[function]["Properties"]["Environment"]["Variables"]))


def test_the_runner_image_defaults_are_overridden_by_the_template(stack: Stack) -> None:
    dockerfile = (ROOT / "runner_container" / "Dockerfile").read_text("utf-8")
    baked = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", dockerfile)) & set(BY_NAME)
    assert baked, "the Dockerfile no longer sets any setting; drop this test"
    assert baked <= set(environments(stack)["Runner"])


# --- the code reads the environment only through the settings table -----------------------------


def environment_reads(path: Path) -> Iterator[tuple[str, ast.expr | None]]:
    """(variable, default expression) of every os.environ.get / os.getenv / os.environ[...] in ``path``."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            target = ast.unparse(node.func)
            if target in {"os.environ.get", "os.getenv"} and isinstance(node.args[0], ast.Constant):
                yield str(node.args[0].value), node.args[1] if len(node.args) > 1 else None
        if (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
        ):
            yield str(node.slice.value), None


def deployed_sources() -> list[Path]:
    """The Python files the API package and the runner image ship."""
    chalicelib = sorted((ROOT / "chalicelib").rglob("*.py"))
    return [ROOT / "app.py", *chalicelib, *sorted((ROOT / "runner_container").glob("*.py"))]


def test_the_deployed_code_reads_only_settings_and_with_the_tables_defaults() -> None:
    reads = [(path, name, default) for path in deployed_sources() for name, default in environment_reads(path)]
    assert reads, "no environment reads found; the scan is broken"
    for path, name, default in reads:
        where = f"{path.relative_to(ROOT)} reads {name}"
        if name in BY_NAME:
            assert default is not None and isinstance(default, ast.Constant), f"{where} without the table's default"
            assert BY_NAME[name].parse(str(default.value)) == BY_NAME[name].default, f"{where} with another default"
        else:
            assert name in NOT_SETTINGS or name.startswith("AWS_"), f"{where}, which is not a setting"
