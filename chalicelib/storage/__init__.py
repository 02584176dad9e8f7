"""S3 storage: the client factory, the content-addressed bundle store, presigned uploads.

- :mod:`chalicelib.storage.s3` builds SigV4 clients from settings.
- :mod:`chalicelib.storage.store` is the immutable store (``sha256/<hex>/…``) and staging.
- :mod:`chalicelib.storage.presign` signs uploads (single PUT or multipart) and finishes them.
"""

from __future__ import annotations

from chalicelib.storage.presign import PartRange, PresignedPart, PresignedRequest, UploadedPart
from chalicelib.storage.s3 import ensure_bucket, make_s3_client, make_s3_presign_client
from chalicelib.storage.store import BundleStore, ObjectInfo, PutOutcome, S3BundleStore, content_hash_hex

__all__ = [
    "BundleStore",
    "ObjectInfo",
    "PartRange",
    "PresignedPart",
    "PresignedRequest",
    "PutOutcome",
    "S3BundleStore",
    "UploadedPart",
    "content_hash_hex",
    "ensure_bucket",
    "make_s3_client",
    "make_s3_presign_client",
]
