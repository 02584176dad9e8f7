// Changes to the tenant's installs that several views start: installing a version and moving an
// install to another one (each with its config, when the version's manifest has a `config_schema`),
// each after a dialog that says what the version will be granted; and `act`, which runs any change
// and puts the person back where they were.
//
// A view passes its `surface`: {box, list, fallback}, the error box and card list it shows and
// the control that takes the focus when the changed card is gone.

import { api, ApiError, enc } from "./api.js";
import { extensionByName, refresh, versionRecord } from "./catalog.js";
import { carriedConfig, configForm, fieldOfMessage, formableSchema, schemaDefaults } from "./config-form.js";
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

// The config form inside a change's dialog and what confirming does. `send(config)` makes the
// change, in which the server checks the config. Until it is done the dialog stays open with what
// was typed: a field the page can check (required, a number, JSON) or a CONFIG_INVALID from the
// server is shown next to its field, any other failure in `problem`, above the buttons.
function configStep(schema, config, idPrefix, send) {
  const form = configForm(schema, config, idPrefix);
  const problem = el("div", { className: "alert alert-error install-error", role: "alert", tabindex: "-1" });
  problem.hidden = true;
  const step = { form, problem, attempted: false };
  step.submit = async () => {
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
    step.attempted = true;
    try {
      await send(read.config);
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
  return step;
}

// Installs a version whose manifest has a config_schema: the dialog holds the schema's form (the one
// Configure shows), filled with the schema's defaults, and the config goes with the install.
async function installWithConfig(record, surface) {
  const schema = record.config_schema;
  const step = configStep(schema, schemaDefaults(schema), `install-cf-${slug(record.name)}`, (config) =>
    api("POST", "installs", { extension: record.name, version: record.version, config }),
  );
  const confirmed = await confirmDialog({
    title: `Install ${record.name} ${record.version}?`,
    body: [
      el("p", { text: `Every user of tenant ${tenantName()} gets it, enabled.` }),
      ...grantList(record),
      el("h3", { text: "Its configuration" }),
      el("p", { className: "hint", text: "Given to the extension on every call; Configure changes it later." }),
      step.form.element,
      step.problem,
    ],
    okLabel: "Install",
    onConfirm: step.submit,
    focus: step.form.element.querySelector(".cf-input"),
  });
  if (confirmed) {
    await act(record.name, ".v-install", surface, async () => {
      toast(`Installed ${record.name} ${record.version}.`);
    });
  } else if (step.attempted) {
    await refresh(); // a failed attempt may have met a change made elsewhere: show the tenant as it is
  }
}

// Moves `install` to `version` (an upgrade, a downgrade or a return to one in its history) after a
// dialog that says what the version is granted. `wording` may replace the dialog's verb, its first
// sentence and the toast when it is done.
//
// When the version has a config_schema, the dialog holds its form, filled with the install's config
// over the schema's defaults, and the config goes with the version in one PATCH, which the server
// checks in the same write: so a version whose schema the current config does not fit (a new
// required field) is reached by filling that field in, and one it does fit by one click.
export async function changeVersion(install, version, surface, wording = {}) {
  const extension = extensionByName(install.extension);
  const record = versionRecord(install.extension, version);
  if (!extension || !record) {
    return;
  }
  const order = extension.versions.map((item) => item.version);
  const upgrade = order.indexOf(version) < order.indexOf(install.version);
  const inHistory = (install.history || []).some((entry) => entry.version === version);
  const verb = wording.verb || (upgrade ? "Upgrade" : inHistory ? "Roll back" : "Downgrade");
  const intro = wording.intro || `From ${install.version} to ${version}, for every user of tenant ${tenantName()}.`;
  const done = wording.done || `${install.extension} now runs ${version}.`;
  const path = `installs/${enc(install.extension)}`;
  const dialog = {
    title: `${verb} ${install.extension} to ${version}?`,
    body: [el("p", { text: intro }), ...grantList(record, install.granted_capabilities || [])],
    okLabel: verb,
  };
  if (!formableSchema(record.config_schema)) {
    if (!(await confirmDialog(dialog))) {
      return;
    }
    await act(install.extension, ".inst-version-select", surface, async () => {
      await api("PATCH", path, { version });
      toast(done);
    });
    return;
  }
  const schema = record.config_schema;
  const carried = carriedConfig(schema, install.config);
  const step = configStep(schema, carried.config, `change-cf-${slug(install.extension)}`, (config) =>
    api("PATCH", path, { version, config }),
  );
  dialog.body.push(
    el("h3", { text: "Its configuration" }),
    el("p", { className: "hint", text: `What ${version} runs with: the current one, with its defaults where unset.` }),
  );
  if (carried.dropped.length > 0) {
    const text = `Not carried over, as ${version} does not accept them: ${carried.dropped.join(", ")}.`;
    dialog.body.push(el("p", { className: "alert alert-warning change-dropped", text }));
  }
  dialog.body.push(step.form.element, step.problem);
  // The first field the config lacks has the focus; with none, the confirming button does.
  const lacking = step.form.read().problems[0];
  const confirmed = await confirmDialog({
    ...dialog,
    onConfirm: step.submit,
    focus: lacking ? step.form.control(lacking[0]) : null,
  });
  if (confirmed) {
    await act(install.extension, ".inst-version-select", surface, async () => {
      toast(done);
    });
  } else if (step.attempted) {
    await refresh();
  }
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
