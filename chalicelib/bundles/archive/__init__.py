"""The readers :mod:`chalicelib.bundles.verify` drives over ``bundle.tar.zst``, one pass, bounded memory.

- ``zstd_frame``: the zstd frame structure (one frame, a bounded window, no dictionary, no trailing data),
  checked on the compressed bytes before anything is decoded;
- ``streams``: the compressed bytes (counted, capped, hashed, walked) and the decompressed bytes (bounded
  window, total and expansion ratio);
- ``tar``: our own tar reader (ustar, pax and GNU headers, checksums, an explicit end-of-archive marker);
- ``hashing``: sha256 updates on a second thread, beside decompression.

Internal to :mod:`chalicelib.bundles`: nothing outside it imports these.
"""

__all__: list[str] = []
