// A form for an install's config, made from its version's `config_schema` (Configure, the install
// dialog and the dialog of a version change all use it): one field per top-level property (text,
// number, whole number, on/off, a choice from `enum`), with its description and whether it is
// required; any other property is edited as JSON in a field of its own. Keys the schema does not
// name are kept as they are. The server validates again; its CONFIG_INVALID message starts with the
// field's path (`config.retries: …`), which `showFieldError` puts next to that field.

import { el, isPlainObject, slug } from "./dom.js";

const SIMPLE = new Set(["string", "number", "integer", "boolean"]);

// Whether `schema` can be shown as a form: an object schema with named properties.
export function formableSchema(schema) {
  return isPlainObject(schema) && isPlainObject(schema.properties) && Object.keys(schema.properties).length > 0;
}

// The config a new install starts from: each top-level property's `default`, where the schema gives one.
export function schemaDefaults(schema) {
  const defaults = {};
  for (const [name, property] of Object.entries(schema.properties)) {
    if (isPlainObject(property) && property.default !== undefined) {
      defaults[name] = property.default;
    }
  }
  return defaults;
}

// The config an install takes to a version with `schema`: its `config` over the schema's defaults,
// less the keys the schema would refuse (not among its properties or patternProperties when
// additionalProperties or unevaluatedProperties is false), which `dropped` names. The server
// validates whatever else the schema says.
export function carriedConfig(schema, config) {
  const current = isPlainObject(config) ? config : {};
  const closed = schema.additionalProperties === false || schema.unevaluatedProperties === false;
  const patterns = isPlainObject(schema.patternProperties) ? Object.keys(schema.patternProperties) : [];
  const admitted = (name) =>
    Object.hasOwn(schema.properties, name) || !closed || patterns.some((pattern) => matches(pattern, name));
  const carried = schemaDefaults(schema);
  const dropped = [];
  for (const [name, value] of Object.entries(current)) {
    if (admitted(name)) {
      carried[name] = value;
    } else {
      dropped.push(name);
    }
  }
  return { config: carried, dropped };
}

// Whether a patternProperties pattern matches `name`; one JavaScript cannot compile matches nothing
// (the server, which checks it with Python's re, has the last word).
function matches(pattern, name) {
  try {
    return new RegExp(pattern, "u").test(name);
  } catch (_error) {
    return false;
  }
}

function kindOf(property) {
  if (!isPlainObject(property)) {
    return "json";
  }
  if (Array.isArray(property.enum) && property.enum.length > 0) {
    return "enum";
  }
  return SIMPLE.has(property.type) ? property.type : "json";
}

// The property a server message is about: `config.retries: …` → "retries", `config["a.b"][2]: …` → "a.b".
export function fieldOfMessage(message) {
  const match = /^config(?:\.([A-Za-z_$][\w$]*)|\[("(?:[^"\\]|\\.)*")\])/.exec(String(message || ""));
  if (!match) {
    return null;
  }
  if (match[1] !== undefined) {
    return match[1];
  }
  try {
    return JSON.parse(match[2]);
  } catch (_error) {
    return null;
  }
}

function controlFor(kind, property, id, value) {
  if (kind === "boolean") {
    const box = el("input", { type: "checkbox", id, className: "cf-input" });
    box.checked = value === true;
    return box;
  }
  if (kind === "enum") {
    const select = el("select", { id, className: "cf-input" });
    select.append(el("option", { value: "", text: "(not set)" }));
    property.enum.forEach((choice, index) => {
      const text = typeof choice === "string" ? choice : JSON.stringify(choice);
      select.append(el("option", { value: String(index), text }));
    });
    const chosen = property.enum.findIndex((choice) => JSON.stringify(choice) === JSON.stringify(value));
    select.value = chosen >= 0 ? String(chosen) : "";
    return select;
  }
  if (kind === "json") {
    const text = el("textarea", { id, className: "cf-input cf-json", rows: "3", spellcheck: "false" });
    text.value = value === undefined ? "" : JSON.stringify(value, null, 2);
    return text;
  }
  const input = el("input", { id, className: "cf-input", autocomplete: "off" });
  if (kind === "string") {
    input.type = "text";
    input.value = typeof value === "string" ? value : "";
  } else {
    input.type = "number";
    input.step = kind === "integer" ? "1" : "any";
    input.value = typeof value === "number" ? String(value) : "";
  }
  return input;
}

// Reads one field: {set: false} when it is empty, {set: true, value} or {problem}.
function readField(field) {
  const { kind, control, property } = field;
  if (kind === "boolean") {
    return { set: true, value: control.checked };
  }
  if (kind === "enum") {
    return control.value === "" ? { set: false } : { set: true, value: property.enum[Number(control.value)] };
  }
  const raw = control.value;
  if (raw.trim() === "") {
    return { set: false };
  }
  if (kind === "string") {
    return { set: true, value: raw };
  }
  if (kind === "json") {
    try {
      return { set: true, value: JSON.parse(raw) };
    } catch (error) {
      return { problem: `Not valid JSON: ${error.message}` };
    }
  }
  const number = Number(raw);
  if (!Number.isFinite(number)) {
    return { problem: "Enter a number." };
  }
  if (kind === "integer" && !Number.isInteger(number)) {
    return { problem: "Enter a whole number." };
  }
  return { set: true, value: number };
}

// Builds the form; `idPrefix` keeps its ids unique on the page. Returns
// {element, read() → {config, problems: [[name, text]]}, showFieldError(name, text) → bool,
// clearErrors(), focusField(name), control(name) → the field's input or null}.
export function configForm(schema, config, idPrefix) {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const current = isPlainObject(config) ? config : {};
  const fields = new Map();
  const element = el("div", { className: "config-form" });
  for (const [name, property] of Object.entries(schema.properties)) {
    const kind = kindOf(property);
    const id = `${idPrefix}-${slug(name)}-${fields.size}`;
    const control = controlFor(kind, property, id, current[name]);
    const error = el("p", { className: "field-error cf-error", id: `${id}-error` });
    error.hidden = true;
    const title = isPlainObject(property) && typeof property.title === "string" ? property.title : name;
    const label = el("label", { className: "cf-label" }, [title]);
    label.htmlFor = id;
    if (required.has(name)) {
      label.append(" ", el("span", { className: "badge badge-warning", text: "required" }));
    }
    if (kind === "json") {
      label.append(" ", el("span", { className: "muted", text: "(JSON)" }));
    }
    const describedBy = [error.id];
    const parts = [];
    if (isPlainObject(property) && typeof property.description === "string") {
      const hint = el("p", { className: "hint cf-hint", id: `${id}-hint`, text: property.description });
      describedBy.push(hint.id);
      parts.push(hint);
    }
    control.setAttribute("aria-describedby", describedBy.join(" "));
    const row = el("div", { className: `cf-field cf-${kind}`, "data-field": name });
    if (kind === "boolean") {
      row.append(el("div", { className: "cf-check" }, [control, label]), ...parts, error);
    } else {
      row.append(label, control, ...parts, error);
    }
    element.append(row);
    fields.set(name, { kind, control, property, error, required: required.has(name) });
  }

  function showFieldError(name, text) {
    const field = fields.get(name);
    if (!field) {
      return false;
    }
    field.error.textContent = text;
    field.error.hidden = false;
    field.control.setAttribute("aria-invalid", "true");
    return true;
  }

  function clearErrors() {
    for (const field of fields.values()) {
      field.error.hidden = true;
      field.error.textContent = "";
      field.control.removeAttribute("aria-invalid");
    }
  }

  function read() {
    const out = {};
    for (const [name, value] of Object.entries(current)) {
      if (!fields.has(name)) {
        out[name] = value; // not in the form: kept as it is
      }
    }
    const problems = [];
    for (const [name, field] of fields) {
      const result = readField(field);
      if (result.problem) {
        problems.push([name, result.problem]);
      } else if (result.set) {
        out[name] = result.value;
      } else if (field.required) {
        problems.push([name, "This field is required."]);
      }
    }
    return { config: out, problems };
  }

  function focusField(name) {
    const field = fields.get(name);
    if (field) {
      field.control.focus();
    }
  }

  function control(name) {
    const field = fields.get(name);
    return field ? field.control : null;
  }

  return { element, read, showFieldError, clearErrors, focusField, control };
}
