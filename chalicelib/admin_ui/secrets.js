// An install's secrets: the names its version declares, which are set and which required ones are
// missing, and a form to set, replace or delete each. Values are write-only: the API never returns
// one, and this page never shows or keeps one (the field is emptied as soon as it is sent).

import { api, enc } from "./api.js";
import { el, slug } from "./dom.js";
import { clearBox, showError } from "./errors.js";
import { toast } from "./toast.js";
import { timeElement } from "./widgets.js";

function stateBadges(secret) {
  const badges = [];
  if (!secret.declared) {
    badges.push(el("span", { className: "badge", text: "no longer declared" }));
  }
  if (secret.missing) {
    badges.push(el("span", { className: "badge badge-danger", text: "missing" }));
  } else if (secret.set) {
    badges.push(el("span", { className: "badge badge-ok", text: "set" }));
  } else {
    badges.push(el("span", { className: "badge", text: "not set" }));
  }
  if (secret.required) {
    badges.push(el("span", { className: "badge badge-warning", text: "required" }));
  }
  return badges;
}

function secretRow(install, secret, panel) {
  const id = `secret-${slug(install.extension)}-${secret.name}`;
  const row = el("li", { className: "secret-row", "data-secret": secret.name });
  const head = el("div", { className: "secret-head" }, [el("code", { className: "secret-name", text: secret.name })]);
  head.append(" ", ...stateBadges(secret));
  row.append(head);
  if (secret.description) {
    row.append(el("p", { className: "hint", text: secret.description }));
  }
  if (secret.set && secret.updated_at) {
    row.append(el("p", { className: "muted secret-updated" }, ["Last set ", timeElement(secret.updated_at)]));
  }
  const actions = el("div", { className: "secret-actions" });
  if (secret.declared) {
    const label = el("label", { className: "visually-hidden", text: `New value of ${secret.name}` });
    label.htmlFor = id;
    const input = el("input", {
      id,
      type: "password",
      className: "secret-value",
      autocomplete: "new-password",
      spellcheck: "false",
      placeholder: secret.set ? "New value (replaces the stored one)" : "Value",
    });
    const save = el("button", { type: "button", className: "btn btn-primary secret-save" }, [
      secret.set ? "Replace" : "Set",
    ]);
    save.setAttribute("aria-label", `${secret.set ? "Replace" : "Set"} ${secret.name}`);
    const send = () => setSecret(install, secret.name, input, panel);
    save.addEventListener("click", send);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        send();
      }
    });
    actions.append(label, input, save);
  }
  if (secret.set) {
    const remove = el("button", { type: "button", className: "btn btn-danger secret-delete" }, ["Delete"]);
    remove.setAttribute("aria-label", `Delete ${secret.name}`);
    remove.addEventListener("click", () => deleteSecret(install, secret.name, panel));
    actions.append(remove);
  }
  row.append(actions);
  return row;
}

// Fills `panel` ({list, box, status}) with the install's secrets, fresh from the API.
export async function loadSecrets(install, panel) {
  clearBox(panel.box);
  panel.status.textContent = "Loading secrets…";
  let listed;
  try {
    listed = await api("GET", `installs/${enc(install.extension)}/secrets`);
  } catch (error) {
    panel.status.textContent = "";
    setBusy(panel, false);
    showError(panel.box, error);
    return;
  }
  const secrets = listed.secrets || [];
  panel.list.replaceChildren(...secrets.map((secret) => secretRow(install, secret, panel)));
  panel.list.setAttribute("aria-busy", "false");
  const missing = secrets.filter((secret) => secret.missing).length;
  if (secrets.length === 0) {
    panel.status.textContent = "This version declares no secrets.";
  } else if (missing > 0) {
    panel.status.textContent = `${missing} required ${missing === 1 ? "secret is" : "secrets are"} missing.`;
  } else {
    panel.status.textContent = "Every required secret is set.";
  }
}

// One change at a time: from a request's start until the list is drawn again, the panel's controls are
// disabled, so a Delete cannot overtake the Replace sent just before it.
function setBusy(panel, busy) {
  panel.list.setAttribute("aria-busy", String(busy));
  for (const control of panel.list.querySelectorAll("input, button")) {
    control.disabled = busy;
  }
}

async function setSecret(install, name, input, panel) {
  const value = input.value;
  input.value = ""; // the page keeps no value once it is sent
  if (value === "") {
    input.focus();
    return;
  }
  clearBox(panel.box);
  setBusy(panel, true);
  try {
    await api("PUT", `installs/${enc(install.extension)}/secrets/${enc(name)}`, { value });
  } catch (error) {
    setBusy(panel, false);
    showError(panel.box, error);
    panel.box.focus();
    return;
  }
  toast(`Saved ${name} for ${install.extension}.`);
  await loadSecrets(install, panel);
  focusRow(panel, name);
}

async function deleteSecret(install, name, panel) {
  clearBox(panel.box);
  setBusy(panel, true);
  try {
    await api("DELETE", `installs/${enc(install.extension)}/secrets/${enc(name)}`);
  } catch (error) {
    setBusy(panel, false);
    showError(panel.box, error);
    panel.box.focus();
    return;
  }
  toast(`Deleted ${name} of ${install.extension}.`);
  await loadSecrets(install, panel);
  focusRow(panel, name);
}

function focusRow(panel, name) {
  const row = panel.list.querySelector(`[data-secret="${CSS.escape(name)}"]`);
  const target = row && (row.querySelector(".secret-value") || row.querySelector("button"));
  if (target) {
    target.focus();
  }
}
