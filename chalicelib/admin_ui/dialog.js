// The one confirmation dialog, for install, version changes and uninstall.

import { elements } from "./dom.js";

const ui = elements({
  dialog: "confirm-dialog",
  title: "confirm-title",
  body: "confirm-body",
  ok: "confirm-ok",
  cancel: "confirm-cancel",
});

export function dialogOpen() {
  return ui.dialog.open;
}

// Renames the confirming button of the open dialog (when a choice inside it changes what it does).
export function setOkLabel(text) {
  ui.ok.textContent = text;
}

// Shows the dialog; resolves true when the person confirms.
export function confirmDialog({ title, body, okLabel, danger = false }) {
  ui.title.textContent = title;
  ui.body.replaceChildren(...body);
  ui.ok.textContent = okLabel;
  ui.ok.className = danger ? "btn btn-danger" : "btn btn-primary";
  return new Promise((resolve) => {
    const listeners = new AbortController();
    const finish = (answer) => {
      listeners.abort();
      if (ui.dialog.open) {
        ui.dialog.close();
      }
      resolve(answer);
    };
    ui.ok.addEventListener("click", () => finish(true), { signal: listeners.signal });
    ui.cancel.addEventListener("click", () => finish(false), { signal: listeners.signal });
    ui.dialog.addEventListener("close", () => finish(false), { signal: listeners.signal });
    ui.dialog.showModal();
    // The safe choice has the focus where the action cannot be undone.
    (danger ? ui.cancel : ui.ok).focus();
  });
}
