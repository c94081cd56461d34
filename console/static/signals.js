// The signals panel: per process (in flight, core p99, loop lag, CPU, error ratio) and per subsystem (requests/s,
// 5xx/s, shed answers/s) over the last hour, from the series in the snapshot and then the `series` events.

import { lineChart } from "./charts.js";
import { $, h, num, processLabel, replaceRows } from "./dom.js";

const HOUR_MS = 3600 * 1000;
const processes = new Map();
const subsystems = new Map();
let intervalS = 2;
let skewMs = 0;
let live = [];
let pending = false;

const PROCESS_CHARTS = [
  { title: "In flight", index: 1, unit: "", format: (v) => num(v) },
  { title: "Core p99", index: 2, unit: " ms", format: (v) => num(v, v < 10 ? 1 : 0) },
  { title: "Event-loop lag", index: 3, unit: " ms", format: (v) => num(v, v < 10 ? 1 : 0) },
  { title: "CPU", index: 4, unit: " %", scale: 100, format: (v) => num(v) },
  { title: "Error ratio", index: 5, unit: " %", scale: 100, format: (v) => num(v, v < 1 ? 2 : 1) },
];
const SUBSYSTEM_CHARTS = [
  { title: "Requests/s", index: 1, unit: "/s", format: (v) => num(v, v < 10 ? 1 : 0) },
  { title: "5xx/s", index: 2, unit: "/s", format: (v) => num(v, v < 10 ? 1 : 0) },
  { title: "Shed answers/s", index: 3, unit: "/s", format: (v) => num(v, v < 10 ? 1 : 0) },
];

export const serverNow = () => Date.now() + skewMs;
export function setServerTime(ms) {
  if (typeof ms === "number") skewMs = ms - Date.now();
}
export function setProcesses(ids) {
  live = Array.isArray(ids) ? ids : [];
  schedule();
}

function merge(target, incoming) {
  for (const [key, points] of Object.entries(incoming || {})) {
    if (!Array.isArray(points)) continue;
    const list = target.get(key) || [];
    const lastAt = list.length ? list[list.length - 1][0] : -Infinity;
    for (const point of points) {
      if (Array.isArray(point) && point[0] > lastAt) list.push(point);
    }
    target.set(key, list);
  }
}

function trim(target) {
  const from = serverNow() - HOUR_MS;
  for (const [key, list] of target) {
    let i = 0;
    while (i < list.length && list[i][0] < from) i++;
    if (i) list.splice(0, i);
    if (!list.length) target.delete(key);
  }
}

export function resetSeries(body) {
  processes.clear();
  subsystems.clear();
  appendSeries(body);
}

export function appendSeries(body) {
  if (!body) return;
  if (body.interval_s) intervalS = Number(body.interval_s) || intervalS;
  merge(processes, body.processes);
  merge(subsystems, body.subsystems);
  schedule();
}

function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
}

function charts(specs, source, label) {
  const to = serverNow();
  const from = to - Number($("signals-window").value || 60) * 60_000;
  const keys = [...source.keys()].sort();
  return specs.map((spec) => lineChart({
    title: spec.title, unit: spec.unit, from, to, gapMs: intervalS * 3000, format: spec.format,
    series: keys.map((key) => ({
      label: label(key), title: key,
      points: source.get(key).map((p) => [p[0], p[spec.index] === null ? null : p[spec.index] * (spec.scale || 1)]),
    })),
  }));
}

function render() {
  trim(processes);
  trim(subsystems);
  const stale = serverNow() - intervalS * 3000;
  // Request signals come from API processes only (workers serve no requests).
  const ids = [...new Set([...live, ...processes.keys()])].filter((id) => !/:worker:/.test(id)).sort();
  const rows = ids.map((id) => {
    const list = processes.get(id) || [];
    const p = list[list.length - 1];
    const silent = !p || p[0] < stale;
    return h("tr", { "data-process": id },
      h("td", { title: id }, processLabel(id), silent ? h("small", {}, " (no recent sample)") : null),
      h("td", { class: "num" }, p ? num(p[1]) : "—"),
      h("td", { class: "num" }, p ? `${num(p[2], 1)} ms` : "—"),
      h("td", { class: "num" }, p ? `${num(p[3], 1)} ms` : "—"),
      h("td", { class: "num" }, p ? `${num(p[4] * 100)} %` : "—"),
      h("td", { class: "num" }, p ? `${num(p[5] * 100, 2)} %` : "—"),
    );
  });
  replaceRows($("processes-body"), rows, "No API process has reported a sample yet", 6);
  $("charts-process").replaceChildren(...charts(PROCESS_CHARTS, processes, processLabel));
  $("charts-subsystem").replaceChildren(...charts(SUBSYSTEM_CHARTS, subsystems, (k) => k));
  $("signals-note").textContent = `one point every ${intervalS} s, the last hour kept in Redis`;
}

export function initSignals() {
  $("signals-window").addEventListener("change", schedule);
}

// Redraw once in a while even without news, so the time axis moves and silent processes show as such.
setInterval(schedule, 10000);
