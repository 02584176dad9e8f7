"""`extctl publish` against the local stack: multipart in parallel, and resuming after an interruption."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.bundles.pack import pack_project
from devstack.stack import LocalStack, StackConfig, StackUrls
from extctl.api import ApiClient
from extctl.publish import publish_bundle, state_dir
from tests.bundle_factory import good_files, write_project

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUrls]:
    stack = LocalStack(StackConfig(cache_dir=tmp_path_factory.mktemp("runner-cache")))
    urls = stack.start()
    yield urls
    stack.stop()


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def big_bundle(tmp_path: Path, version: str) -> Path:
    project = write_project(tmp_path / version, {**good_files(version=version), "ui/big.bin": os.urandom(20 * MiB)})
    return pack_project(project, tmp_path / f"{version}.tar.zst").output


class Interrupted(Exception):
    pass


def test_a_large_bundle_goes_up_in_parts(local: StackUrls, tmp_path: Path) -> None:
    bundle = big_bundle(tmp_path, "2.0.0")
    seen: list[int] = []
    published = publish_bundle(ApiClient(local.api, local.token), bundle, progress=seen.append)
    assert published.result["status"] == "finalized"
    assert sum(seen) == bundle.stat().st_size
    assert len(seen) == 3


def test_an_interrupted_publish_resumes_where_it_stopped(local: StackUrls, tmp_path: Path) -> None:
    bundle = big_bundle(tmp_path, "3.0.0")
    api = ApiClient(local.api, local.token)
    sent: list[int] = []

    def stop_after_first_part(count: int) -> None:
        sent.append(count)
        raise Interrupted

    with pytest.raises(Interrupted):
        publish_bundle(api, bundle, progress=stop_after_first_part)
    assert list(state_dir().iterdir()), "the interrupted upload must be remembered"
    again = publish_bundle(api, bundle)
    assert again.resumed is True
    assert again.uploaded_bytes < bundle.stat().st_size
    assert again.result["status"] == "finalized"
    assert list(state_dir().iterdir()) == []


def test_publishing_again_after_success_is_already_finalized(local: StackUrls, tmp_path: Path) -> None:
    bundle = pack_project(write_project(tmp_path / "p", good_files(version="4.0.0")), tmp_path / "b.tar.zst").output
    api = ApiClient(local.api, local.token)
    assert publish_bundle(api, bundle).result["status"] == "finalized"
    assert publish_bundle(api, bundle).result["status"] == "already_finalized"
