// Small DOM and value helpers. Nothing here knows the page's ids: each module names the
// elements it owns with `elements()`.

// A new element; `text` becomes its textContent (never HTML), other props its attributes.
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") {
      node.textContent = value;
    } else if (key === "className") {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  node.append(...children);
  return node;
}

// The elements a module owns, looked up once: {name: element} for {name: id}. A missing id
// throws at start-up, so a renamed element in index.html cannot fail silently later.
export function elements(ids) {
  const found = {};
  for (const [name, id] of Object.entries(ids)) {
    const node = document.getElementById(id);
    if (!node) {
      throw new Error(`The page has no element #${id}.`);
    }
    found[name] = node;
  }
  return found;
}

// A fresh copy of a <template>'s first element.
export function fromTemplate(template) {
  return template.content.firstElementChild.cloneNode(true);
}

// Server messages quote fields in backticks (`version` must be …): show those as code.
export function codeText(text) {
  const fragment = document.createDocumentFragment();
  String(text).split("`").forEach((part, index) => {
    if (part) {
      fragment.append(index % 2 ? el("code", { text: part }) : document.createTextNode(part));
    }
  });
  return fragment;
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) {
    return "unknown size";
  }
  if (bytes < 1024) {
    return `${bytes} B`;
  }
  const units = ["KiB", "MiB", "GiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// An id fragment made from an extension name.
export function slug(name) {
  return name.replace(/[^a-z0-9]+/gi, "-");
}

export function parseJson(text) {
  if (typeof text !== "string" || text === "") {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch (_error) {
    return null;
  }
}

export function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function sleep(ms) {
  return new Promise((resolve) => window.setTimeout(resolve, ms));
}
