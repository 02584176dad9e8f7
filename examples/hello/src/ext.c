/*
 * ext.c: allocator, buffers, the host's functions and the `alloc` export (see ext.h).
 */
#include "ext.h"

#define WASM_PAGE_BYTES 65536u
#define ALIGNMENT 8u

/* Set by the linker to the first byte after the stack and static data. */
extern uint8_t __heap_base;

/* The next free byte of the heap; 0 until the first allocation. */
static uintptr_t heap_next;

/* The host's log function: module "ext", name "log". */
__attribute__((import_module("ext"), import_name("log"))) void host_log(int32_t level, const uint8_t *ptr,
                                                                          int32_t len);

/* The host's JSON functions: request in, (answer_ptr, answer_len) at `out`, 0 = done. */
__attribute__((import_module("ext"), import_name("http_fetch"))) int32_t host_http_fetch(const uint8_t *ptr,
                                                                                         int32_t len, uint8_t *out);
__attribute__((import_module("ext"), import_name("kv"))) int32_t host_kv(const uint8_t *ptr, int32_t len,
                                                                         uint8_t *out);
__attribute__((import_module("ext"), import_name("secret_get"))) int32_t host_secret_get(const uint8_t *ptr,
                                                                                         int32_t len, uint8_t *out);

static uint64_t memory_bytes(void)
{
    /* 64-bit arithmetic: a full 4 GiB memory does not fit in a wasm32 size_t. */
    return (uint64_t)__builtin_wasm_memory_size(0) * WASM_PAGE_BYTES;
}

/* A bump allocator: returns NULL when the memory cannot grow any more. */
static void *bump(size_t size)
{
    if (heap_next == 0) {
        heap_next = (uintptr_t)&__heap_base;
    }
    uint64_t start = ((uint64_t)heap_next + (ALIGNMENT - 1)) & ~(uint64_t)(ALIGNMENT - 1);
    uint64_t end = start + size;
    if (end > UINT32_MAX) {
        return NULL; /* beyond what a 32-bit address can reach */
    }
    uint64_t have = memory_bytes();
    if (end > have) {
        uint64_t pages = (end - have + WASM_PAGE_BYTES - 1) / WASM_PAGE_BYTES;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == SIZE_MAX) {
            return NULL;
        }
    }
    heap_next = (uintptr_t)end;
    return (void *)(uintptr_t)start;
}

/* The ABI's `alloc` export: the host asks for room for the request here.  0 = no memory. */
__attribute__((export_name("alloc"))) void *guest_alloc(int32_t size)
{
    if (size < 0) {
        return NULL;
    }
    return bump((size_t)size);
}

void *ext_alloc(size_t size)
{
    void *ptr = bump(size);
    if (ptr == NULL) {
        __builtin_trap();
    }
    return ptr;
}

bool ext_in_memory(const void *ptr, size_t len)
{
    return (uint64_t)(uintptr_t)ptr + len <= memory_bytes();
}

void ext_log(LogLevel level, Bytes line)
{
    host_log((int32_t)level, line.ptr, (int32_t)line.len);
}

static void store_le32(uint8_t *at, uint32_t value)
{
    for (int i = 0; i < 4; i++) {
        at[i] = (uint8_t)(value >> (8 * i));
    }
}

static uint32_t load_le32(const uint8_t *at)
{
    return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

typedef int32_t (*HostJsonFunction)(const uint8_t *ptr, int32_t len, uint8_t *out);

/* One call of a host JSON function; an answer the host did not leave in memory counts as a refusal. */
static HostAnswer host_call(HostJsonFunction function, Bytes request)
{
    uint8_t *out = ext_alloc(8);
    store_le32(out, 0);
    store_le32(out + 4, 0);
    int32_t code = function(request.ptr, (int32_t)request.len, out);
    Bytes answer = {(const uint8_t *)(uintptr_t)load_le32(out), load_le32(out + 4)};
    if (answer.ptr == NULL || !ext_in_memory(answer.ptr, answer.len)) {
        return (HostAnswer){false, BYTES("{\"error\":{\"code\":\"HOST_FAILED\",\"message\":\"no answer\"}}")};
    }
    return (HostAnswer){code == 0, answer};
}

HostAnswer ext_http_fetch(Bytes request)
{
    return host_call(host_http_fetch, request);
}

HostAnswer ext_kv(Bytes request)
{
    return host_call(host_kv, request);
}

HostAnswer ext_secret_get(Bytes name)
{
    return host_call(host_secret_get, name);
}

void ext_return(uint8_t *out, Bytes response)
{
    store_le32(out, (uint32_t)(uintptr_t)response.ptr);
    store_le32(out + 4, (uint32_t)response.len);
}

/* Makes room for `extra` more bytes, doubling the capacity so appends stay cheap. */
static void buf_reserve(Buf *b, size_t extra)
{
    if (extra <= b->cap - b->len) {
        return;
    }
    if (extra > SIZE_MAX / 2 - b->len) {
        __builtin_trap();
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    uint8_t *data = ext_alloc(cap);
    if (b->len > 0) {
        __builtin_memcpy(data, b->data, b->len);
    }
    b->data = data;
    b->cap = cap;
}

void buf_put(Buf *b, Bytes bytes)
{
    if (bytes.len == 0) {
        return;
    }
    buf_reserve(b, bytes.len);
    __builtin_memcpy(b->data + b->len, bytes.ptr, bytes.len);
    b->len += bytes.len;
}

void buf_put_byte(Buf *b, uint8_t byte)
{
    buf_reserve(b, 1);
    b->data[b->len++] = byte;
}

void buf_put_cstr(Buf *b, const char *text)
{
    size_t len = 0;
    while (text[len] != '\0') {
        len++;
    }
    buf_put(b, (Bytes){(const uint8_t *)text, len});
}

void buf_put_uint(Buf *b, uint32_t value)
{
    uint8_t digits[10];
    size_t n = 0;
    do {
        digits[n++] = (uint8_t)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (n > 0) {
        buf_put_byte(b, digits[--n]);
    }
}

Bytes buf_bytes(const Buf *b)
{
    return (Bytes){b->data, b->len};
}
