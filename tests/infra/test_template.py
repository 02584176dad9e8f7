"""The packaged AWS stack: what each resource is and what each role may do.

Policies are checked by evaluating them (tests/infra/cfn.py) for the requests the code makes,
with the template resolved to concrete ARNs, so a test fails when a permission the code needs is
missing as well as when one it must not have is granted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pynamodb.attributes import TTLAttribute

from chalicelib.config import load_settings
from chalicelib.errors import errors_by_code
from chalicelib.kv.models import make_kv_models
from chalicelib.registry.models import make_models
from chalicelib.secrets.models import make_secret_model
from devstack.provision import MAX_RECEIVE_COUNT
from infra.check import BOOTSTRAP_TEMPLATE, Packaged, lint
from tests.infra.cfn import ACCOUNT, REGION, Request, Stack, allows, denies, failed_rules

pytestmark = pytest.mark.xdist_group("infra")

ROOT = Path(__file__).resolve().parents[2]
BUCKET = f"ext-bundles-dev-{ACCOUNT}-{REGION}"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
HEX = "ab" * 32
CANONICAL_OBJECTS = ("bundle.tar.zst", "manifest.json", "signature.json", "entry.wasm", "published.json")
PRECOMPILED = f"{BUCKET_ARN}/sha256/{HEX}/precompiled/wasmtime-50.0.1-x86_64-linux-0123abcd.cwasm"
STAGED = f"{BUCKET_ARN}/staging/tenant-1/upload-1/bundle.tar.zst"
TABLES = ("extensions", "versions", "installs", "uploads", "ratelimits", "audit", "kv", "secrets")
FUNCTIONS = ("APIHandler", "FinalizeWorker", "Runner", "RunnerUi", "Compiler")
COMPILE_FAILURE = (
    f"{BUCKET_ARN}/sha256/{HEX}/precompiled/wasmtime-50.0.1-x86_64-linux-0123abcd.failed-0123456789ab.json"
)


def canonical(name: str) -> str:
    return f"{BUCKET_ARN}/sha256/{HEX}/{name}"


def role_statements(stack: Stack, function: str) -> list[dict[str, Any]]:
    """Every statement of the role ``function`` runs as, resolved."""
    role_ref = stack.template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = stack.resolve(stack.resources[role_ref]["Properties"]["Policies"])
    return [statement for policy in policies for statement in policy["PolicyDocument"]["Statement"]]


def can(stack: Stack, function: str, action: str, resource: str, **context: str) -> bool:
    return allows(role_statements(stack, function), Request(action, resource, context=context))


def bucket_policy(stack: Stack) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = stack.resolve(
        stack.resources["BundleBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    )
    return statements


def bucket_denies(stack: Stack, action: str, resource: str, principal: str = "", **context: str) -> bool:
    full = {"aws:SecureTransport": "true", **context}
    return denies(bucket_policy(stack), Request(action, resource, principal, full))


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/ext-{name}"


def runner_arn(stack: Stack) -> str:
    arn: str = stack.resolve({"Fn::GetAtt": ["Runner", "Arn"]})
    return arn


def compiler_arn(stack: Stack) -> str:
    arn: str = stack.resolve({"Fn::GetAtt": ["Compiler", "Arn"]})
    return arn


def roles_granting(stack: Stack, action: str, resource: str) -> list[str]:
    return sorted(
        name
        for name, role in stack.of_type("AWS::IAM::Role").items()
        if any(
            allows(policy["PolicyDocument"]["Statement"], Request(action, resource))
            for policy in stack.resolve(role["Properties"].get("Policies", []))
        )
    )


# --- the template as a whole --------------------------------------------------------------------


def test_the_packaged_stack_and_the_bootstrap_stack_pass_cfn_lint(packaged: Packaged) -> None:
    assert lint(packaged.template) == []
    assert lint(BOOTSTRAP_TEMPLATE) == []


PRODUCTION = {
    "Stage": "prod",
    "SigningTrustBundle": "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n",
    "ExtAuthJwks": "https://auth.example.com/.well-known/jwks.json",
    "ExtAuthIssuer": "https://auth.example.com/",
    "ExtAuthAudience": "ext-platform",
}


def test_a_production_stack_with_a_jwks_issuer_audience_and_trust_bundle_passes_the_rules(
    template: dict[str, Any],
) -> None:
    assert failed_rules(template, PRODUCTION) == []


@pytest.mark.parametrize("stage", ["prod", "dev"])
@pytest.mark.parametrize("missing", ["ExtAuthIssuer", "ExtAuthAudience"])
def test_a_jwks_without_issuer_or_audience_is_refused_in_every_stage(
    template: dict[str, Any], stage: str, missing: str
) -> None:
    # One identity provider signs tokens for many applications with the same keys: without `iss` and
    # `aud`, a token issued for another application would be accepted here (issue 9).
    failed = failed_rules(template, {**PRODUCTION, "Stage": stage, missing: ""})
    assert any(missing in description for description in failed), failed


@pytest.mark.parametrize("missing", ["SigningTrustBundle", "ExtAuthJwks"])
def test_production_fails_closed_without_a_trust_bundle_or_a_jwks(template: dict[str, Any], missing: str) -> None:
    failed = failed_rules(template, {**PRODUCTION, missing: ""})
    assert any(missing in description for description in failed), failed


def test_chalice_packages_the_api_and_the_finalize_worker_with_a_role_each(stack: Stack) -> None:
    api, worker = stack.resources["APIHandler"]["Properties"], stack.resources["FinalizeWorker"]["Properties"]
    assert (api["Handler"], worker["Handler"]) == ("app.app", "app.finalize_worker")
    assert api["Role"] != worker["Role"]
    for function, policy_file in (("APIHandler", "policy-api.json"), ("FinalizeWorker", "policy-finalize-worker.json")):
        role = stack.resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
        document = stack.resources[role]["Properties"]["Policies"][0]["PolicyDocument"]
        assert document == json.loads((ROOT / ".chalice" / policy_file).read_text("utf-8"))


def test_no_function_is_left_on_a_shared_or_generated_default_role(stack: Stack) -> None:
    functions = stack.of_type("AWS::Serverless::Function")
    assert set(functions) == set(FUNCTIONS)
    roles = [stack.resolve(f["Properties"]["Role"]) for f in functions.values()]
    assert len(set(roles)) == len(roles)
    assert "DefaultRole" not in stack.resources


# --- the bucket -----------------------------------------------------------------------------------


def test_the_bucket_blocks_public_access_and_encrypts_at_rest(stack: Stack) -> None:
    bucket = stack.resolve(stack.resources["BundleBucket"])
    properties = bucket["Properties"]
    assert properties["BucketName"] == BUCKET
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(properties["PublicAccessBlockConfiguration"]) == 4
    rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert properties["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert "VersioningConfiguration" not in properties
    assert bucket["DeletionPolicy"] == "Retain"


def test_the_bucket_refuses_every_request_without_tls(stack: Stack) -> None:
    for action, resource in (("s3:GetObject", canonical("bundle.tar.zst")), ("s3:ListBucket", BUCKET_ARN)):
        assert bucket_denies(stack, action, resource, **{"aws:SecureTransport": "false"})
        assert not bucket_denies(stack, action, resource)


def test_the_bucket_refuses_store_writes_that_could_replace_an_object(stack: Stack) -> None:
    creation = {"s3:ObjectCreationOperation": "true"}
    for name in (*CANONICAL_OBJECTS, "precompiled/x.cwasm"):
        key = canonical(name)
        assert bucket_denies(stack, "s3:PutObject", key, **creation)
        assert bucket_denies(stack, "s3:PutObject", key, **creation, **{"s3:if-match": '"etag"'})
        assert not bucket_denies(stack, "s3:PutObject", key, **creation, **{"s3:if-none-match": "*"})


def test_the_bucket_lets_multipart_steps_without_a_condition_header_through(stack: Stack) -> None:
    # CreateMultipartUpload and UploadPartCopy cannot carry If-None-Match; CompleteMultipartUpload does.
    key = canonical("bundle.tar.zst")
    assert not bucket_denies(stack, "s3:PutObject", key, **{"s3:ObjectCreationOperation": "false"})


def test_staging_uploads_are_not_held_to_the_store_rules(stack: Stack) -> None:
    assert not bucket_denies(stack, "s3:PutObject", STAGED, **{"s3:ObjectCreationOperation": "true"})
    assert not bucket_denies(stack, "s3:DeleteObject", STAGED)


def test_nobody_can_delete_a_published_object_without_a_break_glass_role(stack: Stack) -> None:
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
        key = canonical("bundle.tar.zst")
        assert bucket_denies(stack, action, key, **{"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/admin"})


def test_only_the_break_glass_role_can_delete_published_objects(template: dict[str, Any]) -> None:
    break_glass = f"arn:aws:iam::{ACCOUNT}:role/break-glass"
    stack = Stack(template, {"BreakGlassRoleArn": break_glass})
    key = canonical("bundle.tar.zst")
    assert not bucket_denies(stack, "s3:DeleteObject", key, **{"aws:PrincipalArn": break_glass})
    worker = f"arn:aws:iam::{ACCOUNT}:role/ext-platform-test-FinalizeWorkerRole"
    assert bucket_denies(stack, "s3:DeleteObject", key, **{"aws:PrincipalArn": worker})


def test_staging_expires_after_a_day_and_so_do_incomplete_multipart_uploads(stack: Stack) -> None:
    rules = stack.resolve(stack.resources["BundleBucket"]["Properties"]["LifecycleConfiguration"]["Rules"])
    assert {"Id": "ExpireStagingUploads", "Status": "Enabled", "Prefix": "staging/", "ExpirationInDays": 1} in rules
    aborts = [rule for rule in rules if "AbortIncompleteMultipartUpload" in rule]
    assert aborts == [
        {
            "Id": "AbortIncompleteMultipartUploads",
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]


def test_browser_uploads_are_allowed_from_the_admin_ui_origins_only(template: dict[str, Any]) -> None:
    cors = template["Resources"]["BundleBucket"]["Properties"]["CorsConfiguration"]

    def rule(parameters: dict[str, str]) -> dict[str, Any]:
        [only] = Stack(template, parameters).resolve(cors)["CorsRules"]
        return dict(only)

    api_origin = f"https://ext-platform-test-RestAPI.execute-api.{REGION}.amazonaws.com"
    default = rule({})
    assert default["AllowedOrigins"] == [api_origin]
    assert default["AllowedMethods"] == ["PUT"]
    assert default["ExposedHeaders"] == ["ETag"]
    assert set(default["AllowedHeaders"]) == {"content-type", "x-amz-checksum-sha256"}
    configured = rule({"ApiDomainName": "ext.example.com", "AdminOrigins": "https://admin.example.com"})
    assert configured["AllowedOrigins"] == [api_origin, "https://ext.example.com", "https://admin.example.com"]


def test_objects_created_under_staging_notify_the_finalize_queue(stack: Stack) -> None:
    notification = stack.resolve(stack.resources["BundleBucket"]["Properties"]["NotificationConfiguration"])
    [queue] = notification["QueueConfigurations"]
    assert queue["Event"] == "s3:ObjectCreated:*"
    assert queue["Queue"] == stack.resolve({"Fn::GetAtt": ["FinalizeQueue", "Arn"]})
    assert queue["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "staging/"}]


# --- the queue ------------------------------------------------------------------------------------


def test_only_this_bucket_can_send_to_the_finalize_queue(stack: Stack) -> None:
    policy = stack.resolve(stack.resources["FinalizeQueuePolicy"]["Properties"]["PolicyDocument"])
    queue_arn = stack.resolve({"Fn::GetAtt": ["FinalizeQueue", "Arn"]})
    ours = {"aws:SourceArn": BUCKET_ARN, "aws:SourceAccount": ACCOUNT}
    theirs = {"aws:SourceArn": "arn:aws:s3:::someone-else", "aws:SourceAccount": "999999999999"}
    assert allows(policy["Statement"], Request("sqs:SendMessage", queue_arn, "s3.amazonaws.com", ours))
    assert not allows(policy["Statement"], Request("sqs:SendMessage", queue_arn, "s3.amazonaws.com", theirs))


def test_the_worker_reads_this_stacks_queue_one_message_at_a_time(stack: Stack) -> None:
    [event] = stack.resolve(stack.resources["FinalizeWorker"]["Properties"]["Events"]).values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == stack.resolve({"Fn::GetAtt": ["FinalizeQueue", "Arn"]})
    assert event["Properties"]["BatchSize"] == 1


def test_failed_finalize_events_park_in_a_dead_letter_queue_that_raises_an_alarm(stack: Stack) -> None:
    queue = stack.resolve(stack.resources["FinalizeQueue"]["Properties"])
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": stack.resolve({"Fn::GetAtt": ["FinalizeDeadLetterQueue", "Arn"]}),
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    worker_timeout = stack.resources["FinalizeWorker"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    alarm = stack.resolve(stack.resources["FinalizeDeadLetterAlarm"]["Properties"])
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "ext-platform-test-FinalizeDeadLetterQueue"}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


def test_the_dead_letter_alarm_notifies_the_configured_topic(template: dict[str, Any]) -> None:
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:oncall"
    alarm = Stack(template, {"AlarmTopicArn": topic}).resolve(template["Resources"]["FinalizeDeadLetterAlarm"])
    assert alarm["Properties"]["AlarmActions"] == [topic]


# --- the registry tables --------------------------------------------------------------------------


def key_pairs(items: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(item["AttributeName"], item.get("KeyType") or item["AttributeType"]) for item in items}


def test_the_tables_have_the_names_keys_indexes_and_ttl_of_the_pynamodb_models(template: dict[str, Any]) -> None:
    stack = Stack(template, {"RegistryTablePrefix": "acme-prod-"})
    tables = {
        stack.resolve(t["Properties"]["TableName"]): stack.resolve(t["Properties"])
        for t in stack.of_type("AWS::DynamoDB::Table").values()
    }
    settings = load_settings(
        {
            "REGISTRY_TABLE_PREFIX": "acme-prod-",
            "KV_TABLE_NAME": "acme-prod-kv",
            "SECRETS_TABLE_NAME": "acme-prod-secrets",
        }
    )
    models = (*make_models(settings).all(), make_kv_models(settings).entries, make_secret_model(settings))
    assert set(tables) == {model.Meta.table_name for model in models}
    for model in models:
        table, schema = tables[model.Meta.table_name], model._get_schema()
        assert key_pairs(table["KeySchema"]) == key_pairs(schema["key_schema"])
        assert key_pairs(table["AttributeDefinitions"]) == key_pairs(schema["attribute_definitions"])
        indexes = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {index["index_name"] for index in schema["global_secondary_indexes"]}
        for index in schema["global_secondary_indexes"]:
            assert key_pairs(indexes[index["index_name"]]["KeySchema"]) == key_pairs(index["key_schema"])
            assert indexes[index["index_name"]]["Projection"] == index["projection"]
        ttl = [a.attr_name for a in model.get_attributes().values() if isinstance(a, TTLAttribute)]
        expected_ttl = {"AttributeName": ttl[0], "Enabled": True} if ttl else None
        assert table.get("TimeToLiveSpecification") == expected_ttl


def test_the_tables_are_on_demand_recoverable_and_kept(stack: Stack) -> None:
    for table in stack.of_type("AWS::DynamoDB::Table").values():
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert table["DeletionPolicy"] == "Retain"


def test_upload_sessions_expire_by_ttl(stack: Stack) -> None:
    uploads = stack.resources["UploadsTable"]["Properties"]
    assert uploads["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}


# --- the runner -----------------------------------------------------------------------------------


def test_the_runner_is_a_container_image_function_with_room_for_its_cache(stack: Stack) -> None:
    runner = stack.resolve(stack.resources["Runner"]["Properties"])
    settings = load_settings(runner["Environment"]["Variables"])
    assert runner["PackageType"] == "Image"
    assert runner["ImageUri"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/runner:abc"
    assert int(runner["MemorySize"]) >= 1024
    assert int(runner["Timeout"]) * 1000 > settings.runner_max_timeout_ms
    tmp_bytes = int(runner["EphemeralStorage"]["Size"]) * 1024 * 1024
    assert tmp_bytes > settings.runner_cache_max_bytes + settings.bundle_max_unpacked_bytes
    assert settings.runner_cache_dir.startswith("/tmp/")
    assert int(runner["ReservedConcurrentExecutions"]) > 0


def test_the_compile_function_runs_the_runner_image_with_room_for_its_jobs(stack: Stack) -> None:
    runner = stack.resolve(stack.resources["Runner"]["Properties"])
    compiler = stack.resolve(stack.resources["Compiler"]["Properties"])
    settings = load_settings(compiler["Environment"]["Variables"])
    assert (compiler["ImageUri"], compiler["Architectures"]) == (runner["ImageUri"], runner["Architectures"])
    # The job's child may use its whole limit beside the job's own process (about 300 MB).
    assert int(compiler["MemorySize"]) >= settings.runner_compile_memory_mb + 300
    # The child is killed at its limit, and the job still fetches the bundle and stores the outcome.
    assert int(compiler["Timeout"]) * 1000 >= settings.runner_compile_timeout_ms + 60_000
    assert int(compiler["ReservedConcurrentExecutions"]) > 0
    tmp_bytes = int(compiler["EphemeralStorage"]["Size"]) * 1024 * 1024
    assert tmp_bytes > settings.bundle_max_unpacked_bytes + settings.runner_compile_max_wasm_bytes


def test_only_the_compile_function_runs_the_compile_handler(stack: Stack) -> None:
    compiler = stack.resolve(stack.resources["Compiler"]["Properties"])
    assert compiler["ImageConfig"]["Command"] == ["runner_container.lambda_handler.compile_handler"]
    for function in ("Runner", "RunnerUi"):
        # The image's default command, the runner's handler, which refuses compile jobs.
        assert "ImageConfig" not in stack.resources[function]["Properties"], function


# A Python component (componentize-py, about 20 MB of wasm) took 11 s and 410 MB of peak RSS to compile here
# with 2 cores, and 20-60 s on a busier machine; a JavaScript one (12 MB) less (bench/components.py).
COMPONENT_WASM_BYTES = 20 * 1024 * 1024
COMPONENT_COMPILE_PEAK_MB = 410
COMPONENT_COMPILE_SLOW_S = 60


def test_the_compile_functions_defaults_fit_a_component_compile(stack: Stack) -> None:
    compiler = stack.resolve(stack.resources["Compiler"]["Properties"])
    settings = load_settings(compiler["Environment"]["Variables"])
    assert settings.runner_compile_max_wasm_bytes >= COMPONENT_WASM_BYTES
    # RLIMIT_AS caps address space, not RSS: leave wasmtime's reservations room beyond the peak.
    assert settings.runner_compile_memory_mb >= 2 * COMPONENT_COMPILE_PEAK_MB
    assert settings.runner_compile_timeout_ms >= 2 * COMPONENT_COMPILE_SLOW_S * 1000
    # The job reserves 8x the wasm for the native code in the compile function's own cache.
    assert settings.runner_cache_max_bytes >= 8 * COMPONENT_WASM_BYTES + settings.bundle_max_unpacked_bytes


def test_one_tenant_can_take_at_most_a_quarter_of_the_runners_reserved_concurrency(stack: Stack) -> None:
    api = load_settings(stack.resolve(stack.resources["APIHandler"]["Properties"]["Environment"]["Variables"]))
    runner = stack.resolve(stack.resources["Runner"]["Properties"])
    assert 0 < api.ext_gateway_tenant_concurrency * 4 <= int(runner["ReservedConcurrentExecutions"])
    # The runner's calls end by the gateway's deadline (it is in the payload); the function outlives both.
    assert api.ext_gateway_timeout_ms < int(runner["Timeout"]) * 1000


def test_a_zero_reserved_concurrency_leaves_the_runner_unreserved(template: dict[str, Any]) -> None:
    runner = Stack(template, {"RunnerReservedConcurrency": "0"}).resolve(template["Resources"]["Runner"])
    assert "ReservedConcurrentExecutions" not in runner["Properties"]


def test_the_runner_image_repository_keeps_tags_immutable_and_lets_only_lambda_pull(
    bootstrap_template: dict[str, Any],
) -> None:
    stack = Stack(bootstrap_template)
    repository = stack.resolve(stack.resources["RunnerRepository"]["Properties"])
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    [statement] = repository["RepositoryPolicyText"]["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert sorted(statement["Action"]) == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


def test_every_function_logs_to_its_own_group_with_a_retention(stack: Stack) -> None:
    groups = set()
    for function in FUNCTIONS:
        group_ref = stack.resources[function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        group = stack.resources[group_ref]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert int(stack.resolve(group["Properties"]["RetentionInDays"])) > 0
        group_arn = stack.resolve({"Fn::GetAtt": [group_ref, "Arn"]})
        assert can(stack, function, "logs:PutLogEvents", group_arn)
        groups.add(group_arn)
    for function in FUNCTIONS:
        assert sum(can(stack, function, "logs:PutLogEvents", arn) for arn in groups) == 1


# --- least privilege: S3 --------------------------------------------------------------------------


def test_the_api_stages_uploads_but_cannot_write_the_store(stack: Stack) -> None:
    for action in (
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    ):
        assert can(stack, "APIHandler", action, STAGED), action
    for name in CANONICAL_OBJECTS:
        assert not can(stack, "APIHandler", "s3:PutObject", canonical(name))
    assert not can(stack, "APIHandler", "s3:PutObject", PRECOMPILED)
    assert not can(stack, "APIHandler", "s3:DeleteObject", canonical("bundle.tar.zst"))


def test_the_finalize_worker_writes_the_canonical_objects_but_never_compiled_code(stack: Stack) -> None:
    for name in CANONICAL_OBJECTS:
        assert can(stack, "FinalizeWorker", "s3:PutObject", canonical(name)), name
        assert can(stack, "FinalizeWorker", "s3:GetObject", canonical(name)), name
    assert can(stack, "FinalizeWorker", "s3:AbortMultipartUpload", canonical("bundle.tar.zst"))
    assert not can(stack, "FinalizeWorker", "s3:PutObject", PRECOMPILED)
    assert not can(stack, "FinalizeWorker", "s3:PutObject", f"{BUCKET_ARN}/sha256/{HEX}/precompiled/bundle.tar.zst")
    for action in ("s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert can(stack, "FinalizeWorker", action, STAGED), action
    assert not can(stack, "FinalizeWorker", "s3:PutObject", STAGED)


def test_the_runner_reads_the_store_and_writes_only_precompiled_code(stack: Stack) -> None:
    for name in CANONICAL_OBJECTS:
        assert can(stack, "Runner", "s3:GetObject", canonical(name))
        assert not can(stack, "Runner", "s3:PutObject", canonical(name))
    assert can(stack, "Runner", "s3:PutObject", PRECOMPILED)
    assert can(stack, "Runner", "s3:PutObject", COMPILE_FAILURE)
    assert not can(stack, "Runner", "s3:GetObject", STAGED)
    assert not can(stack, "Runner", "s3:DeleteObject", PRECOMPILED)


def test_the_compile_function_reads_the_store_and_writes_only_compile_outcomes(stack: Stack) -> None:
    for name in CANONICAL_OBJECTS:
        assert can(stack, "Compiler", "s3:GetObject", canonical(name))
        assert not can(stack, "Compiler", "s3:PutObject", canonical(name))
    assert can(stack, "Compiler", "s3:PutObject", PRECOMPILED)
    assert can(stack, "Compiler", "s3:PutObject", COMPILE_FAILURE)
    assert not can(stack, "Compiler", "s3:GetObject", STAGED)
    assert not can(stack, "Compiler", "s3:DeleteObject", COMPILE_FAILURE)


def test_missing_objects_read_as_404_for_every_function_but_listings_stay_in_its_prefixes(stack: Stack) -> None:
    # S3 answers a missing key with 404 only to callers that hold s3:ListBucket; that check has no s3:prefix.
    for function in FUNCTIONS:
        assert can(stack, function, "s3:ListBucket", BUCKET_ARN), function
    assert can(stack, "Runner", "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "sha256/ab"})
    assert not can(stack, "Compiler", "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "staging/"})
    assert not can(stack, "Runner", "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "staging/"})
    assert not can(stack, "APIHandler", "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "sha256/"})
    assert not can(stack, "Runner", "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": ""})


# --- least privilege: DynamoDB, SQS, Lambda -------------------------------------------------------


def test_each_function_reaches_only_its_own_tables(stack: Stack) -> None:
    expected = {
        "APIHandler": {"extensions", "versions", "installs", "uploads", "ratelimits", "kv"},
        "FinalizeWorker": {"extensions", "versions", "uploads"},
        "Runner": {"kv", "secrets"},
        "RunnerUi": set(),
        "Compiler": set(),
    }
    for function, tables in expected.items():
        reachable = {t for t in TABLES if can(stack, function, "dynamodb:GetItem", table_arn(t))}
        assert reachable == tables, function
    assert can(stack, "APIHandler", "dynamodb:Query", table_arn("versions") + "/index/by_hash")
    assert can(stack, "FinalizeWorker", "dynamodb:Query", table_arn("versions") + "/index/by_hash")
    assert not can(stack, "FinalizeWorker", "dynamodb:DeleteItem", table_arn("uploads"))
    for function in FUNCTIONS:
        assert not can(stack, function, "dynamodb:DeleteTable", table_arn("versions"))


def test_the_audit_log_can_be_appended_to_and_read_but_never_changed(stack: Stack) -> None:
    audit = table_arn("audit")
    assert can(stack, "APIHandler", "dynamodb:PutItem", audit)
    assert can(stack, "APIHandler", "dynamodb:Query", audit)
    assert can(stack, "FinalizeWorker", "dynamodb:PutItem", audit)
    for function in FUNCTIONS:
        for action in ("dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"):
            assert not can(stack, function, action, audit), (function, action)
    assert not can(stack, "Runner", "dynamodb:PutItem", audit)


def test_only_the_worker_consumes_the_finalize_queue(stack: Stack) -> None:
    queue_arn = stack.resolve({"Fn::GetAtt": ["FinalizeQueue", "Arn"]})
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert can(stack, "FinalizeWorker", action, queue_arn)
        assert not can(stack, "APIHandler", action, queue_arn)
        assert not can(stack, "Runner", action, queue_arn)


def test_the_api_hands_finalize_to_the_worker(stack: Stack) -> None:
    queue_arn = stack.resolve({"Fn::GetAtt": ["FinalizeQueue", "Arn"]})
    assert can(stack, "APIHandler", "sqs:SendMessage", queue_arn)
    assert not can(stack, "Runner", "sqs:SendMessage", queue_arn)
    variables = stack.resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert variables["FINALIZE_MODE"] == "queue"
    assert stack.resolve(variables["FINALIZE_QUEUE_URL"]) == stack.resolve({"Ref": "FinalizeQueue"})


def test_only_the_gateway_can_invoke_the_runner(stack: Stack) -> None:
    runner = runner_arn(stack)
    assert can(stack, "APIHandler", "lambda:InvokeFunction", runner)
    assert not can(stack, "Runner", "lambda:InvokeFunction", runner)
    worker = stack.resolve({"Fn::GetAtt": ["FinalizeWorker", "Arn"]})
    assert not can(stack, "APIHandler", "lambda:InvokeFunction", worker)
    assert roles_granting(stack, "lambda:InvokeFunction", runner) == ["ApiHandlerRole"]


def test_compile_jobs_are_asked_for_by_the_worker_after_a_publish_and_by_runners_only(stack: Stack) -> None:
    compiler = compiler_arn(stack)
    assert can(stack, "FinalizeWorker", "lambda:InvokeFunction", compiler)
    assert can(stack, "Runner", "lambda:InvokeFunction", compiler)
    assert roles_granting(stack, "lambda:InvokeFunction", compiler) == ["FinalizeWorkerRole", "RunnerRole"]
    public = [
        p
        for p in stack.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": "Compiler"}
    ]
    assert public == [], "the compile function must not be reachable from outside the account"


def public_permissions(stack: Stack, function: str) -> list[dict[str, Any]]:
    return [
        stack.resolve(p["Properties"])
        for p in stack.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": function}
    ]


def test_the_public_reaches_only_the_ui_function_and_only_through_its_function_url(stack: Stack) -> None:
    permissions = public_permissions(stack, "RunnerUi")
    assert sorted(p["Action"] for p in permissions) == ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"]
    for permission in permissions:
        if permission["Action"] == "lambda:InvokeFunction":
            assert permission["InvokedViaFunctionUrl"] is True
        else:
            assert permission["FunctionUrlAuthType"] == "NONE"
    url = stack.resolve(stack.resources["RunnerUrl"]["Properties"])
    ui_arn = stack.resolve({"Fn::GetAtt": ["RunnerUi", "Arn"]})
    assert (url["TargetFunctionArn"], url["AuthType"]) == (ui_arn, "NONE")
    # The runner that executes has no public entry: only the API's role reaches it.
    assert public_permissions(stack, "Runner") == []
    assert [u for u in stack.of_type("AWS::Lambda::Url").values() if "Runner" in str(u)] == [
        stack.resources["RunnerUrl"]
    ]


def test_ui_traffic_has_a_function_and_a_concurrency_of_its_own(stack: Stack) -> None:
    # One unauthenticated flood of /ext-ui/ requests must not take the executions calls need.
    runner = stack.resolve(stack.resources["Runner"]["Properties"])
    ui = stack.resolve(stack.resources["RunnerUi"]["Properties"])
    assert ui["ImageUri"] == runner["ImageUri"]
    assert int(ui["ReservedConcurrentExecutions"]) > 0
    assert int(runner["ReservedConcurrentExecutions"]) > 0
    assert stack.resolve(stack.resources["APIHandler"]["Properties"]["Environment"]["Variables"])[
        "RUNNER_FUNCTION_NAME"
    ] == stack.resolve({"Ref": "Runner"})
    settings = load_settings(ui["Environment"]["Variables"])
    assert settings.runner_cache_dir.startswith("/tmp/")
    tmp_bytes = int(ui["EphemeralStorage"]["Size"]) * 1024 * 1024
    assert tmp_bytes > settings.runner_cache_max_bytes


def test_the_ui_function_reads_the_store_and_writes_nothing(stack: Stack) -> None:
    for name in CANONICAL_OBJECTS:
        assert can(stack, "RunnerUi", "s3:GetObject", canonical(name))
        assert not can(stack, "RunnerUi", "s3:PutObject", canonical(name))
    assert not can(stack, "RunnerUi", "s3:PutObject", PRECOMPILED)
    assert not can(stack, "RunnerUi", "s3:PutObject", COMPILE_FAILURE)
    assert not can(stack, "RunnerUi", "s3:GetObject", STAGED)
    assert not can(stack, "RunnerUi", "lambda:InvokeFunction", runner_arn(stack))
    assert not can(stack, "RunnerUi", "lambda:InvokeFunction", compiler_arn(stack))


def test_a_zero_reserved_concurrency_leaves_the_ui_function_unreserved(template: dict[str, Any]) -> None:
    ui = Stack(template, {"RunnerUiReservedConcurrency": "0"}).resolve(template["Resources"]["RunnerUi"])
    assert "ReservedConcurrentExecutions" not in ui["Properties"]


# --- extension state: KV and secrets ----------------------------------------------------------------

KV_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:Query",
)


def test_only_the_runner_and_the_api_reach_the_kv_table(stack: Stack) -> None:
    for action in KV_ACTIONS:
        assert can(stack, "Runner", action, table_arn("kv")), action
        assert can(stack, "APIHandler", action, table_arn("kv")), action
        for function in ("FinalizeWorker", "RunnerUi", "Compiler"):
            assert not can(stack, function, action, table_arn("kv")), (function, action)
    for action in ("dynamodb:Scan", "dynamodb:BatchWriteItem", "dynamodb:DeleteTable"):
        assert not can(stack, "Runner", action, table_arn("kv")), action
        assert not can(stack, "APIHandler", action, table_arn("kv")), action
    for registry_table in ("installs", "versions"):
        assert not can(stack, "Runner", "dynamodb:GetItem", table_arn(registry_table))


def test_the_api_writes_and_lists_secrets_and_the_runner_only_reads_one(stack: Stack) -> None:
    for action in ("dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"):
        assert can(stack, "APIHandler", action, table_arn("secrets")), action
        assert not can(stack, "Runner", action, table_arn("secrets")), action
    assert can(stack, "Runner", "dynamodb:GetItem", table_arn("secrets"))
    assert not can(stack, "APIHandler", "dynamodb:Scan", table_arn("secrets"))
    assert not any(can(stack, "FinalizeWorker", action, table_arn("secrets")) for action in KV_ACTIONS)


def key_policy(stack: Stack) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = stack.resolve(
        stack.resources["SecretsKey"]["Properties"]["KeyPolicy"]["Statement"]
    )
    return statements


def key_allows(stack: Stack, who: str, action: str, with_context: bool = True) -> bool:
    """Whether the key policy lets ``who`` (a role's logical id, or ``root``) do ``action`` on the key."""
    principal = f"arn:aws:iam::{ACCOUNT}:root" if who == "root" else stack.resolve({"Fn::GetAtt": [who, "Arn"]})
    context = {"aws:PrincipalArn": principal}
    if with_context:
        context |= {f"kms:EncryptionContext:{key}": "x" for key in ("tenant", "extension", "name")}
    key_arn = stack.resolve({"Fn::GetAtt": ["SecretsKey", "Arn"]})
    return allows(key_policy(stack), Request(action, key_arn, principal, context))


def test_only_the_runner_decrypts_secrets_and_only_the_api_makes_data_keys(stack: Stack) -> None:
    assert key_allows(stack, "RunnerRole", "kms:Decrypt")
    assert key_allows(stack, "ApiHandlerRole", "kms:GenerateDataKey")
    for who in ("ApiHandlerRole", "FinalizeWorkerRole", "RunnerUiRole", "CompilerRole", "root"):
        assert not key_allows(stack, who, "kms:Decrypt"), who
    for who in ("RunnerRole", "FinalizeWorkerRole", "RunnerUiRole", "CompilerRole", "root"):
        assert not key_allows(stack, who, "kms:GenerateDataKey"), who
    for who in ("RunnerRole", "ApiHandlerRole", "root"):
        for action in ("kms:Encrypt", "kms:ReEncryptFrom", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext"):
            assert not key_allows(stack, who, action), (who, action)


def test_the_secrets_key_is_used_only_for_one_named_secret_at_a_time(stack: Stack) -> None:
    assert not key_allows(stack, "RunnerRole", "kms:Decrypt", with_context=False)
    assert not key_allows(stack, "ApiHandlerRole", "kms:GenerateDataKey", with_context=False)


def test_the_account_administers_the_secrets_key_but_cannot_use_it(stack: Stack) -> None:
    for action in ("kms:PutKeyPolicy", "kms:DescribeKey", "kms:EnableKeyRotation", "kms:ScheduleKeyDeletion"):
        assert key_allows(stack, "root", action), action
    key = stack.resolve(stack.resources["SecretsKey"])
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["Properties"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert key["DeletionPolicy"] == "Retain"


def test_the_api_names_the_secrets_key_by_its_alias_and_the_functions_their_state_tables(stack: Stack) -> None:
    def settings_of(function: str) -> Any:
        return load_settings(stack.resolve(stack.resources[function]["Properties"]["Environment"]["Variables"]))

    alias = stack.resolve(stack.resources["SecretsKeyAlias"]["Properties"])
    assert alias["TargetKeyId"] == stack.resolve({"Ref": "SecretsKey"})
    assert settings_of("APIHandler").secrets_kms_key_id == alias["AliasName"] == "alias/ext-secrets-dev"
    for function in ("APIHandler", "Runner"):
        assert settings_of(function).secrets_table_name == "ext-secrets"
    assert settings_of("Runner").kv_table_name == "ext-kv"


# --- API Gateway's own answers (issue 14, item 3) -------------------------------------------------

_GATEWAY_DEFAULT_STATUS = {
    "DEFAULT_4XX": 400,
    "DEFAULT_5XX": 500,
    "THROTTLED": 429,
    "REQUEST_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTEGRATION_TIMEOUT": 504,
    "WAF_FILTERED": 403,
}


def test_api_gateways_own_errors_use_the_contracts_body_with_a_documented_code(stack: Stack) -> None:
    answers = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in stack.of_type("AWS::ApiGateway::GatewayResponse").values()
    }
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN"} <= set(answers)
    codes = errors_by_code()
    for kind, answer in answers.items():
        # API Gateway fills these in; any JSON string stands for them here.
        body = answer["ResponseTemplates"]["application/json"]
        body = body.replace("$context.error.messageString", '"m"').replace("$context.requestId", "r")
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message", "request_id"}, kind
        status = int(answer.get("StatusCode", _GATEWAY_DEFAULT_STATUS.get(kind, 0)))
        assert codes[error["code"]].http_status == status, kind
        assert answer["ResponseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
