// Small pieces several views draw the same way: dates, content hashes, capability chips and
// signature badges.

import { el } from "./dom.js";

export const CAPABILITY_TEXT = {
  "cap:log.emit": "write to the platform log",
  "cap:context.read": "read the request context (tenant, user, install)",
  "cap:http.fetch": "make HTTP requests to the hosts listed under egress",
  "cap:storage.kv": "keep data in the tenant's key-value storage",
  "cap:secrets.get": "read the install's secrets",
  "cap:user.read": "read the signed-in user's profile",
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function timeElement(iso) {
  const when = new Date(iso);
  const text = iso && !Number.isNaN(when.getTime()) ? dateFormat.format(when) : "unknown";
  return el("time", iso ? { datetime: iso, text } : { text });
}

function shortHash(hash) {
  const [algorithm, hex] = String(hash || "").split(":");
  return hex ? `${algorithm}:${hex.slice(0, 12)}…` : String(hash || "");
}

// A hash shortened for the eye, in full in its tooltip.
export function hashElement(hash) {
  return el("code", { className: "hash", title: hash || "", text: shortHash(hash) });
}

export function chips(values, emptyText) {
  if (!values || values.length === 0) {
    return el("span", { className: "muted", text: emptyText });
  }
  return el(
    "ul",
    { className: "chips" },
    values.map((value) => el("li", { className: "chip", title: CAPABILITY_TEXT[value] || "", text: value })),
  );
}

export function signatureBadge(record) {
  const status = record && record.signature_status;
  const wrap = el("span", { className: "signature" });
  if (status === "verified") {
    wrap.append(el("span", { className: "badge badge-ok", text: "verified" }));
  } else if (status === "unverified") {
    wrap.append(el("span", { className: "badge badge-info", text: "signed, not verified" }));
  } else if (status === "unsigned") {
    wrap.append(el("span", { className: "badge badge-warning", text: "unsigned" }));
  } else {
    wrap.append(el("span", { className: "badge", text: "unknown" }));
  }
  if (record && record.key_id) {
    wrap.append(el("span", { className: "key-id" }, ["key ", hashElement(record.key_id)]));
  }
  return wrap;
}
