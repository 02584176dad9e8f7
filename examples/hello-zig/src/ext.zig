//! The plumbing of the wasm-core@1 ABI that every guest needs: the `alloc` export, the
//! host's `ext.log`, a bounds check for pointers the host passes, and handing the response
//! back through the out slot.
//!
//! The host drives one request like this, always from the state the module had right after
//! instantiation (so nothing is ever freed):
//!
//!   1. alloc(n)                        room for the request JSON, 8-byte padding and the out slot
//!   2. handler(req_ptr, req_len, out)  the guest answers; `out` = req_ptr + req_len rounded up to 8
//!   3. the host reads (resp_ptr, resp_len) from `out`, two little-endian u32
const std = @import("std");

/// Where allocations come from first: zeroed static memory, part of the module's initial memory.
/// `std.heap.wasm_allocator` alone would grow the memory on every request, and the runner does not
/// keep an instance whose memory grew: each request would then pay for a fresh instance.
var first_block: [256 * 1024]u8 = @splat(0);
var heap: std.heap.BufferFirstAllocator = .init(&first_block, std.heap.wasm_allocator);

/// Every allocation of the guest: `first_block`, then memory that `memory.grow` adds, then
/// `error.OutOfMemory` at the call's memory limit.
pub const allocator = heap.allocator();

pub const Level = enum(i32) { debug = 0, info = 1, warn = 2, err = 3 };

extern "ext" fn log(level: Level, ptr: [*]const u8, len: usize) void;

/// Writes one record to the platform's log (kept only with `cap:log.emit`).
pub fn logLine(level: Level, line: []const u8) void {
    log(level, line.ptr, line.len);
}

/// The ABI's `alloc`: `size` free bytes, or 0 when the memory cannot grow. Blocks are 8-byte
/// aligned; the host does not need that, but `out` lands on an 8-byte boundary of the block.
export fn alloc(size: i32) usize {
    if (size < 0) return 0;
    const block = allocator.alignedAlloc(u8, .@"8", @intCast(size)) catch return 0;
    return @intFromPtr(block.ptr);
}

/// Whether `len` bytes at address `ptr` lie inside the memory (a bad pointer from a caller
/// other than the platform's runner must not trap the guest).
pub fn inMemory(ptr: usize, len: usize) bool {
    const memory_bytes = @as(u64, @wasmMemorySize(0)) * std.wasm.page_size;
    return ptr != 0 and @as(u64, ptr) + len <= memory_bytes;
}

/// Stores `(response.ptr, response.len)` at `out` as two little-endian u32. A byte array
/// pointer has alignment 1, so this holds for any `out` the host passes.
pub fn respond(out: usize, response: []const u8) void {
    const slot: *[8]u8 = @ptrFromInt(out);
    std.mem.writeInt(u32, slot[0..4], @intFromPtr(response.ptr), .little);
    std.mem.writeInt(u32, slot[4..8], response.len, .little);
}

/// A safety check that fails (an index out of bounds, say) logs its message, then traps:
/// that request fails with 502 EXTENSION_FAILED, and the runner's log says why.
pub fn panicAndTrap(message: []const u8, _: ?usize) noreturn {
    logLine(.err, message);
    @trap();
}
