// The switches panel: every subsystem's tier, mode, effective state, since, by whom and why; the change dialog.

import { $, api, ApiError, CORE_TIERS, h, pill, replaceRows, timeEl, toast, wireDialog } from "./dom.js";

let switches = [];
const seen = new Map();
let editing = null;
let forceAsked = "";

export const currentSwitches = () => switches;

function modeText(mode, percent) {
  return mode === "partial" && percent ? `partial ${percent} %` : mode;
}

export function renderSwitches(body) {
  switches = (body && body.switches) || [];
  const store = $("switches-store");
  if (body && body.redis === "unreachable") {
    store.textContent = "switch store unreachable: showing the last known modes";
    store.className = "alert";
  } else {
    store.textContent = body && body.synced_at ? "in sync" : "";
    store.className = "note";
  }
  const degraded = switches.filter((s) => s.effective && s.effective !== "open")
    .map((s) => (s.effective === "partial" ? `${s.name} ${s.percent} %` : s.name));
  const summary = $("switches-summary");
  summary.textContent = degraded.length ? `shedding: ${degraded.join(", ")}` : "everything open";
  summary.className = degraded.length ? "alert" : "note";
  const rows = switches.map((s) => {
    const core = CORE_TIERS.has(s.tier);
    const mark = `${s.mode}|${s.effective}|${s.percent}|${s.since}`;
    const changed = seen.has(s.name) && seen.get(s.name) !== mark;
    seen.set(s.name, mark);
    const auto = s.mode === "auto" && s.controller_state ? h("small", {}, ` controller: ${s.controller_state}`) : null;
    return h("tr", { "data-subsystem": s.name, class: changed ? "flash" : null },
      h("td", { class: "name" }, s.name),
      h("td", {}, h("span", { class: core ? "tier core" : "tier", title: `default tier ${s.default_tier}` }, s.tier)),
      h("td", { class: "mode" }, pill(modeText(s.mode, s.percent)), auto),
      h("td", { class: "effective" }, pill(modeText(s.effective, s.percent), "effective")),
      h("td", { class: "since" }, timeEl(s.since)),
      h("td", { class: "by" }, s.changed_by || "—", s.source ? h("small", {}, ` (${s.source})`) : null),
      h("td", { class: "why" }, s.reason || "—"),
      h("td", {}, h("button", {
        type: "button", class: "small", "data-change": s.name, "aria-label": `Change ${s.name}`,
        onclick: () => openSwitch(s.name),
      }, "Change…")),
    );
  });
  replaceRows($("switches-body"), rows, "No subsystem registered", 8);
}

function chosenMode() {
  const checked = $("switch-form").querySelector("input[name=mode]:checked");
  return checked ? checked.value : null;
}

function refreshDialog() {
  const mode = chosenMode();
  $("switch-percent-row").hidden = mode !== "partial";
  const s = switches.find((x) => x.name === editing);
  const core = s && CORE_TIERS.has(s.tier) && (mode === "shed" || mode === "partial");
  const box = $("switch-force");
  if (core) {
    $("switch-force-text").textContent =
      `${editing} is a core subsystem (${s.tier}): shedding it refuses shoppers. Confirm to send force.`;
    box.hidden = false;
  } else if (forceAsked) {
    $("switch-force-text").textContent = forceAsked;
    box.hidden = false;
  } else {
    box.hidden = true;
    $("switch-force-ok").checked = false;
  }
}

export function openSwitch(name) {
  const s = switches.find((x) => x.name === name);
  if (!s) return;
  editing = name;
  forceAsked = "";
  $("switch-name").textContent = name;
  $("switch-current").textContent =
    `now ${modeText(s.mode, s.percent)}, effective ${modeText(s.effective, s.percent)}, tier ${s.tier}`;
  for (const radio of $("switch-form").querySelectorAll("input[name=mode]")) {
    radio.checked = radio.value === (s.mode === "open" ? "shed" : "open");
  }
  $("switch-percent").value = s.percent || 50;
  $("switch-reason").value = "";
  $("switch-force-ok").checked = false;
  $("switch-error").textContent = "";
  refreshDialog();
  $("switch-dialog").showModal();
  $("switch-reason").focus();
}

async function submitSwitch() {
  const mode = chosenMode();
  const reason = $("switch-reason").value.trim();
  if (!mode) throw new Error("Choose a mode.");
  if (!reason) throw new Error("A reason is required: it goes to the audit trail.");
  const body = { mode, reason };
  if (mode === "partial") {
    const percent = Number($("switch-percent").value);
    if (!Number.isInteger(percent) || percent < 1 || percent > 99) {
      throw new Error("The share shed is a whole number from 1 to 99.");
    }
    body.percent = percent;
  }
  if (!$("switch-force").hidden) {
    if (!$("switch-force-ok").checked) throw new Error("Tick the confirmation to go ahead.");
    body.force = true;
  }
  try {
    await api("PUT", `/degrade/switches/${encodeURIComponent(editing)}`, body);
  } catch (err) {
    if (err instanceof ApiError && err.code === "force_required") {
      forceAsked = err.message;
      refreshDialog();
      throw new Error("This change needs confirmation: tick the box and apply again.");
    }
    throw err;
  }
  toast(`${editing}: ${modeText(mode, body.percent)} (${reason})`);
  return true;
}

export function initSwitches() {
  wireDialog($("switch-dialog"), submitSwitch);
  for (const radio of $("switch-form").querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", refreshDialog);
  }
}
