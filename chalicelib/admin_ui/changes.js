// Changes to the tenant's installs that several views start: installing a version (with its config,
// when its manifest has a `config_schema`) and moving an install to another one, each after a
// dialog that says what the version will be granted; and `act`, which runs any change and puts the
// person back where they were.
//
// A view passes its `surface`: {box, list, fallback}, the error box and card list it shows and
// the control that takes the focus when the changed card is gone.

import { api, ApiError, enc } from "./api.js";
import { extensionByName, refresh, versionRecord } from "./catalog.js";
import { configForm, fieldOfMessage, formableSchema, schemaDefaults } from "./config-form.js";
import { confirmDialog } from "./dialog.js";
import { el, slug } from "./dom.js";
import { clearBox, showError } from "./errors.js";
import { tenantName } from "./session.js";
import { toast } from "./toast.js";
import { CAPABILITY_TEXT, signatureBadge } from "./widgets.js";

// What installing `record` grants; capabilities not in `currentCapabilities` are marked new.
export function grantList(record, currentCapabilities = null) {
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

export async function installVersion(record, surface) {
  if (formableSchema(record.config_schema)) {
    await installWithConfig(record, surface);
    return;
  }
  const confirmed = await confirmDialog({
    title: `Install ${record.name} ${record.version}?`,
    body: [el("p", { text: `Every user of tenant ${tenantName()} gets it, enabled.` }), ...grantList(record)],
    okLabel: "Install",
  });
  if (!confirmed) {
    return;
  }
  await act(record.name, ".v-install", surface, async () => {
    await api("POST", "installs", { extension: record.name, version: record.version });
    toast(`Installed ${record.name} ${record.version}.`);
  });
}

// Installs a version whose manifest has a config_schema: the dialog holds the schema's form (the one
// Configure shows), filled with the schema's defaults, and the config goes with the install, which
// the server checks in the same write. Until the install is done the dialog stays open with what was
// typed: a field the page can check (required, a number, JSON) or a CONFIG_INVALID from the server
// is shown next to its field, any other failure above the buttons.
async function installWithConfig(record, surface) {
  const schema = record.config_schema;
  const form = configForm(schema, schemaDefaults(schema), `install-cf-${slug(record.name)}`);
  const problem = el("div", { className: "alert alert-error install-error", role: "alert", tabindex: "-1" });
  problem.hidden = true;
  let attempted = false;
  const submit = async () => {
    form.clearErrors();
    clearBox(problem);
    const read = form.read();
    if (read.problems.length > 0) {
      for (const [name, text] of read.problems) {
        form.showFieldError(name, text);
      }
      form.focusField(read.problems[0][0]);
      return false;
    }
    attempted = true;
    try {
      await api("POST", "installs", { extension: record.name, version: record.version, config: read.config });
    } catch (error) {
      const field = error instanceof ApiError && error.code === "CONFIG_INVALID" ? fieldOfMessage(error.message) : null;
      if (field !== null && form.showFieldError(field, error.message)) {
        form.focusField(field);
      } else {
        showError(problem, error);
        problem.focus();
      }
      return false;
    }
    return true;
  };
  const confirmed = await confirmDialog({
    title: `Install ${record.name} ${record.version}?`,
    body: [
      el("p", { text: `Every user of tenant ${tenantName()} gets it, enabled.` }),
      ...grantList(record),
      el("h3", { text: "Its configuration" }),
      el("p", { className: "hint", text: "Given to the extension on every call; Configure changes it later." }),
      form.element,
      problem,
    ],
    okLabel: "Install",
    onConfirm: submit,
    focus: form.element.querySelector(".cf-input"),
  });
  if (confirmed) {
    await act(record.name, ".v-install", surface, async () => {
      toast(`Installed ${record.name} ${record.version}.`);
    });
  } else if (attempted) {
    await refresh(); // a failed attempt may have met a change made elsewhere: show the tenant as it is
  }
}

export async function changeVersion(install, version, surface) {
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
  await act(install.extension, ".inst-version-select", surface, async () => {
    await api("PATCH", `installs/${enc(install.extension)}`, { version });
    toast(`${install.extension} now runs ${version}.`);
  });
}

// Runs one change to `name`, shows its error in the surface's box, reloads, and puts the focus
// on the redrawn `selector` of that extension's card (its heading if the control is gone, the
// surface's fallback if the card is), or on the error.
export async function act(name, selector, surface, change) {
  const { box, list, fallback } = surface;
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
    fallback.focus();
  }
}
