// The three tabs (WAI-ARIA tabs: arrows, Home and End move between them); the selected one is
// kept in the address bar's fragment.

import { elements } from "./dom.js";

const TABS = ["extensions", "upload", "installs"];

const tabs = TABS.map((name) => ({ name, ...elements({ button: `tab-${name}`, panel: `panel-${name}` }) }));

let selected = () => {};

// `onSelect(name)` runs after each selection.
export function initTabs(onSelect) {
  selected = onSelect;
  for (const { name, button } of tabs) {
    button.addEventListener("click", () => selectTab(name));
    button.addEventListener("keydown", onTabKey);
  }
}

// The tab the address bar's fragment names, or null.
export function tabInUrl() {
  const wanted = window.location.hash.slice(1);
  return TABS.includes(wanted) ? wanted : null;
}

export function selectTab(name, { focus = false } = {}) {
  for (const tab of tabs) {
    const isSelected = tab.name === name;
    tab.button.setAttribute("aria-selected", String(isSelected));
    tab.button.tabIndex = isSelected ? 0 : -1;
    tab.panel.hidden = !isSelected;
    if (isSelected && focus) {
      tab.button.focus();
    }
  }
  window.history.replaceState(null, "", `#${name}`);
  selected(name);
}

function onTabKey(event) {
  const current = tabs.findIndex((tab) => tab.button === event.currentTarget);
  const moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: TABS.length - 1 };
  if (!(event.key in moves)) {
    return;
  }
  event.preventDefault();
  selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length], { focus: true });
}
