// The platform's API as the signed-in admin: the session's token, calls that turn every
// failure into an ApiError with the contract's code, and the page's own JSON files.

import { isPlainObject, parseJson } from "./dom.js";

// "/admin" locally, "/<stage>/admin" behind API Gateway: the API lives next to the page.
export const API_BASE = window.location.pathname.replace(/admin\/?$/, "");

// Who is signed in; session.js sets both, everything else only reads them.
export const session = { token: null, claims: null };

export const enc = encodeURIComponent;

export class ApiError extends Error {
  constructor(code, message, { status = 0, requestId = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

let sessionLost = () => {};

// `handler(error)` runs when the API refuses the session's token (it expired, say).
export function onSessionLost(handler) {
  sessionLost = handler;
}

function retryAfterOf(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
}

// Calls the API as the signed-in admin (or with `token`, for work that outlives the session).
export async function api(method, path, body, { keepSession = false, token = session.token } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API_BASE + path, init);
  } catch (_error) {
    throw new ApiError("NETWORK_ERROR", "The platform's API could not be reached.");
  }
  const data = parseJson(await response.text());
  if (response.ok) {
    return data;
  }
  const detail = data && isPlainObject(data.error) ? data.error : {};
  const error = new ApiError(
    typeof detail.code === "string" ? detail.code : `HTTP_${response.status}`,
    typeof detail.message === "string" ? detail.message : `The API answered ${response.status}.`,
    { status: response.status, requestId: detail.request_id || null, retryAfter: retryAfterOf(response) },
  );
  if (error.code === "UNAUTHENTICATED" && !keepSession) {
    sessionLost(error);
  }
  throw error;
}

// One of the page's own JSON files (admin/config.json, admin/errors.json), or null when it
// cannot be read: the page then works with its defaults.
export async function adminJson(name) {
  try {
    const response = await fetch(`${API_BASE}admin/${name}`, { cache: "no-store", credentials: "omit" });
    if (response.ok) {
      const data = await response.json();
      return isPlainObject(data) ? data : null;
    }
  } catch (_error) {
    // Unreachable or not JSON: the same as missing.
  }
  return null;
}
