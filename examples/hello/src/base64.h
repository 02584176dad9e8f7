/*
 * base64.h: standard base64 (RFC 4648 section 4, with padding), as the ABI's
 * body_b64 fields use it.
 */
#ifndef BASE64_H
#define BASE64_H

#include "ext.h"

/* Appends the base64 encoding of `data` to `out`. */
void base64_encode(Buf *out, Bytes data);

/* Whether `text` is padded base64: whole 4-character groups, '=' only at the end. */
bool base64_is_valid(Bytes text);

/* Appends the bytes `text` encodes to `out`; false (and nothing appended) when it is not valid base64. */
bool base64_decode(Buf *out, Bytes text);

#endif
