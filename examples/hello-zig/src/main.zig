//! The "hello" example extension in Zig: the same routes and answers as the C example.
//!
//!   GET  /hello?name=Ada   200 {"message": "Hello, Ada!"}   (name defaults to "world")
//!   GET  /info             200 {"extension": ..., "version": ..., "tenant": ...}
//!   POST /echo             200 the request body, byte for byte, with its content-type
//!   anything else          404 {"error": "no route for <path>"}
//!
//! Routes are picked by `endpoint.handler`: the label manifest.json gives each endpoint under
//! `api.endpoints`, sent with every request. It names no export: the only function the platform
//! calls is `handler`, at the end of this file. A request the guest cannot read gets a 400 JSON
//! answer, never a trap.
const std = @import("std");
const ext = @import("ext.zig");
const Value = std.json.Value;

/// A failed safety check (an index out of bounds, say) logs its message and traps.
pub const panic = std.debug.FullPanic(ext.panicAndTrap);

const max_name_bytes = 100; // longer names are cut, at a character boundary
const max_method_bytes = 16; // how much of the method goes into the log
const max_path_bytes = 200; // how much of the path goes into logs and messages
const max_content_type_bytes = 256; // longer content types are not echoed

/// What a route answers; `handler` turns it into the ABI's response JSON.
const Reply = struct { status: u16, content_type: []const u8, body_b64: ?[]const u8 };

/// A reply whose body is `body` as JSON (Stringify escapes every string in it).
fn jsonReply(status: u16, body: anytype) !Reply {
    const text = try std.json.Stringify.valueAlloc(ext.allocator, body, .{});
    const encoder = std.base64.standard.Encoder;
    const encoded = encoder.encode(try ext.allocator.alloc(u8, encoder.calcSize(text.len)), text);
    return .{ .status = status, .content_type = "application/json", .body_b64 = encoded };
}

fn errorReply(status: u16, message: []const u8) !Reply {
    return jsonReply(status, .{ .@"error" = message });
}

/// A 400 for a request the guest cannot read, with one warning in the log.
fn malformed(message: []const u8) !Reply {
    ext.logLine(.warn, message);
    return errorReply(400, message);
}

/// The member `key` of an object; null when it is missing or `value` is no object.
fn member(value: ?Value, key: []const u8) ?Value {
    const object = value orelse return null;
    return if (object == .object) object.object.get(key) else null;
}

fn string(value: ?Value) ?[]const u8 {
    const v = value orelse return null;
    return if (v == .string) v.string else null;
}

/// `text` cut to at most `max` bytes without splitting a character (JSON strings are UTF-8).
fn cut(text: []const u8, max: usize) []const u8 {
    if (text.len <= max) return text;
    var end = max;
    while (end > 0 and text[end] & 0xC0 == 0x80) end -= 1;
    return text[0..end];
}

fn isControl(ch: u8) bool {
    return ch < 0x20 or ch == 0x7F;
}

// ---- routes ----------------------------------------------------------------------------

/// GET /hello?name=Ada: query values arrive already percent-decoded.
fn hello(http: ?Value) !Reply {
    const name = cut(string(member(member(http, "query"), "name")) orelse "", max_name_bytes);
    const parts = [_][]const u8{ "Hello, ", if (name.len == 0) "world" else name, "!" };
    return jsonReply(200, .{ .message = try std.mem.concat(ext.allocator, u8, &parts) });
}

/// GET /info: who is calling, from the context the platform sends with every request.
fn info(context: ?Value) !Reply {
    return jsonReply(200, .{
        .extension = string(member(context, "extension_id")),
        .version = string(member(context, "version")),
        .tenant = string(member(context, "tenant_id")),
    });
}

/// POST /echo: the body goes back still base64-encoded, so binary bytes pass untouched.
fn echo(http: ?Value) !Reply {
    const header = string(member(member(http, "headers"), "content-type")) orelse "";
    const usable = header.len > 0 and header.len <= max_content_type_bytes and !containsControl(header);
    const content_type = if (usable) header else "application/octet-stream";
    const body = member(http, "body_b64") orelse .null;
    if (body == .null) return .{ .status = 200, .content_type = content_type, .body_b64 = null };
    if (body != .string or !isBase64(body.string)) {
        return errorReply(400, "malformed request: http.body_b64 must be a base64 string or null");
    }
    return .{ .status = 200, .content_type = content_type, .body_b64 = body.string };
}

fn containsControl(text: []const u8) bool {
    for (text) |ch| if (isControl(ch)) return true;
    return false;
}

fn isBase64(text: []const u8) bool {
    const decoder = std.base64.standard.Decoder;
    const size = decoder.calcSizeForSlice(text) catch return false;
    const scratch = ext.allocator.alloc(u8, size) catch return false;
    decoder.decode(scratch, text) catch return false;
    return true;
}

// ---- the ABI entry point ---------------------------------------------------------------

/// Logs "METHOD /path" with control characters replaced, so one record stays one line.
fn logRequest(method: []const u8, path: []const u8) !void {
    const parts = [_][]const u8{ cut(method, max_method_bytes), " ", cut(path, max_path_bytes) };
    const line = try std.mem.concat(ext.allocator, u8, &parts);
    for (line) |*ch| {
        if (isControl(ch.*)) ch.* = '?';
    }
    ext.logLine(.info, line);
}

/// Reads the request and lets the route its endpoint's label names answer it.
fn handle(request_ptr: usize, request_len: usize) !Reply {
    if (!ext.inMemory(request_ptr, request_len)) {
        return malformed("malformed request: it lies outside guest memory");
    }
    const raw = @as([*]const u8, @ptrFromInt(request_ptr))[0..request_len];
    const parsed = std.json.parseFromSliceLeaky(Value, ext.allocator, raw, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return malformed("malformed request: not a JSON object"),
    };
    if (parsed != .object) return malformed("malformed request: not a JSON object");
    const http = member(parsed, "http");
    const method = string(member(http, "method"));
    const path = string(member(http, "path"));
    if (method == null or path == null) {
        return malformed("malformed request: http.method and http.path must be strings");
    }
    try logRequest(method.?, path.?);
    const label = string(member(member(parsed, "endpoint"), "handler")) orelse "";
    if (std.mem.eql(u8, label, "hello")) return hello(http);
    if (std.mem.eql(u8, label, "info")) return info(member(parsed, "context"));
    if (std.mem.eql(u8, label, "echo")) return echo(http);
    const parts = [_][]const u8{ "no route for ", cut(path.?, max_path_bytes) };
    return errorReply(404, try std.mem.concat(ext.allocator, u8, &parts));
}

/// The ABI's `handler`: 0 after storing the response at `out`. Anything else (1: nowhere to
/// answer, 2: out of memory) makes the platform answer 502 EXTENSION_FAILED.
export fn handler(request_ptr: usize, request_len: usize, out: usize) i32 {
    if (!ext.inMemory(out, 8)) return 1;
    const reply = handle(request_ptr, request_len) catch return 2;
    const response = std.json.Stringify.valueAlloc(ext.allocator, .{
        .status = reply.status,
        .headers = .{ .@"content-type" = reply.content_type },
        .body_b64 = reply.body_b64,
    }, .{}) catch return 2;
    ext.respond(out, response);
    return 0;
}
