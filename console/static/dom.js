// Small helpers shared by the panels: DOM building (text only, never HTML strings), times, the JSON API.

export const $ = (id) => document.getElementById(id);

// h("td", {class: "num"}, "12", child): attributes set one by one, children appended as nodes or text.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function replaceRows(tbody, rows, emptyText, columns) {
  if (!rows.length) {
    rows = [h("tr", {}, h("td", { colspan: columns, class: "empty" }, emptyText))];
  }
  tbody.replaceChildren(...rows);
}

export function pill(value, extra) {
  const v = value === null || value === undefined ? "—" : String(value);
  return h("span", { class: `pill ${v.replace(/[^a-z_]/g, "")} ${extra || ""}` }, v);
}

export const CORE_TIERS = new Set(["critical_plus", "critical"]);

const sameDay = (a, b) =>
  a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const d = typeof value === "number" ? new Date(value) : new Date(String(value));
  return Number.isNaN(d.getTime()) ? null : d;
}

export function utc(d) {
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function localText(d) {
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  return sameDay(d, new Date()) ? time : `${d.toLocaleDateString()} ${time}`;
}

// A <time> in the viewer's time zone, UTC on hover.
export function timeEl(value) {
  const d = toDate(value);
  if (!d) return h("span", { class: "note" }, value ? String(value) : "—");
  return h("time", { datetime: d.toISOString(), title: utc(d) }, localText(d));
}

// datetime-local input value (the viewer's zone) -> ISO UTC, or null when empty.
export function inputToIso(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

export function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  return Number(value).toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

// The short name of a process id "host:pid:role:abcdef": "pid role", the full id on hover.
export function processLabel(id) {
  const parts = String(id).split(":");
  return parts.length >= 4 ? `${parts[parts.length - 3]} ${parts[parts.length - 2]}` : String(id);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Every call same-origin with the session cookie; a 401 anywhere sends the page back to the sign-in form.
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `peak cannot be reached (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const failure = new ApiError(response.status, error.code || "http_" + response.status,
      error.message || `HTTP ${response.status}`);
    if (response.status === 401) document.dispatchEvent(new CustomEvent("peak:unauthenticated"));
    throw failure;
  }
  return data;
}

export function toast(text, bad) {
  const box = $("toasts");
  const item = h("div", { class: bad ? "toast bad" : "toast" }, text);
  box.append(item);
  setTimeout(() => item.remove(), bad ? 8000 : 4000);
}

// A <dialog> form: Cancel closes it, Escape too (native), submit runs `onSubmit` which may throw to stay open.
export function wireDialog(dialog, onSubmit) {
  const form = dialog.querySelector("form");
  const error = form.querySelector(".error");
  const submit = form.querySelector("button[type=submit]");
  form.querySelector("button.cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      if ((await onSubmit()) !== false) dialog.close();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });
}
