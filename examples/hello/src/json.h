/*
 * json.h: a small, strict JSON reader and a string writer.
 *
 * Reading never copies the document: a JsonValue points at the bytes of one value
 * inside it.  json_parse checks the whole document against RFC 8259 first (strict
 * grammar, valid UTF-8, nesting at most JSON_MAX_DEPTH), so a handler can refuse a
 * malformed request up front.  Every function checks its bounds on every byte, so
 * none of them can read outside the text it was given, valid or not.
 */
#ifndef JSON_H
#define JSON_H

#include "ext.h"

#define JSON_MAX_DEPTH 64

typedef enum {
    JSON_MISSING, /* no such member, or the text was not JSON */
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} JsonType;

typedef struct {
    JsonType type;
    Bytes token; /* the value's bytes, quotes and brackets included */
} JsonValue;

/* Parses a whole document; the result's type is JSON_MISSING when it is malformed. */
JsonValue json_parse(Bytes text);

/* The member `key` of an object (the first, if repeated); JSON_MISSING otherwise. */
JsonValue json_get(JsonValue object, const char *key);

/* Whether `value` is a string equal to `text` once its escapes are decoded. */
bool json_string_equals(JsonValue value, const char *text);

/*
 * Decodes a string value into fresh memory, keeping at most `max_bytes` bytes and never
 * splitting a character.  Lone surrogate escapes become U+FFFD, so the result is always
 * valid UTF-8.  Anything that is not a string decodes to no bytes.
 */
Bytes json_string_decode(JsonValue value, size_t max_bytes);

/* Appends `text` (valid UTF-8) as a quoted, escaped JSON string. */
void json_write_string(Buf *out, Bytes text);

/* Appends `text` escaped for use inside a JSON string, without the quotes. */
void json_write_escaped(Buf *out, Bytes text);

#endif
