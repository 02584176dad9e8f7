"""The runner's view of the platform's store: the reads and immutable writes it needs, and stream helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

from chalicelib.storage.store import ObjectInfo, PutOutcome, ReadableStream

__all__ = ["CHUNK_BYTES", "RunnerStore", "read_capped", "stream_chunks"]

CHUNK_BYTES = 1024 * 1024


class RunnerStore(Protocol):
    """The part of :class:`~chalicelib.storage.store.BundleStore` the runner uses (it never writes bundles)."""

    def object_key(self, content_hash: str, name: str) -> str: ...

    def precompiled_key(self, content_hash: str, fingerprint: str) -> str: ...

    def compile_failure_key(self, content_hash: str, fingerprint: str, limits_id: str) -> str: ...

    def open_stream(self, key: str) -> ReadableStream: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def put_immutable(self, key: str, body: bytes | BinaryIO, content_type: str) -> PutOutcome: ...


def read_capped(stream: ReadableStream, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of ``stream``: one byte past the cap tells "too large" apart."""
    data = bytearray()
    while len(data) <= cap:
        chunk = stream.read(min(CHUNK_BYTES, cap + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def stream_chunks(stream: ReadableStream) -> Iterator[bytes]:
    """``stream``'s bytes in chunks of at most :data:`CHUNK_BYTES`, until it ends."""
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk
