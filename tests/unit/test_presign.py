"""What presigned upload URLs sign.

moto accepts any signature, so these checks on the URLs themselves are what
proves S3 would hold uploaders to the declared size and checksum.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.config import load_settings
from chalicelib.errors import BadRequest
from chalicelib.storage.multipart import MIN_PART_BYTES, S3Multipart, UploadedPart, part_layout
from chalicelib.storage.presign import S3UploadSigner, sha256_checksum_header
from chalicelib.storage.s3 import make_s3_client, make_s3_presign_client

MiB = 1024 * 1024
SHA = hashlib.sha256(b"bundle bytes").hexdigest()


@pytest.fixture(autouse=True)
def _offline_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


@pytest.fixture
def client():
    settings = load_settings({"STORAGE_S3_ENDPOINT": "http://127.0.0.1:9", "STORAGE_S3_FORCE_PATH_STYLE": "true"})
    return make_s3_client(settings)


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlparse(url).query).items()}


def signed_headers(url: str) -> list[str]:
    return query_of(url)["X-Amz-SignedHeaders"].split(";")


def test_put_url_signs_content_length_and_the_declared_checksum(client):
    request = S3UploadSigner(client, "ext-bundles").presign_put("staging/t/u/bundle.tar.zst", 1234, SHA, 900)

    assert {"content-length", "x-amz-checksum-sha256", "content-type", "host"} <= set(signed_headers(request.url))


def test_put_url_without_a_declared_checksum_signs_only_the_length_and_type(client):
    request = S3UploadSigner(client, "ext-bundles").presign_put("staging/t/u/bundle.tar.zst", 1234, None, 900)

    assert signed_headers(request.url) == ["content-length", "content-type", "host"]
    assert "x-amz-checksum-sha256" not in request.headers


def test_put_url_is_sigv4_and_expires_after_the_ttl(client):
    before = datetime.now(UTC).replace(microsecond=0)
    request = S3UploadSigner(client, "ext-bundles").presign_put("staging/t/u/bundle.tar.zst", 10, None, 600)
    after = datetime.now(UTC)

    query = query_of(request.url)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "600"
    assert "X-Amz-Signature" in query
    assert "Signature" not in query
    assert before + timedelta(seconds=600) <= request.expires_at <= after + timedelta(seconds=600)


def test_put_headers_are_exactly_what_the_uploader_must_send(client):
    request = S3UploadSigner(client, "ext-bundles").presign_put("staging/t/u/bundle.tar.zst", 10, SHA, 60)

    assert request.method == "PUT"
    assert dict(request.headers) == {
        "content-type": "application/zstd",
        "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(SHA)).decode(),
    }


def test_checksum_header_is_the_base64_of_the_raw_digest():
    digest = hashlib.sha256(b"abc").digest()

    assert sha256_checksum_header(digest.hex()) == base64.b64encode(digest).decode()


@pytest.mark.parametrize("bad", ["", "abc", SHA.upper(), SHA + "0", "g" * 64, SHA + "\n"])
def test_a_malformed_sha256_is_a_bad_request(client, bad):
    with pytest.raises(BadRequest, match="sha256 must be 64 lowercase hex"):
        S3UploadSigner(client, "ext-bundles").presign_put("k", 10, bad, 60)


@pytest.mark.parametrize("ttl", [0, 7 * 24 * 3600 + 1])
def test_a_ttl_sigv4_cannot_express_is_refused(client, ttl):
    with pytest.raises(ValueError, match="presign TTL"):
        S3UploadSigner(client, "ext-bundles").presign_put("k", 10, None, ttl)


def test_path_style_urls_put_the_bucket_in_the_path(client):
    url = urlparse(S3UploadSigner(client, "ext-bundles").presign_put("staging/a/b", 10, None, 60).url)

    assert url.netloc == "127.0.0.1:9"
    assert url.path == "/ext-bundles/staging/a/b"


def test_without_path_style_aws_urls_put_the_bucket_in_the_host():
    client = make_s3_client(load_settings({}))

    url = urlparse(S3UploadSigner(client, "ext-bundles").presign_put("staging/a/b", 10, None, 60).url)

    assert url.netloc.startswith("ext-bundles.s3.")
    assert url.path == "/staging/a/b"


def test_the_presign_client_signs_for_the_public_endpoint():
    settings = load_settings({"STORAGE_S3_ENDPOINT": "http://moto:5000", "STORAGE_S3_FORCE_PATH_STYLE": "1"})
    client = make_s3_presign_client(settings, "http://localhost:4566")

    assert urlparse(S3UploadSigner(client, "ext-bundles").presign_put("k", 1, None, 60).url).netloc == "localhost:4566"


def test_part_urls_from_a_layout_sign_each_parts_exact_length(client):
    layout = part_layout(12 * MiB, 5 * MiB)

    parts = S3UploadSigner(client, "ext-bundles").presign_parts("staging/t/u/bundle.tar.zst", "upload-1", layout, 300)

    assert [part.part_number for part in parts] == [1, 2, 3]
    for part in parts:
        query = query_of(part.url)
        assert query["partNumber"] == str(part.part_number)
        assert query["uploadId"] == "upload-1"
        assert query["X-Amz-Expires"] == "300"
        assert "content-length" in query["X-Amz-SignedHeaders"].split(";")


def test_part_urls_from_a_count_sign_no_length(client):
    parts = S3UploadSigner(client, "ext-bundles").presign_parts("k", "upload-1", 2, 300)

    assert [part.part_number for part in parts] == [1, 2]
    assert all(signed_headers(part.url) == ["host"] for part in parts)


def test_part_layout_gives_full_parts_and_a_shorter_last_one():
    layout = part_layout(11 * MiB + 7, 5 * MiB)

    assert layout == [(1, 0, 5 * MiB), (2, 5 * MiB, 5 * MiB), (3, 10 * MiB, MiB + 7)]


@given(
    size=st.integers(min_value=1, max_value=10**11), part_size=st.integers(min_value=MIN_PART_BYTES, max_value=10**10)
)
def test_part_layout_covers_every_byte_once_in_order(size, part_size):
    if -(-size // part_size) > 10_000:
        with pytest.raises(ValueError, match="more than 10000"):
            part_layout(size, part_size)
        return

    layout = part_layout(size, part_size)

    assert [part.part_number for part in layout] == list(range(1, len(layout) + 1))
    assert layout[0].offset == 0
    assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(layout))
    assert layout[-1].offset + layout[-1].length == size
    assert all(part.length == part_size for part in layout[:-1])


def test_part_layout_refuses_parts_smaller_than_s3_allows():
    with pytest.raises(ValueError, match="at least 5242880"):
        part_layout(20 * MiB, MIN_PART_BYTES - 1)


def test_part_layout_refuses_an_empty_upload():
    with pytest.raises(ValueError, match="size must be positive"):
        part_layout(0, MIN_PART_BYTES)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([UploadedPart(1, '"' + "a" * 32 + '"'), UploadedPart(1, "b" * 32)], "more than once"),
        ([UploadedPart(0, "a" * 32)], "outside 1..10000"),
        ([UploadedPart(1, "not-an-etag")], "malformed ETag"),
        ([], "1..10000 parts"),
    ],
)
def test_completing_with_a_bad_part_list_is_refused_before_calling_s3(client, parts, message):
    with pytest.raises(BadRequest, match=message):
        S3Multipart(client, "ext-bundles").complete("k", "upload-1", parts)
