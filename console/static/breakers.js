// The breakers panel: each live process's circuit breakers (outbound calls) and their states.

import { $, h, num, pill, processLabel, replaceRows } from "./dom.js";

// A process's breakers as a list, whether the record holds a list or a {name: status} map.
function listOf(breakers) {
  if (Array.isArray(breakers)) return breakers;
  return Object.entries(breakers || {}).map(([name, b]) => ({ name, ...b }));
}

export function renderBreakers(body) {
  const records = Array.isArray(body) ? body : (body && body.breakers) || [];
  const rows = [];
  let count = 0;
  for (const record of records) {
    const breakers = listOf(record.breakers);
    count += breakers.length;
    for (const b of breakers) {
      rows.push(h("tr", { "data-breaker": `${record.process}/${b.name}` },
        h("td", { title: record.process }, processLabel(record.process)),
        h("td", {}, record.role || "—"),
        h("td", { class: "name" }, b.name),
        h("td", {}, pill(b.state)),
        h("td", { class: "num" }, num(b.trips)),
        h("td", { class: "num" }, num(b.rejected)),
        h("td", { class: "why" }, b.last_trip_reason || "—"),
      ));
    }
  }
  replaceRows($("breakers-body"), rows, records.length
    ? "No breaker used yet in any live process" : "No live process reports its breakers", 7);
  $("breakers-note").textContent = `${records.length} live process${records.length === 1 ? "" : "es"}, ${count} breaker${count === 1 ? "" : "s"}`;
}
