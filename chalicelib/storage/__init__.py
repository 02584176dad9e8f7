"""S3 storage: the client factory, the content-addressed bundle store, staging, multipart uploads, presigning.

The platform reaches storage through four small protocols, each with one S3 implementation and one
conformance suite (``tests/integration/test_store.py``, against moto):

- :class:`BundleStore` (``sha256/<hex>/…``, write-once) and :class:`StagingArea` (``staging/``, where
  uploads land): :class:`S3BundleStore`, in :mod:`chalicelib.storage.store`;
- :class:`MultipartUploads`: :class:`S3Multipart`, in :mod:`chalicelib.storage.multipart`;
- :class:`UploadSigner` (presigned PUT and part URLs): :class:`S3UploadSigner`, in
  :mod:`chalicelib.storage.presign`.

:mod:`chalicelib.storage.s3` builds the SigV4 clients they run on.
"""

from __future__ import annotations

from chalicelib.storage.multipart import MultipartUploads, PartRange, S3Multipart, UploadedPart, part_layout
from chalicelib.storage.presign import PresignedPart, PresignedRequest, S3UploadSigner, UploadSigner
from chalicelib.storage.s3 import ensure_bucket, make_s3_client, make_s3_presign_client
from chalicelib.storage.store import (
    BundleStore,
    ObjectInfo,
    PutOutcome,
    S3BundleStore,
    StagingArea,
    content_hash_hex,
)

__all__ = [
    "BundleStore",
    "MultipartUploads",
    "ObjectInfo",
    "PartRange",
    "PresignedPart",
    "PresignedRequest",
    "PutOutcome",
    "S3BundleStore",
    "S3Multipart",
    "S3UploadSigner",
    "StagingArea",
    "UploadSigner",
    "UploadedPart",
    "content_hash_hex",
    "ensure_bucket",
    "make_s3_client",
    "make_s3_presign_client",
    "part_layout",
]
