// The live page: pick a user, watch their top-K arrive over server-sent events, send events with
// the buttons. Plain JS for current browsers; text goes in with textContent only (titles and
// ids come from Kafka, never trusted as HTML).
"use strict";

const K = 10;
const STATS_EVERY_MS = 2000;

// The worker's bearer token, when it has one: given once as ?token=, kept for this tab only and
// taken out of the address bar (so it is not bookmarked or shared by accident).
const params = new URLSearchParams(location.search);
if (params.has("token")) {
  sessionStorage.setItem("recstream-token", params.get("token"));
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
}
const token = sessionStorage.getItem("recstream-token") || "";

const $ = (id) => document.getElementById(id);
let source = null;       // the EventSource of the current user
let currentUser = null;
let updates = 0;
const sentAt = new Map(); // event_id -> performance.now() when its button was pressed

function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set("Authorization", "Bearer " + token);
  return fetch(path, { ...init, headers });
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function fmt(x, digits = 1) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

// -- the strip: polled; throughput from two readings (the worker keeps no state per page) -----
let lastStats = null;
async function pollStats() {
  try {
    const r = await api("/stats");
    if (!r.ok) throw new Error("GET /stats: HTTP " + r.status);
    const s = await r.json();
    if (lastStats && s.ts > lastStats.ts) {
      const rate = (s.events_processed - lastStats.events_processed) / (s.ts - lastStats.ts);
      $("s-rate").textContent = fmt(Math.max(0, rate)) + " ev/s";
    }
    lastStats = s;
    $("s-latency").textContent =
      fmt(s.latency_ms.p50) + " / " + fmt(s.latency_ms.p99) + " ms";
    $("s-hr-label").textContent = "online hr@" + s.k;
    $("s-hr").textContent = s.hit_rate === null ? "–" : fmt(s.hit_rate, 3) + " (" + s.evaluated + ")";
    $("s-events").textContent = s.events_processed;
    $("s-dlq").textContent = s.dlq_total;
    $("s-encq").textContent = s.encode_queue;
  } catch (err) {
    showError(String(err));
  }
}

// -- users -----------------------------------------------------------------------------------
async function loadUsers() {
  const r = await api("/users/top?n=20");
  if (!r.ok) {
    showError("GET /users/top: HTTP " + r.status + (r.status === 401 ? " (open the page with ?token=...)" : ""));
    return;
  }
  const { users } = await r.json();
  const list = $("users");
  list.replaceChildren();
  for (const u of users) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.user = u.user_id;
    b.textContent = u.user_id + " (" + u.events + ")";
    b.addEventListener("click", () => watch(u.user_id));
    if (u.user_id === currentUser) b.classList.add("current");
    li.append(b);
    list.append(li);
  }
}

function newUser() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  watch("anon-" + Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join(""));
}

// -- the live list ---------------------------------------------------------------------------
function watch(user) {
  if (source) source.close();
  currentUser = user;
  $("user").textContent = user;
  for (const b of document.querySelectorAll("#users button")) {
    b.classList.toggle("current", b.dataset.user === user);
  }
  let url = "/stream/recommendations?k=" + K + "&user=" + encodeURIComponent(user);
  if (token) url += "&token=" + encodeURIComponent(token);
  $("status").textContent = "connecting…";
  source = new EventSource(url);
  source.onopen = () => { $("status").textContent = "live: lists appear as the worker publishes them"; };
  source.onerror = () => { $("status").textContent = "disconnected, retrying…"; };
  source.addEventListener("current", (e) => render(JSON.parse(e.data), false));
  source.addEventListener("published", (e) => render(JSON.parse(e.data), true));
}

function render(rec, published) {
  if (rec.user_id !== currentUser) return;
  const now = performance.now();
  const tbody = $("recs").tBodies[0];
  const before = new Set(Array.from(tbody.rows, (tr) => tr.dataset.item));
  const rows = rec.items.map((it, n) => row(it, n, !before.has(it.item_id)));
  tbody.replaceChildren(...rows);
  if (published) {
    $("status").textContent = "live: list after event " + (rec.trigger_event_id || "?");
    $("worker-latency").textContent = fmt(rec.latency_ms) + " ms";
    const t0 = sentAt.get(rec.trigger_event_id);
    if (t0 !== undefined) {
      $("measured").textContent = fmt(now - t0, 0) + " ms";
      sentAt.delete(rec.trigger_event_id);
    }
  }
  updates += 1;
  $("updates").textContent = updates;
  $("updates").dataset.count = updates;
  $("recs").dataset.trigger = rec.trigger_event_id || "";
}

function row(it, n, isNew) {
  const tr = document.createElement("tr");
  tr.dataset.item = it.item_id;
  if (isNew) tr.classList.add("new");
  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.append(td);
    return td;
  };
  cell(String(n + 1));
  const name = cell(it.title || it.item_id, "title");
  if (it.title) {
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = it.item_id;
    name.append(id);
  }
  cell((it.categories || []).join(", "));
  cell(fmt(it.score, 3), "score");
  cell(it.reason || "", "why");
  const actions = cell("");
  for (const [type, label] of [["view", "view"], ["click", "click"], ["purchase", "buy"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "act";
    b.dataset.type = type;
    b.textContent = label;
    b.addEventListener("click", () => send(it.item_id, type));
    actions.append(b);
  }
  return tr;
}

// A real event, through POST /events into Kafka like any other producer's.
async function send(item, type) {
  const id = "live-" + crypto.getRandomValues(new Uint32Array(2)).join("-");
  sentAt.set(id, performance.now());
  const event = { event_id: id, user_id: currentUser, item_id: item, type,
    context: { session_id: "live-page" } };
  const r = await api("/events", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(event),
  });
  if (r.status !== 202) {
    sentAt.delete(id);
    showError("POST /events: HTTP " + r.status + " " + (await r.text()));
    return;
  }
  showError("");
  $("status").textContent = "sent " + type + " of " + item + " (" + id + "), waiting for the list…";
  setTimeout(loadUsers, 1000); // the picker's counts follow
}

$("new-user").addEventListener("click", newUser);
loadUsers();
pollStats();
setInterval(pollStats, STATS_EVERY_MS);
