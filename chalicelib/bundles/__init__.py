"""Bundle format: manifest, reproducible pack, streaming verification, signatures.

The public modules are those in ``__all__``: code outside this package imports from them only, and only
the names each lists in its own ``__all__``.  The others serve them:

- ``archive``: the zstd frame walker, the bounded byte streams and the tar reader that :mod:`.verify` drives;
- ``members``: what a bundle may hold, checked member by member as the archive streams past;
- ``duplicate_keys``: the JSON hook that refuses a key named twice, for the manifest and the envelope.
"""

__all__ = [
    "component",
    "config_schema",
    "digests",
    "manifest",
    "pack",
    "paths",
    "publication",
    "signing",
    "verify",
    "wasm",
]
