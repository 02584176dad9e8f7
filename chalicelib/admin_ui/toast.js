// The short message that floats over the page after a change; a click or Escape puts it away.

import { dialogOpen } from "./dialog.js";
import { elements } from "./dom.js";

const TOAST_MS = 6000;

const ui = elements({ toast: "toast" });
let timer = 0;

export function initToast() {
  ui.toast.addEventListener("click", dismissToast);
  document.addEventListener("keydown", (event) => {
    // Escape in the dialog is the dialog's.
    if (event.key === "Escape" && !dialogOpen()) {
      dismissToast();
    }
  });
}

export function toast(text) {
  ui.toast.textContent = text;
  window.clearTimeout(timer);
  timer = window.setTimeout(dismissToast, TOAST_MS);
}

function dismissToast() {
  ui.toast.textContent = "";
}
