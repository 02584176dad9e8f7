// The tenant admin page: sign in with a token, browse the extensions, upload bundles
// (straight to S3 through presigned URLs, multipart for large files), manage the
// tenant's installs, and preview an extension's own UI.
//
// The page is served with a strict CSP (script-src 'self', style-src 'self'): no inline
// code or styles, no eval. Everything that comes from the API or a bundle reaches the
// DOM through textContent or attributes, never as HTML.
//
// This module only starts the page and connects its parts; each part is a module that
// owns its own elements:
//   api.js        the API client and the session's token
//   session.js    signing in and out
//   errors.js     error sentences (from the server's table) and alert boxes
//   tabs.js       the tabs
//   catalog.js    the extensions (with versions) and installs the lists draw
//   extensions.js the Extensions tab
//   installs.js   the Installed tab; preview.js its preview and postMessage bridge
//   changes.js    install and version changes several tabs start; dialog.js their dialog
//   upload.js     the Upload tab; upload-job.js one upload, without the DOM
//   config.js toast.js widgets.js dom.js   settings, the toast, shared widgets, DOM helpers

import { session } from "./api.js";
import { refresh, resetCatalog } from "./catalog.js";
import { loadConfig } from "./config.js";
import { loadErrorTexts } from "./errors.js";
import { initExtensions } from "./extensions.js";
import { initInstalls } from "./installs.js";
import { closePreview } from "./preview.js";
import { initSession, showSignIn, signIn, storedToken, takeFragmentToken } from "./session.js";
import { initTabs, selectTab, tabInUrl } from "./tabs.js";
import { initToast } from "./toast.js";
import { cancelUpload, initUpload, showLimits } from "./upload.js";

function wire() {
  initSession({
    signedIn: () => selectTab(tabInUrl() || "extensions"),
    signedOut: () => {
      cancelUpload();
      closePreview();
      resetCatalog();
    },
  });
  initTabs((name) => {
    if (name !== "upload") {
      refresh();
    }
  });
  initExtensions();
  initInstalls();
  initUpload(() => selectTab("extensions", { focus: true }));
  initToast();
  window.addEventListener("hashchange", onHashChange);
}

// A token pasted into the address bar signs in; a tab name selects that tab.
function onHashChange() {
  const token = takeFragmentToken();
  if (token) {
    signIn(token);
    return;
  }
  const wanted = tabInUrl();
  if (session.token && wanted) {
    selectTab(wanted);
  }
}

async function main() {
  wire();
  const fromFragment = takeFragmentToken();
  await Promise.all([loadConfig(), loadErrorTexts()]);
  showLimits();
  const token = fromFragment || storedToken();
  if (token) {
    await signIn(token);
  } else {
    showSignIn(null);
  }
}

main();
