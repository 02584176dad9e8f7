// Errors for people: one sentence per code, the server's own words, the code and the request
// id, in an alert box. The sentences for the platform's codes come from the server's error
// table (admin/errors.json, made from chalicelib/errors.py); this page only words the failures
// that happen in the browser.

import { adminJson, ApiError } from "./api.js";
import { codeText, el } from "./dom.js";

// Codes this page makes up itself: the server never sends them.
const BROWSER_TEXT = {
  NETWORK_ERROR: "The connection failed. Check your network, then retry.",
  STORAGE_REFUSED: "The storage service refused the upload.",
  NO_FILE: "No bundle chosen.",
};

let texts = { ...BROWSER_TEXT };

// Reads the server's sentences; without them an alert still shows the code and the message.
export async function loadErrorTexts() {
  const server = await adminJson("errors.json");
  if (server) {
    texts = { ...server, ...BROWSER_TEXT };
  }
}

export function asApiError(error) {
  if (error instanceof ApiError) {
    return error;
  }
  return new ApiError("INTERNAL", `This page failed: ${error && error.message ? error.message : error}`);
}

// Fills an alert box: the sentence, the server's own words, the code and the request id.
export function showError(box, rawError, { onRetry = null, title = null } = {}) {
  const error = asApiError(rawError);
  const heading = title || texts[error.code] || "The request failed.";
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

export function clearBox(box) {
  box.replaceChildren();
  box.hidden = true;
}
