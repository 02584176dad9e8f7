"""Faster ``list<u8>`` conversion for wasmtime-py 50.0.1's component values (a pinned workaround).

Why this exists: wasmtime-py 50.0.1 converts a ``list<u8>`` between Python ``bytes`` and the C API's
``wasmtime_component_val_t`` array one element at a time in Python (a ctypes call per byte): 1 MiB
takes over a second each way. There is no public API for bytes; the C array layout is public (the
C API's ``wasmtime_component_val_t``: a one-byte kind, then the value at a fixed offset), so this
module fills and reads it with strided slices instead: two slice assignments per list, no Python loop.

It replaces ``ListType.convert_to_c`` / ``convert_from_c`` (wasmtime-py internals) for byte lists only,
and only on the version it was written for: :func:`install` does nothing on any other wasmtime, so an
upgrade falls back to the stock (slow, correct) path, and ``tests/unit/test_wasmtime_bytes.py`` fails
until this module is checked against the new version. Everything else still goes through wasmtime-py.
"""

from __future__ import annotations

import ctypes
from importlib import metadata
from typing import Any

from wasmtime import _ffi as ffi  # private: see the module docstring
from wasmtime.component import _types as component_types  # private: see the module docstring

__all__ = ["PINNED_WASMTIME", "install", "installed"]

PINNED_WASMTIME = "50.0.1"
_VAL = ffi.wasmtime_component_val
_VAL_SIZE = ctypes.sizeof(_VAL)
_KIND_OFFSET = _VAL.kind.offset
_VALUE_OFFSET = _VAL.of.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST
_STOCK_TO_C = component_types.ListType.convert_to_c
_STOCK_FROM_C = component_types.ListType.convert_from_c
_state = {"installed": False}


def _array(address: int | None, size: int) -> memoryview:
    return memoryview((ctypes.c_char * size).from_address(address or 0)).cast("B")


def _bytes_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
    if not self._is_bytes():
        _STOCK_TO_C(self, store, val, ptr)
        return
    if not isinstance(val, bytes):
        raise TypeError("expected bytes value")
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(val))
    if val:
        cells = _array(ctypes.cast(raw.data, ctypes.c_void_p).value, len(val) * _VAL_SIZE)
        cells[_KIND_OFFSET::_VAL_SIZE] = bytes((_U8,)) * len(val)
        cells[_VALUE_OFFSET::_VAL_SIZE] = val
    ptr.contents.kind = _LIST
    ptr.contents.of.list = raw


def _bytes_from_c(self: Any, c: Any) -> Any:
    if not self._is_bytes():
        return _STOCK_FROM_C(self, c)
    try:
        size = c.of.list.size
        if not size:
            return b""
        cells = _array(ctypes.cast(c.of.list.data, ctypes.c_void_p).value, size * _VAL_SIZE)
        if cells[_KIND_OFFSET::_VAL_SIZE] != bytes((_U8,)) * size:
            raise TypeError("a list<u8> holds elements that are not u8")
        return bytes(cells[_VALUE_OFFSET::_VAL_SIZE])
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def install() -> bool:
    """Use the strided conversion for ``list<u8>`` (idempotent); ``False`` on another wasmtime version."""
    if _state["installed"]:
        return True
    if metadata.version("wasmtime") != PINNED_WASMTIME:
        return False
    component_types.ListType.convert_to_c = _bytes_to_c  # type: ignore[method-assign]
    component_types.ListType.convert_from_c = _bytes_from_c  # type: ignore[method-assign]
    _state["installed"] = True
    return True


def installed() -> bool:
    """Whether :func:`install` replaced the conversion in this process."""
    return _state["installed"]
