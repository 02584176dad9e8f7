"""The bundle store and presigned uploads against moto.

The store suite runs twice: in-process (``mock_aws``) and over HTTP against a
``ThreadedMotoServer``, the way the local stack talks to it.  Presigned URLs can
only be exercised over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from moto import mock_aws
from moto.server import ThreadedMotoServer

from chalicelib.config import load_settings
from chalicelib.errors import BadRequest, NotFound, StorageError, UploadNotFound
from chalicelib.storage import store as store_module
from chalicelib.storage.presign import (
    UploadedPart,
    abort_multipart,
    complete_multipart,
    create_multipart,
    list_parts,
    part_layout,
    presign_parts,
    presign_put,
)
from chalicelib.storage.s3 import ensure_bucket, make_s3_client
from chalicelib.storage.store import PutOutcome, S3BundleStore

MiB = 1024 * 1024
BUNDLE = b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 40


def content_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _settings(endpoint: str = ""):
    env = {"STORAGE_S3_BUCKET": f"bkt-{uuid.uuid4().hex[:12]}", "STORAGE_S3_FORCE_PATH_STYLE": "true"}
    if endpoint:
        env["STORAGE_S3_ENDPOINT"] = endpoint
    return load_settings(env)


@pytest.fixture
def server_settings(moto_endpoint):
    return _settings(moto_endpoint)


@pytest.fixture(params=["in-process", "server"])
def settings(request):
    if request.param == "server":
        yield _settings(request.getfixturevalue("moto_endpoint"))
        return
    with mock_aws():
        yield _settings()


@pytest.fixture
def client(settings):
    s3 = make_s3_client(settings)
    ensure_bucket(s3, settings.storage_s3_bucket, settings.storage_s3_region)
    return s3


@pytest.fixture
def store(settings, client):
    return S3BundleStore.from_settings(settings, client)


def stage(store: S3BundleStore, client, data: bytes, tenant: str = "acme") -> str:
    key = store.staging_key(tenant, uuid.uuid4().hex)
    client.put_object(Bucket=store.bucket, Key=key, Body=data)
    return key


# --- keys -------------------------------------------------------------------------------


def test_objects_live_under_the_hex_of_their_content_hash(store):
    digest = "ab" * 32

    assert store.object_key(f"sha256:{digest}", "manifest.json") == f"sha256/{digest}/manifest.json"
    assert store.precompiled_key(f"sha256:{digest}", "wt50-x86_64-abc") == (
        f"sha256/{digest}/precompiled/wt50-x86_64-abc.cwasm"
    )


@pytest.mark.parametrize(
    "bad", ["sha256:" + "AB" * 32, "ab" * 32, "sha256:abc", "sha512:" + "ab" * 32, "sha256:" + "ab" * 32 + "\n"]
)
def test_a_malformed_content_hash_has_no_key(store, bad):
    with pytest.raises(BadRequest, match="content hash"):
        store.object_key(bad, "bundle.tar.zst")


def test_a_fingerprint_that_is_not_one_safe_segment_has_no_precompiled_key(store):
    with pytest.raises(ValueError, match="not a safe key segment"):
        store.precompiled_key(content_hash(b"x"), "wt50-x86_64-abc\n")


def test_only_the_known_object_names_have_keys(store):
    with pytest.raises(ValueError, match="unknown store object"):
        store.object_key(content_hash(b"x"), "../../etc/passwd")


@pytest.mark.parametrize(
    ("tenant", "upload_id"),
    [("..", "u1"), ("a/b", "u1"), ("acme", ""), ("acme", "u/../x"), ("acme\n", "u1"), ("acme", "u1\n")],
)
def test_staging_keys_refuse_segments_that_escape_their_folder(store, tenant, upload_id):
    with pytest.raises(BadRequest, match="cannot be part of a storage key"):
        store.staging_key(tenant, upload_id)


# --- immutable writes -------------------------------------------------------------------


def test_first_immutable_write_is_new_and_the_same_bytes_again_are_a_no_op(store):
    key = store.object_key(content_hash(BUNDLE), "manifest.json")

    assert store.put_immutable(key, b'{"name": "com.acme.x"}', "application/json") is PutOutcome.NEW
    assert store.put_immutable(key, b'{"name": "com.acme.x"}', "application/json") is PutOutcome.SAME
    assert store.get_bytes(key, 1024) == b'{"name": "com.acme.x"}'


def test_different_bytes_under_an_immutable_key_are_refused_and_the_original_kept(store):
    key = store.object_key(content_hash(BUNDLE), "signature.json")
    store.put_immutable(key, b"first", "application/json")

    with pytest.raises(StorageError, match="already holds different bytes"):
        store.put_immutable(key, b"other", "application/json")
    with pytest.raises(StorageError, match="already holds different bytes"):
        store.put_immutable(key, b"firs", "application/json")
    assert store.get_bytes(key, 1024) == b"first"


def test_immutable_writes_stream_file_objects(store, tmp_path):
    key = store.precompiled_key(content_hash(BUNDLE), "fp1")
    payload = bytes(range(256)) * 4096
    path = tmp_path / "module.cwasm"
    path.write_bytes(payload)

    with path.open("rb") as body:
        assert store.put_immutable(key, body, "application/octet-stream") is PutOutcome.NEW
    assert store.put_immutable(key, io.BytesIO(payload), "application/octet-stream") is PutOutcome.SAME
    assert store.head(key).size == len(payload)


def test_a_staged_bundle_is_copied_to_its_canonical_key(store, client):
    staged = stage(store, client, BUNDLE)

    outcome = store.put_bundle_from_staging(staged, content_hash(BUNDLE))

    assert outcome is PutOutcome.NEW
    canonical = store.object_key(content_hash(BUNDLE), "bundle.tar.zst")
    assert store.get_bytes(canonical, len(BUNDLE)) == BUNDLE
    assert client.head_object(Bucket=store.bucket, Key=canonical)["ContentType"] == "application/zstd"


def test_copying_the_same_bundle_again_is_a_no_op(store, client):
    first = stage(store, client, BUNDLE)
    second = stage(store, client, BUNDLE, tenant="other")
    store.put_bundle_from_staging(first, content_hash(BUNDLE))

    assert store.put_bundle_from_staging(second, content_hash(BUNDLE)) is PutOutcome.SAME
    assert client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []


def test_a_canonical_bundle_with_other_bytes_is_reported_not_overwritten(store, client):
    canonical = store.object_key(content_hash(BUNDLE), "bundle.tar.zst")
    client.put_object(Bucket=store.bucket, Key=canonical, Body=b"corrupted")
    staged = stage(store, client, BUNDLE)

    with pytest.raises(StorageError, match="already holds different bytes"):
        store.put_bundle_from_staging(staged, content_hash(BUNDLE))
    assert store.get_bytes(canonical, 100) == b"corrupted"


def test_a_staging_object_changed_after_verification_is_not_copied(store, client):
    staged = stage(store, client, BUNDLE)
    verified_etag = store.head(staged).etag
    client.put_object(Bucket=store.bucket, Key=staged, Body=BUNDLE + b"tampered")

    with pytest.raises(StorageError, match="changed after it was verified"):
        store.put_bundle_from_staging(staged, content_hash(BUNDLE), source_etag=verified_etag)
    assert not store.exists(store.object_key(content_hash(BUNDLE), "bundle.tar.zst"))


def test_copying_a_missing_staging_object_is_not_found(store):
    with pytest.raises(NotFound, match="does not exist"):
        store.put_bundle_from_staging(store.staging_key("acme", "nope"), content_hash(BUNDLE))


def test_bundles_larger_than_one_copy_part_are_copied_in_ranges(store, client, monkeypatch):
    monkeypatch.setattr(store_module, "_MAX_COPY_PART_BYTES", 5 * MiB)
    data = hashlib.sha256(b"seed").digest() * (11 * MiB // 32) + b"tail"
    staged = stage(store, client, data)

    assert store.put_bundle_from_staging(staged, content_hash(data)) is PutOutcome.NEW

    canonical = store.object_key(content_hash(data), "bundle.tar.zst")
    assert client.head_object(Bucket=store.bucket, Key=canonical)["ETag"].endswith('-3"')
    assert hashlib.sha256(client.get_object(Bucket=store.bucket, Key=canonical)["Body"].read()).digest() == (
        hashlib.sha256(data).digest()
    )


# --- reads ------------------------------------------------------------------------------


def test_streams_are_read_in_chunks(store, client):
    data = hashlib.sha256(b"x").digest() * (3 * MiB // 32)
    staged = stage(store, client, data)

    stream = store.open_stream(staged)
    chunks = []
    while chunk := stream.read(64 * 1024):
        chunks.append(chunk)
    stream.close()

    assert max(len(chunk) for chunk in chunks) <= 64 * 1024
    assert b"".join(chunks) == data


def test_opening_a_missing_object_is_not_found(store):
    with pytest.raises(NotFound, match="does not exist"):
        store.open_stream("sha256/missing")


def test_a_stream_pinned_to_an_etag_refuses_a_replaced_object(store, client):
    staged = stage(store, client, b"one")
    etag = store.head(staged).etag
    client.put_object(Bucket=store.bucket, Key=staged, Body=b"two")

    with pytest.raises(StorageError, match="changed"):
        store.open_stream(staged, if_match=etag)


def test_head_reports_size_and_etag_or_none(store, client):
    staged = stage(store, client, b"12345")

    info = store.head(staged)

    assert (info.key, info.size) == (staged, 5)
    assert info.etag.strip('"') == hashlib.md5(b"12345").hexdigest()  # noqa: S324 - S3's ETag is an MD5
    assert store.head(staged + ".missing") is None
    assert store.exists(staged)
    assert not store.exists(staged + ".missing")


def test_get_bytes_refuses_objects_larger_than_asked(store, client):
    staged = stage(store, client, b"x" * 101)

    assert store.get_bytes(staged, 101) == b"x" * 101
    with pytest.raises(StorageError, match="larger than the 100 bytes"):
        store.get_bytes(staged, 100)


# --- staging ----------------------------------------------------------------------------


def test_staging_objects_can_be_deleted(store, client):
    staged = stage(store, client, b"x")

    store.delete(staged)

    assert not store.exists(staged)


@pytest.mark.parametrize("name", ["bundle.tar.zst", "manifest.json"])
def test_deleting_under_the_store_base_is_refused(store, name):
    key = store.object_key(content_hash(b"y"), name)
    store.put_immutable(key, b"y", "application/octet-stream")

    with pytest.raises(StorageError, match="refusing to delete"):
        store.delete(key)
    assert store.exists(key)


def test_deleting_outside_staging_is_refused(store):
    with pytest.raises(StorageError, match="only staging objects"):
        store.delete("elsewhere/file")


def test_listing_staging_returns_only_the_asked_prefix(store, client):
    mine = {stage(store, client, b"a", tenant="acme"), stage(store, client, b"bb", tenant="acme")}
    stage(store, client, b"c", tenant="globex")

    listed = list(store.list_staging("acme/"))

    assert {info.key for info in listed} == mine
    assert sorted(info.size for info in listed) == [1, 2]


# --- presigned uploads (HTTP only) ------------------------------------------------------


@pytest.fixture
def server_client(server_settings):
    s3 = make_s3_client(server_settings)
    ensure_bucket(s3, server_settings.storage_s3_bucket, server_settings.storage_s3_region)
    return s3


def test_a_presigned_put_stores_what_the_uploader_sends(server_settings, server_client):
    bucket = server_settings.storage_s3_bucket
    request = presign_put(server_client, bucket, "staging/acme/u1/bundle.tar.zst", len(BUNDLE), None, 300)

    response = requests.put(request.url, data=BUNDLE, headers=dict(request.headers), timeout=10)

    assert response.status_code == 200
    stored = server_client.get_object(Bucket=bucket, Key="staging/acme/u1/bundle.tar.zst")
    assert stored["Body"].read() == BUNDLE
    assert stored["ContentType"] == "application/zstd"


def test_a_presigned_put_with_a_declared_checksum_is_accepted(server_settings, server_client):
    bucket = server_settings.storage_s3_bucket
    sha = hashlib.sha256(BUNDLE).hexdigest()
    request = presign_put(server_client, bucket, "staging/acme/u2/bundle.tar.zst", len(BUNDLE), sha, 300)

    response = requests.put(request.url, data=BUNDLE, headers=dict(request.headers), timeout=10)

    assert response.status_code == 200
    assert server_client.head_object(Bucket=bucket, Key="staging/acme/u2/bundle.tar.zst")["ContentLength"] == len(
        BUNDLE
    )


def upload_parts(server_client, bucket: str, key: str, data: bytes, part_size: int) -> tuple[str, list[UploadedPart]]:
    upload_id = create_multipart(server_client, bucket, key)
    layout = part_layout(len(data), part_size)
    sent = []
    for part, presigned in zip(layout, presign_parts(server_client, bucket, key, upload_id, layout, 300), strict=True):
        body = data[part.offset : part.offset + part.length]
        response = requests.put(presigned.url, data=body, timeout=30)
        assert response.status_code == 200
        sent.append(UploadedPart(part_number=presigned.part_number, etag=response.headers["ETag"]))
    return upload_id, sent


def test_a_multipart_upload_through_presigned_part_urls_reassembles_the_bundle(server_settings, server_client):
    bucket = server_settings.storage_s3_bucket
    key = "staging/acme/u3/bundle.tar.zst"
    data = hashlib.sha256(b"parts").digest() * (6 * MiB // 32) + b"end"
    upload_id, sent = upload_parts(server_client, bucket, key, data, 5 * MiB)

    listed = list_parts(server_client, bucket, key, upload_id)
    etag = complete_multipart(server_client, bucket, key, upload_id, list(reversed(sent)))

    assert [(p.part_number, p.etag, p.size) for p in listed] == [(1, sent[0].etag, 5 * MiB), (2, sent[1].etag, MiB + 3)]
    assert etag.endswith('-2"')
    assert server_client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    abort_multipart(server_client, bucket, key, upload_id)


def test_an_aborted_multipart_upload_is_gone(server_settings, server_client):
    bucket = server_settings.storage_s3_bucket
    key = "staging/acme/u4/bundle.tar.zst"
    upload_id, _ = upload_parts(server_client, bucket, key, b"z" * (5 * MiB + 1), 5 * MiB)

    abort_multipart(server_client, bucket, key, upload_id)
    abort_multipart(server_client, bucket, key, upload_id)

    # Completing it now would be NoSuchUpload in S3; moto 5.2.5 answers 500 instead, so only list.
    with pytest.raises(UploadNotFound):
        list_parts(server_client, bucket, key, upload_id)


def test_completing_with_an_etag_s3_does_not_hold_is_a_bad_request(server_settings, server_client):
    bucket = server_settings.storage_s3_bucket
    key = "staging/acme/u5/bundle.tar.zst"
    upload_id, _ = upload_parts(server_client, bucket, key, b"q" * 1000, 5 * MiB)

    with pytest.raises(BadRequest, match="rejected the part list"):
        complete_multipart(server_client, bucket, key, upload_id, [UploadedPart(1, "0" * 32)])


class _RacingStore(S3BundleStore):
    """A store that misses the canonical object on its first look, as when another finalize wins a race."""

    def __init__(self, client: Any, bucket: str) -> None:
        super().__init__(client, bucket)
        self.first_look = True

    def exists(self, key: str) -> bool:
        if self.first_look:
            self.first_look = False
            return False
        return super().exists(key)


def test_a_copy_that_loses_a_race_to_the_same_bundle_is_a_no_op(settings, client, store):
    store.put_bundle_from_staging(stage(store, client, BUNDLE), content_hash(BUNDLE))
    racing = _RacingStore(client, store.bucket)

    assert racing.put_bundle_from_staging(stage(racing, client, BUNDLE), content_hash(BUNDLE)) is PutOutcome.SAME
    assert client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
