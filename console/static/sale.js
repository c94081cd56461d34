// The sale panel: per event stock left, reserved, queued, pending payment, paid, cancelled, dead letters, drift,
// and purchases/s computed here from successive `reserved` readings and their `at_ms`.

import { $, h, num, pill, replaceRows, timeEl } from "./dom.js";

const RATE_WINDOW_MS = 5000;
const history = new Map();
const shown = new Map();

function rate(event) {
  const list = history.get(event.id) || [];
  const at = Number(event.at_ms);
  const reserved = Number(event.reserved);
  if (!list.length || list[list.length - 1][0] < at) list.push([at, reserved]);
  while (list.length > 2 && list[0][0] < at - RATE_WINDOW_MS) list.shift();
  history.set(event.id, list);
  if (list.length < 2) return null;
  const [t0, r0] = list[0];
  const [t1, r1] = list[list.length - 1];
  return t1 > t0 ? Math.max(0, ((r1 - r0) * 1000) / (t1 - t0)) : null;
}

function cell(value, cls, alarm) {
  const changed = cls && shown.get(cls) !== undefined && shown.get(cls) !== value;
  if (cls) shown.set(cls, value);
  return h("td", { class: `num ${alarm ? "alert" : ""} ${changed ? "flash" : ""}` }, num(value));
}

export function renderSale(body) {
  const note = $("sale-note");
  if (body && body.error) {
    // The feed could not be read this time: keep the last rows, say why.
    note.textContent = body.error.message || "the sale could not be read";
    note.className = "alert";
    return;
  }
  note.className = "note";
  const events = (body && body.events) || [];
  const rows = events.map((e) => {
    const total = Number(e.stock_total) || 0;
    const left = Number(e.stock_left) || 0;
    const share = total ? Math.min(1, left / total) : 0;
    const bar = h("div", { class: `bar ${left === 0 ? "none" : share < 0.2 ? "low" : ""}`, "aria-hidden": "true" },
      h("span", {}));
    bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
    const perSecond = rate(e);
    const key = (field) => `${e.id}:${field}`;
    return h("tr", { "data-event": e.id },
      h("td", { class: "name" }, e.name || `event ${e.id}`, h("small", {}, ` #${e.id}`), h("br", {}),
        h("small", {}, timeEl(e.starts_at), " – ", timeEl(e.ends_at))),
      h("td", {}, pill(e.status)),
      h("td", { class: "stock" }, h("span", { class: "big stock-left" }, num(left)), h("small", {}, ` / ${num(total)}`), bar),
      cell(e.reserved, key("reserved")),
      cell(e.queued, key("queued")),
      cell(e.orders_pending_payment, key("pending")),
      cell(e.orders_paid, key("paid")),
      cell(e.orders_cancelled, key("cancelled")),
      cell(e.dead_letters, key("dead"), Number(e.dead_letters) > 0),
      cell(e.drift, key("drift"), Number(e.drift) !== 0),
      h("td", { class: "num rate big" }, perSecond === null ? "—" : num(perSecond, perSecond < 10 ? 1 : 0)),
      h("td", {}, timeEl(Number(e.at_ms))),
    );
  });
  replaceRows($("sale-body"), rows, "No sale event active, upcoming or ended within the last hour", 12);
  note.textContent = events.length ? `${events.length} event${events.length > 1 ? "s" : ""}` : "";
}
