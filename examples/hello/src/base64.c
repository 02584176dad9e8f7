/*
 * base64.c: see base64.h.
 */
#include "base64.h"

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(Buf *out, Bytes data)
{
    size_t i = 0;
    /* Every 3 input bytes become 4 characters of 6 bits each. */
    for (; data.len - i >= 3; i += 3) {
        uint32_t group = (uint32_t)data.ptr[i] << 16 | (uint32_t)data.ptr[i + 1] << 8 | data.ptr[i + 2];
        for (int shift = 18; shift >= 0; shift -= 6) {
            buf_put_byte(out, (uint8_t)ALPHABET[(group >> shift) & 0x3F]);
        }
    }
    /* 1 or 2 bytes left over: pad the last group with '='. */
    size_t rest = data.len - i;
    if (rest == 0) {
        return;
    }
    uint32_t group = (uint32_t)data.ptr[i] << 16 | (rest == 2 ? (uint32_t)data.ptr[i + 1] << 8 : 0);
    buf_put_byte(out, (uint8_t)ALPHABET[group >> 18]);
    buf_put_byte(out, (uint8_t)ALPHABET[(group >> 12) & 0x3F]);
    buf_put_byte(out, rest == 2 ? (uint8_t)ALPHABET[(group >> 6) & 0x3F] : '=');
    buf_put_byte(out, '=');
}

static bool in_alphabet(uint8_t ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' ||
           ch == '/';
}

bool base64_is_valid(Bytes text)
{
    if (text.len % 4 != 0) {
        return false;
    }
    size_t padding = 0;
    while (padding < 2 && padding < text.len && text.ptr[text.len - 1 - padding] == '=') {
        padding++;
    }
    for (size_t i = 0; i < text.len - padding; i++) {
        if (!in_alphabet(text.ptr[i])) {
            return false;
        }
    }
    return true;
}

static uint32_t sextet(uint8_t ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return (uint32_t)(ch - 'A');
    }
    if (ch >= 'a' && ch <= 'z') {
        return (uint32_t)(ch - 'a' + 26);
    }
    if (ch >= '0' && ch <= '9') {
        return (uint32_t)(ch - '0' + 52);
    }
    return ch == '+' ? 62 : 63;
}

bool base64_decode(Buf *out, Bytes text)
{
    if (!base64_is_valid(text)) {
        return false;
    }
    for (size_t i = 0; i < text.len; i += 4) {
        uint32_t group = 0;
        size_t bytes = 3;
        for (size_t j = 0; j < 4; j++) {
            uint8_t ch = text.ptr[i + j];
            if (ch == '=') {
                bytes--;
                group <<= 6;
                continue;
            }
            group = group << 6 | sextet(ch);
        }
        for (size_t k = 0; k < bytes; k++) {
            buf_put_byte(out, (uint8_t)(group >> (16 - 8 * k)));
        }
    }
    return true;
}
