// Signing in and out: the token (from the address bar's fragment, this tab's sessionStorage or
// the sign-in form), its claims, the sign-in view and the signed-in header.

import { api, ApiError, onSessionLost, session } from "./api.js";
import { el, elements, isPlainObject } from "./dom.js";
import { clearBox, showError } from "./errors.js";

const TOKEN_KEY = "ext-admin-token";

const ui = elements({
  signinView: "signin-view",
  form: "signin-form",
  input: "token-input",
  error: "signin-error",
  appView: "app-view",
  header: "session",
  identity: "identity",
  signOut: "sign-out",
  roleWarning: "role-warning",
  main: "main",
});

let hooks = { signedIn() {}, signedOut() {} };

// `signedIn()` runs once the app view shows; `signedOut()` before the sign-in view does.
export function initSession(callbacks) {
  hooks = callbacks;
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    signIn(ui.input.value.trim());
  });
  ui.signOut.addEventListener("click", () => signOut());
  onSessionLost(signOut);
}

export function storedToken() {
  return window.sessionStorage.getItem(TOKEN_KEY);
}

export function tenantName() {
  return session.claims && session.claims.tenant ? String(session.claims.tenant) : "your tenant";
}

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
export function takeFragmentToken() {
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

export async function signIn(token) {
  const claims = decodeClaims(token);
  const problem = tokenProblem(token, claims);
  if (problem) {
    showSignIn(new ApiError("UNAUTHENTICATED", problem));
    return;
  }
  session.token = token;
  session.claims = claims;
  try {
    await api("GET", "installs", undefined, { keepSession: true });
  } catch (error) {
    session.token = null;
    session.claims = null;
    window.sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(error);
    return;
  }
  window.sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

export function signOut(reason = null) {
  window.sessionStorage.removeItem(TOKEN_KEY);
  hooks.signedOut();
  session.token = null;
  session.claims = null;
  showSignIn(reason);
}

export function showSignIn(error) {
  ui.appView.hidden = true;
  ui.header.hidden = true;
  ui.signinView.hidden = false;
  if (error) {
    showError(ui.error, error);
  } else {
    clearBox(ui.error);
  }
  ui.input.value = "";
  ui.input.focus();
}

function showApp() {
  const claims = session.claims || {};
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  ui.identity.replaceChildren(
    "Tenant ",
    el("strong", { text: String(claims.tenant || "?") }),
    el("span", { className: "muted", text: claims.sub ? ` · ${claims.sub}` : "" }),
  );
  ui.identity.title = ui.identity.textContent;
  ui.roleWarning.hidden = roles.includes("admin");
  ui.signinView.hidden = true;
  ui.header.hidden = false;
  ui.appView.hidden = false;
  hooks.signedIn();
  ui.main.focus();
}
