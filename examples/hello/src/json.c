/*
 * json.c: see json.h.
 *
 * One recursive-descent scanner serves both validation (json_parse) and lookup
 * (json_get): both walk a Cursor that refuses to step past its end.
 */
#include "json.h"

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Cursor;

static Cursor cursor_over(Bytes text)
{
    return (Cursor){text.ptr, text.ptr + text.len};
}

static bool at_end(const Cursor *c)
{
    return c->p >= c->end;
}

static bool peek_is(const Cursor *c, uint8_t ch)
{
    return !at_end(c) && *c->p == ch;
}

static bool take(Cursor *c, uint8_t ch)
{
    if (!peek_is(c, ch)) {
        return false;
    }
    c->p++;
    return true;
}

static void skip_whitespace(Cursor *c)
{
    while (!at_end(c) && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) {
        c->p++;
    }
}

static bool take_literal(Cursor *c, const char *literal)
{
    for (; *literal != '\0'; literal++) {
        if (!take(c, (uint8_t)*literal)) {
            return false;
        }
    }
    return true;
}

static int hex_value(uint8_t ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Reads the 4 hex digits of a \u escape; -1 when they are not there. */
static int32_t take_hex4(Cursor *c)
{
    if (c->end - c->p < 4) {
        return -1;
    }
    int32_t value = 0;
    for (int i = 0; i < 4; i++) {
        int digit = hex_value(c->p[i]);
        if (digit < 0) {
            return -1;
        }
        value = value * 16 + digit;
    }
    c->p += 4;
    return value;
}

/*
 * Length of the well-formed UTF-8 sequence at c->p (1 to 4 bytes), or 0 when it is
 * not one: overlong forms, UTF-16 surrogates and code points past U+10FFFF are refused
 * (Unicode 15, table 3-7).
 */
static size_t utf8_sequence_length(const Cursor *c)
{
    uint8_t lead = c->p[0];
    size_t length;
    uint8_t low = 0x80, high = 0xBF; /* allowed range of the second byte */
    if (lead < 0x80) {
        return 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        low = lead == 0xE0 ? 0xA0 : 0x80;
        high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        low = lead == 0xF0 ? 0x90 : 0x80;
        high = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if ((size_t)(c->end - c->p) < length || c->p[1] < low || c->p[1] > high) {
        return 0;
    }
    for (size_t i = 2; i < length; i++) {
        if ((c->p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return length;
}

static bool scan_string(Cursor *c)
{
    if (!take(c, '"')) {
        return false;
    }
    while (!at_end(c)) {
        uint8_t ch = *c->p;
        if (ch == '"') {
            c->p++;
            return true;
        }
        if (ch < 0x20) {
            return false; /* control characters must be escaped */
        }
        if (ch == '\\') {
            c->p++;
            if (at_end(c)) {
                return false;
            }
            uint8_t kind = *c->p++;
            if (kind == 'u') {
                if (take_hex4(c) < 0) {
                    return false;
                }
            } else if (kind != '"' && kind != '\\' && kind != '/' && kind != 'b' && kind != 'f' && kind != 'n' &&
                       kind != 'r' && kind != 't') {
                return false;
            }
            continue;
        }
        size_t length = utf8_sequence_length(c);
        if (length == 0) {
            return false;
        }
        c->p += length;
    }
    return false; /* no closing quote */
}

static bool scan_digits(Cursor *c)
{
    const uint8_t *start = c->p;
    while (!at_end(c) && *c->p >= '0' && *c->p <= '9') {
        c->p++;
    }
    return c->p > start;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  A leading zero ends the integer part. */
static bool scan_number(Cursor *c)
{
    take(c, '-');
    if (!take(c, '0') && !scan_digits(c)) {
        return false;
    }
    if (take(c, '.') && !scan_digits(c)) {
        return false;
    }
    if (take(c, 'e') || take(c, 'E')) {
        if (!take(c, '+')) {
            take(c, '-');
        }
        return scan_digits(c);
    }
    return true;
}

static bool scan_value(Cursor *c, int depth, JsonType *type);

static bool scan_array(Cursor *c, int depth)
{
    JsonType ignored;
    c->p++; /* '[' */
    skip_whitespace(c);
    if (take(c, ']')) {
        return true;
    }
    for (;;) {
        if (!scan_value(c, depth + 1, &ignored)) {
            return false;
        }
        skip_whitespace(c);
        if (take(c, ']')) {
            return true;
        }
        if (!take(c, ',')) {
            return false;
        }
        skip_whitespace(c);
    }
}

static bool scan_object(Cursor *c, int depth)
{
    JsonType ignored;
    c->p++; /* '{' */
    skip_whitespace(c);
    if (take(c, '}')) {
        return true;
    }
    for (;;) {
        if (!scan_string(c)) {
            return false;
        }
        skip_whitespace(c);
        if (!take(c, ':')) {
            return false;
        }
        skip_whitespace(c);
        if (!scan_value(c, depth + 1, &ignored)) {
            return false;
        }
        skip_whitespace(c);
        if (take(c, '}')) {
            return true;
        }
        if (!take(c, ',')) {
            return false;
        }
        skip_whitespace(c);
    }
}

/* Steps over one value starting exactly at c->p, reporting its type. */
static bool scan_value(Cursor *c, int depth, JsonType *type)
{
    if (at_end(c)) {
        return false;
    }
    switch (*c->p) {
    case '"':
        *type = JSON_STRING;
        return scan_string(c);
    case '{':
        *type = JSON_OBJECT;
        return depth < JSON_MAX_DEPTH && scan_object(c, depth);
    case '[':
        *type = JSON_ARRAY;
        return depth < JSON_MAX_DEPTH && scan_array(c, depth);
    case 't':
        *type = JSON_TRUE;
        return take_literal(c, "true");
    case 'f':
        *type = JSON_FALSE;
        return take_literal(c, "false");
    case 'n':
        *type = JSON_NULL;
        return take_literal(c, "null");
    default:
        *type = JSON_NUMBER;
        return scan_number(c);
    }
}

static const JsonValue MISSING = {JSON_MISSING, {0, 0}};

/* Scans one value at the cursor into a JsonValue; MISSING when it is malformed. */
static JsonValue read_value(Cursor *c)
{
    JsonValue value;
    const uint8_t *start = c->p;
    if (!scan_value(c, 0, &value.type)) {
        return MISSING;
    }
    value.token = (Bytes){start, (size_t)(c->p - start)};
    return value;
}

JsonValue json_parse(Bytes text)
{
    Cursor c = cursor_over(text);
    skip_whitespace(&c);
    JsonValue root = read_value(&c);
    skip_whitespace(&c);
    return at_end(&c) ? root : MISSING;
}

JsonValue json_get(JsonValue object, const char *key)
{
    if (object.type != JSON_OBJECT) {
        return MISSING;
    }
    Cursor c = cursor_over(object.token);
    c.p++; /* '{' */
    skip_whitespace(&c);
    if (peek_is(&c, '}')) {
        return MISSING;
    }
    for (;;) {
        JsonValue name = read_value(&c);
        skip_whitespace(&c);
        if (name.type != JSON_STRING || !take(&c, ':')) {
            return MISSING;
        }
        skip_whitespace(&c);
        JsonValue value = read_value(&c);
        if (value.type == JSON_MISSING) {
            return MISSING;
        }
        if (json_string_equals(name, key)) {
            return value;
        }
        skip_whitespace(&c);
        if (!take(&c, ',')) {
            return MISSING;
        }
        skip_whitespace(&c);
    }
}

/* Writes code point `cp` as UTF-8 into `out`; returns the byte count. */
static size_t encode_utf8(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* The code point of a \u escape whose "\u" is already consumed, pairing surrogates. */
static uint32_t take_unicode_escape(Cursor *c)
{
    const uint32_t replacement = 0xFFFD;
    int32_t unit = take_hex4(c);
    if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) {
        return replacement;
    }
    if (unit < 0xD800 || unit > 0xDBFF) {
        return (uint32_t)unit;
    }
    Cursor ahead = *c;
    if (!take(&ahead, '\\') || !take(&ahead, 'u')) {
        return replacement;
    }
    int32_t low = take_hex4(&ahead);
    if (low < 0xDC00 || low > 0xDFFF) {
        return replacement; /* the next escape is read on its own */
    }
    *c = ahead;
    return 0x10000 + (((uint32_t)unit - 0xD800) << 10) + ((uint32_t)low - 0xDC00);
}

/*
 * Decodes the next character of a string body into `out` and returns its length in
 * bytes (1 to 4), or 0 at the closing quote or anything unexpected.
 */
static size_t next_char(Cursor *c, uint8_t out[4])
{
    if (at_end(c) || *c->p == '"') {
        return 0;
    }
    if (*c->p != '\\') {
        size_t length = utf8_sequence_length(c);
        for (size_t i = 0; i < length; i++) {
            out[i] = *c->p++;
        }
        return length;
    }
    c->p++;
    if (at_end(c)) {
        return 0;
    }
    uint8_t kind = *c->p++;
    switch (kind) {
    case 'b':
        out[0] = '\b';
        return 1;
    case 'f':
        out[0] = '\f';
        return 1;
    case 'n':
        out[0] = '\n';
        return 1;
    case 'r':
        out[0] = '\r';
        return 1;
    case 't':
        out[0] = '\t';
        return 1;
    case 'u':
        return encode_utf8(take_unicode_escape(c), out);
    case '"':
    case '\\':
    case '/':
        out[0] = kind;
        return 1;
    default:
        return 0;
    }
}

/* A cursor over the characters of a string value, just past its opening quote. */
static Cursor string_body(JsonValue value)
{
    Cursor c = cursor_over(value.token);
    c.p++;
    return c;
}

bool json_string_equals(JsonValue value, const char *text)
{
    if (value.type != JSON_STRING) {
        return false;
    }
    Cursor c = string_body(value);
    const uint8_t *expected = (const uint8_t *)text;
    uint8_t ch[4];
    size_t length;
    while ((length = next_char(&c, ch)) > 0) {
        for (size_t i = 0; i < length; i++) {
            if (*expected == '\0' || *expected != ch[i]) {
                return false;
            }
            expected++;
        }
    }
    return *expected == '\0';
}

Bytes json_string_decode(JsonValue value, size_t max_bytes)
{
    if (value.type != JSON_STRING) {
        return (Bytes){0, 0};
    }
    /* Decoding never grows a string: an escape is always longer than what it stands for. */
    size_t room = value.token.len < max_bytes ? value.token.len : max_bytes;
    uint8_t *text = ext_alloc(room);
    size_t len = 0;
    Cursor c = string_body(value);
    uint8_t ch[4];
    size_t length;
    while ((length = next_char(&c, ch)) > 0 && length <= room - len) {
        for (size_t i = 0; i < length; i++) {
            text[len++] = ch[i];
        }
    }
    return (Bytes){text, len};
}

void json_write_escaped(Buf *out, Bytes text)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < text.len; i++) {
        uint8_t ch = text.ptr[i];
        const char *escape = ch == '"'    ? "\\\""
                             : ch == '\\' ? "\\\\"
                             : ch == '\n' ? "\\n"
                             : ch == '\r' ? "\\r"
                             : ch == '\t' ? "\\t"
                                          : NULL;
        if (escape != NULL) {
            buf_put_cstr(out, escape);
        } else if (ch < 0x20) {
            buf_put_cstr(out, "\\u00");
            buf_put_byte(out, (uint8_t)hex[ch >> 4]);
            buf_put_byte(out, (uint8_t)hex[ch & 0xF]);
        } else {
            buf_put_byte(out, ch);
        }
    }
}

void json_write_string(Buf *out, Bytes text)
{
    buf_put_byte(out, '"');
    json_write_escaped(out, text);
    buf_put_byte(out, '"');
}
