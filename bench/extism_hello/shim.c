/*
 * shim.c: the hello example as an Extism plug-in, for the runner benchmark.
 *
 * Linked with examples/hello's own sources (main.c, json.c, base64.c, ext.c), so the plug-in does the
 * same JSON work as the runner's guest. Only the ABI differs: Extism calls the export `handle` with no
 * arguments; it reads the request from Extism's input, runs hello's `handler`, and sets Extism's output.
 * Defining `host_log` here resolves hello's ext.log import, so its log line goes to Extism's log_info;
 * the JSON imports (ext.http_fetch, ext.kv, ext.secret_get) resolve to refusals, as the benchmark's
 * routes never call them.
 */
#include <stdint.h>

#include "ext.h"

#define EXTISM_ENV(name) __attribute__((import_module("extism:host/env"), import_name(name)))

EXTISM_ENV("input_length") extern uint64_t extism_input_length(void);
EXTISM_ENV("input_load_u8") extern uint32_t extism_input_load_u8(uint64_t offset);
EXTISM_ENV("input_load_u64") extern uint64_t extism_input_load_u64(uint64_t offset);
EXTISM_ENV("alloc") extern uint64_t extism_alloc(uint64_t length);
EXTISM_ENV("free") extern void extism_free(uint64_t handle);
EXTISM_ENV("store_u8") extern void extism_store_u8(uint64_t handle, uint32_t value);
EXTISM_ENV("store_u64") extern void extism_store_u64(uint64_t handle, uint64_t value);
EXTISM_ENV("output_set") extern void extism_output_set(uint64_t handle, uint64_t length);
EXTISM_ENV("log_info") extern void extism_log_info(uint64_t handle);

int32_t handler(const uint8_t *request, int32_t request_len, uint8_t *out);

/* Copies `len` bytes into a new block of Extism's memory, 8 bytes at a time as Extism's PDKs do. */
static uint64_t to_extism(const uint8_t *data, uint64_t len)
{
    uint64_t handle = extism_alloc(len);
    uint64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        __builtin_memcpy(&word, data + i, 8);
        extism_store_u64(handle + i, word);
    }
    for (; i < len; i++) {
        extism_store_u8(handle + i, data[i]);
    }
    return handle;
}

void host_log(int32_t level, const uint8_t *ptr, int32_t len)
{
    (void)level;
    uint64_t handle = to_extism(ptr, (uint64_t)len);
    extism_log_info(handle);
    extism_free(handle);
}

int32_t host_http_fetch(const uint8_t *ptr, int32_t len, uint8_t *out)
{
    (void)ptr, (void)len, (void)out;
    return 1;
}

int32_t host_kv(const uint8_t *ptr, int32_t len, uint8_t *out)
{
    (void)ptr, (void)len, (void)out;
    return 1;
}

int32_t host_secret_get(const uint8_t *ptr, int32_t len, uint8_t *out)
{
    (void)ptr, (void)len, (void)out;
    return 1;
}

__attribute__((export_name("handle"))) int32_t handle(void)
{
    uint64_t len = extism_input_length();
    uint8_t *request = ext_alloc(len + 16);
    uint64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word = extism_input_load_u64(i);
        __builtin_memcpy(request + i, &word, 8);
    }
    for (; i < len; i++) {
        request[i] = (uint8_t)extism_input_load_u8(i);
    }
    uint8_t *out = request + ((len + 7) & ~(uint64_t)7);
    int32_t code = handler(request, (int32_t)len, out);
    uint32_t response, response_len;
    __builtin_memcpy(&response, out, 4);
    __builtin_memcpy(&response_len, out + 4, 4);
    extism_output_set(to_extism((const uint8_t *)(uintptr_t)response, response_len), response_len);
    return code;
}
