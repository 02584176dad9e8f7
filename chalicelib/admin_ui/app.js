// The tenant admin page: sign in with a token, browse the extensions, upload bundles
// (straight to S3 through presigned URLs, multipart for large files), manage the
// tenant's installs, and preview an extension's own UI.
//
// The page is served with a strict CSP (script-src 'self', style-src 'self'): no inline
// code or styles, no eval. Everything that comes from the API or a bundle reaches the
// DOM through textContent or attributes, never as HTML.

const TOKEN_KEY = "ext-admin-token";
// "/admin" locally, "/<stage>/admin" behind API Gateway: the API lives next to the page.
const API_BASE = window.location.pathname.replace(/admin\/?$/, "");
const TABS = ["extensions", "upload", "installs"];
const PART_CONCURRENCY = 3;
const PUT_ATTEMPTS = 3;
const LOAD_CONCURRENCY = 6;
const TOAST_MS = 6000;
const MAX_SIGNATURE_BYTES = 16 * 1024;
const MAX_CONFIG_BYTES = 16 * 1024;
const GATEWAY_METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE"]);

// ---- words -------------------------------------------------------------------------------

// One sentence per error code, for people; the code itself is always shown next to it.
const ERROR_TEXT = {
  BUNDLE_TOO_LARGE: "The bundle is larger than this platform accepts.",
  BUNDLE_CORRUPT: "This file is not a valid bundle.tar.zst: it is not zstd or tar, is truncated, or has trailing data.",
  BUNDLE_UNPACKED_TOO_LARGE: "The bundle unpacks to more data than this platform accepts.",
  BUNDLE_TOO_MANY_ENTRIES: "The bundle holds more files than this platform accepts.",
  BUNDLE_UNSAFE_PATH: "A path inside the bundle is unsafe (absolute, climbing out with .., or too long or deep).",
  BUNDLE_UNSUPPORTED_ENTRY: "The bundle holds links, devices or other entries that are not plain files or folders.",
  BUNDLE_DUPLICATE_ENTRY: "Two files in the bundle have the same path.",
  MANIFEST_MISSING: "The bundle has no manifest.json at its root.",
  MANIFEST_INVALID: "The bundle's manifest.json is not valid.",
  MANIFEST_FILE_MISSING: "A file the manifest names (its entry or ui.entry) is not in the bundle.",
  WASM_INVALID: "The WebAssembly module does not fit the runtime's interface.",
  HASH_MISMATCH: "The uploaded bytes differ from the file's checksum: the file changed or was damaged on the way.",
  SIGNATURE_MISSING: "This platform only accepts signed bundles: choose the bundle's .sig file too.",
  SIGNATURE_INVALID: "The signature does not match this bundle, or the .sig file is malformed.",
  SIGNATURE_UNTRUSTED: "The bundle is signed with a key this platform does not trust.",
  SIGNATURE_SCOPE: "The signing key is not allowed to sign extensions with this name.",
  VERSION_EXISTS:
    "This version already exists with different content. Raise the version in manifest.json, then publish.",
  NAME_OWNED: "Another publisher owns this extension name.",
  UPLOAD_NOT_FOUND: "The upload session no longer exists.",
  UPLOAD_EXPIRED: "The upload took too long and its session expired.",
  UPLOAD_CONFLICT: "The upload is in a state that does not allow this step.",
  UNAUTHENTICATED: "You are not signed in, or your token has expired.",
  FORBIDDEN: "Your token does not allow this: managing extensions needs the admin role.",
  RATE_LIMITED: "Too many upload requests in a short time.",
  NOT_INSTALLED: "This extension is not installed for your tenant.",
  NOT_FOUND: "There is no such extension or version.",
  ENDPOINT_NOT_FOUND: "The extension has no such endpoint.",
  PAYLOAD_TOO_LARGE: "The request body is too large.",
  EXTENSION_TIMEOUT: "The extension took too long to answer.",
  EXTENSION_FAILED: "The extension failed while answering.",
  BAD_REQUEST: "The server did not accept the request.",
  CONFIG_INVALID: "The platform is misconfigured; tell its operator.",
  STORAGE_ERROR: "The storage service is unavailable right now.",
  STORAGE_REFUSED: "The storage service refused the upload.",
  INTERNAL: "Something went wrong on the server. Quote the request id when you report it.",
  NETWORK_ERROR: "The connection failed. Check your network, then retry.",
  NO_FILE: "No bundle chosen.",
};

// Failures a second attempt can fix; content problems need a different file instead.
const RETRYABLE = new Set([
  "NETWORK_ERROR",
  "RATE_LIMITED",
  "STORAGE_ERROR",
  "INTERNAL",
  "UPLOAD_EXPIRED",
  "UPLOAD_NOT_FOUND",
  "UPLOAD_CONFLICT",
  "HASH_MISMATCH",
]);

const CAPABILITY_TEXT = {
  "cap:log.emit": "write to the platform log",
  "cap:context.read": "read the request context (tenant, user, install)",
  "cap:http.fetch": "make HTTP requests to the hosts listed under egress",
  "cap:storage.kv": "keep data in the tenant's key-value storage",
  "cap:secrets.get": "read the install's secrets",
  "cap:user.read": "read the signed-in user's profile",
};

// ---- small helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") {
      node.textContent = value;
    } else if (key === "className") {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  node.append(...children);
  return node;
}

function fromTemplate(id) {
  return $(id).content.firstElementChild.cloneNode(true);
}

function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) {
    return "unknown size";
  }
  if (bytes < 1024) {
    return `${bytes} B`;
  }
  const units = ["KiB", "MiB", "GiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function timeElement(iso) {
  const when = new Date(iso);
  const text = iso && !Number.isNaN(when.getTime()) ? dateFormat.format(when) : "unknown";
  return el("time", iso ? { datetime: iso, text } : { text });
}

function shortHash(hash) {
  const [algorithm, hex] = String(hash || "").split(":");
  return hex ? `${algorithm}:${hex.slice(0, 12)}…` : String(hash || "");
}

function hashElement(hash) {
  return el("code", { className: "hash", title: hash || "", text: shortHash(hash) });
}

// Server messages quote fields in backticks (`version` must be …): show those as code.
function codeText(text) {
  const fragment = document.createDocumentFragment();
  String(text).split("`").forEach((part, index) => {
    if (part) {
      fragment.append(index % 2 ? el("code", { text: part }) : document.createTextNode(part));
    }
  });
  return fragment;
}

function chips(values, emptyText) {
  if (!values || values.length === 0) {
    return el("span", { className: "muted", text: emptyText });
  }
  return el(
    "ul",
    { className: "chips" },
    values.map((value) => el("li", { className: "chip", title: CAPABILITY_TEXT[value] || "", text: value })),
  );
}

function signatureBadge(record) {
  const status = record && record.signature_status;
  const wrap = el("span", { className: "signature" });
  if (status === "verified") {
    wrap.append(el("span", { className: "badge badge-ok", text: "verified" }));
  } else if (status === "unverified") {
    wrap.append(el("span", { className: "badge badge-info", text: "signed, not verified" }));
  } else if (status === "unsigned") {
    wrap.append(el("span", { className: "badge badge-warning", text: "unsigned" }));
  } else {
    wrap.append(el("span", { className: "badge", text: "unknown" }));
  }
  if (record && record.key_id) {
    wrap.append(el("span", { className: "key-id" }, ["key ", hashElement(record.key_id)]));
  }
  return wrap;
}

function parseJson(text) {
  if (typeof text !== "string" || text === "") {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch (_error) {
    return null;
  }
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function sleep(ms) {
  return new Promise((resolve) => window.setTimeout(resolve, ms));
}

// Runs `worker` over `items` with at most `limit` at a time; results keep the input order.
async function mapLimited(items, limit, worker) {
  const results = new Array(items.length);
  let next = 0;
  async function lane() {
    while (next < items.length) {
      const index = next++;
      results[index] = await worker(items[index]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

// ---- errors ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message, { status = 0, requestId = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

class CancelledError extends Error {
  constructor() {
    super("cancelled");
    this.name = "CancelledError";
  }
}

function asApiError(error) {
  if (error instanceof ApiError) {
    return error;
  }
  return new ApiError("INTERNAL", `This page failed: ${error && error.message ? error.message : error}`);
}

// Fills an alert box: the sentence, the server's own words, the code and the request id.
function showError(box, rawError, { onRetry = null, title = null } = {}) {
  const error = asApiError(rawError);
  const heading = title || ERROR_TEXT[error.code] || "The request failed.";
  const children = [el("p", { className: "alert-title", text: heading })];
  if (error.message && error.message !== heading) {
    children.push(el("p", { className: "alert-detail" }, [codeText(error.message)]));
  }
  if (error.code === "RATE_LIMITED" && error.retryAfter) {
    children.push(el("p", { text: `You can try again in ${error.retryAfter} s.` }));
  }
  const code = el("code", { className: "error-code", text: error.code });
  const meta = el("p", { className: "alert-meta" }, ["Error code ", code]);
  if (error.requestId) {
    meta.append(" · request id ", el("code", { text: error.requestId }));
  }
  children.push(meta);
  if (onRetry) {
    children.push(retryButton(error, onRetry));
  }
  box.replaceChildren(...children);
  box.hidden = false;
}

// A Retry button; after RATE_LIMITED it counts down the Retry-After seconds first.
function retryButton(error, onRetry) {
  const button = el("button", { type: "button", className: "btn retry", text: "Retry" });
  button.addEventListener("click", onRetry);
  let remaining = error.code === "RATE_LIMITED" && error.retryAfter ? Math.ceil(error.retryAfter) : 0;
  if (remaining > 0) {
    button.disabled = true;
    button.textContent = `Retry (${remaining} s)`;
    const timer = window.setInterval(() => {
      remaining -= 1;
      if (remaining <= 0 || !button.isConnected) {
        window.clearInterval(timer);
        button.disabled = false;
        button.textContent = "Retry";
        return;
      }
      button.textContent = `Retry (${remaining} s)`;
    }, 1000);
  }
  return button;
}

function clearBox(box) {
  box.replaceChildren();
  box.hidden = true;
}

let toastTimer = 0;

function toast(text) {
  $("toast").textContent = text;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(dismissToast, TOAST_MS);
}

function dismissToast() {
  $("toast").textContent = "";
}

// ---- state -------------------------------------------------------------------------------------

const state = {
  token: null,
  claims: null,
  config: { runner_public_base: "", max_bundle_bytes: 200 * 1024 * 1024, multipart_threshold_bytes: 0 },
  extensions: [], // [{...extension, versions: [...]}]
  installs: new Map(), // name → install
  loaded: false,
  upload: null, // the running UploadJob
  lastUploadResult: null,
  preview: null, // {name, contentHash} of the extension in the preview frame
};

// ---- the API -----------------------------------------------------------------------------------

function retryAfterOf(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
}

// Calls the API as the signed-in admin (or with `token`, for work that outlives the session).
async function api(method, path, body, { keepSession = false, token = state.token } = {}) {
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
    signOut(error);
  }
  throw error;
}

const enc = encodeURIComponent;

async function loadConfig() {
  try {
    const response = await fetch(`${API_BASE}admin/config.json`, { cache: "no-store", credentials: "omit" });
    if (response.ok) {
      Object.assign(state.config, await response.json());
    }
  } catch (_error) {
    // The defaults above still let the page work; the server enforces the real limits.
  }
  $("max-size").textContent = formatBytes(state.config.max_bundle_bytes);
  if (state.config.multipart_threshold_bytes > 0) {
    $("multipart-size").textContent = `(over ${formatBytes(state.config.multipart_threshold_bytes)})`;
  }
}

// ---- session -----------------------------------------------------------------------------------

function decodeClaims(token) {
  const parts = String(token || "").split(".");
  if (parts.length !== 3) {
    return null;
  }
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return isPlainObject(claims) ? claims : null;
  } catch (_error) {
    return null;
  }
}

// A token in the fragment (#token=…, from EXT_ADMIN_URL) moves to sessionStorage and
// out of the address bar, so it is neither bookmarked nor left in the history.
function takeFragmentToken() {
  const fragment = window.location.hash.slice(1);
  if (!fragment.includes("token=")) {
    return null;
  }
  const token = new URLSearchParams(fragment).get("token");
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  return token ? token.trim() : null;
}

function tokenProblem(token, claims) {
  if (!token) {
    return "Paste a token first.";
  }
  if (!claims) {
    return "This is not a token: a token has three parts separated by dots.";
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
    return "This token has expired. Get a new one (extctl dev prints one).";
  }
  return null;
}

async function signIn(token) {
  const claims = decodeClaims(token);
  const problem = tokenProblem(token, claims);
  if (problem) {
    showSignIn(new ApiError("UNAUTHENTICATED", problem));
    return;
  }
  state.token = token;
  state.claims = claims;
  try {
    await api("GET", "installs", undefined, { keepSession: true });
  } catch (error) {
    state.token = null;
    state.claims = null;
    window.sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(error);
    return;
  }
  window.sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

function signOut(reason = null) {
  window.sessionStorage.removeItem(TOKEN_KEY);
  if (state.upload) {
    state.upload.cancel();
  }
  closePreview();
  state.token = null;
  state.claims = null;
  state.loaded = false;
  state.extensions = [];
  state.installs = new Map();
  showSignIn(reason);
}

function showSignIn(error) {
  $("app-view").hidden = true;
  $("session").hidden = true;
  $("signin-view").hidden = false;
  const box = $("signin-error");
  if (error) {
    showError(box, error);
  } else {
    clearBox(box);
  }
  $("token-input").value = "";
  $("token-input").focus();
}

function showApp() {
  const claims = state.claims || {};
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  $("identity").replaceChildren(
    "Tenant ",
    el("strong", { text: String(claims.tenant || "?") }),
    el("span", { className: "muted", text: claims.sub ? ` · ${claims.sub}` : "" }),
  );
  $("identity").title = $("identity").textContent;
  $("role-warning").hidden = roles.includes("admin");
  $("signin-view").hidden = true;
  $("session").hidden = false;
  $("app-view").hidden = false;
  const wanted = window.location.hash.slice(1);
  selectTab(TABS.includes(wanted) ? wanted : "extensions");
  $("main").focus();
}

// ---- tabs --------------------------------------------------------------------------------------

function selectTab(name, { focus = false } = {}) {
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
    if (selected && focus) {
      button.focus();
    }
  }
  window.history.replaceState(null, "", `#${name}`);
  if (name !== "upload") {
    refresh();
  }
}

function onTabKey(event) {
  const current = TABS.indexOf(event.target.id.replace("tab-", ""));
  const moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: TABS.length - 1 };
  if (!(event.key in moves)) {
    return;
  }
  event.preventDefault();
  selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length], { focus: true });
}

// ---- loading -----------------------------------------------------------------------------------

let loading = Promise.resolve();
let queuedLoad = null;

// Loads extensions (with their versions) and installs, then draws both lists. Calls made
// while a load runs get one more load after it, so a change is never drawn from stale data.
function refresh() {
  if (!queuedLoad) {
    queuedLoad = loading.then(() => {
      queuedLoad = null;
      return loadAll();
    });
    loading = queuedLoad;
  }
  return queuedLoad;
}

async function loadAll() {
  const token = state.token;
  const lists = [$("ext-list"), $("installs-list")];
  lists.forEach((list) => list.setAttribute("aria-busy", "true"));
  if (!state.loaded) {
    $("ext-status").textContent = "Loading extensions…";
    $("installs-status").textContent = "Loading installs…";
  }
  try {
    const [extensions, installs] = await Promise.all([api("GET", "extensions"), api("GET", "installs")]);
    const detailed = await mapLimited(extensions.extensions || [], LOAD_CONCURRENCY, (extension) =>
      api("GET", `extensions/${enc(extension.name)}`),
    );
    if (state.token !== token) {
      return; // signed out, or in as someone else, meanwhile: this answer is not theirs
    }
    state.extensions = detailed.sort((a, b) => a.name.localeCompare(b.name));
    state.installs = new Map((installs.installs || []).map((install) => [install.extension, install]));
    state.loaded = true;
    for (const box of [$("ext-error"), $("installs-error")]) {
      // A change's error stays until the next change; only a failed load is over now.
      if (box.dataset.source === "load") {
        clearBox(box);
      }
    }
  } catch (error) {
    if (state.token && state.token === token) {
      for (const box of [$("ext-error"), $("installs-error")]) {
        showError(box, error, { onRetry: refresh });
        box.dataset.source = "load";
      }
    }
  } finally {
    lists.forEach((list) => list.removeAttribute("aria-busy"));
  }
  if (state.token && state.token === token) {
    renderExtensions();
    renderInstalls();
  }
}

function extensionByName(name) {
  return state.extensions.find((extension) => extension.name === name) || null;
}

function versionRecord(name, version) {
  const extension = extensionByName(name);
  return extension ? extension.versions.find((record) => record.version === version) || null : null;
}

// ---- the extensions list -----------------------------------------------------------------------

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function renderExtensions() {
  const filter = $("ext-filter").value.trim().toLowerCase();
  const shown = state.extensions.filter(
    (extension) =>
      !filter || extension.name.toLowerCase().includes(filter) || extension.publisher.toLowerCase().includes(filter),
  );
  $("ext-list").replaceChildren(...shown.map(extensionCard));
  const versions = shown.reduce((count, extension) => count + extension.versions.length, 0);
  let status;
  if (state.extensions.length === 0) {
    status = "No extensions yet. Publish one on the Upload tab.";
  } else if (shown.length === 0) {
    status = "No extension matches the filter.";
  } else {
    status = `${plural(shown.length, "extension")}, ${plural(versions, "version")}.`;
  }
  $("ext-status").textContent = status;
}

function extensionCard(extension) {
  const card = fromTemplate("tpl-extension");
  card.dataset.extension = extension.name;
  card.querySelector(".ext-name").textContent = extension.name;
  card.querySelector(".ext-publisher").textContent = extension.publisher;
  card.querySelector(".ext-latest").textContent = extension.latest_version || "–";
  card.querySelector(".ext-owned").hidden = !extension.owned;
  const install = state.installs.get(extension.name);
  const installed = card.querySelector(".ext-installed");
  installed.hidden = !install;
  if (install) {
    installed.textContent = `Installed: ${install.version}${install.enabled ? "" : " (disabled)"}`;
  }
  card.querySelector("caption").textContent = `Versions of ${extension.name}`;
  card.querySelector("tbody").replaceChildren(...extension.versions.map((record) => versionRow(record, install)));
  return card;
}

function versionRow(record, install) {
  const row = fromTemplate("tpl-version-row");
  row.dataset.version = record.version;
  row.querySelector(".v-version").textContent = record.version;
  row.querySelector(".v-signature").append(signatureBadge(record));
  row.querySelector(".v-capabilities").append(chips(record.capabilities, "none"));
  row.querySelector(".v-egress").append(chips(record.egress, "none"));
  row.querySelector(".v-size").textContent = formatBytes(record.size);
  row.querySelector(".v-hash").append(hashElement(record.content_hash));
  row.querySelector(".v-published").append(timeElement(record.created_at));
  const button = row.querySelector(".v-install");
  const label = `${record.name} ${record.version}`;
  if (install && install.version === record.version) {
    button.textContent = "Installed";
    button.disabled = true;
    button.setAttribute("aria-label", `${label} is installed`);
  } else if (install) {
    button.textContent = "Switch to this…";
    button.setAttribute("aria-label", `Switch to ${label}`);
    button.addEventListener("click", () => changeVersion(install, record.version));
  } else {
    button.textContent = "Install…";
    button.setAttribute("aria-label", `Install ${label}`);
    button.addEventListener("click", () => installVersion(record));
  }
  return row;
}

// ---- dialogs -----------------------------------------------------------------------------------

// Shows the confirmation dialog; resolves true when the person confirms.
function confirmDialog({ title, body, okLabel, danger = false }) {
  const dialog = $("confirm-dialog");
  const ok = $("confirm-ok");
  const cancel = $("confirm-cancel");
  $("confirm-title").textContent = title;
  $("confirm-body").replaceChildren(...body);
  ok.textContent = okLabel;
  ok.className = danger ? "btn btn-danger" : "btn btn-primary";
  return new Promise((resolve) => {
    const listeners = new AbortController();
    const finish = (answer) => {
      listeners.abort();
      if (dialog.open) {
        dialog.close();
      }
      resolve(answer);
    };
    ok.addEventListener("click", () => finish(true), { signal: listeners.signal });
    cancel.addEventListener("click", () => finish(false), { signal: listeners.signal });
    dialog.addEventListener("close", () => finish(false), { signal: listeners.signal });
    dialog.showModal();
    // The safe choice has the focus where the action cannot be undone.
    (danger ? cancel : ok).focus();
  });
}

function grantList(record, currentCapabilities = null) {
  const nodes = [];
  const capabilities = record.capabilities || [];
  if (capabilities.length === 0) {
    nodes.push(el("p", { text: "It asks for no capabilities: it can only answer requests." }));
  } else {
    nodes.push(el("h3", { text: "It will be granted" }));
    nodes.push(
      el(
        "ul",
        { className: "grant-list" },
        capabilities.map((capability) => {
          const item = el("li", {}, [el("code", { text: capability })]);
          if (CAPABILITY_TEXT[capability]) {
            item.append(`: ${CAPABILITY_TEXT[capability]}`);
          }
          if (currentCapabilities && !currentCapabilities.includes(capability)) {
            item.append(" ", el("span", { className: "badge badge-warning", text: "new" }));
          }
          return item;
        }),
      ),
    );
  }
  if ((record.egress || []).length > 0) {
    nodes.push(el("h3", { text: "It may connect to" }));
    const hosts = record.egress.map((host) => el("li", {}, [el("code", { text: host })]));
    nodes.push(el("ul", { className: "grant-list" }, hosts));
  }
  const signature = el("p", { className: "dialog-signature" }, ["Signature: ", signatureBadge(record)]);
  nodes.push(signature);
  if (record.signature_status === "unsigned") {
    const text = "Nobody signed this version: the platform cannot tell who made it.";
    nodes.push(el("p", { className: "alert alert-warning", text }));
  }
  return nodes;
}

// ---- installs: actions -------------------------------------------------------------------------

function tenantName() {
  return state.claims && state.claims.tenant ? String(state.claims.tenant) : "your tenant";
}

async function installVersion(record) {
  const confirmed = await confirmDialog({
    title: `Install ${record.name} ${record.version}?`,
    body: [el("p", { text: `Every user of tenant ${tenantName()} gets it, enabled.` }), ...grantList(record)],
    okLabel: "Install",
  });
  if (!confirmed) {
    return;
  }
  await act(record.name, ".v-install", async () => {
    await api("POST", "installs", { extension: record.name, version: record.version });
    toast(`Installed ${record.name} ${record.version}.`);
  });
}

async function changeVersion(install, version) {
  const extension = extensionByName(install.extension);
  const record = versionRecord(install.extension, version);
  if (!extension || !record) {
    return;
  }
  const order = extension.versions.map((item) => item.version);
  const upgrade = order.indexOf(version) < order.indexOf(install.version);
  const inHistory = (install.history || []).some((entry) => entry.version === version);
  const verb = upgrade ? "Upgrade" : inHistory ? "Roll back" : "Downgrade";
  const confirmed = await confirmDialog({
    title: `${verb} ${install.extension} to ${version}?`,
    body: [
      el("p", { text: `From ${install.version} to ${version}, for every user of tenant ${tenantName()}.` }),
      ...grantList(record, install.granted_capabilities || []),
    ],
    okLabel: verb,
  });
  if (!confirmed) {
    return;
  }
  await act(install.extension, ".inst-version-select", async () => {
    await api("PATCH", `installs/${enc(install.extension)}`, { version });
    toast(`${install.extension} now runs ${version}.`);
  });
}

// "Roll back" to an older version; "Return" to a newer one the install left by rolling back.
function rollbackVerb(install) {
  const extension = extensionByName(install.extension);
  const order = extension ? extension.versions.map((record) => record.version) : [];
  return order.indexOf(install.history[0].version) < order.indexOf(install.version) ? "Return" : "Roll back";
}

async function rollBack(install) {
  const previous = install.history[0].version;
  const record = versionRecord(install.extension, previous);
  const verb = rollbackVerb(install);
  const confirmed = await confirmDialog({
    title: `${verb} ${install.extension} to ${previous}?`,
    body: [
      el("p", { text: `From ${install.version} back to ${previous}, for every user of tenant ${tenantName()}.` }),
      ...(record ? grantList(record, install.granted_capabilities || []) : []),
    ],
    okLabel: verb,
  });
  if (!confirmed) {
    return;
  }
  await act(install.extension, ".inst-version-select", async () => {
    await api("POST", `installs/${enc(install.extension)}/rollback`, { version: previous });
    toast(`${install.extension} now runs ${previous} again.`);
  });
}

async function toggleEnabled(install) {
  const enabled = !install.enabled;
  await act(install.extension, ".inst-enabled", async () => {
    await api("PATCH", `installs/${enc(install.extension)}`, { enabled });
    toast(enabled ? `Enabled ${install.extension}.` : `Disabled ${install.extension}: its API answers NOT_INSTALLED.`);
  });
}

async function uninstall(install) {
  const confirmed = await confirmDialog({
    title: `Uninstall ${install.extension}?`,
    body: [
      el("p", { text: `Users of tenant ${tenantName()} lose it at once, and its configuration is deleted.` }),
      el("p", { text: "You can install it again later." }),
    ],
    okLabel: "Uninstall",
    danger: true,
  });
  if (!confirmed) {
    return;
  }
  await act(install.extension, ".inst-uninstall", async () => {
    await api("DELETE", `installs/${enc(install.extension)}`);
    if (state.preview && state.preview.name === install.extension) {
      closePreview();
    }
    toast(`Uninstalled ${install.extension}.`);
  });
}

// Where the person is: the error box and the list of the visible tab.
function activeSurface() {
  if (!$("panel-extensions").hidden) {
    return { box: $("ext-error"), list: $("ext-list") };
  }
  if (!$("panel-installs").hidden) {
    return { box: $("installs-error"), list: $("installs-list") };
  }
  return { box: $("upload-error"), list: null };
}

// Runs one change to `name`, shows its error where the person is, reloads, and puts the
// focus on the redrawn `selector` of that extension's card (its heading if the control is
// gone, the list's refresh button if the card is), or on the error.
async function act(name, selector, change) {
  const { box, list } = activeSurface();
  clearBox(box);
  let failed = false;
  try {
    await change();
  } catch (error) {
    failed = true;
    showError(box, error);
    box.dataset.source = "change";
  }
  await refresh();
  if (failed) {
    box.focus();
    return;
  }
  if (!list) {
    return;
  }
  const card = list.querySelector(`[data-extension="${CSS.escape(name)}"]`);
  const control = card && card.querySelector(selector);
  if (control && !control.disabled) {
    control.focus();
  } else if (card) {
    card.querySelector("h2").focus();
  } else {
    $(list === $("ext-list") ? "ext-refresh" : "installs-refresh").focus();
  }
}

// ---- installs: the list ------------------------------------------------------------------------

function renderInstalls() {
  const installs = [...state.installs.values()].sort((a, b) => a.extension.localeCompare(b.extension));
  const drafts = openConfigDrafts();
  $("installs-list").replaceChildren(...installs.map(installCard));
  restoreConfigDrafts(drafts);
  $("installs-status").textContent =
    installs.length === 0
      ? "Nothing is installed yet. Install a version from the Extensions tab."
      : `${plural(installs.length, "installed extension")}.`;
  if (state.preview) {
    const install = state.installs.get(state.preview.name);
    if (!install) {
      closePreview();
    } else if (install.content_hash !== state.preview.contentHash) {
      openPreview(install, { focus: false });
    }
  }
}

// Config being edited survives a redraw (another card's change, a refresh), caret included.
function openConfigDrafts() {
  const drafts = new Map();
  for (const card of $("installs-list").querySelectorAll(".install-card")) {
    const text = card.querySelector(".config-text");
    if (!card.querySelector(".config-editor").hidden) {
      const focused = document.activeElement === text;
      const { value, selectionStart: start, selectionEnd: end } = text;
      drafts.set(card.dataset.extension, { value, focused, start, end });
    }
  }
  return drafts;
}

function restoreConfigDrafts(drafts) {
  for (const [name, draft] of drafts) {
    const card = $("installs-list").querySelector(`[data-extension="${CSS.escape(name)}"]`);
    if (!card) {
      continue;
    }
    const text = card.querySelector(".config-text");
    card.querySelector(".config-editor").hidden = false;
    card.querySelector(".inst-configure").setAttribute("aria-expanded", "true");
    text.value = draft.value;
    text.dispatchEvent(new Event("input"));
    if (draft.focused) {
      text.focus();
      text.setSelectionRange(draft.start, draft.end);
    }
  }
}

function slug(name) {
  return name.replace(/[^a-z0-9]+/gi, "-");
}

function installCard(install) {
  const card = fromTemplate("tpl-install");
  const id = slug(install.extension);
  const record = versionRecord(install.extension, install.version);
  card.dataset.extension = install.extension;
  card.querySelector(".inst-name").textContent = install.extension;
  card.querySelector(".inst-version").textContent = install.version;
  card.querySelector(".inst-since").replaceWith(timeElement(install.installed_at));
  card.querySelector(".inst-caps").append(chips(install.granted_capabilities, "none"));
  card.querySelector(".inst-egress").append(chips(record ? record.egress : [], "none"));
  card.querySelector(".inst-signature").append(record ? signatureBadge(record) : el("span", { text: "unknown" }));
  card.querySelector(".inst-hash").append(hashElement(install.content_hash));
  card.querySelector(".inst-history").append(historyList(install));
  fillSwitch(card.querySelector(".inst-enabled"), install);
  fillVersionPicker(card, install, id);
  const rollback = card.querySelector(".inst-rollback");
  if ((install.history || []).length > 0) {
    rollback.hidden = false;
    rollback.textContent = `${rollbackVerb(install)} to ${install.history[0].version}…`;
    rollback.addEventListener("click", () => rollBack(install));
  }
  const preview = card.querySelector(".inst-preview");
  if (!record || !record.ui || !record.ui.entry) {
    preview.disabled = true;
    preview.title = "This version has no UI.";
  } else if (!state.config.runner_public_base) {
    preview.disabled = true;
    preview.title = "The platform has no RUNNER_PUBLIC_BASE to serve extension pages from.";
  }
  preview.setAttribute("aria-label", `Preview ${install.extension}`);
  preview.addEventListener("click", () => openPreview(install));
  const uninstallButton = card.querySelector(".inst-uninstall");
  uninstallButton.setAttribute("aria-label", `Uninstall ${install.extension}`);
  uninstallButton.addEventListener("click", () => uninstall(install));
  fillConfigEditor(card, install, id);
  return card;
}

function historyList(install) {
  const history = install.history || [];
  if (history.length === 0) {
    return el("span", { className: "muted", text: "No earlier versions." });
  }
  return el(
    "ol",
    { className: "history" },
    history.map((entry) => el("li", {}, [el("strong", { text: entry.version }), " until ", timeElement(entry.at)])),
  );
}

function fillSwitch(button, install) {
  button.setAttribute("aria-checked", String(Boolean(install.enabled)));
  button.setAttribute("aria-label", `${install.extension} enabled`);
  button.querySelector(".switch-text").textContent = install.enabled ? "Enabled" : "Disabled";
  button.addEventListener("click", () => {
    button.disabled = true;
    toggleEnabled(install);
  });
}

function fillVersionPicker(card, install, id) {
  const select = card.querySelector(".inst-version-select");
  const label = card.querySelector(".inst-version-label");
  const button = card.querySelector(".inst-switch");
  select.id = `version-${id}`;
  label.htmlFor = select.id;
  const extension = extensionByName(install.extension);
  const history = new Set((install.history || []).map((entry) => entry.version));
  for (const record of extension ? extension.versions : []) {
    let text = record.version;
    if (record.version === install.version) {
      text += " (installed)";
    } else if (history.has(record.version)) {
      text += " (earlier)";
    }
    select.append(el("option", { value: record.version, text }));
  }
  select.value = install.version;
  button.disabled = true;
  select.addEventListener("change", () => {
    button.disabled = select.value === install.version;
  });
  button.setAttribute("aria-label", `Switch ${install.extension} to the chosen version`);
  button.addEventListener("click", () => changeVersion(install, select.value));
}

function fillConfigEditor(card, install, id) {
  const toggle = card.querySelector(".inst-configure");
  const editor = card.querySelector(".config-editor");
  const text = card.querySelector(".config-text");
  const error = card.querySelector(".config-error");
  text.id = `config-${id}`;
  error.id = `config-error-${id}`;
  card.querySelector(".config-label").htmlFor = text.id;
  text.setAttribute("aria-describedby", `${error.id}`);
  toggle.setAttribute("aria-controls", `config-editor-${id}`);
  editor.id = `config-editor-${id}`;
  const reset = () => {
    text.value = JSON.stringify(install.config || {}, null, 2);
    showConfigProblem(text, error, null);
  };
  const open = (opened) => {
    editor.hidden = !opened;
    toggle.setAttribute("aria-expanded", String(opened));
    if (opened) {
      reset();
      text.focus();
    }
  };
  toggle.addEventListener("click", () => open(editor.hidden));
  card.querySelector(".config-cancel").addEventListener("click", () => {
    open(false);
    toggle.focus();
  });
  text.addEventListener("input", () => showConfigProblem(text, error, configProblem(text.value)));
  card.querySelector(".config-save").addEventListener("click", () => saveConfig(install, editor, text, error));
}

// Why `text` is not an acceptable config, or null when it is.
function configProblem(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `Not valid JSON: ${error.message}`;
  }
  if (!isPlainObject(value)) {
    return "The configuration must be a JSON object, such as {\"greeting\": \"hi\"}.";
  }
  if (new TextEncoder().encode(JSON.stringify(value)).length > MAX_CONFIG_BYTES) {
    return "The configuration is larger than 16 KiB.";
  }
  return null;
}

function showConfigProblem(text, error, problem) {
  error.hidden = !problem;
  error.textContent = problem || "";
  text.setAttribute("aria-invalid", String(Boolean(problem)));
}

async function saveConfig(install, editor, text, error) {
  const problem = configProblem(text.value);
  showConfigProblem(text, error, problem);
  if (problem) {
    text.focus();
    return;
  }
  await act(install.extension, ".inst-configure", async () => {
    await api("PATCH", `installs/${enc(install.extension)}`, { config: JSON.parse(text.value) });
    editor.hidden = true; // saved: no draft to keep
    toast(`Saved the configuration of ${install.extension}.`);
  });
}

// ---- preview and its bridge to the extension's page ---------------------------------------------

function previewUrl(install, record) {
  const base = String(state.config.runner_public_base || "").replace(/\/+$/, "");
  const entry = String(record.ui.entry).replace(/^ui\//, "");
  const path = entry.split("/").map(enc).join("/");
  return `${base}/ext-ui/${enc(install.extension)}/${install.content_hash}/${path}`;
}

function openPreview(install, { focus = true } = {}) {
  const record = versionRecord(install.extension, install.version);
  if (!record || !record.ui || !record.ui.entry || !state.config.runner_public_base) {
    return;
  }
  const frame = $("preview-frame");
  state.preview = { name: install.extension, contentHash: install.content_hash };
  $("preview-title").textContent = `Preview: ${install.extension} ${install.version}`;
  frame.title = `${install.extension} ${install.version}, the extension's own page`;
  frame.src = previewUrl(install, record);
  $("preview").hidden = false;
  if (focus) {
    $("preview").scrollIntoView({ block: "start" });
    $("preview-title").focus();
  }
}

function closePreview() {
  state.preview = null;
  $("preview-frame").src = "about:blank";
  $("preview").hidden = true;
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
  const init = { method: message.method, headers: { Authorization: `Bearer ${state.token}` }, credentials: "omit" };
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
  const frame = $("preview-frame");
  const preview = state.preview;
  if (!preview || event.source !== frame.contentWindow) {
    return;
  }
  const message = event.data;
  if (!isPlainObject(message) || message.type !== "ext-api" || typeof message.id !== "string") {
    return;
  }
  callExtension(preview.name, message).then((reply) => {
    // The frame may show another extension by now; its calls are not this one's to answer.
    if (state.preview === preview && frame.contentWindow) {
      // "*": the sandboxed page has an opaque origin; the answer holds nothing secret.
      frame.contentWindow.postMessage({ type: "ext-api-result", id: message.id, ...reply }, "*");
    }
  });
}

// ---- upload ------------------------------------------------------------------------------------

async function sha256Hex(file) {
  if (!window.crypto || !window.crypto.subtle) {
    return null; // not a secure context (plain http on a remote host): the server hashes anyway
  }
  const digest = await window.crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// What S3 said, as one of our errors: its XML body carries <Code> and <Message>.
function storageError(xhr) {
  const doc = new DOMParser().parseFromString(xhr.responseText || "", "application/xml");
  const s3Code = doc.querySelector("Code")?.textContent || "";
  const s3Message = doc.querySelector("Message")?.textContent || "";
  const detail = `Storage answered ${xhr.status}${s3Code ? ` ${s3Code}` : ""}${s3Message ? `: ${s3Message}` : ""}.`;
  if (xhr.status >= 500) {
    return new ApiError("STORAGE_ERROR", detail, { status: xhr.status });
  }
  if (["BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"].includes(s3Code)) {
    return new ApiError("HASH_MISMATCH", detail, { status: xhr.status });
  }
  if (/expired/i.test(s3Message)) {
    return new ApiError("UPLOAD_EXPIRED", detail, { status: xhr.status });
  }
  return new ApiError("STORAGE_REFUSED", detail, { status: xhr.status });
}

function isTransient(error) {
  return error instanceof ApiError && (error.code === "NETWORK_ERROR" || error.code === "STORAGE_ERROR");
}

// One upload: checksum → initiate → PUT (or parts) → finalize; abort on cancel or failure.
class UploadJob {
  constructor(file, signature, onProgress) {
    this.file = file;
    this.signature = signature;
    this.onProgress = onProgress;
    this.uploadId = null;
    this.cancelled = false; // by the person
    this.stopped = false; // by the person or by a failed part: start nothing new
    this.finalizing = false; // the server is checking the bundle: too late to cancel
    this.requests = new Set();
    this.sent = new Map(); // part number (1 for a single PUT) → bytes sent
    this.uploadingText = "Uploading…";
    this.token = state.token; // so a cancel during sign-out still aborts the session
  }

  async run() {
    this.report("Computing the checksum…");
    const sha256 = await sha256Hex(this.file);
    this.check();
    this.report("Starting the upload…");
    const body = { size: this.file.size };
    if (sha256) {
      body.sha256 = sha256;
    }
    if (this.signature) {
      body.signature = this.signature;
    }
    // Not cancellable in flight: a session created on the server must be known to be aborted.
    const target = await api("POST", "ext-bundles/initiate-upload", body, { token: this.token });
    this.uploadId = target.upload_id;
    try {
      this.check();
      const parts = target.method === "MULTIPART" ? await this.sendParts(target) : await this.sendWhole(target);
      this.check();
      this.finalizing = true;
      this.report("Checking the bundle on the server…");
      const finalize = { upload_id: this.uploadId };
      if (parts) {
        finalize.parts = parts;
      }
      return await api("POST", "ext-bundles/finalize", finalize, { token: this.token });
    } catch (error) {
      await this.abortSession();
      throw error;
    }
  }

  cancel() {
    if (this.finalizing) {
      return;
    }
    this.cancelled = true;
    this.stop();
  }

  stop() {
    this.stopped = true;
    for (const xhr of this.requests) {
      xhr.abort();
    }
  }

  check() {
    if (this.stopped) {
      throw new CancelledError();
    }
  }

  async abortSession() {
    try {
      await api("POST", "ext-bundles/abort", { upload_id: this.uploadId }, { token: this.token, keepSession: true });
    } catch (_error) {
      // Already finalized or failed on the server, or unreachable: staging expires on its own.
    }
  }

  report(stage) {
    const done = [...this.sent.values()].reduce((sum, bytes) => sum + bytes, 0);
    this.onProgress(stage, done, this.file.size);
  }

  async sendWhole(target) {
    this.uploadingText = `Uploading ${this.file.name}…`;
    this.report(this.uploadingText);
    await this.send(target.url, this.file, target.headers || {}, 1);
    return null;
  }

  async sendParts(target) {
    const size = Number(target.part_size);
    const queue = [...target.parts];
    this.uploadingText = `Uploading ${this.file.name} in ${queue.length} parts…`;
    this.report(this.uploadingText);
    const done = [];
    const lane = async () => {
      while (queue.length > 0) {
        this.check();
        const part = queue.shift();
        const start = (part.part_number - 1) * size;
        const etag = await this.send(part.url, this.file.slice(start, start + size), {}, part.part_number);
        if (!etag) {
          throw new ApiError(
            "STORAGE_REFUSED",
            "Storage hid the part's ETag header: its CORS rules must expose ETag for browser uploads.",
          );
        }
        done.push({ part_number: part.part_number, etag });
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, queue.length) }, lane));
    } catch (error) {
      this.stop();
      throw this.cancelled ? new CancelledError() : error;
    }
    return done.sort((a, b) => a.part_number - b.part_number);
  }

  // PUT with a few attempts for transient failures (network, 5xx); resolves to the ETag.
  async send(url, blob, headers, key) {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.put(url, blob, headers, key);
      } catch (error) {
        if (this.stopped || !isTransient(error) || attempt >= PUT_ATTEMPTS) {
          throw this.cancelled ? new CancelledError() : error;
        }
        this.sent.set(key, 0);
        this.report(`Connection trouble; trying again (attempt ${attempt + 1} of ${PUT_ATTEMPTS})…`);
        await sleep(500 * 2 ** (attempt - 1));
        this.check();
      }
    }
  }

  put(url, blob, headers, key) {
    return new Promise((resolve, reject) => {
      // XMLHttpRequest, not fetch: only it reports upload progress.
      const xhr = new XMLHttpRequest();
      this.requests.add(xhr);
      const settle = (outcome) => {
        this.requests.delete(xhr);
        outcome();
      };
      xhr.open("PUT", url);
      for (const [name, value] of Object.entries(headers)) {
        xhr.setRequestHeader(name, value);
      }
      xhr.upload.addEventListener("progress", (event) => {
        this.sent.set(key, event.loaded);
        this.report(this.uploadingText);
      });
      xhr.addEventListener("load", () =>
        settle(() => {
          if (xhr.status >= 200 && xhr.status < 300) {
            this.sent.set(key, blob.size);
            this.report(this.uploadingText);
            resolve(xhr.getResponseHeader("ETag") || "");
          } else {
            reject(storageError(xhr));
          }
        }),
      );
      xhr.addEventListener("error", () =>
        settle(() => reject(new ApiError("NETWORK_ERROR", "The connection to the storage service failed."))),
      );
      xhr.addEventListener("abort", () => settle(() => reject(new CancelledError())));
      xhr.send(blob);
    });
  }
}

function chosenBundle() {
  return $("bundle-file").files[0] || null;
}

// A problem with the chosen files that the server would reject anyway, caught before any upload.
function localUploadProblem(file) {
  if (!file) {
    return new ApiError("NO_FILE", "Choose a bundle.tar.zst file to upload.");
  }
  if (file.size > state.config.max_bundle_bytes) {
    return new ApiError(
      "BUNDLE_TOO_LARGE",
      `${file.name} is ${formatBytes(file.size)}; the limit is ${formatBytes(state.config.max_bundle_bytes)}. ` +
        "Nothing was uploaded.",
    );
  }
  if (file.size === 0) {
    return new ApiError("BUNDLE_CORRUPT", `${file.name} is empty. Nothing was uploaded.`);
  }
  return null;
}

async function readSignature() {
  const file = $("sig-file").files[0];
  if (!file) {
    return null;
  }
  const problem = (message) => new ApiError("SIGNATURE_INVALID", `${file.name} ${message}. Nothing was uploaded.`);
  if (file.size > MAX_SIGNATURE_BYTES) {
    throw problem("is too large to be a signature file");
  }
  const envelope = parseJson(await file.text());
  if (!isPlainObject(envelope)) {
    throw problem("is not a signature file (a JSON object made by extctl sign)");
  }
  return envelope;
}

function onBundleChosen() {
  clearUploadOutcome();
  const file = chosenBundle();
  $("bundle-chosen").textContent = file ? `${file.name}, ${formatBytes(file.size)}` : "";
  const problem = file ? localUploadProblem(file) : null;
  if (problem) {
    showError($("upload-error"), problem);
  }
}

function clearUploadOutcome() {
  clearBox($("upload-error"));
  $("upload-result").hidden = true;
  $("upload-progress").hidden = true;
}

function setUploading(busy) {
  $("upload-form").setAttribute("aria-busy", String(busy));
  $("bundle-file").disabled = busy;
  $("sig-file").disabled = busy;
  $("upload-start").disabled = busy;
  $("upload-cancel").hidden = !busy;
  $("upload-cancel").disabled = false;
}

function showProgress(stage, done, total) {
  const percent = total > 0 ? Math.floor((done * 100) / total) : 0;
  $("upload-stage").textContent = stage;
  $("upload-bar").value = percent;
  $("upload-percent").textContent = `${percent} %`;
  $("upload-bytes").textContent = `${formatBytes(done)} of ${formatBytes(total)}`;
  if (state.upload && state.upload.finalizing) {
    $("upload-cancel").disabled = true;
  }
}

async function startUpload() {
  if (state.upload) {
    return;
  }
  clearUploadOutcome();
  const file = chosenBundle();
  const problem = localUploadProblem(file);
  if (problem) {
    showError($("upload-error"), problem);
    $("upload-error").focus();
    return;
  }
  let signature;
  try {
    signature = await readSignature();
  } catch (error) {
    showError($("upload-error"), error);
    $("upload-error").focus();
    return;
  }
  const job = new UploadJob(file, signature, showProgress);
  state.upload = job;
  setUploading(true);
  $("upload-progress").hidden = false;
  showProgress("Preparing…", 0, file.size);
  try {
    showUploadResult(await job.run(), file.size);
  } catch (error) {
    $("upload-progress").hidden = true;
    if (error instanceof CancelledError) {
      toast("Upload cancelled. Nothing was published.");
    } else {
      const retryable = RETRYABLE.has(asApiError(error).code);
      showError($("upload-error"), error, { onRetry: retryable ? startUpload : null });
      $("upload-error").focus();
    }
  } finally {
    state.upload = null;
    setUploading(false);
  }
}

function showUploadResult(result, size) {
  state.lastUploadResult = result;
  showProgress("Done: uploaded and checked.", size, size);
  const again = result.status === "already_finalized";
  $("result-title").textContent = again
    ? `Already published: ${result.extension} ${result.version}`
    : `Published ${result.extension} ${result.version}`;
  $("result-extension").textContent = result.extension;
  $("result-version").textContent = result.version;
  $("result-signature").replaceChildren(signatureBadge(result));
  $("result-size").textContent = formatBytes(result.size);
  $("result-hash").textContent = result.content_hash;
  $("upload-result").hidden = false;
  $("upload-result").focus();
  state.loaded = false;
  refresh();
}

async function installUploaded() {
  const result = state.lastUploadResult;
  if (!result) {
    return;
  }
  try {
    await refresh();
    const record = await api("GET", `extensions/${enc(result.extension)}/versions/${enc(result.version)}`);
    const install = state.installs.get(result.extension);
    if (install) {
      await changeVersion(install, result.version);
    } else {
      await installVersion(record);
    }
  } catch (error) {
    showError($("upload-error"), error);
  }
}

// ---- start -------------------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut());
  for (const tab of TABS) {
    $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
    $(`tab-${tab}`).addEventListener("keydown", onTabKey);
  }
  $("ext-filter").addEventListener("input", renderExtensions);
  $("ext-refresh").addEventListener("click", refresh);
  $("installs-refresh").addEventListener("click", refresh);
  $("bundle-file").addEventListener("change", onBundleChosen);
  $("sig-file").addEventListener("change", clearUploadOutcome);
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startUpload();
  });
  $("upload-cancel").addEventListener("click", () => {
    if (state.upload) {
      $("upload-stage").textContent = "Cancelling…";
      state.upload.cancel();
    }
  });
  $("result-install").addEventListener("click", installUploaded);
  $("result-show").addEventListener("click", () => selectTab("extensions", { focus: true }));
  $("preview-close").addEventListener("click", () => {
    closePreview();
    $("installs-refresh").focus();
  });
  window.addEventListener("message", onFrameMessage);
  window.addEventListener("hashchange", onHashChange);
  // The message floats over the page: a click or Escape puts it away early.
  $("toast").addEventListener("click", dismissToast);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("confirm-dialog").open) {
      dismissToast();
    }
  });
}

// A token pasted into the address bar signs in; a tab name selects that tab.
function onHashChange() {
  const token = takeFragmentToken();
  if (token) {
    signIn(token);
    return;
  }
  const wanted = window.location.hash.slice(1);
  if (state.token && TABS.includes(wanted)) {
    selectTab(wanted);
  }
}

async function main() {
  wire();
  const fromFragment = takeFragmentToken();
  await loadConfig();
  const token = fromFragment || window.sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    await signIn(token);
  } else {
    showSignIn(null);
  }
}

main();
