"""The conformance suite of the storage protocols (``chalicelib.storage``), against moto.

Each protocol (:class:`BundleStore`, :class:`StagingArea`, :class:`MultipartUploads`,
:class:`UploadSigner`) is exercised only through its methods, on every backend: moto in-process
(``mock_aws``) and over HTTP against a ``ThreadedMotoServer``, the way the local stack talks to it.
Presigned URLs can only be followed over HTTP.  The raw client plays the outside parties: the uploader
and whoever tampers with a staged object.  Tests of one implementation's own choices (copy part size,
a lost race) come last.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from moto import mock_aws
from moto.server import ThreadedMotoServer

from chalicelib.config import Settings, load_settings
from chalicelib.errors import BadRequest, NotFound, StorageError, UploadNotFound
from chalicelib.storage.multipart import MultipartUploads, S3Multipart, UploadedPart, part_layout
from chalicelib.storage.presign import S3UploadSigner, UploadSigner
from chalicelib.storage.s3 import ensure_bucket, make_s3_client
from chalicelib.storage.store import BundleStore, PutOutcome, S3BundleStore, StagingArea

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


def _settings(endpoint: str = "") -> Settings:
    env = {"STORAGE_S3_BUCKET": f"bkt-{uuid.uuid4().hex[:12]}", "STORAGE_S3_FORCE_PATH_STYLE": "true"}
    if endpoint:
        env["STORAGE_S3_ENDPOINT"] = endpoint
    return load_settings(env)


@dataclass(frozen=True)
class Backend:
    """The protocols on one bucket, and the raw client outside parties use."""

    store: BundleStore
    staging: StagingArea
    multipart: MultipartUploads
    signer: UploadSigner
    client: Any
    bucket: str
    over_http: bool


def _backend(settings: Settings, *, over_http: bool) -> Backend:
    client = make_s3_client(settings)
    bucket = settings.storage_s3_bucket
    ensure_bucket(client, bucket, settings.storage_s3_region)
    s3_store = S3BundleStore.from_settings(settings, client)
    return Backend(
        store=s3_store,
        staging=s3_store,
        multipart=S3Multipart(client, bucket),
        signer=S3UploadSigner(client, bucket),
        client=client,
        bucket=bucket,
        over_http=over_http,
    )


@pytest.fixture(params=["in-process", "server"])
def backend(request) -> Iterator[Backend]:
    if request.param == "server":
        yield _backend(_settings(request.getfixturevalue("moto_endpoint")), over_http=True)
        return
    with mock_aws():
        yield _backend(_settings(), over_http=False)


@pytest.fixture
def http_backend(moto_endpoint) -> Backend:
    return _backend(_settings(moto_endpoint), over_http=True)


@pytest.fixture
def store(backend: Backend) -> BundleStore:
    return backend.store


@pytest.fixture
def staging(backend: Backend) -> StagingArea:
    return backend.staging


@pytest.fixture
def multipart(backend: Backend) -> MultipartUploads:
    return backend.multipart


@pytest.fixture
def client(backend: Backend) -> Any:
    return backend.client


def stage(backend: Backend, data: bytes, tenant: str = "acme") -> str:
    """Upload ``data`` to a fresh staging key, as an uploader would."""
    key = backend.staging.staging_key(tenant, uuid.uuid4().hex)
    backend.client.put_object(Bucket=backend.bucket, Key=key, Body=data)
    return key


# --- BundleStore: keys -------------------------------------------------------------------


def test_objects_live_under_the_hex_of_their_content_hash(store: BundleStore) -> None:
    digest = "ab" * 32

    assert store.object_key(f"sha256:{digest}", "manifest.json") == f"sha256/{digest}/manifest.json"
    assert store.precompiled_key(f"sha256:{digest}", "wt50-x86_64-abc") == (
        f"sha256/{digest}/precompiled/wt50-x86_64-abc.cwasm"
    )


@pytest.mark.parametrize(
    "bad", ["sha256:" + "AB" * 32, "ab" * 32, "sha256:abc", "sha512:" + "ab" * 32, "sha256:" + "ab" * 32 + "\n"]
)
def test_a_malformed_content_hash_has_no_key(store: BundleStore, bad: str) -> None:
    with pytest.raises(BadRequest, match="content hash"):
        store.object_key(bad, "bundle.tar.zst")


def test_a_fingerprint_that_is_not_one_safe_segment_has_no_precompiled_key(store: BundleStore) -> None:
    with pytest.raises(ValueError, match="not a safe key segment"):
        store.precompiled_key(content_hash(b"x"), "wt50-x86_64-abc\n")


def test_only_the_known_object_names_have_keys(store: BundleStore) -> None:
    with pytest.raises(ValueError, match="unknown store object"):
        store.object_key(content_hash(b"x"), "../../etc/passwd")


# --- BundleStore: immutable writes --------------------------------------------------------


def test_first_immutable_write_is_new_and_the_same_bytes_again_are_a_no_op(store: BundleStore) -> None:
    key = store.object_key(content_hash(BUNDLE), "manifest.json")

    assert store.put_immutable(key, b'{"name": "com.acme.x"}', "application/json") is PutOutcome.NEW
    assert store.put_immutable(key, b'{"name": "com.acme.x"}', "application/json") is PutOutcome.SAME
    assert store.get_bytes(key, 1024) == b'{"name": "com.acme.x"}'


def test_different_bytes_under_an_immutable_key_are_refused_and_the_original_kept(store: BundleStore) -> None:
    key = store.object_key(content_hash(BUNDLE), "signature.json")
    store.put_immutable(key, b"first", "application/json")

    with pytest.raises(StorageError, match="already holds different bytes"):
        store.put_immutable(key, b"other", "application/json")
    with pytest.raises(StorageError, match="already holds different bytes"):
        store.put_immutable(key, b"firs", "application/json")
    assert store.get_bytes(key, 1024) == b"first"


def test_immutable_writes_stream_file_objects(store: BundleStore, tmp_path) -> None:
    key = store.precompiled_key(content_hash(BUNDLE), "fp1")
    payload = bytes(range(256)) * 4096
    path = tmp_path / "module.cwasm"
    path.write_bytes(payload)

    with path.open("rb") as body:
        assert store.put_immutable(key, body, "application/octet-stream") is PutOutcome.NEW
    assert store.put_immutable(key, io.BytesIO(payload), "application/octet-stream") is PutOutcome.SAME
    head = store.head(key)
    assert head is not None and head.size == len(payload)


def test_a_staged_bundle_is_copied_to_its_canonical_key(backend: Backend, store: BundleStore) -> None:
    staged = stage(backend, BUNDLE)

    outcome = store.put_bundle_from_staging(staged, content_hash(BUNDLE))

    assert outcome is PutOutcome.NEW
    canonical = store.object_key(content_hash(BUNDLE), "bundle.tar.zst")
    assert store.get_bytes(canonical, len(BUNDLE)) == BUNDLE
    assert backend.client.head_object(Bucket=backend.bucket, Key=canonical)["ContentType"] == "application/zstd"


def test_copying_the_same_bundle_again_is_a_no_op(backend: Backend, store: BundleStore) -> None:
    first = stage(backend, BUNDLE)
    second = stage(backend, BUNDLE, tenant="other")
    store.put_bundle_from_staging(first, content_hash(BUNDLE))

    assert store.put_bundle_from_staging(second, content_hash(BUNDLE)) is PutOutcome.SAME
    assert backend.client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", []) == []


def test_a_canonical_bundle_with_other_bytes_is_reported_not_overwritten(backend: Backend, store: BundleStore) -> None:
    canonical = store.object_key(content_hash(BUNDLE), "bundle.tar.zst")
    backend.client.put_object(Bucket=backend.bucket, Key=canonical, Body=b"corrupted")
    staged = stage(backend, BUNDLE)

    with pytest.raises(StorageError, match="already holds different bytes"):
        store.put_bundle_from_staging(staged, content_hash(BUNDLE))
    assert store.get_bytes(canonical, 100) == b"corrupted"


def test_a_staging_object_changed_after_verification_is_not_copied(
    backend: Backend, store: BundleStore, staging: StagingArea
) -> None:
    staged = stage(backend, BUNDLE)
    head = staging.head(staged)
    assert head is not None
    backend.client.put_object(Bucket=backend.bucket, Key=staged, Body=BUNDLE + b"tampered")

    with pytest.raises(StorageError, match="changed after it was verified"):
        store.put_bundle_from_staging(staged, content_hash(BUNDLE), source_etag=head.etag)
    assert not store.exists(store.object_key(content_hash(BUNDLE), "bundle.tar.zst"))


def test_copying_a_missing_staging_object_is_not_found(store: BundleStore, staging: StagingArea) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        store.put_bundle_from_staging(staging.staging_key("acme", "nope"), content_hash(BUNDLE))


# --- BundleStore and StagingArea: reads -----------------------------------------------------


def test_streams_are_read_in_chunks(backend: Backend, staging: StagingArea) -> None:
    data = hashlib.sha256(b"x").digest() * (3 * MiB // 32)
    staged = stage(backend, data)

    stream = staging.open_stream(staged)
    chunks = []
    while chunk := stream.read(64 * 1024):
        chunks.append(chunk)
    stream.close()

    assert max(len(chunk) for chunk in chunks) <= 64 * 1024
    assert b"".join(chunks) == data


def test_opening_a_missing_object_is_not_found(store: BundleStore, staging: StagingArea) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        store.open_stream("sha256/missing")
    with pytest.raises(NotFound, match="does not exist"):
        staging.open_stream(staging.staging_key("acme", "missing"))


def test_a_stream_pinned_to_an_etag_refuses_a_replaced_object(backend: Backend, staging: StagingArea) -> None:
    staged = stage(backend, b"one")
    head = staging.head(staged)
    assert head is not None
    backend.client.put_object(Bucket=backend.bucket, Key=staged, Body=b"two")

    with pytest.raises(StorageError, match="changed"):
        staging.open_stream(staged, if_match=head.etag)


def test_head_reports_size_and_etag_or_none(backend: Backend, store: BundleStore, staging: StagingArea) -> None:
    staged = stage(backend, b"12345")

    info = staging.head(staged)

    assert info is not None and (info.key, info.size) == (staged, 5)
    assert info.etag.strip('"') == hashlib.md5(b"12345").hexdigest()  # noqa: S324 - S3's ETag is an MD5
    assert staging.head(staged + ".missing") is None
    assert store.exists(staged)
    assert not store.exists(staged + ".missing")


def test_get_bytes_refuses_objects_larger_than_asked(backend: Backend, store: BundleStore) -> None:
    staged = stage(backend, b"x" * 101)

    assert store.get_bytes(staged, 101) == b"x" * 101
    with pytest.raises(StorageError, match="larger than the 100 bytes"):
        store.get_bytes(staged, 100)


# --- StagingArea ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "upload_id"),
    [("..", "u1"), ("a/b", "u1"), ("acme", ""), ("acme", "u/../x"), ("acme\n", "u1"), ("acme", "u1\n")],
)
def test_staging_keys_refuse_segments_that_escape_their_folder(
    staging: StagingArea, tenant: str, upload_id: str
) -> None:
    with pytest.raises(BadRequest, match="cannot be part of a storage key"):
        staging.staging_key(tenant, upload_id)


def test_a_staging_key_names_its_upload_and_no_other_key_names_one(store: BundleStore, staging: StagingArea) -> None:
    key = staging.staging_key("acme", "u1")

    assert staging.upload_of(key) == ("acme", "u1")
    for other in (key + ".x", key.replace("acme/", "acme/x/"), store.object_key(content_hash(b"z"), "bundle.tar.zst")):
        assert staging.upload_of(other) is None


def test_staging_objects_can_be_deleted(backend: Backend, store: BundleStore, staging: StagingArea) -> None:
    staged = stage(backend, b"x")

    staging.delete(staged)

    assert not store.exists(staged)


@pytest.mark.parametrize("name", ["bundle.tar.zst", "manifest.json"])
def test_deleting_under_the_store_base_is_refused(store: BundleStore, staging: StagingArea, name: str) -> None:
    key = store.object_key(content_hash(b"y"), name)
    store.put_immutable(key, b"y", "application/octet-stream")

    with pytest.raises(StorageError, match="refusing to delete"):
        staging.delete(key)
    assert store.exists(key)


def test_deleting_outside_staging_is_refused(staging: StagingArea) -> None:
    with pytest.raises(StorageError, match="only staging objects"):
        staging.delete("elsewhere/file")


def test_listing_staging_returns_only_the_asked_prefix(backend: Backend, staging: StagingArea) -> None:
    mine = {stage(backend, b"a", tenant="acme"), stage(backend, b"bb", tenant="acme")}
    stage(backend, b"c", tenant="globex")

    listed = list(staging.list_staging("acme/"))

    assert {info.key for info in listed} == mine
    assert sorted(info.size for info in listed) == [1, 2]


# --- MultipartUploads and UploadSigner (presigned URLs need HTTP) ----------------------------


def upload_parts(backend: Backend, key: str, data: bytes, part_size: int) -> tuple[str, list[UploadedPart]]:
    """Start a multipart upload of ``data`` and send every part, as an uploader would: through the
    signer's URLs over HTTP, with the raw client in-process."""
    upload_id = backend.multipart.create(key)
    layout = part_layout(len(data), part_size)
    sent = []
    if not backend.over_http:
        for part in layout:
            body = data[part.offset : part.offset + part.length]
            answer = backend.client.upload_part(
                Bucket=backend.bucket, Key=key, UploadId=upload_id, PartNumber=part.part_number, Body=body
            )
            sent.append(UploadedPart(part_number=part.part_number, etag=answer["ETag"]))
        return upload_id, sent
    presigned = backend.signer.presign_parts(key, upload_id, layout, 300)
    for part, url in zip(layout, presigned, strict=True):
        body = data[part.offset : part.offset + part.length]
        response = requests.put(url.url, data=body, timeout=30)
        assert response.status_code == 200
        sent.append(UploadedPart(part_number=url.part_number, etag=response.headers["ETag"]))
    return upload_id, sent


def test_a_presigned_put_stores_what_the_uploader_sends(http_backend: Backend) -> None:
    key = "staging/acme/u1/bundle.tar.zst"
    request = http_backend.signer.presign_put(key, len(BUNDLE), None, 300)

    response = requests.put(request.url, data=BUNDLE, headers=dict(request.headers), timeout=10)

    assert response.status_code == 200
    stored = http_backend.client.get_object(Bucket=http_backend.bucket, Key=key)
    assert stored["Body"].read() == BUNDLE
    assert stored["ContentType"] == "application/zstd"


def test_a_presigned_put_with_a_declared_checksum_is_accepted(http_backend: Backend) -> None:
    key = "staging/acme/u2/bundle.tar.zst"
    sha = hashlib.sha256(BUNDLE).hexdigest()
    request = http_backend.signer.presign_put(key, len(BUNDLE), sha, 300)

    response = requests.put(request.url, data=BUNDLE, headers=dict(request.headers), timeout=10)

    assert response.status_code == 200
    head = http_backend.staging.head(key)
    assert head is not None and head.size == len(BUNDLE)


def test_a_multipart_upload_through_presigned_part_urls_reassembles_the_bundle(http_backend: Backend) -> None:
    key = "staging/acme/u3/bundle.tar.zst"
    data = hashlib.sha256(b"parts").digest() * (6 * MiB // 32) + b"end"
    upload_id, sent = upload_parts(http_backend, key, data, 5 * MiB)

    listed = http_backend.multipart.list_parts(key, upload_id)
    etag = http_backend.multipart.complete(key, upload_id, list(reversed(sent)))

    assert [(p.part_number, p.etag, p.size) for p in listed] == [(1, sent[0].etag, 5 * MiB), (2, sent[1].etag, MiB + 3)]
    assert etag.endswith('-2"')
    assert http_backend.client.get_object(Bucket=http_backend.bucket, Key=key)["Body"].read() == data
    http_backend.multipart.abort(key, upload_id)


def test_a_multipart_upload_lists_its_parts_and_completes_from_them(backend: Backend) -> None:
    key = backend.staging.staging_key("acme", uuid.uuid4().hex)
    data = hashlib.sha256(b"parts").digest() * (6 * MiB // 32) + b"end"
    upload_id, sent = upload_parts(backend, key, data, 5 * MiB)

    listed = backend.multipart.list_parts(key, upload_id)
    backend.multipart.complete(key, upload_id, listed)

    assert [(p.part_number, p.etag) for p in listed] == [(p.part_number, p.etag) for p in sent]
    stream = backend.staging.open_stream(key)
    assert stream.read() == data
    stream.close()


def test_an_aborted_multipart_upload_is_gone(backend: Backend) -> None:
    key = backend.staging.staging_key("acme", uuid.uuid4().hex)
    upload_id, _ = upload_parts(backend, key, b"z" * (5 * MiB + 1), 5 * MiB)

    backend.multipart.abort(key, upload_id)
    backend.multipart.abort(key, upload_id)

    # Completing it now would be NoSuchUpload in S3; moto 5.2.5 answers 500 instead, so only list.
    with pytest.raises(UploadNotFound):
        backend.multipart.list_parts(key, upload_id)


def test_completing_with_an_etag_s3_does_not_hold_is_a_bad_request(backend: Backend) -> None:
    key = backend.staging.staging_key("acme", uuid.uuid4().hex)
    upload_id, _ = upload_parts(backend, key, b"q" * 1000, 5 * MiB)

    with pytest.raises(BadRequest, match="rejected the part list"):
        backend.multipart.complete(key, upload_id, [UploadedPart(1, "0" * 32)])


# --- S3BundleStore's own choices ----------------------------------------------------------------


def test_bundles_larger_than_one_copy_part_are_copied_in_ranges(backend: Backend) -> None:
    store = S3BundleStore(backend.client, backend.bucket, max_copy_part_bytes=5 * MiB)
    data = hashlib.sha256(b"seed").digest() * (11 * MiB // 32) + b"tail"
    staged = stage(backend, data)

    assert store.put_bundle_from_staging(staged, content_hash(data)) is PutOutcome.NEW

    canonical = store.object_key(content_hash(data), "bundle.tar.zst")
    client = backend.client
    assert client.head_object(Bucket=backend.bucket, Key=canonical)["ETag"].endswith('-3"')
    assert hashlib.sha256(client.get_object(Bucket=backend.bucket, Key=canonical)["Body"].read()).digest() == (
        hashlib.sha256(data).digest()
    )


def test_a_copy_part_size_s3_would_refuse_is_refused_when_the_store_is_built(backend: Backend) -> None:
    for size in (0, 5 * 1024**3 + 1):
        with pytest.raises(ValueError, match="max_copy_part_bytes"):
            S3BundleStore(backend.client, backend.bucket, max_copy_part_bytes=size)


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


def test_a_copy_that_loses_a_race_to_the_same_bundle_is_a_no_op(backend: Backend, store: BundleStore) -> None:
    store.put_bundle_from_staging(stage(backend, BUNDLE), content_hash(BUNDLE))
    racing = _RacingStore(backend.client, backend.bucket)

    assert racing.put_bundle_from_staging(stage(backend, BUNDLE), content_hash(BUNDLE)) is PutOutcome.SAME
    assert backend.client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", []) == []
