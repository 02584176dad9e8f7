/*
 * main.c: the "hello" example extension.
 *
 * Routes (declared in manifest.json under api.endpoints):
 *
 *   GET  /hello?name=Ada   200 {"message": "Hello, Ada!"}   (name defaults to "world")
 *   GET  /info             200 {"extension": ..., "version": ..., "tenant": ...}
 *   POST /echo             200 the request body, byte for byte, with its content-type
 *   POST /counter          200 {"count": n}: adds one to the install's counter (KV storage)
 *   GET  /upstream?url=U   the status and body of U (default https://example.com/), fetched
 *                          with the install's secret API_KEY in the header x-api-key
 *   anything else          404 {"error": "no route for <path>"}
 *
 * A request the guest cannot read gets a 400 JSON answer, never a trap.  When the host
 * refuses a KV, secret or fetch call, the route answers {"error": {"code", "message"}}
 * as the host gave it (403 for *_DENIED, 404 for *_NOT_FOUND, 409 KV_CONFLICT, ...).
 *
 * Start reading at `handler`, the last function: it parses the request, logs one
 * line, picks a route and sends the route's reply back to the host.
 */
#include "base64.h"
#include "ext.h"
#include "json.h"

#define MAX_NAME_BYTES 100         /* longer names are cut, at a character boundary */
#define MAX_METHOD_BYTES 16        /* how much of the method goes into the log */
#define MAX_PATH_BYTES 200         /* how much of the path goes into logs and messages */
#define MAX_CONTENT_TYPE_BYTES 256 /* longer content types are not echoed */
#define MAX_CODE_BYTES 64          /* error codes from the host are short */
#define COUNTER_ATTEMPTS 8         /* compare-and-set rounds before giving up under contention */
#define DEFAULT_UPSTREAM "https://example.com/"

/* What a route answers; `send` turns it into the ABI's response JSON. */
typedef struct {
    uint32_t status;
    Bytes content_type;
    bool has_body; /* false sends "body_b64": null */
    Bytes body_b64;
} Reply;

/* A reply whose body is the JSON document in `json`. */
static Reply json_reply(uint32_t status, const Buf *json)
{
    Buf encoded = {0};
    base64_encode(&encoded, buf_bytes(json));
    return (Reply){status, BYTES("application/json"), true, buf_bytes(&encoded)};
}

/* {"error": "<message><detail>"}: `message` is a plain literal, `detail` may come from the request. */
static Reply error_reply(uint32_t status, const char *message, Bytes detail)
{
    Buf json = {0};
    buf_put_cstr(&json, "{\"error\":\"");
    buf_put_cstr(&json, message);
    json_write_escaped(&json, detail);
    buf_put_cstr(&json, "\"}");
    return json_reply(status, &json);
}

/* Appends `text` with control characters replaced, so one log entry stays one line. */
static void put_printable(Buf *out, Bytes text)
{
    for (size_t i = 0; i < text.len; i++) {
        uint8_t ch = text.ptr[i];
        buf_put_byte(out, ch < 0x20 || ch == 0x7F ? '?' : ch);
    }
}

static bool has_control_characters(Bytes text)
{
    for (size_t i = 0; i < text.len; i++) {
        if (text.ptr[i] < 0x20 || text.ptr[i] == 0x7F) {
            return true;
        }
    }
    return false;
}

/* Parses up to 9 decimal digits (so it cannot overflow); false for anything else. */
static bool parse_decimal(Bytes digits, uint32_t *value)
{
    if (digits.len == 0 || digits.len > 9) {
        return false;
    }
    uint32_t result = 0;
    for (size_t i = 0; i < digits.len; i++) {
        if (digits.ptr[i] < '0' || digits.ptr[i] > '9') {
            return false;
        }
        result = result * 10 + (uint32_t)(digits.ptr[i] - '0');
    }
    *value = result;
    return true;
}

static bool ends_with(Bytes text, const char *suffix)
{
    size_t len = 0;
    while (suffix[len] != '\0') {
        len++;
    }
    if (text.len < len) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (text.ptr[text.len - len + i] != (uint8_t)suffix[i]) {
            return false;
        }
    }
    return true;
}

/* The `error.code` of a host function's answer (no bytes when there is none). */
static Bytes host_error_code(HostAnswer answer)
{
    JsonValue code = json_get(json_get(json_parse(answer.answer), "error"), "code");
    return json_string_decode(code, MAX_CODE_BYTES);
}

static bool host_error_is(HostAnswer answer, const char *code)
{
    return json_string_equals(json_get(json_get(json_parse(answer.answer), "error"), "code"), code);
}

/* Passes on the host's {"error": {"code", "message"}}, with a status that fits its code. */
static Reply host_error_reply(HostAnswer answer)
{
    Bytes code = host_error_code(answer);
    uint32_t status = 502;
    if (ends_with(code, "_DENIED")) {
        status = 403;
    } else if (ends_with(code, "_NOT_FOUND")) {
        status = 404;
    } else if (ends_with(code, "_CONFLICT")) {
        status = 409;
    } else if (ends_with(code, "_QUOTA_EXCEEDED")) {
        status = 413;
    } else if (ends_with(code, "_INVALID")) {
        status = 400;
    } else if (ends_with(code, "_TIMEOUT")) {
        status = 504;
    } else if (ends_with(code, "_UNAVAILABLE")) {
        status = 503;
    }
    JsonValue error = json_get(json_parse(answer.answer), "error");
    Buf json = {0};
    buf_put_cstr(&json, "{\"error\":");
    if (error.type == JSON_OBJECT) {
        buf_put(&json, error.token);
    } else {
        buf_put_cstr(&json, "null");
    }
    buf_put_byte(&json, '}');
    return json_reply(status, &json);
}

/* ---- routes ------------------------------------------------------------------- */

/* GET /hello?name=Ada: greets `name` (query values arrive already percent-decoded). */
static Reply route_hello(JsonValue http)
{
    JsonValue name_value = json_get(json_get(http, "query"), "name");
    Bytes name = json_string_decode(name_value, MAX_NAME_BYTES);
    if (name.len == 0) {
        name = BYTES("world");
    }
    Buf json = {0};
    buf_put_cstr(&json, "{\"message\":\"Hello, ");
    json_write_escaped(&json, name);
    buf_put_cstr(&json, "!\"}");
    return json_reply(200, &json);
}

/* Copies a string member as it is (the request was validated, so it is valid JSON), or null. */
static void put_string_or_null(Buf *json, JsonValue object, const char *key)
{
    JsonValue value = json_get(object, key);
    if (value.type == JSON_STRING) {
        buf_put(json, value.token);
    } else {
        buf_put_cstr(json, "null");
    }
}

/* GET /info: who is calling, from the context the platform sends with every request. */
static Reply route_info(JsonValue context)
{
    Buf json = {0};
    buf_put_cstr(&json, "{\"extension\":");
    put_string_or_null(&json, context, "extension_id");
    buf_put_cstr(&json, ",\"version\":");
    put_string_or_null(&json, context, "version");
    buf_put_cstr(&json, ",\"tenant\":");
    put_string_or_null(&json, context, "tenant_id");
    buf_put_byte(&json, '}');
    return json_reply(200, &json);
}

/* The request's content-type when it is safe to send back as a header value. */
static Bytes echoed_content_type(JsonValue http)
{
    JsonValue header = json_get(json_get(http, "headers"), "content-type");
    Bytes value = json_string_decode(header, MAX_CONTENT_TYPE_BYTES + 1);
    if (value.len == 0 || value.len > MAX_CONTENT_TYPE_BYTES || has_control_characters(value)) {
        return BYTES("application/octet-stream");
    }
    return value;
}

/* POST /echo: the body goes back still base64-encoded, so binary bytes pass untouched. */
static Reply route_echo(JsonValue http)
{
    Reply reply = {200, echoed_content_type(http), false, {0, 0}};
    JsonValue body = json_get(http, "body_b64");
    if (body.type == JSON_NULL || body.type == JSON_MISSING) {
        return reply;
    }
    Bytes encoded = json_string_decode(body, SIZE_MAX);
    if (body.type != JSON_STRING || !base64_is_valid(encoded)) {
        return error_reply(400, "malformed request: http.body_b64 must be a base64 string or null", BYTES(""));
    }
    reply.has_body = true;
    reply.body_b64 = encoded;
    return reply;
}

/* The count stored in a KV get answer's value_b64 (decimal text); false when it is not one. */
static bool stored_count(JsonValue answer, uint32_t *count)
{
    Buf digits = {0};
    JsonValue value = json_get(answer, "value_b64");
    return value.type == JSON_STRING && base64_decode(&digits, json_string_decode(value, 64)) &&
           parse_decimal(buf_bytes(&digits), count);
}

/*
 * POST /counter: adds one to the install's counter, kept in KV storage under "counter" as
 * decimal text, and answers the new count.  Each write is a compare-and-set on the revision
 * it read (0: only while the key is absent), so concurrent requests never lose an increment;
 * a request that loses the race reads again and retries.
 */
static Reply route_counter(void)
{
    for (int attempt = 0; attempt < COUNTER_ATTEMPTS; attempt++) {
        HostAnswer got = ext_kv(BYTES("{\"op\":\"get\",\"key\":\"counter\"}"));
        uint32_t count = 0;
        Bytes revision = BYTES("0");
        if (got.ok) {
            JsonValue answer = json_parse(got.answer);
            JsonValue stored = json_get(answer, "revision");
            if (!stored_count(answer, &count) || stored.type != JSON_NUMBER || count == UINT32_MAX) {
                return error_reply(500, "the stored counter is not a count", BYTES(""));
            }
            revision = stored.token;
        } else if (!host_error_is(got, "KV_NOT_FOUND")) {
            return host_error_reply(got);
        }
        Buf digits = {0};
        buf_put_uint(&digits, count + 1);
        Buf set = {0};
        buf_put_cstr(&set, "{\"op\":\"set\",\"key\":\"counter\",\"value_b64\":\"");
        base64_encode(&set, buf_bytes(&digits));
        buf_put_cstr(&set, "\",\"if_revision\":");
        buf_put(&set, revision);
        buf_put_byte(&set, '}');
        HostAnswer stored = ext_kv(buf_bytes(&set));
        if (stored.ok) {
            Buf json = {0};
            buf_put_cstr(&json, "{\"count\":");
            buf_put(&json, buf_bytes(&digits));
            buf_put_byte(&json, '}');
            return json_reply(200, &json);
        }
        if (!host_error_is(stored, "KV_CONFLICT")) {
            return host_error_reply(stored);
        }
    }
    return error_reply(409, "the counter kept changing; try again", BYTES(""));
}

/*
 * GET /upstream?url=U: fetches U (default https://example.com/) with the install's secret
 * API_KEY in the header x-api-key, and answers the upstream's status and body.  The secret's
 * value goes from the host's answer into the fetch request as the same JSON string, unread.
 */
static Reply route_upstream(JsonValue http)
{
    HostAnswer secret = ext_secret_get(BYTES("API_KEY"));
    if (!secret.ok) {
        return host_error_reply(secret);
    }
    JsonValue value = json_get(json_parse(secret.answer), "value");
    JsonValue url = json_get(json_get(http, "query"), "url");
    if (value.type != JSON_STRING) {
        return error_reply(502, "the host answered secret_get without a value", BYTES(""));
    }
    Buf request = {0};
    buf_put_cstr(&request, "{\"method\":\"GET\",\"url\":");
    if (url.type == JSON_STRING) {
        buf_put(&request, url.token);
    } else {
        json_write_string(&request, BYTES(DEFAULT_UPSTREAM));
    }
    buf_put_cstr(&request, ",\"headers\":{\"x-api-key\":");
    buf_put(&request, value.token);
    buf_put_cstr(&request, "},\"body_b64\":null}");
    HostAnswer fetched = ext_http_fetch(buf_bytes(&request));
    if (!fetched.ok) {
        return host_error_reply(fetched);
    }
    JsonValue response = json_parse(fetched.answer);
    JsonValue status = json_get(response, "status");
    JsonValue body = json_get(response, "body_b64");
    uint32_t code = 0;
    if (status.type != JSON_NUMBER || !parse_decimal(status.token, &code) || body.type != JSON_STRING) {
        return error_reply(502, "the host answered http_fetch without a status and body", BYTES(""));
    }
    JsonValue content_type = json_get(json_get(response, "headers"), "content-type");
    Bytes type = json_string_decode(content_type, MAX_CONTENT_TYPE_BYTES + 1);
    if (type.len == 0 || type.len > MAX_CONTENT_TYPE_BYTES || has_control_characters(type)) {
        type = BYTES("application/octet-stream");
    }
    return (Reply){code, type, true, json_string_decode(body, SIZE_MAX)};
}

static Reply route_not_found(JsonValue path)
{
    return error_reply(404, "no route for ", json_string_decode(path, MAX_PATH_BYTES));
}

static Reply route(JsonValue method, JsonValue path, JsonValue http, JsonValue context)
{
    if (json_string_equals(method, "GET") && json_string_equals(path, "/hello")) {
        return route_hello(http);
    }
    if (json_string_equals(method, "GET") && json_string_equals(path, "/info")) {
        return route_info(context);
    }
    if (json_string_equals(method, "POST") && json_string_equals(path, "/echo")) {
        return route_echo(http);
    }
    if (json_string_equals(method, "POST") && json_string_equals(path, "/counter")) {
        return route_counter();
    }
    if (json_string_equals(method, "GET") && json_string_equals(path, "/upstream")) {
        return route_upstream(http);
    }
    return route_not_found(path);
}

/* ---- the ABI entry point -------------------------------------------------------- */

/* Logs "METHOD /path", one line per request. */
static void log_request(JsonValue method, JsonValue path)
{
    Buf line = {0};
    put_printable(&line, json_string_decode(method, MAX_METHOD_BYTES));
    buf_put_byte(&line, ' ');
    put_printable(&line, json_string_decode(path, MAX_PATH_BYTES));
    ext_log(LOG_INFO, buf_bytes(&line));
}

/* Reads the request and lets the matching route answer it. */
static Reply handle(const uint8_t *request, int32_t request_len)
{
    if (request_len < 0 || !ext_in_memory(request, (size_t)request_len)) {
        ext_log(LOG_WARN, BYTES("rejected a request that lies outside guest memory"));
        return error_reply(400, "malformed request: it lies outside guest memory", BYTES(""));
    }
    JsonValue root = json_parse((Bytes){request, (size_t)request_len});
    if (root.type != JSON_OBJECT) {
        ext_log(LOG_WARN, BYTES("rejected a request that is not a JSON object"));
        return error_reply(400, "malformed request: not a JSON object", BYTES(""));
    }
    JsonValue http = json_get(root, "http");
    JsonValue method = json_get(http, "method");
    JsonValue path = json_get(http, "path");
    if (method.type != JSON_STRING || path.type != JSON_STRING) {
        ext_log(LOG_WARN, BYTES("rejected a request without http.method and http.path"));
        return error_reply(400, "malformed request: http.method and http.path must be strings", BYTES(""));
    }
    log_request(method, path);
    return route(method, path, http, json_get(root, "context"));
}

/* {"status": 200, "headers": {"content-type": "..."}, "body_b64": "..." | null} */
static Bytes serialize(const Reply *reply)
{
    Buf json = {0};
    buf_put_cstr(&json, "{\"status\":");
    buf_put_uint(&json, reply->status);
    buf_put_cstr(&json, ",\"headers\":{\"content-type\":");
    json_write_string(&json, reply->content_type);
    buf_put_cstr(&json, "},\"body_b64\":");
    if (reply->has_body) {
        json_write_string(&json, reply->body_b64);
    } else {
        buf_put_cstr(&json, "null");
    }
    buf_put_byte(&json, '}');
    return buf_bytes(&json);
}

/*
 * The ABI's `handler` export.  Returns 0 after storing the response at `out`; any
 * other value tells the host the call failed (it answers 502 EXTENSION_FAILED).
 */
__attribute__((export_name("handler"))) int32_t handler(const uint8_t *request, int32_t request_len, uint8_t *out)
{
    if (out == NULL || !ext_in_memory(out, 8)) {
        return 1; /* nowhere to put an answer */
    }
    Reply reply = handle(request, request_len);
    ext_return(out, serialize(&reply));
    return 0;
}
