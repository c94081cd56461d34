// The audit panel: newest first, filtered by subsystem or plan, who and time range, paged with `before=`;
// new entries arrive with the stream's `audit` events.

import { $, api, h, replaceRows, timeEl, toast } from "./dom.js";

const PAGE = 50;
let entries = [];
let next = null;
let filter = { name: "", by: "", from: null, to: null };

const filtered = () => Boolean(filter.name || filter.by || filter.from !== null || filter.to !== null);

function matches(entry) {
  if (filter.name && entry.name !== filter.name) return false;
  if (filter.by && entry.by !== filter.by) return false;
  const at = Date.parse(entry.at);
  if (filter.from !== null && at < filter.from) return false;
  if (filter.to !== null && at > filter.to) return false;
  return true;
}

function change(entry) {
  return h("span", { class: "change" }, entry.field ? `${entry.field}: ` : "",
    entry.old === null || entry.old === undefined || entry.old === "" ? "" : `${entry.old} → `, entry.new ?? "");
}

function render(fresh) {
  const rows = entries.map((e) => h("tr", { "data-entry": e.id, class: fresh && fresh.has(e.id) ? "flash" : null },
    h("td", {}, timeEl(e.at)),
    h("td", { class: "name" }, e.name ?? "—"),
    h("td", {}, change(e)),
    h("td", {}, e.by ?? "—"),
    h("td", {}, e.source ?? "—"),
    h("td", { class: "why" }, e.reason ?? ""),
  ));
  replaceRows($("audit-body"), rows, filtered() ? "No entry matches these filters" : "No change audited yet", 6);
  $("audit-older").disabled = !next;
  $("audit-note").textContent = filtered() ? "filtered" : "newest first";
}

// The snapshot's newest entries, unless filters are set (then the filtered page stays).
export function resetAudit(list) {
  if (filtered()) {
    // A new snapshot (a reconnect): entries made meanwhile may match the filters.
    load(null);
    return;
  }
  entries = Array.isArray(list) ? list.slice() : [];
  next = entries.length >= PAGE ? entries[entries.length - 1].id : null;
  render();
}

export function addAudit(body) {
  const incoming = (Array.isArray(body) ? body : (body && body.entries) || []).filter(matches);
  const known = new Set(entries.map((e) => e.id));
  const fresh = incoming.filter((e) => !known.has(e.id));
  if (!fresh.length) return;
  entries = [...fresh, ...entries].sort((a, b) => (idKey(b.id) > idKey(a.id) ? 1 : -1));
  render(new Set(fresh.map((e) => e.id)));
}

// Stream ids "ms-seq" ordered numerically.
function idKey(id) {
  const [ms, seq] = String(id).split("-");
  return `${ms.padStart(15, "0")}-${(seq || "0").padStart(8, "0")}`;
}

function readFilter() {
  const time = (id) => {
    const v = $(id).value;
    const ms = v ? new Date(v).getTime() : NaN;
    return Number.isNaN(ms) ? null : ms;
  };
  filter = { name: $("audit-name").value.trim(), by: $("audit-by").value.trim(), from: time("audit-from"), to: time("audit-to") };
}

async function load(before) {
  const q = new URLSearchParams({ order: "newest", limit: String(PAGE) });
  if (filter.name) q.set("name", filter.name);
  if (filter.by) q.set("by", filter.by);
  if (filter.from !== null) q.set("from", String(filter.from));
  if (filter.to !== null) q.set("to", String(filter.to));
  if (before) q.set("before", before);
  try {
    const page = await api("GET", `/degrade/audit?${q}`);
    const got = (page && page.entries) || [];
    entries = before ? [...entries, ...got] : got;
    next = page ? page.next || null : null;
    render();
  } catch (err) {
    toast(`audit: ${err.message}`, true);
  }
}

export function setAuditNames(names) {
  $("audit-names").replaceChildren(...[...new Set(names)].sort().map((n) => h("option", { value: n })));
}

export function initAudit() {
  $("audit-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    readFilter();
    load(null);
  });
  $("audit-clear").addEventListener("click", () => {
    for (const id of ["audit-name", "audit-by", "audit-from", "audit-to"]) $(id).value = "";
    readFilter();
    load(null);
  });
  $("audit-newest").addEventListener("click", () => load(null));
  $("audit-older").addEventListener("click", () => next && load(next));
}
