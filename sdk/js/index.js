// The JavaScript/TypeScript SDK for wasm-component@1 extensions (world ext:platform/extension).
//
//   import { handler, Response } from "@ext-platform/sdk";
//   export { handle } from "@ext-platform/sdk";          // the component's entry point
//   handler("hello", (req, ctx) => Response.json({ hello: req.query.name ?? "world" }));
//
// `extctl build` bundles this file with the project's src/main.ts (esbuild) and builds the
// component with componentize-js. The SDK routes each call by the manifest endpoint's handler name
// (unknown name: 404; a thrown error: 500, logged) and gives typed access to the host's services:
// ctx.log, ctx.http, ctx.kv, ctx.secrets. A refused host call throws HostError (.code is the WIT
// case, e.g. "denied").
import { emit } from "ext:platform/log@1.0.0";
import { fetch as hostFetch } from "ext:platform/http@1.0.0";
import { get as kvGet, set as kvSet, delete as kvDelete, listKeys as kvListKeys } from "ext:platform/kv@1.0.0";
import { get as secretGet } from "ext:platform/secrets@1.0.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const handlers = new Map();

export class HostError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = "HostError";
    this.code = code;
    this.detail = message || "";
  }
}

function hostCall(call) {
  try {
    return call();
  } catch (error) {
    const payload = error && error.payload;
    if (payload && typeof payload.tag === "string") {
      throw new HostError(payload.tag, typeof payload.val === "string" ? payload.val : "");
    }
    throw error;
  }
}

function toBytes(value) {
  if (value === undefined || value === null) return new Uint8Array(0);
  if (typeof value === "string") return encoder.encode(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("a body must be a string, an ArrayBuffer or a typed array");
}

/** Registers `fn(req, ctx)` as the handler the manifest calls `name`. */
export function handler(name, fn) {
  if (handlers.has(name)) throw new Error(`two handlers are registered as ${JSON.stringify(name)}`);
  handlers.set(name, fn);
}

export class Response {
  constructor(status = 200, headers = {}, body = new Uint8Array(0)) {
    this.status = status;
    this.headers = headers;
    this.body = toBytes(body);
  }
  static json(value, status = 200, headers = {}) {
    return new Response(status, { "content-type": "application/json", ...headers }, JSON.stringify(value));
  }
  static text(value, status = 200, headers = {}) {
    return new Response(status, { "content-type": "text/plain; charset=utf-8", ...headers }, value);
  }
}

const log = {
  debug: (message) => emit("debug", String(message)),
  info: (message) => emit("info", String(message)),
  warn: (message) => emit("warn", String(message)),
  error: (message) => emit("error", String(message)),
};

const http = {
  /** Fetches `url` through the platform's egress checks; needs cap:http.fetch and an egress entry. */
  fetch(url, { method = "GET", headers = {}, body, timeoutMs } = {}) {
    const answer = hostCall(() =>
      hostFetch({ method, url, headers: Object.entries(headers), body: toBytes(body), timeoutMs }),
    );
    const bytes = answer.body;
    return {
      status: answer.status,
      headers: Object.fromEntries(answer.headers),
      body: bytes,
      text: () => decoder.decode(bytes),
      json: () => JSON.parse(decoder.decode(bytes)),
    };
  },
};

const kv = {
  /** The entry at `key` ({value, revision}), or undefined when there is none. */
  get(key) {
    try {
      const entry = hostCall(() => kvGet(key));
      return { value: entry.value, revision: Number(entry.revision) };
    } catch (error) {
      if (error instanceof HostError && error.code === "not-found") return undefined;
      throw error;
    }
  },
  /** Stores `value`; ifRevision 0 = only if absent, n = only at revision n. Returns the new revision. */
  set(key, value, ifRevision) {
    const expected = ifRevision === undefined || ifRevision === null ? undefined : BigInt(ifRevision);
    return Number(hostCall(() => kvSet(key, toBytes(value), expected)));
  },
  delete: (key) => hostCall(() => kvDelete(key)),
  listKeys(prefix = "", cursor, limit = 100) {
    const page = hostCall(() => kvListKeys(prefix, cursor, limit));
    return { keys: page.keys, cursor: page.cursor };
  },
};

const secrets = { get: (name) => hostCall(() => secretGet(name)) };

function firstValues(pairs) {
  const values = {};
  for (const [name, value] of pairs) if (!(name in values)) values[name] = value;
  return values;
}

function request(req) {
  const headerPairs = req.headers.map(([name, value]) => [name.toLowerCase(), value]);
  const body = req.body;
  return {
    method: req.method,
    path: req.path,
    query: firstValues(req.query),
    queryAll: req.query,
    headers: firstValues(headerPairs),
    headerPairs,
    body,
    params: req.endpoint ? Object.fromEntries(req.endpoint.params) : {},
    handler: req.endpoint ? req.endpoint.handler : undefined,
    text: () => decoder.decode(body),
    json: () => (body.length ? JSON.parse(decoder.decode(body)) : undefined),
  };
}

function context(ctx) {
  let config = {};
  try {
    config = ctx.config ? JSON.parse(ctx.config) : {};
  } catch {
    config = {};
  }
  return {
    requestId: ctx.requestId,
    tenantId: ctx.tenantId,
    extensionId: ctx.extensionId,
    installId: ctx.installId,
    version: ctx.version,
    contentHash: ctx.contentHash,
    config,
    user: ctx.user ? { sub: ctx.user.sub, roles: ctx.user.roles } : undefined,
    log,
    http,
    kv,
    secrets,
  };
}

function failure(status, code, message) {
  return Response.json({ error: { code, message } }, status);
}

function dispatch(req, ctx) {
  const fn = handlers.get(req.handler);
  if (!fn) return failure(404, "HANDLER_NOT_FOUND", `no handler is registered as ${JSON.stringify(req.handler)}`);
  let response;
  try {
    response = fn(req, ctx);
  } catch (error) {
    log.error(`handler ${req.handler} failed: ${error && error.stack ? error.stack : error}`);
    return failure(500, "HANDLER_FAILED", String(error && error.message ? error.message : error));
  }
  if (!(response instanceof Response)) {
    return failure(500, "HANDLER_FAILED", `handler ${JSON.stringify(req.handler)} did not return a Response`);
  }
  return response;
}

/** The world's export: componentize-js calls it; projects re-export it from their main module. */
export function handle(ctx, req) {
  const response = dispatch(request(req), context(ctx));
  return {
    status: response.status,
    headers: Object.entries(response.headers).map(([name, value]) => [String(name), String(value)]),
    body: response.body,
  };
}
