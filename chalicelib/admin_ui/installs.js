// The Installed tab: the tenant's installs, each with its switch, version picker, rollback,
// configuration editor (a form when the version has a config_schema), secrets, preview and
// uninstall; and the preview below them.

import { api, ApiError, enc } from "./api.js";
import { addView, catalog, extensionByName, refresh, versionRecord } from "./catalog.js";
import { act, changeVersion, grantList } from "./changes.js";
import { configForm, fieldOfMessage, formableSchema } from "./config-form.js";
import { confirmDialog, setOkLabel } from "./dialog.js";
import { el, elements, fromTemplate, isPlainObject, plural, slug } from "./dom.js";
import { closePreview, initPreview, openPreview, previewing, previewProblem } from "./preview.js";
import { loadSecrets } from "./secrets.js";
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
  const secretsOpen = openSecretPanels();
  ui.list.replaceChildren(...installs.map(installCard));
  restoreConfigDrafts(drafts);
  reopenSecretPanels(secretsOpen);
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

function openSecretPanels() {
  const names = [];
  for (const card of ui.list.querySelectorAll(".install-card")) {
    if (!card.querySelector(".secrets-panel").hidden) {
      names.push(card.dataset.extension);
    }
  }
  return names;
}

function reopenSecretPanels(names) {
  for (const name of names) {
    const card = ui.list.querySelector(`[data-extension="${CSS.escape(name)}"]`);
    if (card) {
      card.querySelector(".inst-secrets").click();
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
  fillConfigEditor(card, install, id, record);
  fillSecretsPanel(card, install, id);
  return card;
}

function fillSecretsPanel(card, install, id) {
  const toggle = card.querySelector(".inst-secrets");
  const section = card.querySelector(".secrets-panel");
  const panel = {
    list: section.querySelector(".secrets-list"),
    box: section.querySelector(".secrets-error"),
    status: section.querySelector(".secrets-status"),
  };
  section.id = `secrets-${id}`;
  section.setAttribute("aria-label", `Secrets of ${install.extension}`);
  toggle.setAttribute("aria-controls", section.id);
  toggle.setAttribute("aria-label", `Secrets of ${install.extension}`);
  toggle.addEventListener("click", () => {
    const opened = section.hidden;
    section.hidden = !opened;
    toggle.setAttribute("aria-expanded", String(opened));
    if (opened) {
      loadSecrets(install, panel);
    }
  });
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

function fillConfigEditor(card, install, id, record) {
  const toggle = card.querySelector(".inst-configure");
  const editor = card.querySelector(".config-editor");
  const text = card.querySelector(".config-text");
  const error = card.querySelector(".config-error");
  const slot = card.querySelector(".config-form-slot");
  const schema = record && formableSchema(record.config_schema) ? record.config_schema : null;
  text.id = `config-${id}`;
  error.id = `config-error-${id}`;
  card.querySelector(".config-label").htmlFor = text.id;
  text.setAttribute("aria-describedby", `${error.id}`);
  toggle.setAttribute("aria-controls", `config-editor-${id}`);
  editor.id = `config-editor-${id}`;
  // With a schema, the form edits the config and the hidden textarea holds its JSON, so a redraw
  // keeps a draft the same way in both modes.
  const state = { form: null };
  const showForm = (config) => {
    state.form = configForm(schema, config, `cf-${id}`);
    state.form.element.addEventListener("input", () => {
      text.value = JSON.stringify(state.form.read().config, null, 2);
    });
    slot.replaceChildren(state.form.element);
  };
  if (schema) {
    text.hidden = true;
    card.querySelector(".config-label").hidden = true;
  }
  const reset = () => {
    text.value = JSON.stringify(install.config || {}, null, 2);
    showConfigProblem(text, error, null);
    if (schema) {
      showForm(install.config || {});
    }
  };
  const open = (opened) => {
    editor.hidden = !opened;
    toggle.setAttribute("aria-expanded", String(opened));
    if (opened) {
      reset();
      (schema ? slot.querySelector(".cf-input") || text : text).focus();
    }
  };
  toggle.addEventListener("click", () => open(editor.hidden));
  card.querySelector(".config-cancel").addEventListener("click", () => {
    open(false);
    toggle.focus();
  });
  text.addEventListener("input", () => {
    if (schema) {
      const draft = parseConfig(text.value);
      showForm(draft === null ? install.config || {} : draft);
    } else {
      showConfigProblem(text, error, configProblem(text.value));
    }
  });
  card
    .querySelector(".config-save")
    .addEventListener("click", () => saveConfig(install, { editor, text, error, form: state.form && state }));
}

function parseConfig(text) {
  try {
    const value = JSON.parse(text);
    return isPlainObject(value) ? value : null;
  } catch (_error) {
    return null;
  }
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

// Saves the config from the form or the JSON editor. CONFIG_INVALID stays in the editor, next to
// the field its path names; other failures go to the tab's error box.
async function saveConfig(install, { editor, text, error, form: formState }) {
  const form = formState ? formState.form : null;
  showConfigProblem(text, error, null);
  let config;
  if (form) {
    form.clearErrors();
    const read = form.read();
    if (read.problems.length > 0) {
      for (const [name, problem] of read.problems) {
        form.showFieldError(name, problem);
      }
      form.focusField(read.problems[0][0]);
      return;
    }
    config = read.config;
  } else {
    const problem = configProblem(text.value);
    showConfigProblem(text, error, problem);
    if (problem) {
      text.focus();
      return;
    }
    config = JSON.parse(text.value);
  }
  let failure = null;
  try {
    await api("PATCH", `installs/${enc(install.extension)}`, { config });
  } catch (caught) {
    failure = caught;
  }
  if (failure instanceof ApiError && failure.code === "CONFIG_INVALID") {
    const field = fieldOfMessage(failure.message);
    if (form && field !== null && form.showFieldError(field, failure.message)) {
      form.focusField(field);
    } else {
      showConfigProblem(text, error, failure.message);
      if (!form) {
        text.focus();
      }
    }
    return;
  }
  await act(install.extension, ".inst-configure", surface, async () => {
    if (failure) {
      throw failure;
    }
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

// Back to the version the install left last. One with a config_schema goes through changeVersion,
// whose dialog holds that schema's form and sends the config with the version.
async function rollBack(install) {
  const previous = install.history[0].version;
  const record = versionRecord(install.extension, previous);
  const verb = rollbackVerb(install);
  const intro = `From ${install.version} back to ${previous}, for every user of tenant ${tenantName()}.`;
  const done = `${install.extension} now runs ${previous} again.`;
  if (record && formableSchema(record.config_schema)) {
    await changeVersion(install, previous, surface, { verb, intro, done });
    return;
  }
  const confirmed = await confirmDialog({
    title: `${verb} ${install.extension} to ${previous}?`,
    body: [el("p", { text: intro }), ...(record ? grantList(record, install.granted_capabilities || []) : [])],
    okLabel: verb,
  });
  if (!confirmed) {
    return;
  }
  await act(install.extension, ".inst-version-select", surface, async () => {
    await api("POST", `installs/${enc(install.extension)}/rollback`, { version: previous });
    toast(done);
  });
}

async function toggleEnabled(install) {
  const enabled = !install.enabled;
  await act(install.extension, ".inst-enabled", surface, async () => {
    await api("PATCH", `installs/${enc(install.extension)}`, { enabled });
    toast(enabled ? `Enabled ${install.extension}.` : `Disabled ${install.extension}: its API answers NOT_INSTALLED.`);
  });
}

// The choice the uninstall dialog offers: keep the install's data for a reinstall, or purge it.
function dataChoice(name) {
  const option = (value, title, detail) => {
    const input = el("input", { type: "radio", name: "uninstall-data", value, className: `uninstall-${value}` });
    return [input, el("label", {}, [input, el("span", {}, [el("strong", { text: title }), ` ${detail}`])])];
  };
  const [keep, keepLabel] = option(
    "keep",
    "Keep its data.",
    `Its key-value data and secrets stay, and come back if you install ${name} again.`,
  );
  const [purge, purgeLabel] = option(
    "purge",
    "Delete its data too.",
    "Its key-value data and secrets are erased now, for good.",
  );
  keep.checked = true;
  const fieldset = el("fieldset", { className: "uninstall-choice" }, [
    el("legend", { text: "Its data" }),
    keepLabel,
    purgeLabel,
  ]);
  fieldset.addEventListener("change", () => {
    setOkLabel(purge.checked ? "Uninstall and delete data" : "Uninstall");
  });
  return { fieldset, purge };
}

async function uninstall(install) {
  const choice = dataChoice(install.extension);
  const confirmed = await confirmDialog({
    title: `Uninstall ${install.extension}?`,
    body: [
      el("p", { text: `Users of tenant ${tenantName()} lose it at once, and its configuration is deleted.` }),
      choice.fieldset,
    ],
    okLabel: "Uninstall",
    danger: true,
  });
  if (!confirmed) {
    return;
  }
  const purge = choice.purge.checked;
  await act(install.extension, ".inst-uninstall", surface, async () => {
    await api("DELETE", `installs/${enc(install.extension)}${purge ? "?purge=true" : ""}`);
    const preview = previewing();
    if (preview && preview.name === install.extension) {
      closePreview();
    }
    toast(purge ? `Uninstalled ${install.extension} and deleted its data.` : `Uninstalled ${install.extension}.`);
  });
}
