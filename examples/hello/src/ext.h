/*
 * ext.h: the plumbing of the wasm-core@1 ABI that every guest needs.
 *
 * The host (the platform's runner) drives a guest like this, once per request and
 * always from the state the module had right after instantiation:
 *
 *   1. alloc(size)                     the guest hands out memory for the request JSON
 *                                      and an 8-byte answer slot `out` (one block or two),
 *   2. the host writes the request JSON there,
 *   3. handler(req, len, out) == 0     the guest answers (see main.c),
 *   4. the host reads (resp_ptr, resp_len) at `out`, two little-endian i32, then the
 *      response JSON they point at.
 *
 * This header offers what a handler needs around that: an allocator, a growable
 * byte buffer, the host's functions (log, and the JSON ones: outgoing HTTP, key-value
 * storage, secrets), and the call that hands the response back.
 */
#ifndef EXT_H
#define EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A read-only run of bytes that is not NUL-terminated. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} Bytes;

/* Bytes of a string literal, without its terminating NUL. */
#define BYTES(literal) ((Bytes){(const uint8_t *)(literal), sizeof(literal) - 1})

/* Levels of the host's ext.log import. */
typedef enum {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
} LogLevel;

/*
 * Returns `size` bytes of fresh memory, aligned to 8 bytes.  Nothing is ever freed:
 * the next request starts from the memory as it was before the first.  Running out of memory
 * traps, which fails this request only (the host answers 502 EXTENSION_FAILED).
 */
void *ext_alloc(size_t size);

/* Whether [ptr, ptr + len) lies inside linear memory, so reading it cannot trap. */
bool ext_in_memory(const void *ptr, size_t len);

/* Sends one line to the platform's log (the ext.log import). */
void ext_log(LogLevel level, Bytes line);

/*
 * The host's JSON functions (module "ext", DESIGN §6 and §6c).  Each sends a request to the
 * host and returns its answer, a JSON document in fresh memory.  The result's `ok` is false
 * when the host refused or failed; the answer is then {"error": {"code", "message"}}.
 * A call the install has no capability for is refused (EGRESS_DENIED, KV_DENIED,
 * SECRET_DENIED), never a trap.
 *
 *   ext_http_fetch  {"url", "method", "headers", "body_b64"} -> {"status", "headers", "body_b64"}
 *                   (cap:http.fetch, and the host on the manifest's `egress` list)
 *   ext_kv          {"op": "get", "key"}                      -> {"value_b64", "revision"}
 *                   {"op": "set", "key", "value_b64", "if_revision"?} -> {"revision"}
 *                   {"op": "delete", "key"}                   -> {"deleted"}
 *                   {"op": "list", "prefix"?, "cursor"?, "limit"?} -> {"keys", "cursor"}
 *                   (cap:storage.kv; at most 100 operations per request)
 *   ext_secret_get  the secret's name (not JSON)              -> {"value"}
 *                   (cap:secrets.get, and the name declared under the manifest's `secrets`)
 */
typedef struct {
    bool ok;
    Bytes answer;
} HostAnswer;

HostAnswer ext_http_fetch(Bytes request);
HostAnswer ext_kv(Bytes request);
HostAnswer ext_secret_get(Bytes name);

/* Stores (response, response_len) at `out` for the host to pick up. */
void ext_return(uint8_t *out, Bytes response);

/* A growable byte buffer on the ext_alloc heap.  Start with `Buf b = {0};`. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} Buf;

void buf_put(Buf *b, Bytes bytes);
void buf_put_byte(Buf *b, uint8_t byte);
void buf_put_cstr(Buf *b, const char *text);
void buf_put_uint(Buf *b, uint32_t value);
Bytes buf_bytes(const Buf *b);

#endif
