// The operator dashboard: polls GET /v1/admin/stats with the admin key and draws it.
// API data only ever reaches the page through textContent / setAttribute (never innerHTML).

import { barChart, clockLabel, lineChart } from "./charts.js";

const KEY_STORAGE = "reelserve.adminKey";
const WINDOWS = { 300: "5 min", 900: "15 min", 3600: "1 h" };
const DEFAULT_REFRESH_S = 5;

const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const refreshS = parseRefresh(params.get("refresh"));

const state = {
  windowS: Number(params.get("window")) in WINDOWS ? Number(params.get("window")) : 900,
  data: null, // the last good answer, kept on screen when a refresh fails
  timer: null,
  seq: 0, // answers to older requests (e.g. before a window change) are dropped
  stopped: false, // waiting for a key, or the admin API is off
};

function parseRefresh(raw) {
  const value = Number(raw);
  if (raw === null || raw === "" || !Number.isFinite(value)) return DEFAULT_REFRESH_S;
  return Math.max(1, value);
}

/** The step for a window: about 30 points, a multiple of 10 s within 10..600. */
export function stepFor(windowS) {
  return Math.min(600, Math.max(10, Math.round(windowS / 30 / 10) * 10));
}

// ---- formatting ------------------------------------------------------------------------------

function fmtCount(v) {
  return typeof v === "number" ? String(v) : "—";
}

function fmtSeconds(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "—";
  if (v < 1) return `${Math.round(v * 1000)} ms`;
  return `${v.toFixed(v < 10 ? 2 : 1)} s`;
}

function fmtAxisSeconds(v) {
  return `${+v.toFixed(2)}s`;
}

function fmtRate(v) {
  return typeof v === "number" && Number.isFinite(v) ? String(+v.toFixed(2)) : "—";
}

function fmtPercent(rate) {
  return typeof rate === "number" && Number.isFinite(rate) ? `${+(rate * 100).toFixed(1)}%` : "—";
}

/** last_seen_s: seconds since the worker last reported (0 for the embedded worker, which is this process). */
function fmtLastSeen(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  if (seconds < 1) return "now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

// ---- key handling ----------------------------------------------------------------------------

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function askForKey(message) {
  stop();
  try {
    sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage unavailable: the key just is not kept */
  }
  const error = $("key-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("admin-key").setAttribute("aria-invalid", message ? "true" : "false");
  $("key-form").hidden = false;
  $("admin-key").focus();
}

function onKeySubmit(event) {
  event.preventDefault();
  const key = $("admin-key").value.trim();
  if (!key) {
    askForKey("Enter an admin key.");
    return;
  }
  state.key = key;
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    /* kept in memory only */
  }
  $("key-error").hidden = true;
  $("admin-key").value = "";
  $("key-form").hidden = true;
  start();
}

// ---- polling ---------------------------------------------------------------------------------

function stop() {
  state.stopped = true;
  clearTimeout(state.timer);
  state.timer = null;
  state.seq += 1;
}

function start() {
  state.stopped = false;
  refresh();
}

function schedule() {
  clearTimeout(state.timer);
  if (!state.stopped) state.timer = setTimeout(refresh, refreshS * 1000);
}

async function errorMessage(response) {
  try {
    const body = JSON.parse(await response.text());
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
  } catch {
    /* not JSON */
  }
  return `HTTP ${response.status}`;
}

async function refresh() {
  clearTimeout(state.timer);
  const key = state.key || storedKey();
  if (!key) {
    askForKey("");
    return;
  }
  state.key = key;
  const seq = ++state.seq;
  const url = `/v1/admin/stats?window=${state.windowS}&step=${stepFor(state.windowS)}`;
  let response;
  try {
    response = await fetch(url, {
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store",
      signal: AbortSignal.timeout(Math.max(10, refreshS * 2) * 1000),
    });
  } catch (error) {
    if (seq !== state.seq) return;
    showRefreshError(error && error.name === "TimeoutError" ? "the server did not answer in time" : "cannot reach the server");
    schedule();
    return;
  }
  if (seq !== state.seq) return;

  if (response.status === 401) {
    const message = await errorMessage(response);
    state.key = "";
    askForKey(message);
    return;
  }
  if (response.status === 403) {
    const message = await errorMessage(response);
    stop();
    const forbidden = $("forbidden");
    forbidden.textContent = message;
    forbidden.hidden = false;
    $("key-form").hidden = true;
    return;
  }
  if (!response.ok) {
    const message = await errorMessage(response);
    if (seq !== state.seq) return;
    showRefreshError(message);
    schedule();
    return;
  }

  let data;
  try {
    data = await response.json();
  } catch {
    if (seq !== state.seq) return;
    showRefreshError("the server's answer was not JSON");
    schedule();
    return;
  }
  if (seq !== state.seq) return;
  $("forbidden").hidden = true;
  state.data = data;
  try {
    render(data);
  } catch (error) {
    showRefreshError(`could not show the answer (${error.message})`);
    schedule();
    return;
  }
  $("refresh-error").hidden = true;
  $("dashboard").classList.remove("stale");
  schedule();
}

function showRefreshError(message) {
  const box = $("refresh-error");
  const when = clockLabel(Date.now() / 1000, true);
  const kept = state.data ? ` Showing the data from ${clockLabel(state.data.generated_at, true)}.` : "";
  box.textContent = `Refresh failed at ${when}: ${message}.${kept}`;
  box.hidden = false;
  $("dashboard").classList.add("stale");
  // with nothing drawn yet, still show the frame so the error is visible
  $("dashboard").hidden = false;
}

// ---- rendering -------------------------------------------------------------------------------

function chartWidth(svg) {
  const box = svg.parentElement.clientWidth;
  return box > 0 ? box : 400;
}

function setText(id, text) {
  $(id).textContent = text;
}

/** [window, step, label] of an answer. */
function frame(data) {
  const windowS = data.window_s ?? state.windowS;
  const step = data.step_s ?? stepFor(windowS);
  return [windowS, step, WINDOWS[windowS] ?? `${Math.round(windowS / 60)} min`];
}

function render(data) {
  $("dashboard").hidden = false;
  const [windowS, step, label] = frame(data);

  const updated = $("last-updated");
  updated.textContent = clockLabel(data.generated_at, true);
  updated.setAttribute("datetime", new Date(data.generated_at * 1000).toISOString());

  // totals
  const totals = data.totals ?? {};
  setText("totals-window", `last ${label}`);
  setText("total-completed", fmtCount(totals.completed));
  setText("total-failed", fmtCount(totals.failed));
  setText("total-cancelled", fmtCount(totals.cancelled));
  setText("total-throughput", fmtRate(totals.throughput_per_min));
  setText("total-p50", fmtSeconds(totals.p50_s));
  setText("total-p95", fmtSeconds(totals.p95_s));

  // cache
  const hit = $("cache-hit-rate");
  hit.textContent = fmtPercent(totals.cache_hit_rate);
  hit.dataset.value = typeof totals.cache_hit_rate === "number" ? String(totals.cache_hit_rate) : "";
  setText("cache-cached", fmtCount(totals.cached ?? 0));
  setText("cache-completed", fmtCount(totals.completed ?? 0));

  renderModel(data.model ?? {}, data.workers ?? []);
  renderCharts(data, windowS, step, label);
}

function renderModel(model, workers) {
  setText("model-id", model.id ?? "—");
  const ready = $("model-ready");
  ready.textContent = model.ready ? "yes" : "no";
  ready.className = model.ready ? "ok" : "bad";
  const accelerations = Array.isArray(model.accelerations) ? model.accelerations : [];
  setText("model-accelerations", accelerations.length ? accelerations.join(", ") : "none");

  const rows = workers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.worker = String(w.name ?? "");
    const cells = [w.name ?? "—", w.state ?? "—", fmtCount(w.running), fmtLastSeen(w.last_seen_s)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = `state state-${String(w.state ?? "unknown").replace(/[^a-z]/g, "")}`;
      tr.append(td);
    });
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.className = "muted";
    td.textContent = "No workers reporting";
    tr.append(td);
    rows.push(tr);
  }
  $("workers").replaceChildren(...rows);
}

function renderCharts(data, windowS, step, label) {
  const series = Array.isArray(data.series) ? data.series : [];
  const times = series.map((p) => p.t);

  const queue = data.queue ?? { depth: 0, by_tier: {} };
  const byTier = queue.by_tier ?? {};
  const tiers = Object.keys(byTier); // the server's tiers, most urgent first (they are configurable)
  setText("queue-total", fmtCount(queue.depth ?? 0));
  const queueSvg = document.querySelector('svg[data-chart="queue"]');
  barChart(queueSvg, {
    title: "Queue depth per priority tier",
    description: `${queue.depth ?? 0} queued: ${tiers.map((t) => `${t} ${byTier[t] ?? 0}`).join(", ")}`,
    width: chartWidth(queueSvg),
    height: 160,
    bars: tiers.map((t) => ({ label: t, value: Number(byTier[t] ?? 0), className: `tier-${t}` })),
  });

  const perMin = series.map((p) => {
    if (typeof p.throughput_per_min === "number") return p.throughput_per_min;
    return typeof p.completed === "number" ? (p.completed * 60) / step : null;
  });
  const throughputSvg = document.querySelector('svg[data-chart="throughput"]');
  lineChart(throughputSvg, {
    title: `Throughput, completed jobs per minute, last ${label}`,
    description: `Average ${fmtRate(data.totals?.throughput_per_min)} per minute`,
    width: chartWidth(throughputSvg),
    times,
    step,
    series: [{ name: "completed", label: "completed/min", values: perMin }],
    format: (v) => String(+v.toFixed(2)),
  });

  const latencySvg = document.querySelector('svg[data-chart="latency"]');
  lineChart(latencySvg, {
    title: `Latency p50 and p95 in seconds, last ${label}`,
    description: `p50 ${fmtSeconds(data.totals?.p50_s)}, p95 ${fmtSeconds(data.totals?.p95_s)} over the last ${label}`,
    width: chartWidth(latencySvg),
    times,
    step,
    series: [
      { name: "p50", label: "p50", values: series.map((p) => p.p50_s ?? null) },
      { name: "p95", label: "p95", values: series.map((p) => p.p95_s ?? null) },
    ],
    format: fmtAxisSeconds,
  });

  const batches = (Array.isArray(data.batch_sizes) ? data.batch_sizes : [])
    .slice()
    .sort((a, b) => a.size - b.size);
  const batchSvg = document.querySelector('svg[data-chart="batch-sizes"]');
  barChart(batchSvg, {
    title: `Batch size distribution, last ${label}`,
    description: batches.length ? batches.map((b) => `size ${b.size}: ${b.count}`).join(", ") : "no batches",
    width: chartWidth(batchSvg),
    height: 160,
    bars: batches.map((b) => ({ label: String(b.size), value: Number(b.count) })),
    emptyText: "No batches in this window",
  });
}

// ---- wiring ----------------------------------------------------------------------------------

function init() {
  $("window").value = String(state.windowS);
  $("refresh-every").textContent = `· every ${+refreshS.toFixed(1)} s`;
  $("key-form").addEventListener("submit", onKeySubmit);
  $("window").addEventListener("change", () => {
    state.windowS = Number($("window").value);
    const url = new URL(location.href);
    url.searchParams.set("window", String(state.windowS));
    history.replaceState(null, "", url);
    if (!state.stopped) refresh();
  });
  $("change-key").addEventListener("click", () => {
    state.key = "";
    askForKey("");
  });
  let pending = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(() => {
      if (state.data) renderCharts(state.data, ...frame(state.data));
    });
  });
  if (storedKey()) start();
  else askForKey("");
}

init();
