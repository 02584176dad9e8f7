"""Faster calls into wasmtime-py 50.0.1 for the runner's fixed ABI signatures (a pinned workaround).

Why: ``wasmtime.Func.__call__`` reads the function's type over FFI and converts every argument and result
through ``Val`` objects on each call (about 15 µs for ``alloc``, 30 µs for ``handler`` here), and
``Global.set_value`` reads the global's type the same way. Both signatures are fixed by the ABI and checked
once when a module is prepared, so the runner builds the ``wasmtime_val_t`` arrays once per instance and calls
``wasmtime_func_call`` / ``wasmtime_global_set`` directly. wasmtime-py has no public way to do that, so this
module reaches into its private parts (``wasmtime._ffi``, ``Func._func``, ``Global._global``,
``Store._context()``, ``Trap._from_ptr``, ``WasmtimeError._from_ptr`` and ``wasmtime._func``'s pending host
exception), and only here.

It is written for wasmtime-py ``WRITTEN_FOR``. With any other version installed, :data:`AVAILABLE` is false and
every class below goes through the public API instead (slower, same behaviour); the test
``tests/integration/test_wasmtime_fast.py`` fails on such an upgrade so that someone re-checks this module.
Errors are raised exactly as ``Func.__call__`` raises them: a trap as :class:`wasmtime.Trap`, a host import's
exception as itself, anything else as :class:`wasmtime.WasmtimeError`.
"""

from __future__ import annotations

import ctypes
from importlib import metadata
from typing import Any

import wasmtime

__all__ = ["AVAILABLE", "WRITTEN_FOR", "I32Func", "IntegerGlobal"]

WRITTEN_FOR = "50.0.1"


def _private_parts() -> tuple[Any, Any] | None:
    """wasmtime-py's FFI module and ``_func`` module when they are the version this module was written for."""
    if metadata.version("wasmtime") != WRITTEN_FOR:
        return None
    try:
        from wasmtime import _ffi, _func
    except ImportError:
        return None
    needed = ("wasmtime_func_call", "wasmtime_global_set", "wasmtime_val_t", "wasm_trap_t")
    if not all(hasattr(_ffi, name) for name in needed) or not hasattr(_func, "maybe_raise_last_exn"):
        return None
    return _ffi, _func


_PARTS = _private_parts()
AVAILABLE = _PARTS is not None

# wasmtime_valkind_t values (wasmtime/val.h).
_KINDS = {"i32": 0, "i64": 1}


def _raise(error: Any, trap: Any) -> None:
    """Raise what ``Func.__call__`` raises for this error or trap pointer (``wasmtime._func.enter_wasm``)."""
    assert _PARTS is not None
    _, func_module = _PARTS
    if error:
        failure = wasmtime.WasmtimeError._from_ptr(error)
        func_module.maybe_raise_last_exn()
        raise failure
    trapped = wasmtime.Trap._from_ptr(trap)
    func_module.maybe_raise_last_exn()
    raise trapped


class I32Func:
    """An exported function of ``params`` i32 parameters and at most one i32 result, bound to its store.

    Calls return the result (a signed int, as wasmtime-py gives it) or None. One object must not be
    called from two threads at once; the runner gives each instance to one call at a time anyway.
    """

    __slots__ = ("_args", "_context", "_func", "_public", "_ref", "_results", "_store", "_trap_type")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, params: int, results: int) -> None:
        if results > 1:
            raise ValueError("I32Func supports at most one result")
        self._store = store
        self._public = func
        if _PARTS is None:
            return
        ffi, _ = _PARTS
        self._context = store._context()
        self._ref = ctypes.byref(func._func)
        self._args = (ffi.wasmtime_val_t * params)()
        for arg in self._args:
            arg.kind = _KINDS["i32"]
        self._results = (ffi.wasmtime_val_t * results)()
        self._trap_type = ctypes.POINTER(ffi.wasm_trap_t)
        self._func = ffi.wasmtime_func_call

    def __call__(self, *args: int) -> int | None:
        if _PARTS is None:
            result: int | None = self._public(self._store, *args)
            return result
        values = self._args
        for index, value in enumerate(args):
            values[index].of.i32 = value
        trap = self._trap_type()
        results = self._results
        error = self._func(self._context, self._ref, values, len(values), results, len(results), ctypes.byref(trap))
        if error or trap:
            _raise(error, trap)
        return results[0].of.i32 if len(results) else None


class IntegerGlobal:
    """A mutable i32 or i64 global whose value the host sets back."""

    __slots__ = ("_context", "_public", "_ref", "_set", "_store", "_value", "value")

    def __init__(self, store: wasmtime.Store, global_: wasmtime.Global) -> None:
        content = str(global_.type(store).content)
        if content not in _KINDS or not global_.type(store).mutable:
            raise ValueError(f"not a mutable integer global: {content}")
        self._store = store
        self._public = global_
        self.value: Any = global_.value(store)
        if _PARTS is None:
            return
        ffi, _ = _PARTS
        self._context = store._context()
        self._ref = ctypes.byref(global_._global)
        self._value = ffi.wasmtime_val_t()
        self._value.kind = _KINDS[content]
        setattr(self._value.of, content, self.value)
        self._set = ffi.wasmtime_global_set

    def reset(self) -> None:
        """Set the global back to :attr:`value`, the value it had when this object was made."""
        if _PARTS is None:
            self._public.set_value(self._store, self.value)
            return
        error = self._set(self._context, self._ref, ctypes.byref(self._value))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
