// The Sluice admin page: reads /admin/stats and /admin/cache/top every few seconds with the
// admin token (kept in sessionStorage, sent as a header, never in a URL) and draws them as
// hand-made SVG. Every text from the server goes through textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "sluice-admin-token";
const REFRESH_MS = 3000;
const PREVIEW_CHARS = 80;
const SVG = "http://www.w3.org/2000/svg";

const state = { stats: null, previous: {}, armed: {}, timer: null };
const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

async function api(method, path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const reply = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
  });
  if (reply.status === 401) throw new Unauthorized();
  if (!reply.ok) throw new Error(`${method} ${path}: ${reply.status}`);
  return reply.json();
}

function showLogin(message) {
  clearTimeout(state.timer);
  $("dashboard").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("status").textContent = "not connected";
}

function start() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("forget").hidden = false;
  refresh();
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const [stats, top] = await Promise.all([
      api("GET", "/admin/stats"),
      api("GET", "/admin/cache/top?limit=10"),
    ]);
    state.stats = stats;
    render();
    renderBackends(stats);
    renderEntries(top);
    const shared = stats.gateway.redis_available ? "all gateways" : "Redis unavailable: this gateway only";
    $("status").textContent = `${shared}, updated ${new Date().toLocaleTimeString()}`;
    $("status").dataset.refreshed = String(Date.now());
  } catch (err) {
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("That token was refused.");
      return;
    }
    $("status").textContent = `refresh failed (${err.message}); retrying`;
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

// The summary and counts of the chosen slice: "overall", "tenant:NAME" or "model:NAME".
function pick(slices, choice) {
  if (choice === "overall") return slices.overall;
  const [kind, name] = [choice.slice(0, choice.indexOf(":")), choice.slice(choice.indexOf(":") + 1)];
  return (kind === "tenant" ? slices.per_tenant : slices.per_model)[name];
}

function render() {
  const gateway = state.stats.gateway;
  fillSlices(gateway);
  const choice = $("slice").value;
  const summary = pick(gateway[$("window").value], choice) || emptySummary();
  $("requests").textContent = fmt(summary.requests);
  $("hit-rate").textContent = `${(summary.hit_rate * 100).toFixed(1)}%`;
  $("hits").textContent = `${fmt(summary.exact_hits)} / ${fmt(summary.semantic_hits)}`;
  $("misses").textContent = `${fmt(summary.misses)} (${fmt(summary.coalesced)})`;
  $("saved-calls").textContent = fmt(summary.saved_upstream_calls);
  $("saved-tokens").textContent = fmt(summary.saved_tokens);
  $("wrong").textContent = fmt(summary.reported_wrong);
  drawTimeline(gateway.timeline[$("range").value], choice);
  drawLatency(summary.latency_ms);
}

function emptySummary() {
  const none = { p50: null, p99: null };
  return {
    requests: 0, hit_rate: 0, exact_hits: 0, semantic_hits: 0, misses: 0, coalesced: 0,
    saved_upstream_calls: 0, saved_tokens: 0, reported_wrong: 0,
    latency_ms: { hits: none, misses: none, bypasses: none },
  };
}

function fillSlices(gateway) {
  const select = $("slice");
  const wanted = ["overall"];
  for (const name of Object.keys(gateway.since_start.per_tenant)) wanted.push(`tenant:${name}`);
  for (const name of Object.keys(gateway.since_start.per_model)) wanted.push(`model:${name}`);
  const have = Array.from(select.options, (o) => o.value);
  if (have.join("\n") === wanted.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren();
  for (const value of wanted) {
    const label = value === "overall" ? "all traffic" : value.replace(":", " ");
    select.append(new Option(label, value, false, value === chosen));
  }
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// One stacked bar per time step: the share of that step's requests by outcome.
function drawTimeline(line, choice) {
  const svg = $("timeline");
  const [width, height, left, bottom] = [720, 180, 34, 18];
  const points = line.points;
  const step = (width - left - 4) / points.length;
  const plot = height - bottom - 6;
  const nodes = [];
  for (const pct of [0, 50, 100]) {
    const y = 6 + plot * (1 - pct / 100);
    nodes.push(el("line", { x1: left, x2: width - 4, y1: y, y2: y, stroke: "#e5e7ea" }));
    nodes.push(el("text", { x: left - 4, y: y + 3, "text-anchor": "end" }, `${pct}%`));
  }
  let total = 0;
  points.forEach((point, i) => {
    const c = pick(point, choice) || {};
    const parts = {
      exact: c.exact || 0,
      semantic: c.semantic || 0,
      miss: (c.miss || 0) + (c.coalesced || 0),
      other: (c.bypass || 0) + (c.error || 0),
    };
    const n = parts.exact + parts.semantic + parts.miss + parts.other;
    total += n;
    let y = 6 + plot;
    for (const [series, count] of Object.entries(parts)) {
      if (!count) continue;
      const h = (plot * count) / n;
      y -= h;
      const rect = el("rect", {
        class: series, x: left + i * step + 1, y, width: Math.max(1, step - 2), height: h,
        "data-series": series, "data-count": count,
      });
      rect.append(el("title", {}, `${series}: ${count} of ${n}`));
      nodes.push(rect);
    }
  });
  const span = line.step_s === 60 ? "60 min ago" : "3 min ago";
  nodes.push(el("text", { x: left, y: height - 4 }, span));
  nodes.push(el("text", { x: width - 4, y: height - 4, "text-anchor": "end" }, "now"));
  if (!total) {
    nodes.push(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no requests in this range"));
  }
  svg.dataset.requests = String(total);
  svg.replaceChildren(...nodes);
}

// p50 and p99 bars for hits and misses on one log scale.
function drawLatency(latency) {
  const svg = $("latency");
  const rows = [
    ["hits", "p50", latency.hits.p50], ["hits", "p99", latency.hits.p99],
    ["misses", "p50", latency.misses.p50], ["misses", "p99", latency.misses.p99],
  ];
  const values = rows.map((r) => r[2]).filter((v) => v !== null);
  const top = Math.log10(Math.max(10, ...values) * 1.5);
  const bottomLog = Math.log10(0.01);
  const [left, width] = [90, 720 - 90 - 80];
  const nodes = [];
  rows.forEach(([kind, q, value], i) => {
    const y = 6 + i * 27;
    nodes.push(el("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, `${kind} ${q}`));
    if (value === null) {
      nodes.push(el("text", { x: left, y: y + 14 }, "no requests"));
      return;
    }
    const w = Math.max(2, (width * (Math.log10(Math.max(value, 0.01)) - bottomLog)) / (top - bottomLog));
    nodes.push(el("rect", { class: q, x: left, y, width: w, height: 20, "data-kind": kind, "data-q": q, "data-ms": value }));
    nodes.push(el("text", { x: left + w + 6, y: y + 14 }, `${value} ms`));
  });
  svg.replaceChildren(...nodes);
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderBackends(stats) {
  const body = $("backends").tBodies[0];
  body.replaceChildren();
  const now = stats.at;
  for (const [url, info] of Object.entries(stats.backends)) {
    const b = info.batching || {};
    const row = body.insertRow();
    row.dataset.upstream = url;
    cell(row, url);
    cell(row, info.reachable ? "yes" : "no");
    cell(row, fmt(info.outstanding), "num");
    cell(row, fmt(b.queue_depth), "num");
    cell(row, fmt(b.running_rows), "num");
    cell(row, `${fmt(b.mean_queue_wait_ms)} / ${fmt(b.queue_wait_ms_p99_at_most)}`, "num");
    // Output tokens per second between the last two refreshes of this page.
    const before = state.previous[url];
    let rate = "-";
    if (before && b.generated_tokens != null && now > before.at) {
      rate = ((b.generated_tokens - before.tokens) / (now - before.at)).toFixed(1);
    }
    if (b.generated_tokens != null) state.previous[url] = { at: now, tokens: b.generated_tokens };
    cell(row, rate, "num").className = "num tokens-per-s";
    row.insertCell().append(batchChart(b.batch_sizes || []));
  }
}

function batchChart(all) {
  // Up to the largest size seen (at least four bars): the long empty tail tells nothing.
  const last = all.reduce((at, [, count], i) => (count ? i : at), -1);
  const sizes = all.slice(0, Math.max(4, last + 1));
  const svg = el("svg", { class: "batch-sizes", width: 180, height: 40, viewBox: "0 0 180 40" });
  const most = Math.max(1, ...sizes.map((s) => s[1]));
  const w = sizes.length ? 180 / sizes.length : 180;
  sizes.forEach(([size, count], i) => {
    const h = (30 * count) / most;
    const rect = el("rect", { class: "batch", x: i * w + 1, y: 30 - h, width: Math.max(1, w - 2), height: h, "data-size": size, "data-count": count });
    rect.append(el("title", {}, `batches of up to ${size} rows: ${count}`));
    svg.append(rect);
    svg.append(el("text", { x: i * w + w / 2, y: 39, "text-anchor": "middle", "font-size": 7 }, String(size)));
  });
  return svg;
}

function renderEntries(top) {
  const body = $("entries").tBodies[0];
  body.replaceChildren();
  for (const entry of top.data) {
    const row = body.insertRow();
    row.dataset.entryId = entry.entry_id;
    const question = entry.question.length > PREVIEW_CHARS
      ? `${entry.question.slice(0, PREVIEW_CHARS)}…` : entry.question;
    cell(row, question, "question").title = entry.question.slice(0, 500);
    cell(row, entry.namespace);
    cell(row, entry.model);
    cell(row, fmt(entry.hits), "num");
    cell(row, duration(entry.ttl_s), "num");
    const actions = row.insertCell();
    actions.append(
      button("Invalidate", "invalidate-entry", () => invalidate({ entry_id: entry.entry_id })),
      " ",
      tenantButton(entry.namespace),
    );
  }
  $("entries-note").textContent = top.data.length
    ? `among the first ${top.scanned} entries listed` : "nothing cached yet";
}

function button(label, cls, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = label;
  b.addEventListener("click", action);
  return b;
}

// A tenant's button asks to be pressed twice within 10 s: a whole tenant is a lot to drop by
// accident. The armed state outlives the table, which is redrawn at every refresh.
function tenantButton(tenant) {
  const armed = () => (state.armed[tenant] || 0) > Date.now();
  const again = `Press again to drop every entry of ${tenant}`;
  const b = button(armed() ? again : `Invalidate tenant ${tenant}`, "invalidate-tenant danger", () => {
    if (armed()) {
      delete state.armed[tenant];
      return invalidate({ tenant });
    }
    state.armed[tenant] = Date.now() + 10000;
    b.textContent = again;
  });
  b.dataset.tenant = tenant;
  return b;
}

async function invalidate(params) {
  const query = new URLSearchParams(params).toString();
  try {
    const reply = await api("DELETE", `/admin/cache?${query}`);
    const what = params.tenant ? `tenant ${params.tenant}` : "the entry";
    $("action").textContent = `${what}: invalidated ${reply.deleted} entries`;
  } catch (err) {
    if (err instanceof Unauthorized) return showLogin("That token was refused.");
    $("action").textContent = `invalidation failed (${err.message})`;
  }
  refresh();
}

function fmt(value) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(1);
  return typeof value === "number" ? value.toLocaleString("en") : String(value);
}

function duration(seconds) {
  if (seconds >= 86400) return `${Math.round(seconds / 86400)} d`;
  if (seconds >= 3600) return `${Math.round(seconds / 3600)} h`;
  if (seconds >= 60) return `${Math.round(seconds / 60)} min`;
  return `${seconds} s`;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin();
  });
  for (const id of ["slice", "window", "range"]) {
    $(id).addEventListener("change", () => state.stats && render());
  }
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else showLogin();
});
