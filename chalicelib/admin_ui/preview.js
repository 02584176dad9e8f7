// The preview of an install's own page, sandboxed in a frame served by the runner, and the
// bridge that answers the page's postMessage calls to its extension's API as the signed-in
// admin (the page itself never sees a token).

import { API_BASE, enc, session } from "./api.js";
import { versionRecord } from "./catalog.js";
import { config } from "./config.js";
import { elements, isPlainObject } from "./dom.js";

const GATEWAY_METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE"]);

const ui = elements({ section: "preview", title: "preview-title", frame: "preview-frame", close: "preview-close" });

let current = null; // {name, contentHash} of the extension in the frame

// `onClose()` runs after the person closes the preview (to put the focus somewhere useful).
export function initPreview(onClose) {
  ui.close.addEventListener("click", () => {
    closePreview();
    onClose();
  });
  window.addEventListener("message", onFrameMessage);
}

// The extension and content hash in the frame, or null.
export function previewing() {
  return current;
}

// Why `record` cannot be previewed here, or null when it can.
export function previewProblem(record) {
  if (!record || !record.ui || !record.ui.entry) {
    return "This version has no UI.";
  }
  if (!config.runner_public_base) {
    return "The platform has no RUNNER_PUBLIC_BASE to serve extension pages from.";
  }
  return null;
}

function previewUrl(install, record) {
  const base = String(config.runner_public_base || "").replace(/\/+$/, "");
  const entry = String(record.ui.entry).replace(/^ui\//, "");
  const path = entry.split("/").map(enc).join("/");
  return `${base}/ext-ui/${enc(install.extension)}/${install.content_hash}/${path}`;
}

export function openPreview(install, { focus = true } = {}) {
  const record = versionRecord(install.extension, install.version);
  if (previewProblem(record)) {
    return;
  }
  current = { name: install.extension, contentHash: install.content_hash };
  ui.title.textContent = `Preview: ${install.extension} ${install.version}`;
  ui.frame.title = `${install.extension} ${install.version}, the extension's own page`;
  ui.frame.src = previewUrl(install, record);
  ui.section.hidden = false;
  if (focus) {
    ui.section.scrollIntoView({ block: "start" });
    ui.title.focus();
  }
}

export function closePreview() {
  current = null;
  ui.frame.src = "about:blank";
  ui.section.hidden = true;
}

// Why the page's call may not go through, or null: only this extension's API, no climbing out.
function callProblem(message) {
  if (!GATEWAY_METHODS.has(message.method)) {
    return "method must be GET, POST, PUT, PATCH or DELETE";
  }
  if (typeof message.path !== "string" || !message.path.startsWith("/") || message.path.startsWith("//")) {
    return "path must start with a single /";
  }
  const route = message.path.split(/[?#]/, 1)[0];
  let segments;
  try {
    segments = route.split("/").map(decodeURIComponent);
  } catch (_error) {
    return "path is not valid percent-encoding";
  }
  const climbs = segments.some((segment) => segment === ".." || segment === "." || segment.includes("/"));
  if (route.includes("\\") || climbs) {
    return "path may not contain . or .. segments";
  }
  if (message.body !== null && message.body !== undefined && typeof message.body !== "string") {
    return "body must be a string or null";
  }
  return null;
}

async function callExtension(name, message) {
  const problem = callProblem(message);
  if (problem) {
    return { status: 400, body: JSON.stringify({ error: { code: "BAD_REQUEST", message: problem } }) };
  }
  const init = { method: message.method, headers: { Authorization: `Bearer ${session.token}` }, credentials: "omit" };
  if (typeof message.body === "string" && message.method !== "GET") {
    init.body = message.body;
  }
  try {
    const response = await fetch(`${API_BASE}api/ext/${enc(name)}${message.path}`, init);
    const body = await response.text();
    return { status: response.status, body: body === "" ? null : body };
  } catch (_error) {
    return { status: 503, body: JSON.stringify({ error: { code: "NETWORK_ERROR", message: "API unreachable" } }) };
  }
}

function onFrameMessage(event) {
  const frame = ui.frame;
  const preview = current;
  if (!preview || event.source !== frame.contentWindow) {
    return;
  }
  const message = event.data;
  if (!isPlainObject(message) || message.type !== "ext-api" || typeof message.id !== "string") {
    return;
  }
  callExtension(preview.name, message).then((reply) => {
    // The frame may show another extension by now; its calls are not this one's to answer.
    if (current === preview && frame.contentWindow) {
      // "*": the sandboxed page has an opaque origin; the answer holds nothing secret.
      frame.contentWindow.postMessage({ type: "ext-api-result", id: message.id, ...reply }, "*");
    }
  });
}
