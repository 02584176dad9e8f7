"""What a person needs to read a failed call: the WebAssembly backtrace and the guest's last stderr.

The HTTP answer of a failed call stays ``EXTENSION_FAILED`` with the request id; these details travel on
the error (``ExtError.details``, which no surface sends to a client) to the runner's ``runner.call`` log
line, where ``extctl logs`` (and ``extctl call``, for the request it made) finds them.

- :func:`backtrace`: one line per frame, innermost first, from wasmtime's ``Trap.frames`` (function names
  come from the module's ``name`` section, so guests built with names keep them), or parsed from the
  ``wasm backtrace:`` block of a component error's text, which carries no frame objects;
- :func:`with_details`: the error with those lines and the stderr tail added, both bounded.
"""

from __future__ import annotations

import re

import wasmtime

from chalicelib.errors import ExtError

__all__ = ["MAX_FRAMES", "STDERR_TAIL_BYTES", "backtrace", "with_details"]

MAX_FRAMES = 32
"""Frames kept (innermost first): a runaway recursion has thousands, and the top ones tell the story."""
STDERR_TAIL_BYTES = 4096
"""The end of the guest's stderr kept on a failure: where an interpreter prints the exception."""
_FRAME_LINE = re.compile(r"^\s*\d+:\s+(0x[0-9a-f]+)\s+-\s+(.+?)\s*$")


def _frame(frame: wasmtime.Frame) -> str:
    name = frame.func_name or f"<wasm function {frame.func_index}>"
    module = f"{frame.module_name}!" if frame.module_name else ""
    return f"{module}{name} @ {frame.module_offset:#x}"


def backtrace(exc: BaseException) -> tuple[str, ...]:
    """The frames of the trap behind ``exc``, innermost first, at most :data:`MAX_FRAMES` (plus a count)."""
    if isinstance(exc, wasmtime.Trap):
        lines = [_frame(frame) for frame in exc.frames]
    else:
        # Component errors are WasmtimeError with the backtrace only in their text.
        found = (_FRAME_LINE.match(line) for line in str(exc).splitlines())
        lines = [f"{m.group(2).removeprefix('<unknown>!')} @ {m.group(1)}" for m in found if m]
    if len(lines) > MAX_FRAMES:
        lines = [*lines[:MAX_FRAMES], f"… {len(lines) - MAX_FRAMES} more frames"]
    return tuple(lines)


def with_details(error: ExtError, exc: BaseException, stderr: bytes = b"") -> ExtError:
    """``error`` carrying ``backtrace`` (when the failure was a trap) and ``stderr`` (its tail, when any)."""
    frames = backtrace(exc)
    if frames:
        error.details["backtrace"] = list(frames)
    tail = stderr[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace").strip()
    if tail:
        error.details["stderr"] = tail
    return error
