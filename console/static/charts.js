// Hand-written SVG line charts (no library): one chart, several series over a fixed time window.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 400;
const H = 130;
const PAD = { left: 40, right: 8, top: 8, bottom: 18 };
const colours = new Map();

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function colourOf(label) {
  if (!colours.has(label)) colours.set(label, colours.size % 8);
  return `c${colours.get(label)}`;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

const axis = (v) => (v >= 10 ? String(Math.round(v)) : String(Number(v.toFixed(2))));
const clock = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });

// series: [{label, title, points: [[t_ms, value], ...]}]; a gap longer than gapMs breaks the line.
export function lineChart({ title, unit, series, from, to, gapMs, format }) {
  const fmt = format || ((v) => String(Math.round(v * 100) / 100));
  let top = 0;
  for (const line of series) for (const [, v] of line.points) if (v > top) top = v;
  const yMax = niceMax(top);
  const x = (t) => PAD.left + ((t - from) / (to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v / yMax) * (H - PAD.top - PAD.bottom);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}, last hour` });
  for (const frac of [0, 0.5, 1]) {
    const yy = y(yMax * frac);
    svg.append(s("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: yy, y2: yy }));
    svg.append(s("text", { class: "axis", x: PAD.left - 4, y: yy + 3, "text-anchor": "end" }, axis(yMax * frac)));
  }
  for (const frac of [0, 0.5, 1]) {
    const t = from + (to - from) * frac;
    const anchor = frac === 0 ? "start" : frac === 1 ? "end" : "middle";
    svg.append(s("text", { class: "axis", x: x(t), y: H - 4, "text-anchor": anchor }, clock(t)));
  }
  const legend = [];
  for (const line of series) {
    const cls = colourOf(line.label);
    let run = [];
    let last = null;
    const flush = () => {
      if (run.length) svg.append(s("polyline", { class: cls, points: run.join(" ") }));
      run = [];
    };
    for (const [t, v] of line.points) {
      if (t < from || v === null || v === undefined) continue;
      if (last !== null && t - last > gapMs) flush();
      run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      last = t;
    }
    if (run.length === 1) run.push(run[0]);
    flush();
    const latest = line.points.length ? line.points[line.points.length - 1][1] : null;
    legend.push(h("span", { title: line.title || line.label }, h("i", { class: cls }), line.label,
      latest === null ? "" : `: ${fmt(latest)}${unit || ""}`));
  }
  return h("figure", { class: "chart", "data-chart": title },
    h("h4", {}, h("span", {}, title), h("small", {}, unit ? `max ${fmt(yMax)}${unit}` : `max ${fmt(yMax)}`)),
    svg,
    h("figcaption", { class: "legend" }, legend.length ? legend : h("span", {}, "no data yet")),
  );
}
