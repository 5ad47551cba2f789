// Ratatoskr dashboard: polls the admin API every POLL_MS and renders it.
// Plain JS, no build step, no external resources. Rates are computed here
// from the change in end offsets between two polls.
"use strict";

const POLL_MS = 1500;
const TOKEN_KEY = "ratatoskr.token";

const state = {
  token: null,
  selected: null,     // topic whose partitions are shown
  prevTopics: {},     // name -> {end, t}
  prevParts: {},      // "topic/id" -> {end, t}
  timer: null,
};

const $ = (sel) => document.querySelector(sel);

// The token comes from #token=... (then kept in sessionStorage and removed
// from the address bar) or from the login form.
function initToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
}

function showLogin(reason) {
  stop();
  $("#main").hidden = true;
  $("#login").hidden = false;
  if (reason) $("#login-reason").textContent = reason;
  $("#token-input").focus();
}

function showMain() {
  $("#login").hidden = true;
  $("#main").hidden = false;
}

class AuthError extends Error {}
class NotFound extends Error {}

async function api(path) {
  const res = await fetch("/api/v1/" + path, {
    headers: { Authorization: "Bearer " + state.token },
    cache: "no-store",
  });
  if (res.status === 401 || res.status === 403) throw new AuthError("the token was refused");
  if (res.status === 404) throw new NotFound(path);
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

async function optional(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e instanceof NotFound) return null;
    throw e;
  }
}

function fmtInt(n) {
  return Number(n).toLocaleString("en-US");
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function fmtRate(r) {
  return r == null ? "…" : r.toFixed(1);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fillTable(id, rows, cols, makeRow) {
  const tbody = $("#" + id + " tbody");
  tbody.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell("none", "empty");
    td.colSpan = cols;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const r of rows) tbody.append(makeRow(r));
}

// rate returns messages per second since the previous poll of key, or null
// on the first poll.
function rate(prev, key, end, now) {
  const p = prev[key];
  prev[key] = { end, t: now };
  if (!p || now <= p.t) return null;
  return Math.max(0, (end - p.end) * 1000 / (now - p.t));
}

function renderTopics(topics, now) {
  $("#topic-count").textContent = "(" + topics.length + ")";
  const seen = {};
  fillTable("topics", topics, 10, (t) => {
    seen[t.name] = true;
    const r = rate(state.prevTopics, t.name, t.totals.end_offsets, now);
    const tr = document.createElement("tr");
    tr.dataset.topic = t.name;
    if (t.name === state.selected) tr.classList.add("selected");
    const rc = cell(fmtRate(r), "num rate");
    rc.dataset.rate = r == null ? "" : String(r);
    // A tenant's topics are kept as tenant~name (docs/SECURITY.md).
    const sep = t.name.indexOf("~");
    tr.append(cell(sep < 0 ? "—" : t.name.slice(0, sep), "tenant"), cell(sep < 0 ? t.name : t.name.slice(sep + 1), "name"),
      cell(t.partitions, "num partitions"), rc,
      cell(fmtInt(t.totals.end_offsets), "num end"), cell(fmtInt(t.totals.messages), "num messages"),
      cell(fmtBytes(t.totals.bytes), "num bytes"), cell(t.totals.subscribers, "num subscribers"),
      cell(t.config.retention === "0s" ? "forever" : t.config.retention, "retention"),
      cell(t.config.storage + " / " + t.config.fsync, "storage"));
    tr.addEventListener("click", () => { state.selected = t.name; poll(); });
    return tr;
  });
  for (const name of Object.keys(state.prevTopics)) {
    if (!seen[name]) delete state.prevTopics[name];
  }
  if (!state.selected || !seen[state.selected]) state.selected = topics.length ? topics[0].name : null;
}

function renderPartitions(name, parts, now) {
  $("#selected-topic").textContent = name || "—";
  fillTable("partitions", parts, 9, (p) => {
    const r = rate(state.prevParts, name + "/" + p.id, p.end_offset, now);
    const tr = document.createElement("tr");
    tr.dataset.partition = p.id;
    const corrupt = p.corrupt.map((c) => "[" + c.from + ", " + c.to + ")").join(" ");
    tr.append(cell(p.id, "num"), cell(p.shard, "num"), cell(fmtInt(p.start_offset), "num start"),
      cell(fmtInt(p.end_offset), "num end"), cell(fmtRate(r), "num rate"), cell(fmtBytes(p.bytes), "num"),
      cell(p.segments, "num"), cell(p.subscribers, "num"), cell(corrupt || "—", corrupt ? "error" : ""));
    return tr;
  });
}

function renderGroups(groups) {
  fillTable("groups", groups, 6, (g) => {
    const tr = document.createElement("tr");
    tr.dataset.group = g.name;
    const assign = g.members.map((m) => m.id + ": " + (m.partitions.join(",") || "—")).join("; ");
    tr.append(cell(g.name), cell(g.topic), cell(g.mode), cell(g.members.length, "num"),
      cell(fmtInt(g.lag), g.lag > 10000 ? "num lag lag-high" : "num lag"), cell(assign || "no members"));
    return tr;
  });
}

function renderShards(shards) {
  fillTable("shards", shards, 5, (s) => {
    const tr = document.createElement("tr");
    tr.dataset.shard = s.id;
    tr.append(cell(s.id, "num"), cell(s.partitions, "num"), cell(s.inbox_depth, "num"),
      cell(fmtInt(s.batches), "num"), cell(fmtInt(s.messages), "num"));
    return tr;
  });
}

// renderNodes shows a cluster's nodes (GET /api/v1/cluster), with how
// many partitions each leads and holds; the section stays hidden on a
// single node (404).
function renderNodes(cl) {
  $("#nodes-section").hidden = !cl;
  if (!cl) return;
  const leads = {}, holds = {};
  for (const p of cl.partitions || []) {
    if (p.leader) leads[p.leader] = (leads[p.leader] || 0) + 1;
    for (const r of p.replicas || []) holds[r] = (holds[r] || 0) + 1;
  }
  $("#cluster-info").textContent = "(this is node " + cl.node_id + "; controller leader " +
    (cl.controller.leader || "none") + ", term " + cl.controller.term + ")";
  fillTable("nodes", cl.nodes || [], 7, (n) => {
    const tr = document.createElement("tr");
    tr.dataset.node = n.id;
    tr.append(cell(n.id, "num"), cell(n.status), cell(n.reachable ? "yes" : "no", n.reachable ? "" : "lag-high"),
      cell(n.client_addr), cell(n.http_addr || "—"), cell(leads[n.id] || 0, "num"), cell(holds[n.id] || 0, "num"));
    return tr;
  });
}

function renderConnections(conns) {
  $("#conn-count").textContent = "(" + conns.length + ")";
  fillTable("connections", conns, 6, (c) => {
    const tr = document.createElement("tr");
    tr.dataset.remote = c.remote;
    tr.append(cell(c.remote), cell(c.client || "—"), cell(new Date(c.connected_at).toLocaleTimeString()),
      cell(c.subscriptions, "num"), cell(c.groups, "num"), cell(fmtBytes(c.queued_bytes), "num"));
    return tr;
  });
}

function card(label, value) {
  const d = document.createElement("div");
  d.className = "card";
  const l = document.createElement("div");
  l.className = "label";
  l.textContent = label;
  const v = document.createElement("div");
  v.className = "value";
  v.textContent = value;
  d.append(l, v);
  return d;
}

function renderHealth(h) {
  const badge = $("#health");
  const box = $("#health-details");
  box.replaceChildren();
  if (!h) {
    badge.dataset.status = "unknown";
    badge.textContent = "health: unavailable";
    box.append(card("health", "unavailable"));
    return;
  }
  badge.dataset.status = h.status;
  badge.textContent = "health: " + h.status;
  const b = h.broker || {};
  const res = h.resources || {};
  box.append(card("status", h.status), card("uptime", Math.round(h.uptime_seconds || 0) + " s"),
    card("topics", b.topic_count ?? "—"), card("connections", b.connections ?? "—"),
    card("message rate", b.message_rate != null ? b.message_rate.toFixed(1) + "/s" : "—"),
    card("error rate", b.error_rate != null ? b.error_rate.toFixed(2) + "/s" : "—"),
    card("memory", res.memory_bytes != null ? fmtBytes(res.memory_bytes) : "—"),
    card("disk used", res.disk_usage_ratio != null ? (res.disk_usage_ratio * 100).toFixed(1) + " %" : "—"));
  if (h.reasons && h.reasons.length) box.append(card("reasons", h.reasons.join("; ")));
}

async function poll() {
  try {
    const [topics, groups, conns, shards, health, cl] = await Promise.all([
      api("topics"), api("groups"), api("connections"), api("shards"), optional("health"), optional("cluster"),
    ]);
    const now = performance.now();
    showMain();
    renderTopics(topics.topics, now);
    let parts = [];
    if (state.selected) {
      const p = await optional("topics/" + encodeURIComponent(state.selected) + "/partitions");
      parts = p ? p.partitions : [];
    }
    renderPartitions(state.selected, parts, performance.now());
    renderGroups(groups.groups);
    renderConnections(conns.connections);
    renderShards(shards.shards);
    renderNodes(cl);
    renderHealth(health);
    $("#error").hidden = true;
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof AuthError) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("The token was refused. Enter the admin token.");
      return;
    }
    const err = $("#error");
    err.hidden = false;
    err.textContent = "Cannot reach the broker: " + e.message;
    $("#health").dataset.status = "down";
    $("#health").textContent = "health: unreachable";
  }
}

function stop() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

function start() {
  stop();
  poll();
  state.timer = setInterval(poll, POLL_MS);
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const tok = $("#token-input").value.trim();
  if (!tok) return;
  sessionStorage.setItem(TOKEN_KEY, tok);
  state.token = tok;
  start();
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("Enter the admin token.");
});

initToken();
if (state.token) start(); else showLogin();
