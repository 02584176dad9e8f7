"""The runner's disk cache: entry directories under one root, counted against a byte budget.

An entry is a directory ``<root>/<key>/`` and the value its owner loaded from it (for the bundle cache, a
:class:`~runner_container.bundle_fetch.CachedBundle`).  Under one lock the cache keeps in memory:

- the index: each entry's value and its size on disk, least recently used first (rebuilt from
  ``<root>/*/`` at start by the owner's ``read_entry``; an entry it cannot trust is deleted);
- pins: entries in use, which are never evicted;
- reservations: bytes that loads in progress are about to write, counted before they are written, so
  entries plus reservations never exceed the budget.

Eviction takes least recently used entries that are not pinned until entries and reservations fit the
budget.  It only renames and unlinks, never rewrites: an entry leaves the index and is renamed into
``<root>/.trash/`` in one step under the lock (a new load of the same key never meets a half-deleted
directory), then deleted outside it.  On Linux an unlinked file stays valid for every mapping of it, so
code still running from an evicted ``.cwasm`` keeps working.  ``<root>/.incoming/`` holds loads in
progress; both scratch folders are cleared at start.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from chalicelib.errors import BundleUnpackedTooLarge, RunnerBusy, StorageError
from chalicelib.logs import log_event

__all__ = ["DiskCache", "KeyedLocks", "Reservation", "tree_size", "write_atomic"]

EntryT = TypeVar("EntryT")

RETRY_AFTER_S = 1
_INCOMING = ".incoming"
_TRASH = ".trash"


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


@dataclass
class Reservation:
    """Bytes a load in progress has reserved against the cache's budget for files it is writing."""

    bytes: int = 0


def tree_size(path: Path) -> int:
    """The bytes of the files under ``path`` (files that vanish meanwhile count as nothing)."""
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


def write_atomic(path: Path, chunks: Iterable[bytes], max_bytes: int) -> int:
    """Write ``chunks`` to a new file beside ``path`` and ``os.replace`` it into place; returns the size.

    ``path`` is never opened for writing, so a module mapping the previous file keeps its bytes.  More than
    ``max_bytes`` is a ``StorageError``, and nothing is left behind.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    size = 0
    try:
        with open(temp, "xb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise StorageError(f"{path.name} is larger than the {max_bytes}-byte cache")
                out.write(chunk)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return size


class DiskCache(Generic[EntryT]):
    """Entries under ``root`` within ``max_bytes``; ``on_evict(key)`` runs after an entry is evicted.

    Safe to share between threads.
    """

    def __init__(self, root: Path, max_bytes: int, *, on_evict: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.incoming = root / _INCOMING
        self._trash = root / _TRASH
        self._on_evict = on_evict
        self._state = threading.Lock()
        self._entries: dict[str, EntryT] = {}
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._pins: Counter[str] = Counter()
        self._loading = 0

    # --- start: rebuild the index from disk --------------------------------------------------

    def start(self, entry_name: re.Pattern[str], read_entry: Callable[[Path], EntryT | None]) -> None:
        """Clear the scratch folders and index the entries an earlier process left, oldest first.

        Only directories whose name matches ``entry_name`` are touched (a cache dir set to a shared folder
        loses nothing else); those ``read_entry`` returns None for are deleted.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for scratch in (self.incoming, self._trash):
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
        found: list[tuple[float, str, EntryT]] = []
        for child in self.root.iterdir():
            if entry_name.fullmatch(child.name) is None or not child.is_dir() or child.is_symlink():
                continue
            entry = read_entry(child)
            if entry is None:
                shutil.rmtree(self.retire(child), ignore_errors=True)
                continue
            for stale in child.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            found.append((child.stat().st_mtime, child.name, entry))
        with self._state:
            for _mtime, key, entry in sorted(found, key=lambda item: item[0]):
                self._entries[key] = entry
                self._sizes[key] = tree_size(self.root / key)
                self._total += self._sizes[key]
        if found:
            log_event("runner.cache_rebuilt", entries=len(found), bytes=self._total)
        self.evict(keep=None)

    # --- the index ----------------------------------------------------------------------------

    def get(self, key: str) -> EntryT | None:
        """The entry ``key``, marked as just used; None when the cache does not hold it."""
        with self._state:
            entry = self._entries.get(key)
            if entry is not None:
                self._sizes.move_to_end(key)
            return entry

    def size(self, key: str) -> int:
        """The bytes ``key`` takes on disk (0 when absent)."""
        with self._state:
            return self._sizes.get(key, 0)

    def usage(self) -> tuple[int, int]:
        """How many entries there are and the bytes they take."""
        with self._state:
            return len(self._sizes), self._total

    def add(self, key: str, entry: EntryT, reservation: Reservation) -> None:
        """Index ``entry``, whose directory ``<root>/<key>`` is in place; the reserved bytes become its size.

        One step under the lock, so the room is never counted free in between.  The caller runs
        :meth:`evict` once it is done with the entry's lock.
        """
        size = tree_size(self.root / key)
        with self._state:
            self._entries[key] = entry
            self._sizes[key] = size
            self._total += size
            self._loading -= reservation.bytes
            reservation.bytes = 0

    def settle(self, key: str, reservation: Reservation, size: int) -> None:
        """``size`` bytes written into entry ``key`` under ``reservation`` are now the entry's: they are counted
        for it and the whole reservation is given back in one step."""
        with self._state:
            if key in self._sizes:
                self._sizes[key] += size
                self._total += size
            self._loading -= reservation.bytes
            reservation.bytes = 0
        self.evict(keep=key)

    def grow(self, key: str, size: int) -> None:
        """Count ``size`` more (or, negative, fewer) bytes for ``key``, then evict what no longer fits."""
        with self._state:
            if key in self._sizes:
                self._sizes[key] += size
                self._total += size
        self.evict(keep=key)

    # --- pins and reservations ---------------------------------------------------------------

    @contextmanager
    def pinned(self, key: str) -> Iterator[None]:
        """Keep ``key`` from eviction for the block; when the last user leaves, catch up on eviction."""
        with self._state:
            self._pins[key] += 1
        try:
            yield
        finally:
            with self._state:
                self._pins[key] -= 1
                released = self._pins[key] <= 0
                if released:
                    del self._pins[key]
                over_budget = self._total + self._loading > self.max_bytes
            if released and over_budget:
                self.evict(keep=None)

    @contextmanager
    def reserving(self) -> Iterator[Reservation]:
        """A reservation for one load; whatever it still holds when the block ends is given back."""
        reservation = Reservation()
        try:
            yield reservation
        finally:
            with self._state:
                self._loading -= reservation.bytes
                reservation.bytes = 0

    def reserve(self, reservation: Reservation, size: int, *, what: str = "the bundle's files to unpack are") -> None:
        """Count ``size`` more bytes of a load in progress against the budget, evicting to make room.

        Raises ``RUNNER_BUSY`` when entries in use and other loads hold the room, and
        ``BUNDLE_UNPACKED_TOO_LARGE`` when the load alone (``what``, in its message) is larger than the
        whole budget.
        """
        if reservation.bytes + size > self.max_bytes:
            raise BundleUnpackedTooLarge(f"{what} larger than this runner's cache ({self.max_bytes} bytes)")
        with self._state:
            retired = self._retire_lru_locked(keep=None, need=size)
            fits = self._total + self._loading + size <= self.max_bytes
            if fits:
                self._loading += size
                reservation.bytes += size
        self._delete(retired)
        if not fits:
            log_event("runner.cache_full", level=logging.WARNING, need=size, max_bytes=self.max_bytes)
            raise RunnerBusy(
                "this runner's disk cache is full of bundles in use; retry shortly", retry_after=RETRY_AFTER_S
            )

    # --- eviction -----------------------------------------------------------------------------

    def retire(self, path: Path) -> Path:
        """Move ``path`` out of the cache's namespace at once; the caller deletes it at leisure.

        A rename is one metadata operation, so it is done under the state lock: once a key is gone from
        the index its directory is gone too, and a new load of it can never meet a half-deleted one.
        """
        target = self._trash / f"{path.name}.{uuid.uuid4().hex}"
        with suppress(FileNotFoundError):
            os.replace(path, target)
        return target

    def evict(self, keep: str | None) -> None:
        """Drop least recently used entries until the cache fits; pinned ones and ``keep`` stay."""
        with self._state:
            retired = self._retire_lru_locked(keep, need=0)
            total = self._total + self._loading
        self._delete(retired)
        if total > self.max_bytes:
            log_event("runner.cache_over_budget", level=logging.WARNING, bytes=total, max_bytes=self.max_bytes)

    def _retire_lru_locked(self, keep: str | None, need: int) -> list[tuple[str, Path]]:
        """Under the state lock: take least recently used entries out of the index until entries, loads in
        progress and ``need`` more bytes fit the budget; returns them for :meth:`_delete`."""
        retired: list[tuple[str, Path]] = []
        for key in list(self._sizes):
            if self._total + self._loading + need <= self.max_bytes:
                break
            if key == keep or self._pins[key]:
                continue
            self._total -= self._sizes.pop(key)
            self._entries.pop(key, None)
            retired.append((key, self.retire(self.root / key)))
        return retired

    def _delete(self, retired: list[tuple[str, Path]]) -> None:
        for key, path in retired:
            if self._on_evict is not None:
                self._on_evict(key)
            shutil.rmtree(path, ignore_errors=True)
            log_event("runner.bundle_evicted", content_hash=f"sha256:{key[:64]}", entry=key)
