"""The instances the engine calls into: fresh ones, and kept ones restored after every call.

Every call must begin from the state its module has right after instantiation. A fresh instance per call
gives that by construction; a kept instance gives it when the host puts back everything the guest can observe
before the next call. :mod:`runner_container.restore_plan` decides, from the module's binary, for which modules
that is exactly memory plus mutable integer globals (tables and segments provably unchanged), and exports
those globals; for those modules this module keeps instances in an :class:`InstancePool`:

1. a new instance is snapshotted right after instantiation (:class:`Snapshot`): the memory's size and bytes
   (16 KiB blocks, larger for memories over 512 KiB; all-zero blocks are not stored) and the value of every
   mutable global;
2. the pool lends it to one call at a time;
3. after a call that returned normally, :meth:`Snapshot.restore` compares memory block by block with the
   snapshot and copies back only the blocks that differ, then sets every global back. A memory that grew
   cannot shrink, so such an instance is dropped instead; so is every instance whose call trapped, timed out
   or failed in any other way, whatever state it was left in.

Store limits (memory cap, table and instance counts) are per store, so kept instances are pooled per memory
cap; the epoch deadline and fuel are set again before every call by the engine.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import wasmtime

from runner_container.restore_plan import GLOBAL_EXPORT_PREFIX
from runner_container.wasmtime_fast import I32Func, IntegerGlobal

__all__ = [
    "BLOCK_BYTES",
    "MAX_IDLE_BYTES",
    "MAX_IDLE_PER_KEY",
    "RESTORE_MAX_MEMORY_BYTES",
    "Instance",
    "InstancePool",
    "Kept",
    "PoolStats",
    "Snapshot",
    "memory_address",
]

BLOCK_BYTES = 16 * 1024
# Each block costs a call through ctypes (~0.5 µs): larger memories use larger blocks, at most this many.
_MAX_BLOCKS = 32
# Restoring reads the whole memory (compare) even when little changed: wasmtime-py offers no dirty-page
# tracking. Past this size a fresh instance (copy-on-write memory, cost independent of size) is cheaper:
# measured here, a small guest's call took 32/38/58/77 µs kept against 100-107 µs fresh for memories of
# 128 KiB/256 KiB/1 MiB/2 MiB.
RESTORE_MAX_MEMORY_BYTES = 2 * 1024 * 1024
# Idle kept instances per (module, memory cap): enough for the runner's concurrent calls of one extension
# (a Lambda environment serves one call at a time); and the memory all idle instances may hold.
MAX_IDLE_PER_KEY = 4
MAX_IDLE_BYTES = 64 * 1024 * 1024

_libc = ctypes.CDLL(None)
_memcmp = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(("memcmp", _libc))
_ZERO_BLOCK = ctypes.create_string_buffer(RESTORE_MAX_MEMORY_BYTES // _MAX_BLOCKS)


def block_bytes(memory_bytes: int) -> int:
    """The block size restore compares and copies in: 16 KiB, or more to keep a large memory to 32 blocks."""
    return max(BLOCK_BYTES, -(-memory_bytes // _MAX_BLOCKS // BLOCK_BYTES) * BLOCK_BYTES)


def memory_address(memory: wasmtime.Memory, store: wasmtime.Store) -> int:
    """The address of the first byte of ``memory`` now (it may move when the memory grows)."""
    return ctypes.addressof(memory.data_ptr(store).contents)


@dataclass(eq=False)
class Instance:
    """An instantiated guest with the ABI exports the engine calls."""

    store: wasmtime.Store
    instance: wasmtime.Instance
    memory: wasmtime.Memory
    alloc: I32Func
    handler: I32Func

    @classmethod
    def start(cls, prepared: wasmtime.InstancePre, store: wasmtime.Store) -> Instance:
        """Instantiate ``prepared`` in ``store`` (raises what instantiation raises: limits, traps)."""
        instance = prepared.instantiate(store)
        exports = instance.exports(store)
        memory, alloc, handler = exports["memory"], exports["alloc"], exports["handler"]
        # The engine checked these types before preparing the module; the asserts narrow them for mypy.
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func)
        assert isinstance(handler, wasmtime.Func)
        return cls(store, instance, memory, I32Func(store, alloc, 1, 1), I32Func(store, handler, 3, 1))

    def close(self) -> None:
        """Free the store, its memory and instance now rather than at garbage collection."""
        self.store.close()


class Snapshot:
    """The state a kept instance had right after instantiation, and the means to put it back."""

    __slots__ = ("_blocks", "_globals", "_saved", "_size", "_zero")

    def __init__(self, instance: Instance) -> None:
        store, memory = instance.store, instance.memory
        self._size = memory.data_len(store)
        base = memory_address(memory, store)
        # (offset, length, address of the saved bytes or None for zeros); _saved keeps those bytes alive.
        blocks: list[tuple[int, int, int | None]] = []
        saved: list[ctypes.Array[ctypes.c_char]] = []
        block = block_bytes(self._size)
        # All-zero blocks compare against a zero buffer at least one block long.
        self._zero = _ZERO_BLOCK if block <= len(_ZERO_BLOCK) else ctypes.create_string_buffer(block)
        zero = ctypes.addressof(self._zero)
        for offset in range(0, self._size, block):
            length = min(block, self._size - offset)
            if _memcmp(base + offset, zero, length) == 0:
                blocks.append((offset, length, None))
            else:
                saved.append(ctypes.create_string_buffer(ctypes.string_at(base + offset, length), length))
                blocks.append((offset, length, ctypes.addressof(saved[-1])))
        self._blocks = blocks
        self._saved = saved
        self._globals = [
            IntegerGlobal(store, item)
            for name, item in instance.instance.exports(store).items()
            if name.startswith(GLOBAL_EXPORT_PREFIX) and isinstance(item, wasmtime.Global)
        ]

    @property
    def memory_bytes(self) -> int:
        """The memory's size at the snapshot."""
        return self._size

    def restore(self, instance: Instance) -> bool:
        """Put memory and globals back as they were at the snapshot; False (nothing done) if memory grew.

        Only blocks that differ are written. Call it only after a call that returned normally.
        """
        store, memory = instance.store, instance.memory
        if memory.data_len(store) != self._size:
            return False
        base, compare, zero = memory_address(memory, store), _memcmp, ctypes.addressof(self._zero)
        for offset, length, saved in self._blocks:
            if compare(base + offset, zero if saved is None else saved, length):
                if saved is None:
                    ctypes.memset(base + offset, 0, length)
                else:
                    ctypes.memmove(base + offset, saved, length)
        for global_ in self._globals:
            global_.reset()
        return True


@dataclass
class PoolStats:
    """Counts since the pool was made: kept instances ``created``; calls that ``reused`` an idle one;
    instances ``restored`` after a call; instances ``dropped`` (the call failed, the memory grew, or the
    pool was full); and the memory of the instances idle now (``idle_bytes``)."""

    created: int = 0
    reused: int = 0
    restored: int = 0
    dropped: int = 0
    idle_bytes: int = 0


@dataclass(eq=False)
class Kept:
    """An instance on loan from an :class:`InstancePool`, with its snapshot."""

    instance: Instance
    snapshot: Snapshot
    memory_cap: int


class InstancePool:
    """Idle kept instances per (module, memory cap); safe to share between threads.

    :meth:`lend` hands an instance to one caller only, who passes it to exactly one of :meth:`give_back`
    (the call returned normally) or :meth:`drop` (anything else). At most ``max_idle_per_key`` instances
    of one module and cap, and ``max_idle_bytes`` of memory in all (each instance counts its memory twice:
    the live pages and the snapshot), wait idle; a module's idle instances go soon after the module is
    garbage collected.
    """

    def __init__(self, max_idle_per_key: int = MAX_IDLE_PER_KEY, max_idle_bytes: int = MAX_IDLE_BYTES) -> None:
        self._max_idle = max_idle_per_key
        self._max_idle_bytes = max_idle_bytes
        self._lock = threading.Lock()
        # Modules are keyed by a token so that idle instances never keep their module alive; a collected
        # module's token is queued by its finalizer and its instances freed on the pool's next use (a
        # finalizer may run in the middle of any allocation, so it must not take the lock itself).
        self._tokens: weakref.WeakKeyDictionary[wasmtime.Module, int] = weakref.WeakKeyDictionary()
        self._next_token = itertools.count()
        self._collected: collections.deque[int] = collections.deque()
        self._idle: dict[tuple[int, int], list[Kept]] = {}
        self.stats = PoolStats()

    def _token(self, module: wasmtime.Module) -> int:
        token = self._tokens.get(module)
        if token is None:
            token = next(self._next_token)
            self._tokens[module] = token
            weakref.finalize(module, self._collected.append, token)
        return token

    def _forget_collected(self) -> list[Kept]:
        """Take the idle instances of collected modules out of the pool (call with the lock held)."""
        freed: list[Kept] = []
        while self._collected:
            token = self._collected.popleft()
            for key in [key for key in self._idle if key[0] == token]:
                freed.extend(self._idle.pop(key))
        for kept in freed:
            self.stats.idle_bytes -= 2 * kept.snapshot.memory_bytes
        return freed

    def lend(
        self,
        module: wasmtime.Module,
        prepared: wasmtime.InstancePre,
        memory_cap: int,
        new_store: Callable[[], wasmtime.Store],
    ) -> Kept:
        """An idle instance of ``module`` whose store is capped at ``memory_cap``, or a new one, snapshotted.

        Raises what instantiation raises; nothing is kept then.
        """
        with self._lock:
            freed = self._forget_collected()
            idle = self._idle.get((self._token(module), memory_cap))
            kept = idle.pop() if idle else None
            if kept is not None:
                self.stats.reused += 1
                self.stats.idle_bytes -= 2 * kept.snapshot.memory_bytes
        for stale in freed:
            stale.instance.close()
        if kept is not None:
            return kept
        instance = Instance.start(prepared, new_store())
        kept = Kept(instance, Snapshot(instance), memory_cap)
        with self._lock:
            self.stats.created += 1
        return kept

    def give_back(self, module: wasmtime.Module, kept: Kept) -> None:
        """Restore ``kept`` after a call that returned normally and keep it idle; drop it when its memory grew
        or the pool is full."""
        try:
            restored = kept.snapshot.restore(kept.instance)
        except BaseException:
            self.drop(kept)
            raise
        if not restored:
            self.drop(kept)
            return
        cost = 2 * kept.snapshot.memory_bytes
        with self._lock:
            self.stats.restored += 1
            idle = self._idle.setdefault((self._token(module), kept.memory_cap), [])
            if len(idle) < self._max_idle and self.stats.idle_bytes + cost <= self._max_idle_bytes:
                idle.append(kept)
                self.stats.idle_bytes += cost
                return
        self.drop(kept)

    def drop(self, kept: Kept) -> None:
        """Free ``kept`` without restoring it: whatever state its last call left goes with it."""
        kept.instance.close()
        with self._lock:
            self.stats.dropped += 1
