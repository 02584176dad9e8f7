"""sha256 beside decompression: hash updates run on a second thread, in submission order."""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["HashPipeline"]


class HashPipeline:
    """Runs sha256 updates on a second thread, in submission order.

    hashlib and zstd both release the GIL on large buffers, so hashing the
    compressed bytes and the members overlaps decompression.  The queue is short,
    so at most a few chunks wait in memory.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._work, name="bundle-hash", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job[0].update(job[1])

    def update(self, hasher: Any, data: bytes) -> None:
        self._queue.put((hasher, data))

    def close(self) -> None:
        """Wait until every submitted update has been applied."""
        self._queue.put(None)
        self._thread.join()
