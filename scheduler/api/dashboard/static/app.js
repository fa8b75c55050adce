// gridshift dashboard: vanilla JS + SVG, no framework, no network beyond this API.
"use strict";

const KEY_STORE = "gridshift.apiKey";
const SVGNS = "http://www.w3.org/2000/svg";
const BATCH_COLOURS = ["#2f6fb0", "#e07b24", "#2e9d6a", "#8e5cc2", "#c9443f", "#1f9bb0",
  "#b08a1f", "#d15b9c", "#5a7d2a", "#6b6ff0", "#8c5a3c", "#3f8f8f"];
// Sites are drawn as dark neutral lines told apart by their dash pattern, so that they never
// look like a batch (batches take the saturated colours above).
const SITE_COLOURS = ["#222222", "#6b6b6b", "#9a9a9a", "#444444", "#808080", "#b0b0b0"];
const SITE_DASHES = ["", "6 3", "2 3", "10 3 2 3", "1 2", "4 4"];
const SIGNALS = [
  { field: "carbon_g_per_kwh", cls: "signal-carbon", label: "Carbon intensity", unit: "gCO₂/kWh" },
  { field: "price_per_kwh", cls: "signal-price", label: "Electricity price", unit: "per kWh" },
  { field: "renewable_kw", cls: "signal-renewable", label: "On-site renewable", unit: "kW" },
];

const state = { key: null, view: "schedule", schedule: null, selected: null };

// ------------------------------------------------------------------ helpers
function $(id) { return document.getElementById(id); }
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && a < 0.001) return x.toExponential(1);
  if (a < 1 && digits < 3) digits = 3;
  return x.toLocaleString("en-GB", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
function hhmm(t) { return new Date(t).toISOString().slice(11, 16); }
function dayLabel(t) { return new Date(t).toISOString().slice(0, 10); }
function when(t) { return t ? new Date(t).toISOString().slice(5, 16).replace("T", " ") : "–"; }

// The API's error as a sentence: OpenAI's {"error": {"message": ...}} shape, else the text.
async function errorText(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    const msg = body && body.error && (body.error.message || body.error.code);
    if (msg) return String(msg);
    if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) { /* not JSON: the text itself */ }
  return text || res.statusText || ("HTTP " + res.status);
}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  if (res.status === 401) { signOut("That key was not accepted: " + (await errorText(res))); throw new Error("unauthenticated"); }
  if (!res.ok) throw new Error(path + ": HTTP " + res.status + " " + (await errorText(res)));
  return res.json();
}

// ------------------------------------------------------------------ key handling
// The key is pasted once into the form and kept in sessionStorage (this tab, until it closes):
// never in a URL, where access logs, history and a crafted link could read or replace it.
function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  localStorage.removeItem(KEY_STORE);  // left by versions that kept it there
  state.key = null;
  $("app").hidden = true; $("login").hidden = false; $("signout").hidden = true;
  const err = $("keyerror");
  err.hidden = !message; err.textContent = message || "";
}
function signIn(key) {
  state.key = key;
  state.admin = undefined;  // learnt again for this key (the batch list asks for the fleet)
  state.skewMs = undefined;
  sessionStorage.setItem(KEY_STORE, key);
  $("login").hidden = true; $("app").hidden = false; $("signout").hidden = false;
  $("who").textContent = "key " + key.slice(0, 10) + "…";
  show(state.view);
}

// ------------------------------------------------------------------ views
function show(view) {
  state.view = view;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
  const load = { schedule: loadSchedule, batches: loadBatches, workers: loadWorkers, savings: loadSavings, budget: loadBudget, forecasts: loadForecasts }[view];
  load().catch((e) => console.error(e));
}

// "YYYY-MM-DD HH:MM" (24-hour, UTC; a "T" works too) as a Date, or null when it is not one.
function parseUtc(text) {
  const m = /^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})\s*$/.exec(text || "");
  if (!m) return null;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]));
  return Number.isNaN(d.getTime()) || d.getUTCHours() !== +m[4] || d.getUTCDate() !== +m[3] ? null : d;
}

// The schedule's range: the from/to inputs (UTC) when set, else the window around now.
function scheduleRange() {
  const f = parseUtc($("range-from").value), t = parseUtc($("range-to").value);
  if (f && t && f < t) return [f, t];
  const hours = Number($("window").value);
  const from = new Date(serverNow() - hours * 0.45 * 3600e3);
  from.setUTCMinutes(0, 0, 0);
  return [from, new Date(from.getTime() + hours * 3600e3)];
}
// A range is two valid instants, from before to; anything else (a shared link with ?from=abc)
// falls back to the window around now with a visible note instead of throwing a RangeError.
function validRange(from, to) {
  const f = new Date(from), t = new Date(to);
  return !Number.isNaN(f.getTime()) && !Number.isNaN(t.getTime()) && f < t;
}
function setRange(from, to) {
  let note = "";
  if ((from || to) && !(from && to && validRange(from, to))) {
    note = `Ignored the range from=${String(from).slice(0, 40)} to=${String(to).slice(0, 40)}: ` +
      "it is not two UTC date-times with from before to (e.g. ?from=2026-01-01T00:00Z&to=2026-01-02T00:00Z); showing the window around now.";
    from = null; to = null;
  }
  $("range-error").hidden = !note; $("range-error").textContent = note;
  const iso = (d) => (d ? new Date(d).toISOString().slice(0, 16).replace("T", " ") : "");
  $("range-from").value = iso(from); $("range-to").value = iso(to);
  const params = new URLSearchParams(location.search);
  if (from && to) { params.set("from", new Date(from).toISOString()); params.set("to", new Date(to).toISOString()); } else { params.delete("from"); params.delete("to"); }
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

// "Now" is the service's clock (its answers carry it), not this browser's: a service whose
// clock is pinned (tests, replays) or skewed still opens on its own now.
function serverNow() { return Date.now() + (state.skewMs || 0); }

async function loadSchedule() {
  if (state.skewMs === undefined) {  // learn the service's now once per sign-in
    const probe = await api("/v1/schedule?from=" + encodeURIComponent(new Date().toISOString()) + "&to=" + encodeURIComponent(new Date(Date.now() + 60e3).toISOString()));
    state.skewMs = Date.parse(probe.now) - Date.now();
  }
  const [from, to] = scheduleRange();
  const q = "?from=" + encodeURIComponent(from.toISOString()) + "&to=" + encodeURIComponent(to.toISOString());
  const data = await api("/v1/schedule" + q);
  state.schedule = data;
  $("plan-label").textContent = data.plan_id ? "plan #" + data.plan_id + " · " + data.bars.length + " bars · " + data.slot_minutes + "-min slots" : "no current plan";
  drawGantt(data);
  const linked = location.hash.startsWith("#batch=") ? decodeURIComponent(location.hash.slice(7)) : null;
  const refreshing = !$("batch").hidden;
  const open = refreshing ? $("batch").dataset.batchId : linked;
  if (open) await openBatch(open, null, !refreshing);  // deep link (#batch=ID), or keep the open batch on refresh
}

function batchColours(bars) {
  const ids = [...new Set(bars.map((b) => b.batch_id))].sort();
  const map = {};
  ids.forEach((id, i) => { map[id] = BATCH_COLOURS[i % BATCH_COLOURS.length]; });
  return map;
}

function barLabel(b) {
  return `${b.label && b.label !== b.batch_id ? b.label : "…" + b.batch_id.slice(-6)} · ${b.requests}`;
}

function packRows(bars, msPerPx = 0) {
  // Greedy interval packing per lane so that overlapping bars (and their labels, which may
  // run past a short bar) get their own row.
  const rows = {};
  const ends = {};
  for (const b of bars) {
    const lane = b.site + "/" + b.pool;
    ends[lane] = ends[lane] || [];
    const s = Date.parse(b.start), e = Math.max(Date.parse(b.end), s + (barLabel(b).length * 6.5 + 12) * msPerPx);
    let r = ends[lane].findIndex((end) => end <= s);
    if (r < 0) { r = ends[lane].length; ends[lane].push(e); } else ends[lane][r] = e;
    rows[b.id] = r;
  }
  const depth = {};
  for (const [lane, list] of Object.entries(ends)) depth[lane] = Math.max(1, list.length);
  return { rows, depth };
}

function drawGantt(data) {
  const box = $("gantt");
  box.textContent = "";
  const width = Math.max(900, box.clientWidth - 12);
  const left = 150, right = 70, top = 30, rowH = 22, laneGap = 10, panelH = 78, panelGap = 16;
  const t0 = Date.parse(data.start), t1 = Date.parse(data.end);
  const x = (t) => left + ((Date.parse(t) - t0) / (t1 - t0)) * (width - left - right);
  const colours = batchColours(data.bars);
  const { rows, depth } = packRows(data.bars, (t1 - t0) / (width - left - right));
  const laneY = {};
  let y = top;
  for (const lane of data.lanes) { depth[lane] = depth[lane] || 1; laneY[lane] = y; y += depth[lane] * rowH + laneGap; }  // idle pools keep a lane
  const ganttBottom = y;
  const sites = data.signals.map((s) => s.site);
  const height = ganttBottom + 20 + SIGNALS.length * (panelH + panelGap) + 10;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "gantt-svg", role: "img" });

  // time grid and axis
  const grid = svg("g", { class: "grid" });
  const axis = svg("g", { class: "axis" });
  const step = (t1 - t0) / 3600e3 > 60 ? 12 : (t1 - t0) / 3600e3 > 30 ? 6 : 3;
  const first = new Date(t0); first.setUTCMinutes(0, 0, 0);
  for (let t = first.getTime(); t <= t1; t += 3600e3) {
    const d = new Date(t);
    if (d.getUTCHours() % step !== 0) continue;
    const xx = x(d.toISOString());
    if (xx < left) continue;
    const day = d.getUTCHours() === 0;
    grid.appendChild(svg("line", { x1: xx, x2: xx, y1: top - 6, y2: height - 6, class: day ? "day" : "" }));
    axis.appendChild(svg("text", { x: xx + 3, y: top - 10 }, day ? dayLabel(t) : hhmm(t)));
  }
  // lanes
  data.lanes.forEach((lane, i) => {
    const h = depth[lane] * rowH;
    root.appendChild(svg("rect", { x: left, y: laneY[lane] - 2, width: width - left - right, height: h + 4, class: "lane-bg" + (i % 2 ? " alt" : "") }));
    root.appendChild(svg("text", { x: 10, y: laneY[lane] + h / 2 + 4, class: "lane-label" }, lane));
  });
  root.appendChild(grid);
  root.appendChild(axis);
  // bars
  const barsG = svg("g", { id: "bars" });
  for (const b of data.bars) {
    const lane = b.site + "/" + b.pool;
    const x0 = Math.max(left, x(b.start)), x1 = Math.min(width - right, x(b.end));
    const attrs = {
      x: x0, y: laneY[lane] + rows[b.id] * rowH + 2, width: Math.max(3, x1 - x0 - 1), height: rowH - 4, rx: 3,
      class: "bar status-" + b.status, fill: colours[b.batch_id], stroke: colours[b.batch_id],
      "data-batch-id": b.batch_id, "data-status": b.status, "data-model": b.model,
    };
    attrs[b.kind === "shard" ? "data-shard-id" : "data-assignment-id"] = b.id;
    const r = svg("rect", attrs);
    r.appendChild(svg("title", {}, `${b.batch_id} · ${b.kind} ${b.id}\n${b.model} at ${lane}\n${b.status}: ${hhmm(b.start)}–${hhmm(b.end)} UTC · ${b.requests} requests`));
    r.addEventListener("click", () => openBatch(b.batch_id, b.id));
    barsG.appendChild(r);
    // a label inside the bar when it fits, else just after it (short shards are a few pixels)
    const label = barLabel(b);
    const inside = x1 - x0 > label.length * 6.5 + 6;
    barsG.appendChild(svg("text", { x: inside ? x0 + 4 : Math.max(x0, x1) + 4, y: attrs.y + rowH - 9, class: "bar-label", "pointer-events": "none" }, label));
  }
  root.appendChild(barsG);

  // signal panels: one per signal kind, one path per site
  let py = ganttBottom + 20;
  for (const sig of SIGNALS) {
    root.appendChild(svg("rect", { x: left, y: py, width: width - left - right, height: panelH, class: "panel-bg" }));
    root.appendChild(svg("text", { x: 10, y: py + 16, class: "panel-label", "font-weight": "600" }, sig.label));
    root.appendChild(svg("text", { x: 10, y: py + 32, class: "panel-label" }, sig.unit));
    if (data.signals.some((s) => s.source === "booked")) {
      root.appendChild(svg("text", { x: 10, y: py + 48, class: "panel-label" }, "booked slots only"));
    }
    const vals = data.signals.flatMap((s) => s.points.map((p) => p[sig.field]).filter((v) => v !== null && v !== undefined));
    if (!vals.length) {
      root.appendChild(svg("text", { x: left + 10, y: py + panelH / 2 + 4, class: "panel-label" }, "no data for these sites"));
      py += panelH + panelGap;
      continue;
    }
    const lo = Math.min(0, ...vals), hi = Math.max(1e-9, ...vals);
    const yv = (v) => py + panelH - 6 - ((v - lo) / (hi - lo || 1)) * (panelH - 14);
    root.appendChild(svg("text", { x: width - right + 6, y: py + 12, class: "panel-label" }, fmt(hi, hi < 1 ? 3 : 0)));
    root.appendChild(svg("text", { x: width - right + 6, y: py + panelH - 4, class: "panel-label" }, fmt(lo, 0)));
    data.signals.forEach((s, i) => {
      // Each point holds until the next one: its own resolution (15-minute points are drawn
      // 15 minutes wide, hourly ones an hour), never the plan's slot length.
      const res = resolutionMs(s.points, data.slot_minutes);
      let d = "";
      for (const p of s.points) {
        const v = p[sig.field];
        if (v === null || v === undefined) continue;
        const xx = Math.max(left, x(p.time));
        const xe = x(new Date(Date.parse(p.time) + res).toISOString());
        if (xe < left) continue;
        d += (d ? "L" : "M") + xx.toFixed(1) + "," + yv(v).toFixed(1) + "L" + Math.min(xe, width - right).toFixed(1) + "," + yv(v).toFixed(1);
      }
      if (d) {
        const path = svg("path", { d, class: sig.cls, stroke: SITE_COLOURS[i % SITE_COLOURS.length], "stroke-dasharray": SITE_DASHES[i % SITE_DASHES.length], "data-site": s.site, "data-source": s.source || "" });
        path.setAttribute("data-resolution-min", String(Math.round(res / 60e3)));
        path.appendChild(svg("title", {}, `${s.site} · ${sig.label} (${sourceLabel(s.source)}, ${Math.round(res / 60e3)}-min points)`));
        root.appendChild(path);
        for (const p of s.points) {  // a hover target per slot: the value in a tooltip
          const v = p[sig.field];
          if (v === null || v === undefined) continue;
          const dot = svg("circle", { cx: x(p.time), cy: yv(v), r: 2.5, class: "signal-dot", fill: SITE_COLOURS[i % SITE_COLOURS.length] });
          dot.setAttribute("data-kind", p.kind || "");
          dot.appendChild(svg("title", {}, `${s.site} ${when(p.time)} UTC: ${fmt(v, v < 1 ? 3 : 0)} ${sig.unit} (${p.kind || (s.source === "booked" ? "actual" : "forecast")})`));
          root.appendChild(dot);
        }
      }
    });
    py += panelH + panelGap;
  }
  // now marker
  const nx = x(data.now);
  if (nx >= left && nx <= width - right) {
    root.appendChild(svg("line", { x1: nx, x2: nx, y1: top - 4, y2: height - 8, class: "now-marker", id: "now-marker" }));
    root.appendChild(svg("text", { x: nx + 4, y: height - 10, class: "now-label" }, "now " + hhmm(data.now)));
  }
  box.appendChild(root);
  drawLegend(colours, sites, data.bars);
}

// The spacing of a series' points (the smallest gap between consecutive ones), else the slot.
function resolutionMs(points, slotMinutes) {
  let gap = Infinity;
  for (let i = 1; i < points.length; i++) {
    const g = Date.parse(points[i].time) - Date.parse(points[i - 1].time);
    if (g > 0 && g < gap) gap = g;
  }
  return Number.isFinite(gap) ? Math.min(gap, slotMinutes * 60e3) : slotMinutes * 60e3;
}
// Whether a signal is the forecast the plan used or what was booked (actual).
function sourceLabel(source) {
  return source === "booked" ? "actual, as booked" : "forecast the plan used";
}

function drawLegend(colours, sites, bars) {
  const lg = $("legend");
  lg.textContent = "";
  const models = {}, names = {};
  for (const b of bars) { models[b.batch_id] = b.model; names[b.batch_id] = b.label; }
  for (const [id, c] of Object.entries(colours)) {
    const s = el("span", { title: id + " · " + models[id] });
    const name = names[id] && names[id] !== id ? names[id] : id;
    const i = el("i"); i.style.background = c; s.appendChild(i); s.appendChild(document.createTextNode(name));
    lg.appendChild(s);
  }
  lg.appendChild(el("span", { class: "muted" }, "│ status:"));
  for (const st of ["planned", "queued", "running", "done", "failed"]) {
    const s = el("span");
    const sw = svg("svg", { width: 22, height: 12 });
    sw.appendChild(svg("rect", { x: 1, y: 1, width: 20, height: 10, rx: 2, class: "bar status-" + st, fill: "#5b7186", stroke: "#5b7186" }));
    s.appendChild(sw); s.appendChild(document.createTextNode(" " + st));
    lg.appendChild(s);
  }
  lg.appendChild(el("span", { class: "muted" }, "│ signals:"));
  sites.forEach((site, i) => {
    const s = el("span");
    const sw = svg("svg", { width: 26, height: 8 });
    sw.appendChild(svg("line", { x1: 1, x2: 25, y1: 4, y2: 4, stroke: SITE_COLOURS[i % SITE_COLOURS.length], "stroke-width": 2, "stroke-dasharray": SITE_DASHES[i % SITE_DASHES.length] }));
    s.appendChild(sw); s.appendChild(document.createTextNode(" " + site));
    lg.appendChild(s);
  });
}

// ------------------------------------------------------------------ batch
async function openBatch(batchId, barId, scroll = true) {
  for (const r of document.querySelectorAll("#bars rect")) r.classList.toggle("selected", r.dataset.batchId === batchId);
  history.replaceState(null, "", location.pathname + location.search + "#batch=" + encodeURIComponent(batchId));
  // Only the latest call draws: a refresh and a click in flight together must not both append
  // their panels (the "why" card appeared twice).
  const token = (state.batchToken = (state.batchToken || 0) + 1);
  const r = await api("/v1/batches/" + encodeURIComponent(batchId) + "/review");
  const why = await loadWhy(batchId).catch((e) => { console.error(e); return null; });
  if (token !== state.batchToken) return;
  const box = $("batch");
  box.hidden = false; box.textContent = "";
  box.dataset.batchId = batchId;
  const head = el("div", { class: "batch-head" });
  head.appendChild(el("h3", {}, "Batch " + r.batch_id));
  head.appendChild(el("span", { class: "badge" }, r.status));
  head.appendChild(el("span", { class: "muted" }, "submitted " + when(r.submitted_at) + " · deadline " + when(r.deadline) + " UTC"));
  for (const m of r.energy_methods) head.appendChild(el("span", { class: "badge " + (m.startsWith("measured") ? "measured" : "estimate") }, m.startsWith("measured") ? m : "ESTIMATED energy"));
  box.appendChild(head);
  box.appendChild(el("p", { class: "reason" }, r.reason));
  const est = r.estimated ? " (incl. estimates)" : "";
  const kpis = el("div", { class: "kpis" });
  const kpi = (label, value, sub) => { const k = el("div", { class: "kpi" }); k.appendChild(el("small", {}, label)); k.appendChild(el("b", {}, value)); if (sub) k.appendChild(el("small", {}, sub)); kpis.appendChild(k); };
  kpi("CO₂ booked" + est, si(r.actual.co2_g, "g"), "planned " + si(r.planned.co2_g, "g"));
  const savedG = r.asap_counterfactual.co2_g - r.actual.co2_g;
  kpi("CO₂ had it run at once", si(r.asap_counterfactual.co2_g, "g"), (savedG >= 0 ? "saved " + si(savedG, "g") : "cost " + si(-savedG, "g") + " more") + " (location-based)");
  kpi("Energy" + est, si(r.actual.energy_kwh, "kWh"), "planned " + si(r.planned.energy_kwh, "kWh"));
  kpi("Water", si(r.actual.water_l, "L"), "planned " + si(r.planned.water_l, "L"));
  kpi("Cost (fleet currency)", money(r.actual.cost), "planned " + money(r.planned.cost));
  kpi("Embodied CO₂", si(r.embodied_co2_g, "g"), r.co2_market_g === null ? "market-based: n/a" : "market-based " + si(r.co2_market_g, "g"));
  box.appendChild(kpis);
  if (why) box.appendChild(why);
  const t = el("table", { id: "batch-shards" });
  const hdr = ["shard", "site / pool", "model", "status", "slot", "ran", "g/kWh booked (actual)", "g/kWh at once (actual)", "energy", "CO₂", "water", "cost", "plan energy", "plan CO₂"];
  const tr = el("tr"); hdr.forEach((h, i) => tr.appendChild(el("th", i < 4 ? { class: "l" } : {}, h))); t.appendChild(tr);
  for (const s of r.shards) {
    const row = el("tr", { "data-shard-id": s.shard_id });
    if (s.shard_id === barId) row.style.background = "#eef6ff";
    const ran = s.started_at ? hhmm(s.started_at) + "–" + (s.finished_at ? hhmm(s.finished_at) : "…") : "–";
    const better = s.carbon_g_per_kwh !== null && s.asap_carbon_g_per_kwh !== null && s.carbon_g_per_kwh < s.asap_carbon_g_per_kwh;
    const energy = s.energy_kwh === null ? "–" : si(s.energy_kwh, "kWh") + (s.estimated ? " est." : "");
    const cells = [[s.shard_id, "l"], [s.site + "/" + s.pool, "l"], [s.model, "l"], [s.status, "l"], [when(s.slot_start), ""], [ran, ""],
      [fmt(s.carbon_g_per_kwh, 0), better ? "good" : ""], [fmt(s.asap_carbon_g_per_kwh, 0), ""], [energy, s.estimated ? "est" : ""],
      [si(s.co2_g, "g"), ""], [si(s.water_l, "L"), ""], [money(s.cost), ""], [si(s.planned_energy_kwh, "kWh"), ""], [si(s.planned_co2_g, "g"), ""]];
    for (const [v, c] of cells) row.appendChild(el("td", c ? { class: c } : {}, v));
    t.appendChild(row);
  }
  const wrap = el("div", { class: "table-wrap" }); wrap.appendChild(t); box.appendChild(wrap);
  box.appendChild(el("p", { class: "muted" }, "g/kWh booked: the intensity the ledger booked for each shard (actual where the provider reported one); “planned” figures and the “why” card's intensities are the forecast the plan used."));
  if (r.estimated) box.appendChild(el("p", { class: "muted" }, "“est.” marks energy estimated from the model profile (no meter): an estimate, not a measurement."));
  if (scroll) box.scrollIntoView({ behavior: "instant", block: "nearest" });
}

// ------------------------------------------------------------------ savings
function table(headers, rows, id) {
  const t = el("table", id ? { id } : {});
  const tr = el("tr"); headers.forEach((h, i) => tr.appendChild(el("th", i === 0 ? { class: "l" } : {}, h))); t.appendChild(tr);
  for (const r of rows) {
    const row = el("tr");
    r.forEach((c, i) => {
      const cell = Array.isArray(c) ? c : [c, ""];
      row.appendChild(el("td", cell[1] ? { class: cell[1] } : (i === 0 ? { class: "l" } : {}), cell[0]));
    });
    t.appendChild(row);
  }
  return t;
}
function saved(v) { return [fmt(v), v > 0 ? "good" : v < 0 ? "bad" : ""]; }
function savedSi(v) { return [si(v, "g"), v > 0 ? "good" : v < 0 ? "bad" : ""]; }

async function loadSavings() {
  const d = await api("/v1/savings");
  $("caveat").textContent = d.caveat;
  const box = $("savings"); box.textContent = "";
  // Realised savings: booked against the same work run at once on the same actuals. "by place
  // and time" keeps the model it ran; "by model choice" is what asap's model would have added.
  const split = (v) => (v === null || v === undefined ? "–" : savedSi(v));
  const c1 = el("div", { class: "card" }); c1.appendChild(el("h3", {}, "Per day, realised (booked vs the same work run at its submission hour, on the actuals)"));
  if (d.per_day.length) c1.appendChild(savingsChart(d.per_day));
  c1.appendChild(el("p", { class: "muted" }, "grey: had each batch run at once · green: booked"));
  c1.appendChild(table(["day", "CO₂ booked", "at once", "saved by place and time", "by model choice", "energy", "cost", "water", ""],
    d.per_day.map((r) => [r.key, si(r.actual.co2_g, "g"), si(r.asap_counterfactual.co2_g, "g"), savedSi(r.saved_co2_g_vs_asap), split(r.saved_co2_g_by_model_choice), si(r.actual.energy_kwh, "kWh"), money(r.actual.cost), si(r.actual.water_l, "L"), r.estimated ? ["incl. estimates", "est"] : ""]), "savings-days"));
  const c2 = el("div", { class: "card" }); c2.appendChild(el("h3", {}, "Per batch"));
  c2.appendChild(table(["batch", "CO₂ booked", "at once", "saved by place and time", "by model choice", "asap plan (planned)", "carbon-greedy (planned)", "delay h", ""],
    d.per_batch.map((r) => [r.key, si(r.actual.co2_g, "g"), si(r.asap_counterfactual.co2_g, "g"), savedSi(r.saved_co2_g_vs_asap), split(r.saved_co2_g_by_model_choice), r.asap ? si(r.asap.co2_g, "g") : "–", r.carbon_greedy ? si(r.carbon_greedy.co2_g, "g") : "–", fmt(r.actual.delay_h), r.estimated ? ["incl. estimates", "est"] : ""]), "savings-batches"));
  const c3 = el("div", { class: "card" }); c3.appendChild(el("h3", {}, "Per plan: the planned benefit (planner's estimated totals against the contract's baselines)"));
  c3.appendChild(d.plans.length ? table(["plan", "created", "planned CO₂", "asap", "saved vs asap", "carbon-greedy", "saved vs greedy", "planned cost", "asap cost"],
    d.plans.map((p) => ["#" + p.plan_id, when(p.created_at), si(p.planned.co2_g, "g"), p.asap ? si(p.asap.co2_g, "g") : "–", savedSi(p.saved_co2_g_vs_asap), p.carbon_greedy ? si(p.carbon_greedy.co2_g, "g") : "–", savedSi(p.saved_co2_g_vs_carbon_greedy), money(p.planned.cost), p.asap ? money(p.asap.cost) : "–"]))
    : el("p", { class: "muted" }, "Plan totals are fleet-wide: shown to admin keys only."));
  box.append(c1, c2, c3);
}

// ------------------------------------------------------------------ budget
async function loadBudget() {
  const b = await api("/v1/budget");
  const box = $("budget"); box.textContent = "";
  const head = el("div", { class: "card" });
  head.appendChild(el("span", {}, "Scope " + b.scope + " · state "));
  head.appendChild(el("span", { class: "badge state-" + b.state, id: "budget-state" }, b.state.toUpperCase()));
  if (b.breached && b.breached.length) head.appendChild(el("span", { class: "badge state-critical", id: "budget-breached" }, "BREACHED: " + b.breached.join(", ")));
  head.appendChild(el("span", { class: "muted" }, " · pacing price " + (b.pacing_price_per_g === null ? "–" : fmt(b.pacing_price_per_g, 6) + " per g (" + b.pacing_day + ")")));
  box.appendChild(head);
  const grid = el("div", { class: "grid2" });
  for (const p of [b.today, b.month]) {
    const c = el("div", { class: "card" });
    c.appendChild(el("h3", {}, p.period === "today" ? "Today (UTC)" : "This month"));
    if (p.budget_g === null) {
      c.appendChild(el("p", {}, "Used " + fmt(p.used_g) + " g CO₂ · no budget configured"));
    } else {
      const m = el("div", { class: "meter" }); const f = el("div");
      f.style.width = Math.min(100, (100 * p.used_g) / p.budget_g).toFixed(1) + "%";
      if (p.state !== "normal") f.style.background = p.state === "critical" ? "#c0392b" : "#c77c02";
      m.appendChild(f); c.appendChild(m);
      c.appendChild(el("p", {}, "Used " + fmt(p.used_g) + " g of " + fmt(p.budget_g) + " g · left " + fmt(p.left_g) + " g (" + fmt(100 * p.left_fraction, 0) + " %) · " + p.state.toUpperCase() + (p.breached ? " · BREACHED by " + fmt(p.overspent_g) + " g" : "")));
    }
    grid.appendChild(c);
  }
  box.appendChild(grid);
  box.appendChild(el("p", { class: "muted" }, "States by budget left: NORMAL > 50 %, TIGHTENING > 25 %, RESTRICTED > 10 %, else CRITICAL. Used = location-based operational + embodied CO₂ from the ledger."));
}

// ------------------------------------------------------------------ forecasts
async function loadForecasts() {
  const d = await api("/v1/forecasts/accuracy");
  const box = $("forecasts"); box.textContent = "";
  if (!d.sites.length) { box.appendChild(el("p", { class: "muted" }, "No slots with both a forecast and an actual yet.")); return; }
  const grid = el("div", { class: "grid2" });
  for (const s of d.sites) {
    const c = el("div", { class: "card", "data-site": s.site });
    c.appendChild(el("h3", {}, s.site));
    c.appendChild(el("p", {}, "MAE " + fmt(s.mae_g_per_kwh) + " gCO₂/kWh · MAPE " + fmt(s.mape_pct) + " % · " + s.points.length + " slots"));
    const w = 460, h = 140, l = 40;
    const g = svg("svg", { width: "100%", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "xMinYMin meet" });
    const ts = s.points.map((p) => Date.parse(p.time));
    const vs = s.points.flatMap((p) => [p.forecast, p.actual]);
    const t0 = Math.min(...ts), t1 = Math.max(...ts) || t0 + 1, lo = Math.min(...vs), hi = Math.max(...vs);
    const x = (t) => l + ((t - t0) / (t1 - t0 || 1)) * (w - l - 10);
    const y = (v) => h - 20 - ((v - lo) / (hi - lo || 1)) * (h - 35);
    for (const [k, cls] of [["forecast", "fc-forecast"], ["actual", "fc-actual"]]) {
      g.appendChild(svg("path", { class: cls, d: s.points.map((p, i) => (i ? "L" : "M") + x(ts[i]).toFixed(1) + "," + y(p[k]).toFixed(1)).join("") }));
    }
    g.appendChild(svg("text", { x: 2, y: 14, class: "panel-label" }, fmt(hi, 0)));
    g.appendChild(svg("text", { x: 2, y: h - 20, class: "panel-label" }, fmt(lo, 0)));
    g.appendChild(svg("text", { x: l, y: h - 4, class: "panel-label" }, when(s.points[0].time)));
    g.appendChild(svg("text", { x: w - 90, y: h - 4, class: "panel-label" }, when(s.points[s.points.length - 1].time)));
    c.appendChild(g);
    c.appendChild(el("p", { class: "muted" }, "dashed: forecast · green: actual"));
    grid.appendChild(c);
  }
  box.appendChild(grid);
}

// ------------------------------------------------------------------ start
function start() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
  $("refresh").addEventListener("click", () => loadSchedule());
  $("window").addEventListener("change", () => { setRange(null, null); loadSchedule(); });
  for (const id of ["range-from", "range-to"]) $(id).addEventListener("change", () => {
    const f = parseUtc($("range-from").value), t = parseUtc($("range-to").value);
    const bad = [["from", $("range-from").value, f], ["to", $("range-to").value, t]].filter(([, v, d]) => v && !d);
    $(id).setCustomValidity(bad.length ? "Use YYYY-MM-DD HH:MM (24-hour, UTC)" : "");
    if (bad.length) { $("plan-label").textContent = bad.map(([k, v]) => `${k} "${v}" is not YYYY-MM-DD HH:MM (24-hour UTC)`).join("; "); return; }
    if (f && t) setRange(f, t);
    loadSchedule();
  });
  $("range-now").addEventListener("click", () => { setRange(null, null); loadSchedule(); });
  $("range-plan").addEventListener("click", async () => {
    const p = await api("/v1/plans/current");
    if (p.plan) { setRange(p.plan.horizon_start, p.plan.horizon_end); loadSchedule(); }
  });
  $("batch-refresh").addEventListener("click", () => loadBatches());
  $("batch-status").addEventListener("change", () => loadBatches());
  $("batch-q").addEventListener("input", () => loadBatches());
  $("signout").addEventListener("click", () => signOut());
  $("keyform").addEventListener("submit", (e) => { e.preventDefault(); signIn($("keyinput").value.trim()); });
  window.addEventListener("resize", () => { if (state.schedule && state.view === "schedule") drawGantt(state.schedule); });
  const params = new URLSearchParams(location.search);
  if (params.has("from") || params.has("to")) setRange(params.get("from"), params.get("to"));  // a shared range
  const inUrl = params.has("key");
  if (inUrl) {  // refused: a link must not sign anyone in or replace the stored key
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }
  // The schedule moves: refresh it every minute while it is on screen.
  setInterval(() => { if (state.key && state.view === "schedule" && !document.hidden) loadSchedule().catch(console.error); }, 60000);
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) signIn(key);
  else signOut(inUrl ? "Keys in the address bar are not accepted: paste the key here instead." : undefined);
}
start();
