// The hello extension's page.
//
// It runs in a sandboxed iframe (an opaque origin, no cookies), so it cannot call the
// extension's API itself. It asks the host app instead, over postMessage:
//
//   page → app   {type: "ext-api", id, method, path, body}
//   app  → page  {type: "ext-api-result", id, status, body}
//
// `path` is relative to this extension's API (the app adds /api/ext/{extension}), and
// `body` is a string or null both ways. README.md describes the protocol in full.
"use strict";

(function () {
  const API_TIMEOUT_MS = 3000;

  const elements = {
    extensionName: document.getElementById("extension-name"),
    hostWarning: document.getElementById("host-warning"),
    form: document.getElementById("hello-form"),
    name: document.getElementById("name"),
    button: document.getElementById("say-hello"),
    result: document.getElementById("result"),
    context: document.getElementById("context"),
  };

  // ---- the bridge to the host app --------------------------------------------------

  class NoHostError extends Error {
    constructor() {
      super("No host app answered.");
      this.name = "NoHostError";
    }
  }

  const pending = new Map(); // request id → {resolve, timer}
  let nextId = 1;
  const hasParent = window.parent !== window;

  // Calls the extension's API through the host app; resolves to {status, body}.
  function callApi(method, path, body) {
    return new Promise(function (resolve, reject) {
      if (!hasParent) {
        reject(new NoHostError());
        return;
      }
      const id = "hello-" + nextId++;
      const timer = window.setTimeout(function () {
        pending.delete(id);
        reject(new NoHostError());
      }, API_TIMEOUT_MS);
      pending.set(id, { resolve: resolve, timer: timer });
      // "*": a sandboxed page cannot know its parent's origin. Nothing secret is sent;
      // the app decides what the call may do.
      window.parent.postMessage({ type: "ext-api", id: id, method: method, path: path, body: body }, "*");
    });
  }

  window.addEventListener("message", function (event) {
    // Only the frame's own parent can answer, and only for a call still waiting.
    if (event.source !== window.parent) {
      return;
    }
    const message = event.data;
    if (!message || message.type !== "ext-api-result" || !pending.has(message.id)) {
      return;
    }
    const call = pending.get(message.id);
    pending.delete(message.id);
    window.clearTimeout(call.timer);
    call.resolve({ status: Number(message.status), body: message.body });
  });

  // The JSON in a reply body, or null when there is none or it is not JSON.
  function parseJson(body) {
    if (typeof body !== "string" || body === "") {
      return null;
    }
    try {
      return JSON.parse(body);
    } catch (_error) {
      return null;
    }
  }

  // ---- the page ------------------------------------------------------------------------

  // The extension's name from this page's URL: /ext-ui/{extension}/{content_hash}/index.html
  function extensionNameFromUrl() {
    const segments = window.location.pathname.split("/");
    const at = segments.indexOf("ext-ui");
    if (at < 0 || !segments[at + 1]) {
      return null;
    }
    try {
      return decodeURIComponent(segments[at + 1]);
    } catch (_error) {
      return null;
    }
  }

  function showNoHost() {
    elements.hostWarning.hidden = false;
    elements.context.textContent = "Not connected to a host app.";
  }

  function showResult(text, kind) {
    elements.result.textContent = text;
    elements.result.classList.toggle("is-error", kind === "error");
    elements.result.classList.toggle("is-greeting", kind === "greeting");
  }

  function setBusy(busy) {
    elements.button.disabled = busy;
    elements.form.setAttribute("aria-busy", String(busy));
    elements.button.textContent = busy ? "Saying hello…" : "Say hello";
  }

  async function sayHello() {
    if (elements.button.disabled) {
      return;
    }
    const name = elements.name.value.trim();
    const path = name === "" ? "/hello" : "/hello?name=" + encodeURIComponent(name);
    setBusy(true);
    try {
      const reply = await callApi("GET", path, null);
      const data = parseJson(reply.body);
      if (reply.status === 200 && data && typeof data.message === "string") {
        showResult(data.message, "greeting");
      } else {
        const detail = data && typeof data.error === "string" ? data.error : "no details";
        showResult("The extension answered " + reply.status + " (" + detail + ").", "error");
      }
    } catch (error) {
      if (error instanceof NoHostError) {
        showNoHost();
      }
      showResult("Could not reach the extension. " + error.message, "error");
    } finally {
      setBusy(false);
    }
  }

  // Fills the footer with who is calling, from GET /info.
  async function loadContext() {
    try {
      const reply = await callApi("GET", "/info", null);
      const info = parseJson(reply.body);
      if (reply.status !== 200 || !info) {
        elements.context.textContent = "The extension's /info answered " + reply.status + ".";
        return;
      }
      if (typeof info.extension === "string") {
        elements.extensionName.textContent = info.extension;
      }
      const parts = [];
      if (typeof info.version === "string") {
        parts.push("Version " + info.version);
      }
      if (typeof info.tenant === "string") {
        parts.push("tenant " + info.tenant);
      }
      elements.context.textContent = parts.length ? parts.join(" · ") : "Connected.";
    } catch (error) {
      if (error instanceof NoHostError) {
        showNoHost();
      }
    }
  }

  const nameFromUrl = extensionNameFromUrl();
  if (nameFromUrl) {
    elements.extensionName.textContent = nameFromUrl;
  }
  elements.button.addEventListener("click", sayHello);
  elements.name.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.isComposing) {
      event.preventDefault();
      sayHello();
    }
  });
  loadContext();
})();
