// What the lists show: every extension with its versions, and the tenant's installs, read in
// two requests (GET /extensions?include=versions and GET /installs). One load runs at a time;
// a refresh asked for during a load gets one more load after it, so a change is never drawn
// from stale data.

import { api, session } from "./api.js";
import { clearBox, showError } from "./errors.js";

export const catalog = {
  extensions: [], // [{...extension, versions: [...]}], versions highest first
  installs: new Map(), // name → install
  loaded: false,
};

const views = [];
let loading = Promise.resolve();
let queuedLoad = null;

// A list drawn from the catalog: `render()` after every load; while the first load runs,
// `status` says `loadingText`; a failed load shows in `box` (with Retry) until a load succeeds.
export function addView({ list, status, box, loadingText, render }) {
  views.push({ list, status, box, loadingText, render });
}

export function refresh() {
  if (!queuedLoad) {
    queuedLoad = loading.then(() => {
      queuedLoad = null;
      return loadAll();
    });
    loading = queuedLoad;
  }
  return queuedLoad;
}

// Loads again as if for the first time (the lists say they are loading).
export function reload() {
  catalog.loaded = false;
  return refresh();
}

export function resetCatalog() {
  catalog.extensions = [];
  catalog.installs = new Map();
  catalog.loaded = false;
}

export function extensionByName(name) {
  return catalog.extensions.find((extension) => extension.name === name) || null;
}

export function versionRecord(name, version) {
  const extension = extensionByName(name);
  return extension ? extension.versions.find((record) => record.version === version) || null : null;
}

async function loadAll() {
  const token = session.token;
  for (const view of views) {
    view.list.setAttribute("aria-busy", "true");
    if (!catalog.loaded) {
      view.status.textContent = view.loadingText;
    }
  }
  let failure = null;
  try {
    const [listed, installs] = await Promise.all([
      api("GET", "extensions?include=versions"),
      api("GET", "installs"),
    ]);
    if (session.token === token) {
      catalog.extensions = (listed.extensions || []).sort((a, b) => a.name.localeCompare(b.name));
      catalog.installs = new Map((installs.installs || []).map((install) => [install.extension, install]));
      catalog.loaded = true;
    }
  } catch (error) {
    failure = error;
  } finally {
    views.forEach((view) => view.list.removeAttribute("aria-busy"));
  }
  if (!session.token || session.token !== token) {
    return; // signed out, or in as someone else, meanwhile: this answer is not theirs
  }
  for (const view of views) {
    if (failure) {
      showError(view.box, failure, { onRetry: refresh });
      view.box.dataset.source = "load";
    } else if (view.box.dataset.source === "load") {
      // A change's error stays until the next change; only a failed load is over now.
      clearBox(view.box);
    }
    view.render();
  }
}
