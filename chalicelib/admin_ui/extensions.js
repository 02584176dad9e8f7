// The Extensions tab: every extension and its versions, filtered by name or publisher. Each
// version row installs that version, or moves the tenant's install to it.

import { addView, catalog, refresh } from "./catalog.js";
import { changeVersion, installVersion } from "./changes.js";
import { elements, formatBytes, fromTemplate, plural } from "./dom.js";
import { chips, hashElement, signatureBadge, timeElement } from "./widgets.js";

const ui = elements({
  filter: "ext-filter",
  refresh: "ext-refresh",
  error: "ext-error",
  status: "ext-status",
  list: "ext-list",
  cardTemplate: "tpl-extension",
  rowTemplate: "tpl-version-row",
});

const surface = { box: ui.error, list: ui.list, fallback: ui.refresh };

export function initExtensions() {
  ui.filter.addEventListener("input", render);
  ui.refresh.addEventListener("click", refresh);
  addView({ list: ui.list, status: ui.status, box: ui.error, loadingText: "Loading extensions…", render });
}

function render() {
  const filter = ui.filter.value.trim().toLowerCase();
  const shown = catalog.extensions.filter(
    (extension) =>
      !filter || extension.name.toLowerCase().includes(filter) || extension.publisher.toLowerCase().includes(filter),
  );
  ui.list.replaceChildren(...shown.map(extensionCard));
  const versions = shown.reduce((count, extension) => count + extension.versions.length, 0);
  let status;
  if (catalog.extensions.length === 0) {
    status = "No extensions yet. Publish one on the Upload tab.";
  } else if (shown.length === 0) {
    status = "No extension matches the filter.";
  } else {
    status = `${plural(shown.length, "extension")}, ${plural(versions, "version")}.`;
  }
  ui.status.textContent = status;
}

function extensionCard(extension) {
  const card = fromTemplate(ui.cardTemplate);
  card.dataset.extension = extension.name;
  card.querySelector(".ext-name").textContent = extension.name;
  card.querySelector(".ext-publisher").textContent = extension.publisher;
  card.querySelector(".ext-latest").textContent = extension.latest_version || "–";
  card.querySelector(".ext-owned").hidden = !extension.owned;
  const install = catalog.installs.get(extension.name);
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
  const row = fromTemplate(ui.rowTemplate);
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
    button.addEventListener("click", () => changeVersion(install, record.version, surface));
  } else {
    button.textContent = "Install…";
    button.setAttribute("aria-label", `Install ${label}`);
    button.addEventListener("click", () => installVersion(record, surface));
  }
  return row;
}
