"""An install's config always fits its version's config_schema: install, PATCH config, upgrade, rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from moto import mock_aws

from chalicelib.config import load_settings
from chalicelib.errors import InstallConfigInvalid
from chalicelib.registry import (
    Actor,
    InstallChange,
    InstallService,
    Models,
    RegistryService,
    SignatureStatus,
    VersionRecord,
    create_tables,
    make_models,
)

NAME = "com.acme.sync"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
V1_SCHEMA = {
    "type": "object",
    "properties": {"retries": {"type": "integer", "maximum": 10}, "host": {"type": "string"}},
}
V2_SCHEMA = {
    "type": "object",
    "required": ["host"],
    "properties": {"retries": {"type": "integer", "maximum": 5}, "host": {"type": "string", "minLength": 1}},
}


@pytest.fixture(scope="module")
def models() -> Iterator[Models]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
            patch.delenv(name, raising=False)
        with mock_aws():
            bound = make_models(load_settings({"REGISTRY_TABLE_PREFIX": "cfg-"}))
            create_tables(bound)
            yield bound


def version(number: str, schema: dict[str, Any] | None) -> VersionRecord:
    manifest: dict[str, Any] = {"name": NAME, "publisher": "Acme", "version": number, "runtime": "wasm-core@1"}
    if schema is not None:
        manifest["config_schema"] = schema
    return VersionRecord.from_manifest(
        manifest,
        content_hash="sha256:" + number.replace(".", "").ljust(64, "0"),
        size=1,
        signature=None,
        signature_status=SignatureStatus.UNSIGNED,
        key_id=None,
        created_at=T0,
        created_by=Actor(tenant="acme", sub="dev"),
    )


@pytest.fixture
def installs(models: Models) -> Iterator[InstallService]:
    registry = RegistryService(models, lambda: T0)
    for number, schema in (("1.0.0", V1_SCHEMA), ("2.0.0", V2_SCHEMA), ("3.0.0", None)):
        registry.register_version(version(number, schema), "acme", None)
    yield InstallService(models, registry, lambda: T0)
    for model in models.all():
        with model.batch_write() as batch:
            for item in model.scan():
                batch.delete(item)


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InstallConfigInvalid) as caught:
        call(*args, **kwargs)
    assert caught.value.code == "CONFIG_INVALID"
    return caught.value.message


def test_an_install_starts_with_the_config_it_was_given_when_it_fits(installs: InstallService) -> None:
    assert installs.install("t1", NAME, "1.0.0", config={"retries": 3}).config == {"retries": 3}
    assert installs.install("t2", NAME, "1.0.0").config == {}


def test_an_install_whose_config_does_not_fit_is_refused_and_nothing_is_written(installs: InstallService) -> None:
    assert refused(installs.install, "t1", NAME, "1.0.0", config={"retries": 11}) == (
        "config.retries: 11 is greater than the maximum of 10"
    )
    assert refused(installs.install, "t1", NAME, "2.0.0") == "config.host: 'host' is a required property"
    assert installs.list("t1") == []


def test_a_config_change_is_checked_against_the_installed_versions_schema(installs: InstallService) -> None:
    installs.install("t1", NAME, "1.0.0")

    assert installs.set_config("t1", NAME, {"retries": 10}).config == {"retries": 10}
    assert refused(installs.set_config, "t1", NAME, {"retries": "ten"}) == (
        "config.retries: 'ten' is not of type 'integer'"
    )
    assert installs.get("t1", NAME).config == {"retries": 10}


def test_an_upgrade_the_current_config_does_not_fit_is_refused_until_a_fitting_config_comes_with_it(
    installs: InstallService,
) -> None:
    installs.install("t1", NAME, "1.0.0", config={"retries": 8})

    message = refused(installs.upgrade, "t1", NAME, "2.0.0")
    assert message.startswith("config.host: 'host' is a required property (the install's current config")
    assert "com.acme.sync@2.0.0" in message
    assert installs.get("t1", NAME).version == "1.0.0"
    assert refused(installs.upgrade, "t1", NAME, "2.0.0", config={"host": "h", "retries": 8}).startswith(
        "config.retries: 8 is greater than the maximum of 5"
    )

    upgraded = installs.upgrade("t1", NAME, "2.0.0", config={"host": "h", "retries": 5})
    assert (upgraded.version, upgraded.config) == ("2.0.0", {"host": "h", "retries": 5})
    assert [entry.version for entry in upgraded.history] == ["1.0.0"]


def test_installing_over_an_install_checks_the_kept_config_against_the_new_version(installs: InstallService) -> None:
    installs.install("t1", NAME, "1.0.0", config={"retries": 8})

    refused(installs.install, "t1", NAME, "2.0.0")
    assert installs.install("t1", NAME, "2.0.0", config={"host": "h"}).config == {"host": "h"}


def test_a_version_without_a_schema_accepts_any_config_and_a_rollback_is_checked_too(
    installs: InstallService,
) -> None:
    installs.install("t1", NAME, "2.0.0", config={"host": "h"})
    installs.upgrade("t1", NAME, "3.0.0")
    installs.set_config("t1", NAME, {"host": ""})

    assert refused(installs.rollback, "t1", NAME).startswith("config.host: '' should be non-empty")
    assert installs.get("t1", NAME).version == "3.0.0"
    rolled = installs.rollback("t1", NAME, config={"host": "back"})
    assert (rolled.version, rolled.config) == ("2.0.0", {"host": "back"})


def test_the_same_version_with_a_new_config_only_changes_the_config(installs: InstallService) -> None:
    first = installs.install("t1", NAME, "1.0.0")

    again = installs.install("t1", NAME, "1.0.0", config={"retries": 1})

    assert (again.version, again.config, again.history) == ("1.0.0", {"retries": 1}, ())
    assert again.install_id == first.install_id


def test_an_update_with_a_version_and_a_config_checks_the_config_against_that_version(installs: InstallService) -> None:
    installs.install("t1", NAME, "1.0.0", config={"retries": 8})

    assert refused(installs.update, "t1", NAME, InstallChange(version="2.0.0")).startswith(
        "config.host: 'host' is a required property"
    )
    upgraded = installs.update("t1", NAME, InstallChange(version="2.0.0", config={"host": "h"}), by="bob")
    assert (upgraded.version, upgraded.config, upgraded.installed_by) == ("2.0.0", {"host": "h"}, "bob")

    # 1.0.0 is in the history: a rollback, with a config that fits 1.0.0 and not 2.0.0.
    assert refused(installs.update, "t1", NAME, InstallChange(version="1.0.0", config={"retries": 11})) == (
        "config.retries: 11 is greater than the maximum of 10"
    )
    back = installs.update("t1", NAME, InstallChange(version="1.0.0", config={"retries": 9}, enabled=False))
    assert (back.version, back.config, back.enabled) == ("1.0.0", {"retries": 9}, False)
    assert [entry.version for entry in back.history] == ["2.0.0"]
