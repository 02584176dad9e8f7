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

// Enter in a text or number field of a form dialog confirms it, as in a form; not on a checkbox or a
// radio button, where it is easily pressed by mistake, nor in a textarea, where it starts a new line.
function submitsOnEnter(event) {
  const target = event.target;
  return event.key === "Enter" && target instanceof HTMLInputElement && !["checkbox", "radio"].includes(target.type);
}

// Shows the dialog; resolves true when the person confirms, false when they cancel.
//
// With `onConfirm`, the dialog holds a form: confirming runs `await onConfirm()`, with both buttons
// disabled meanwhile, and the dialog closes (resolving true) only when it returns true; otherwise
// it stays open as it is, so nothing typed into it is lost. Enter in one of its text fields
// confirms too. `focus` is the element that gets the focus when the dialog opens.
export function confirmDialog({ title, body, okLabel, danger = false, onConfirm = null, focus = null }) {
  ui.title.textContent = title;
  ui.body.replaceChildren(...body);
  ui.ok.textContent = okLabel;
  ui.ok.className = danger ? "btn btn-danger" : "btn btn-primary";
  return new Promise((resolve) => {
    const listeners = new AbortController();
    let busy = false;
    const finish = (answer) => {
      listeners.abort();
      if (ui.dialog.open) {
        ui.dialog.close();
      }
      resolve(answer);
    };
    const confirm = async () => {
      if (!onConfirm) {
        finish(true);
        return;
      }
      if (busy) {
        return;
      }
      busy = true;
      ui.dialog.setAttribute("aria-busy", "true");
      ui.ok.disabled = true;
      ui.cancel.disabled = true;
      let done = false;
      try {
        done = await onConfirm();
      } finally {
        busy = false;
        ui.dialog.removeAttribute("aria-busy");
        ui.ok.disabled = false;
        ui.cancel.disabled = false;
      }
      if (done) {
        finish(true);
      }
    };
    ui.ok.addEventListener("click", confirm, { signal: listeners.signal });
    ui.cancel.addEventListener("click", () => finish(false), { signal: listeners.signal });
    ui.dialog.addEventListener("close", () => finish(false), { signal: listeners.signal });
    // Escape must not close the dialog while its change is on the way: the answer would land unseen.
    const holdWhileBusy = (event) => {
      if (busy) {
        event.preventDefault();
      }
    };
    ui.dialog.addEventListener("cancel", holdWhileBusy, { signal: listeners.signal });
    if (onConfirm) {
      const onKey = (event) => {
        if (submitsOnEnter(event)) {
          event.preventDefault();
          confirm();
        }
      };
      ui.body.addEventListener("keydown", onKey, { signal: listeners.signal });
    }
    ui.dialog.showModal();
    // The safe choice has the focus where the action cannot be undone.
    (focus || (danger ? ui.cancel : ui.ok)).focus();
  });
}
