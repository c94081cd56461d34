// The plans panel: named sets of switch changes; edit, apply now or at a time, roll back, cancel, delete.

import { $, api, ApiError, CORE_TIERS, h, inputToIso, pill, timeEl, toast, wireDialog } from "./dom.js";
import { currentSwitches } from "./switches.js";

let plans = [];
let editingPlan = null;
let action = null;

export const currentPlans = () => plans;

const changeText = (sub, change) =>
  `${sub} → ${change.mode === "partial" ? `partial ${change.percent} %` : change.mode}`;

function summary(map) {
  return Object.entries(map || {})
    .map(([sub, c]) => `${sub}=${c.mode === "partial" ? `partial:${c.percent}` : c.mode}`)
    .join(", ");
}

function shedsCore(plan) {
  const tiers = new Map(currentSwitches().map((s) => [s.name, s.tier]));
  return Object.entries(plan.changes || {})
    .filter(([sub, c]) => CORE_TIERS.has(tiers.get(sub)) && (c.mode === "shed" || c.mode === "partial"))
    .map(([sub]) => sub);
}

export function renderPlans(body) {
  plans = Array.isArray(body) ? body : (body && body.plans) || [];
  const list = $("plans-list");
  if (!plans.length) {
    list.replaceChildren(h("p", { class: "empty" },
      "No plan yet. A plan changes several switches as one decision, and one rollback restores them."));
    return;
  }
  list.replaceChildren(...plans.map(planCard));
}

function planCard(plan) {
  const applied = plan.applied;
  const status = [];
  if (plan.scheduled_at) status.push(h("span", {}, pill("scheduled"), " for ", timeEl(plan.scheduled_at)));
  if (applied) status.push(h("span", {}, pill("applied"), " ", timeEl(applied.at)));
  const button = (label, onclick, enabled = true, cls = "small") =>
    h("button", { type: "button", class: cls, disabled: !enabled, "data-action": label.replace("…", "").toLowerCase(),
      "aria-label": `${label.replace("…", "")} plan ${plan.name}`, onclick }, label);
  return h("article", { class: "plan", "data-plan": plan.name },
    h("header", {}, h("h3", {}, plan.name), ...status),
    plan.description ? h("p", { class: "meta" }, plan.description) : null,
    h("ul", {}, Object.entries(plan.changes || {}).map(([sub, c]) => h("li", {}, changeText(sub, c)))),
    applied ? h("p", { class: "meta" }, `applied by ${applied.by || "?"}: ${applied.reason || ""}; before: `,
      h("span", { class: "change" }, summary(applied.previous) || "—")) : null,
    h("p", { class: "meta" }, "edited ", timeEl(plan.updated_at), ` by ${plan.updated_by || "?"}`),
    h("div", { class: "buttons" },
      button("Apply…", () => openApply(plan), true, "small primary"),
      button("Rollback…", () => openSimple(plan, "rollback"), Boolean(applied)),
      button("Cancel schedule…", () => openSimple(plan, "cancel"), Boolean(plan.scheduled_at)),
      button("Edit", () => openPlan(plan)),
      button("Delete", () => openSimple(plan, "delete"), true, "small danger"),
    ),
  );
}

// ---- the plan editor ----

function changeRow(sub, change) {
  const select = h("select", { id: `plan-mode-${sub}`, "data-sub": sub },
    ["", "open", "shed", "partial", "auto"].map((m) =>
      h("option", { value: m, selected: change && change.mode === m }, m || "no change")));
  const percent = h("input", {
    type: "number", min: 1, max: 99, step: 1, id: `plan-percent-${sub}`, "aria-label": `${sub} share shed (%)`,
    value: (change && change.percent) || 50,
  });
  const sync = () => { percent.hidden = select.value !== "partial"; };
  select.addEventListener("change", sync);
  sync();
  return [h("label", { for: `plan-mode-${sub}` }, sub), select, percent];
}

export function openPlan(plan) {
  editingPlan = plan ? plan.name : null;
  $("plan-title").textContent = plan ? `Edit plan ${plan.name}` : "New plan";
  const name = $("plan-name");
  name.value = plan ? plan.name : "";
  name.readOnly = Boolean(plan);
  $("plan-description").value = (plan && plan.description) || "";
  $("plan-reason").value = "";
  $("plan-error").textContent = "";
  const changes = (plan && plan.changes) || {};
  const names = new Set([...currentSwitches().map((s) => s.name), ...Object.keys(changes)]);
  $("plan-changes").replaceChildren(...[...names].sort().flatMap((sub) => changeRow(sub, changes[sub])));
  $("plan-dialog").showModal();
  (plan ? $("plan-description") : name).focus();
}

async function submitPlan() {
  const name = $("plan-name").value.trim();
  const reason = $("plan-reason").value.trim();
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new Error("A plan name is 1 to 64 of A-Z, a-z, 0-9, _ . -");
  if (!reason) throw new Error("A reason is required: it goes to the audit trail.");
  const changes = {};
  for (const select of $("plan-changes").querySelectorAll("select")) {
    const sub = select.dataset.sub;
    if (!select.value) continue;
    if (select.value === "partial") {
      const percent = Number($(`plan-percent-${sub}`).value);
      if (!Number.isInteger(percent) || percent < 1 || percent > 99) {
        throw new Error(`${sub}: the share shed is a whole number from 1 to 99.`);
      }
      changes[sub] = { mode: "partial", percent };
    } else {
      changes[sub] = select.value;
    }
  }
  if (!Object.keys(changes).length) throw new Error("Choose at least one change.");
  const description = $("plan-description").value.trim();
  await api("PUT", `/degrade/plans/${encodeURIComponent(name)}`, { changes, description, reason });
  toast(`plan ${name} saved`);
  return true;
}

// ---- apply, rollback, cancel, delete ----

function openAction(spec) {
  action = spec;
  $("action-title").textContent = spec.title;
  $("action-text").textContent = spec.text;
  $("action-when").hidden = !spec.when;
  $("action-reason-row").hidden = !spec.reason;
  $("action-reason").value = "";
  $("action-at").value = "";
  $("action-form").querySelector("input[name=when][value=now]").checked = true;
  $("action-force").hidden = !spec.force;
  $("action-force-text").textContent = spec.force || "";
  $("action-force-ok").checked = false;
  $("action-error").textContent = "";
  $("action-submit").textContent = spec.button;
  $("action-submit").className = spec.danger ? "danger" : "primary";
  $("action-dialog").showModal();
  (spec.reason ? $("action-reason") : $("action-submit")).focus();
}

async function submitAction() {
  const reason = $("action-reason").value.trim();
  if (action.reason && !reason) throw new Error("A reason is required: it goes to the audit trail.");
  let at = null;
  if (action.when && $("action-form").querySelector("input[name=when]:checked").value === "at") {
    at = inputToIso($("action-at").value);
    if (!at) throw new Error("Choose the time to apply it at.");
  }
  const force = !$("action-force").hidden;
  if (force && !$("action-force-ok").checked) throw new Error("Tick the confirmation to go ahead.");
  try {
    await action.run({ reason, at, force });
  } catch (err) {
    if (err instanceof ApiError && err.code === "force_required") {
      $("action-force-text").textContent = err.message;
      $("action-force").hidden = false;
      throw new Error("This plan needs confirmation: tick the box and confirm again.");
    }
    throw err;
  }
  return true;
}

function openApply(plan) {
  const core = shedsCore(plan);
  openAction({
    title: `Apply plan ${plan.name}`,
    text: `Changes ${Object.entries(plan.changes || {}).map(([s, c]) => changeText(s, c)).join(", ")} in one step.`,
    when: true, reason: true, button: "Apply plan",
    force: core.length ? `This plan sheds core subsystems (${core.join(", ")}): shoppers are refused.` : null,
    run: async ({ reason, at, force }) => {
      const result = await api("POST", `/degrade/plans/${encodeURIComponent(plan.name)}/apply`,
        { reason, at, force });
      const changed = (result && result.changed) || [];
      toast(result && result.status === "scheduled"
        ? `plan ${plan.name} scheduled for ${new Date(at).toLocaleString()}`
        : `plan ${plan.name} applied: ${changed.length ? changed.join(", ") : "nothing to change"}`);
    },
  });
}

function openSimple(plan, kind) {
  const path = `/degrade/plans/${encodeURIComponent(plan.name)}`;
  const specs = {
    rollback: {
      title: `Roll back plan ${plan.name}`, button: "Roll back", reason: true,
      text: `Restores exactly what was there before it was applied: ${summary(plan.applied && plan.applied.previous)}.`,
      run: async ({ reason }) => {
        await api("POST", `${path}/rollback`, { reason });
        toast(`plan ${plan.name} rolled back`);
      },
    },
    cancel: {
      title: `Cancel the schedule of ${plan.name}`, button: "Cancel schedule", reason: true,
      text: "The plan stays; it is no longer applied at its time.",
      run: async ({ reason }) => {
        await api("POST", `${path}/cancel`, { reason });
        toast(`schedule of ${plan.name} cancelled`);
      },
    },
    delete: {
      title: `Delete plan ${plan.name}`, button: "Delete", reason: false, danger: true,
      text: "The switches stay as they are; only the plan goes.",
      run: async () => {
        await api("DELETE", path);
        toast(`plan ${plan.name} deleted`);
      },
    },
  };
  openAction(specs[kind]);
}

export function initPlans() {
  wireDialog($("plan-dialog"), submitPlan);
  wireDialog($("action-dialog"), submitAction);
  $("plan-new").addEventListener("click", () => openPlan(null));
  $("action-at").addEventListener("input", () => {
    $("action-form").querySelector("input[name=when][value=at]").checked = true;
  });
}
