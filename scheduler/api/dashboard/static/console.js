// gridshift console: the operator's views (batches, a batch's "why", workers, savings chart).
// Loaded before app.js, whose helpers ($, el, svg, api, fmt, when) these functions call.
"use strict";

const TERMINAL = ["completed", "failed", "expired", "cancelled"];
const PREFIXES = [[1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""], [1e-3, "m"], [1e-6, "µ"], [1e-9, "n"]];

// A figure with an SI prefix and its unit: si(2.3e-5, "kWh") is "23.0 mWh".
function si(x, unit) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  let base = unit, v = x;
  if (unit.length > 1 && unit[0] === "k") { base = unit.slice(1); v = x * 1e3; }
  if (v === 0) return "0 " + base;
  const [f, p] = PREFIXES.find(([f]) => Math.abs(v) >= f) || PREFIXES[PREFIXES.length - 1];
  const s = v / f;
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(s))));
  return s.toFixed(digits) + " " + p + base;
}
// Money in the fleet's currency; sub-cent amounts keep two significant figures, no exponent.
function money(x) {
  if (x === null || x === undefined) return "–";
  if (x !== 0 && Math.abs(x) < 0.01) return x.toFixed(1 - Math.floor(Math.log10(Math.abs(x))));
  return x.toFixed(2);
}
function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }
function epoch(t) { return t ? new Date(t * 1000).toISOString() : null; }

async function apiPost(path) {
  const res = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + state.key } });
  if (!res.ok) throw new Error(path + ": HTTP " + res.status + " " + (await res.text()));
  return res.json();
}
async function apiText(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  if (!res.ok) throw new Error(path + ": HTTP " + res.status + " " + (await res.text()));
  return res.text();
}
// Download a file of the API with the key in a header (never in a URL), under a given name.
async function download(fileId, name) {
  const text = await apiText("/v1/files/" + encodeURIComponent(fileId) + "/content");
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/jsonl" })), download: name });
  document.body.appendChild(a); a.click(); a.remove();
  return text;
}

// ------------------------------------------------------------------ batches
async function loadBatches() {
  const status = $("batch-status").value, q = $("batch-q").value.trim().toLowerCase();
  // An admin key sees the fleet (every tenant's batches, as the sign-in text says); a tenant
  // key is refused all_tenants (403) and sees its own.
  let list, fleet = state.admin !== false;
  if (fleet) {
    try { list = await api("/v1/batches?limit=100&all_tenants=true"); state.admin = true; } catch (e) { fleet = false; state.admin = false; }
  }
  if (!fleet) list = await api("/v1/batches?limit=100");
  const rows = list.data.filter((b) => (!status || b.status === status)
    && (!q || (b.id + " " + JSON.stringify(b.metadata || {})).toLowerCase().includes(q)));
  const box = $("batches"); box.textContent = "";
  const t = el("table", { id: "batch-list" });
  const hdr = ["batch", fleet ? "tenant · job" : "job", "status", "progress", "deadline (UTC)", "planned CO₂ (forecast)", "booked CO₂ (actual)", ""];
  const tr = el("tr"); hdr.forEach((h, i) => tr.appendChild(el("th", i < 3 ? { class: "l" } : {}, h))); t.appendChild(tr);
  for (const b of rows) {
    const g = b.gridshift || {}, c = b.request_counts || {};
    const done = (c.completed || 0) + (c.failed || 0), total = c.total || 0;
    const row = el("tr", { "data-batch-id": b.id, "data-status": b.status });
    row.appendChild(el("td", { class: "l mono" }, b.id));
    const job = (b.metadata || {}).gridshift_job || "–";
    row.appendChild(el("td", { class: "l" }, fleet ? (g.tenant || "–") + " · " + job : job));
    row.appendChild(el("td", { class: "l" })).appendChild(el("span", { class: "badge st-" + b.status }, b.status));
    const prog = el("td", { title: `${c.completed || 0} completed, ${c.failed || 0} failed of ${total}` });
    const m = el("div", { class: "meter small" }); const f = el("div"); f.style.width = (total ? (100 * done) / total : 0).toFixed(0) + "%";
    if (c.failed) f.style.background = "#c77c02";
    m.appendChild(f); prog.appendChild(m); prog.appendChild(el("small", {}, `${done}/${total}`));
    row.appendChild(prog);
    row.appendChild(el("td", {}, when(epoch(g.deadline))));
    row.appendChild(el("td", {}, si((g.planned || {}).co2_g, "g") + " est."));
    const booked = (g.actual || {}).co2_g;
    row.appendChild(el("td", {}, booked === undefined || booked === null ? "–" : si(booked, "g")));
    const act = el("td", { class: "actions" });
    const button = (label, cls, fn) => { const x = el("button", { type: "button", class: cls }, label); x.addEventListener("click", fn); act.appendChild(x); };
    button("why", "why", () => { show("schedule"); openBatch(b.id, null); });
    if (b.output_file_id) button("output", "dl-output", () => download(b.output_file_id, b.id + "_output.jsonl"));
    if (b.error_file_id || (b.errors && b.errors.data && b.errors.data.length)) button("errors", "dl-errors", () => showErrors(b));
    if (!TERMINAL.includes(b.status) && b.status !== "cancelling" && (!fleet || g.own)) {
      button("cancel", "cancel", async () => {
        if (!window.confirm("Cancel " + b.id + "? Work not started is dropped; finished results are kept.")) return;
        await apiPost("/v1/batches/" + encodeURIComponent(b.id) + "/cancel");
        await loadBatches();
      });
    }
    row.appendChild(act);
    t.appendChild(row);
  }
  const wrap = el("div", { class: "table-wrap" }); wrap.appendChild(t); box.appendChild(wrap);
  $("batch-count").textContent = plural(rows.length, "batch").replace("batchs", "batches") + (list.has_more ? " (newest 100)" : "") + (fleet ? " · every tenant (admin key)" : "");
}

// Per-request errors: the batch's own errors (a file that failed validation), then the error file.
async function showErrors(b) {
  const box = $("batch-errors"); box.hidden = false; box.textContent = "";
  box.dataset.batchId = b.id;
  box.appendChild(el("h3", {}, "Errors of " + b.id));
  const lines = ((b.errors || {}).data || []).map((e) => [e.line ? "line " + e.line : "", e.code || "error", e.message]);
  if (b.error_file_id) {
    const text = await download(b.error_file_id, b.id + "_errors.jsonl");
    for (const raw of text.split("\n").filter(Boolean).slice(0, 50)) {
      const r = JSON.parse(raw), err = r.error || (r.response && r.response.body && r.response.body.error) || {};
      lines.push([r.custom_id, err.code || (r.response ? "HTTP " + r.response.status_code : "error"), err.message || ""]);
    }
  }
  const t = el("table", { id: "error-lines" });
  const tr = el("tr"); ["request", "code", "message"].forEach((h) => tr.appendChild(el("th", { class: "l" }, h))); t.appendChild(tr);
  for (const l of lines) { const row = el("tr"); l.forEach((c) => row.appendChild(el("td", { class: "l" }, c))); t.appendChild(row); }
  box.appendChild(lines.length ? t : el("p", { class: "muted" }, "No per-request errors."));
}

// ------------------------------------------------------------------ a batch's "why"
async function loadWhy(batchId) {
  const x = await api("/v1/batches/" + encodeURIComponent(batchId) + "/explain");
  const card = el("div", { class: "why", id: "batch-why" });
  card.appendChild(el("h4", {}, "Why here and why now"));
  card.appendChild(el("p", {}, x.summary));
  const kpis = el("div", { class: "kpis" });
  const kpi = (label, value, sub) => { const k = el("div", { class: "kpi" }); k.appendChild(el("small", {}, label)); k.appendChild(el("b", {}, value)); if (sub) k.appendChild(el("small", {}, sub)); kpis.appendChild(k); };
  kpi("intensity it got", x.got_g_per_kwh === null ? "–" : fmt(x.got_g_per_kwh, 0) + " g/kWh",
    x.net_of_solar_g_per_kwh !== null && x.net_of_solar_g_per_kwh < x.got_g_per_kwh ? fmt(x.net_of_solar_g_per_kwh, 0) + " g/kWh net of on-site solar" : "grid");
  kpi("had it run at once", x.at_once_here_g_per_kwh === null ? "–" : fmt(x.at_once_here_g_per_kwh, 0) + " g/kWh",
    x.at_once_best ? "best site then: " + x.at_once_best.site + " " + fmt(x.at_once_best.carbon_g_per_kwh, 0) : "");
  kpi("next-best option", x.next_best ? x.next_best.site + " " + when(x.next_best.slot_start) : "–",
    x.next_best ? fmt(x.next_best.carbon_g_per_kwh, 0) + " g/kWh · " + si(x.next_best.co2_g, "g") + " CO₂" : "");
  kpi("limited by", x.limited_by, x.because);
  card.appendChild(kpis);
  card.appendChild(el("p", { class: "muted" }, x.basis));
  return card;
}

// ------------------------------------------------------------------ workers
async function loadWorkers() {
  const box = $("workers"); box.textContent = "";
  let w;
  try { w = await api("/v1/workers"); } catch (e) {
    box.appendChild(el("p", { class: "muted" }, "The workers view needs an admin key.")); return;
  }
  const card = (title, headers, rows, id, empty) => {
    const c = el("div", { class: "card" }); c.appendChild(el("h3", {}, title));
    c.appendChild(rows.length ? table(headers, rows, id) : el("p", { class: "muted", id }, empty));
    box.appendChild(c);
  };
  card("Pools", ["queue", "GPU", "count", "live workers", "planned", "queued", "running", "done", "failed"],
    w.pools.map((p) => [p.queue, p.gpu, String(p.count), String(p.live_workers), ...["planned", "queued", "running", "done", "failed"].map((k) => String(p.shards[k] || 0))]),
    "worker-pools", "No pools.");
  const age = (s) => s === null ? "–" : s < 120 ? fmt(s, 0) + " s ago" : s < 7200 ? fmt(s / 60, 0) + " min ago" : fmt(s / 3600, 1) + " h ago";
  const stateOf = (x) => !x.live ? [x.state === "stopped" ? "stopped" : "gone", "bad"]
    : x.state === "low_disk" || x.state === "backoff" ? ["live · " + x.state.replace("_", " ") + " (claims nothing)", "bad"]
    : x.shard_id || x.state === "running" ? ["live · running", "good"] : ["live · idle", "good"];
  card("Workers", ["worker", "pool", "state", "running shard", "heartbeat", "lease left", "attempts done", "failed"],
    w.workers.map((x) => [x.worker, x.site + "/" + x.pool, stateOf(x), x.shard_id || "–",
      x.presence_age_s !== null && x.presence_age_s !== undefined ? age(x.presence_age_s) : x.heartbeat_at ? age(x.heartbeat_age_s) : "last seen " + when(x.last_seen_at),
      x.lease_left_s === null ? "–" : [fmt(x.lease_left_s, 0) + " s", x.lease_left_s < 0 ? "bad" : ""],
      String(x.attempts_done), String(x.attempts_failed)]),
    "worker-list", "No worker has sent a heartbeat yet: start one with gridshift worker --site S --pool P.");
  card("Retries", ["shard", "batch", "pool", "status", "attempts", "last error"],
    w.retries.map((r) => [r.shard_id, r.batch_id, r.site + "/" + r.pool, r.status, String(r.attempts), r.last_error || "–"]),
    "worker-retries", "No shard needed a retry.");
  box.appendChild(el("p", { class: "muted" }, "Every worker process beats every heartbeat (idle or running) and is listed from its first beat; live = a fresh beat or an unexpired lease; names are Celery node names, as Flower shows them. As of " + when(w.now) + " UTC."));
}

// ------------------------------------------------------------------ savings chart
function savingsChart(days) {
  const w = 900, h = 200, l = 60, b = 28, bw = Math.max(6, Math.min(36, (w - l - 20) / Math.max(1, days.length) / 2.6));
  const g = svg("svg", { width: "100%", viewBox: `0 0 ${w} ${h}`, id: "savings-chart", role: "img" });
  const hi = Math.max(1e-12, ...days.flatMap((d) => [d.actual.co2_g, d.asap_counterfactual.co2_g]));
  const y = (v) => h - b - (v / hi) * (h - b - 20);
  g.appendChild(svg("text", { x: 4, y: 16, class: "panel-label" }, si(hi, "g")));
  g.appendChild(svg("text", { x: 4, y: h - b, class: "panel-label" }, "0"));
  days.forEach((d, i) => {
    const x0 = l + i * bw * 2.6;
    for (const [k, v, cls, label] of [[0, d.asap_counterfactual.co2_g, "bar-atonce", "had it run at once"], [1, d.actual.co2_g, "bar-actual", "booked"]]) {
      const r = svg("rect", { x: x0 + k * bw, y: y(v), width: bw - 2, height: h - b - y(v), class: cls });
      r.appendChild(svg("title", {}, `${d.key}: ${label} ${si(v, "g")} CO₂`));
      g.appendChild(r);
    }
    g.appendChild(svg("text", { x: x0, y: h - 8, class: "panel-label" }, d.key.slice(5)));
  });
  return g;
}
