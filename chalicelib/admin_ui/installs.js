// The Installed tab: the tenant's installs, each with its switch, version picker, rollback,
// configuration editor, preview and uninstall; and the preview below them.

import { api, enc } from "./api.js";
import { addView, catalog, extensionByName, refresh, versionRecord } from "./catalog.js";
import { act, changeVersion, grantList } from "./changes.js";
import { confirmDialog } from "./dialog.js";
import { el, elements, fromTemplate, isPlainObject, plural, slug } from "./dom.js";
import { closePreview, initPreview, openPreview, previewing, previewProblem } from "./preview.js";
import { tenantName } from "./session.js";
import { toast } from "./toast.js";
import { chips, hashElement, signatureBadge, timeElement } from "./widgets.js";

const MAX_CONFIG_BYTES = 16 * 1024;

const ui = elements({
  refresh: "installs-refresh",
  error: "installs-error",
  status: "installs-status",
  list: "installs-list",
  cardTemplate: "tpl-install",
});

const surface = { box: ui.error, list: ui.list, fallback: ui.refresh };

export function initInstalls() {
  ui.refresh.addEventListener("click", refresh);
  initPreview(() => ui.refresh.focus());
  addView({ list: ui.list, status: ui.status, box: ui.error, loadingText: "Loading installs…", render });
}

function render() {
  const installs = [...catalog.installs.values()].sort((a, b) => a.extension.localeCompare(b.extension));
  const drafts = openConfigDrafts();
  ui.list.replaceChildren(...installs.map(installCard));
  restoreConfigDrafts(drafts);
  ui.status.textContent =
    installs.length === 0
      ? "Nothing is installed yet. Install a version from the Extensions tab."
      : `${plural(installs.length, "installed extension")}.`;
  const preview = previewing();
  if (preview) {
    const install = catalog.installs.get(preview.name);
    if (!install) {
      closePreview();
    } else if (install.content_hash !== preview.contentHash) {
      openPreview(install, { focus: false });
    }
  }
}

// Config being edited survives a redraw (another card's change, a refresh), caret included.
function openConfigDrafts() {
  const drafts = new Map();
  for (const card of ui.list.querySelectorAll(".install-card")) {
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
    const card = ui.list.querySelector(`[data-extension="${CSS.escape(name)}"]`);
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

function installCard(install) {
  const card = fromTemplate(ui.cardTemplate);
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
  const problem = previewProblem(record);
  if (problem) {
    preview.disabled = true;
    preview.title = problem;
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
  button.addEventListener("click", () => changeVersion(install, select.value, surface));
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

// ---- changes only this tab makes ----------------------------------------------------------------

async function saveConfig(install, editor, text, error) {
  const problem = configProblem(text.value);
  showConfigProblem(text, error, problem);
  if (problem) {
    text.focus();
    return;
  }
  await act(install.extension, ".inst-configure", surface, async () => {
    await api("PATCH", `installs/${enc(install.extension)}`, { config: JSON.parse(text.value) });
    editor.hidden = true; // saved: no draft to keep
    toast(`Saved the configuration of ${install.extension}.`);
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
  await act(install.extension, ".inst-version-select", surface, async () => {
    await api("POST", `installs/${enc(install.extension)}/rollback`, { version: previous });
    toast(`${install.extension} now runs ${previous} again.`);
  });
}

async function toggleEnabled(install) {
  const enabled = !install.enabled;
  await act(install.extension, ".inst-enabled", surface, async () => {
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
  await act(install.extension, ".inst-uninstall", surface, async () => {
    await api("DELETE", `installs/${enc(install.extension)}`);
    const preview = previewing();
    if (preview && preview.name === install.extension) {
      closePreview();
    }
    toast(`Uninstalled ${install.extension}.`);
  });
}
