// peak ops console: sign-in, the views (sign-in, 403, console), and the one live stream (server-sent events)
// every panel is fed from. No polling per panel: a panel changes when the stream says so.

import { addAudit, initAudit, resetAudit, setAuditNames } from "./audit.js";
import { renderBreakers } from "./breakers.js";
import { $, api, localText, utc } from "./dom.js";
import { currentPlans, initPlans, renderPlans } from "./plans.js";
import { renderSale } from "./sale.js";
import { appendSeries, initSignals, resetSeries, setProcesses, setServerTime } from "./signals.js";
import { currentSwitches, initSwitches, renderSwitches } from "./switches.js";

const STREAM = "/console/api/stream";
let stream = null;
let retryTimer = null;
let retries = 0;
let lostAt = null;
let username = "";

function show(view) {
  document.body.classList.remove("booting");
  $("boot").hidden = true;
  for (const id of ["view-signin", "view-forbidden", "view-console"]) $(id).hidden = id !== view;
  $("nav").hidden = view !== "view-console";
  $("who").hidden = view === "view-signin";
  if (view !== "view-console") stopStream();
}

function setConn(state, text) {
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = text;
  document.body.classList.toggle("stale", state === "down");
}

// ---- who is this ----

async function route() {
  try {
    const me = await api("GET", "/console/api/me");
    username = me.username;
    $("who-name").textContent = `${me.username} (${(me.roles || []).join(", ")})`;
    show("view-console");
    startStream();
  } catch (err) {
    if (err.status === 401) {
      showSignin();
    } else if (err.status === 403) {
      $("who-name").textContent = username || "";
      $("forbidden-text").firstChild.textContent = username
        ? `You are signed in as ${username}, but the console needs an account with the `
        : "You are signed in, but the console needs an account with the ";
      show("view-forbidden");
      $("forbidden-signout").focus();
    } else {
      setConn("down", `peak unreachable (${err.message}); retrying`);
      clearTimeout(retryTimer);
      retryTimer = setTimeout(route, 3000);
    }
  }
}

function showSignin() {
  username = "";
  show("view-signin");
  setConn("idle", "Not signed in");
  $("signin-username").focus();
}

async function signIn(event) {
  event.preventDefault();
  const error = $("signin-error");
  const button = $("signin-submit");
  error.textContent = "";
  button.disabled = true;
  const name = $("signin-username").value.trim();
  try {
    // The response's tokens are not kept: from now on the HttpOnly session cookie is the credential.
    await api("POST", "/sso/login", { username: name, password: $("signin-password").value });
    $("signin-password").value = "";
    username = name;
    await route();
  } catch (err) {
    error.textContent = err.code === "invalid_credentials" ? "Wrong username or password." : err.message;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  stopStream();
  try {
    await api("POST", "/sso/logout");
  } catch {
    // Already signed out (401) or peak unreachable: the form comes back either way.
  }
  showSignin();
}

// ---- the stream ----

function handlers() {
  return {
    snapshot: (d) => {
      setServerTime(d.server_time_ms);
      renderSwitches(d.switches);
      renderPlans(d.plans);
      resetAudit(d.audit);
      resetSeries(d.series);
      renderSale(d.sale);
      renderBreakers(d.breakers);
      setProcesses(d.processes);
      names();
      retries = 0;
      lostAt = null;
      const now = new Date();
      setConn("live", `Live · ${localText(now)}`);
      $("conn").title = `snapshot at ${utc(now)}`;
    },
    switches: (d) => {
      renderSwitches(d);
      names();
    },
    plans: (d) => {
      renderPlans(d);
      names();
    },
    audit: addAudit,
    series: appendSeries,
    sale: renderSale,
    breakers: (d) => {
      renderBreakers(d);
      if (d && Array.isArray(d.processes)) setProcesses(d.processes);
    },
    processes: setProcesses,
  };
}

function names() {
  setAuditNames([...currentSwitches().map((s) => s.name), ...currentPlans().map((p) => p.name)]);
}

function startStream() {
  if (stream) return;
  clearTimeout(retryTimer);
  setConn("connecting", lostAt ? `Reconnecting… (lost at ${localText(lostAt)})` : "Connecting…");
  const source = new EventSource(STREAM);
  stream = source;
  for (const [type, handle] of Object.entries(handlers())) {
    source.addEventListener(type, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      handle(data);
      if (type !== "snapshot" && $("conn").dataset.state === "live") {
        setConn("live", `Live · ${localText(new Date())}`);
      }
    });
  }
  source.addEventListener("error", () => {
    if (stream !== source) return;
    lostAt = lostAt || new Date();
    if (source.readyState === EventSource.CLOSED) {
      // Refused (401, 403, 503) or not a stream: find out why before trying again.
      stream = null;
      source.close();
      retries += 1;
      setConn("down", `Disconnected since ${localText(lostAt)}; retrying`);
      clearTimeout(retryTimer);
      retryTimer = setTimeout(route, Math.min(2000 * retries, 10000));
    } else {
      // The browser reconnects by itself (retry: 2000); the snapshot it gets then replaces everything.
      setConn("down", `Reconnecting… (stream lost at ${localText(lostAt)})`);
    }
  });
}

function stopStream() {
  clearTimeout(retryTimer);
  if (stream) {
    const source = stream;
    stream = null;
    source.close();
  }
}

function boot() {
  initSwitches();
  initPlans();
  initAudit();
  initSignals();
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("forbidden-signout").addEventListener("click", signOut);
  document.addEventListener("peak:unauthenticated", () => {
    if ($("view-signin").hidden) showSignin();
  });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $("zone").textContent = `times in ${zone}, UTC on hover`;
  route();
}

boot();
