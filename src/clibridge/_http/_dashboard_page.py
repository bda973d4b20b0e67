"""The dashboard page (:mod:`.dashboard`): HTML, CSS and script in one string, no asset
from anywhere else, so it works offline and under a ``default-src 'none'`` policy.

The usage chart is inline SVG drawn by the page's own script: a chart of a few lines over
24 hourly points needs no library, a vendored one would be tens of kilobytes to keep up
to date, and SVG scales with the page (375 px phones included) and is readable by tests.
Every text from the server goes in with ``textContent`` (model names and keys come from
clients).
"""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>clibridge dashboard</title>
<style>
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f8f9fb; --card: #fff;
        --ok: #067647; --warn: #b54708; --bad: #b42318; --busy: #175cd3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline;
         padding: 12px 16px; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0; }
main { padding: 12px 16px; display: grid; gap: 16px; max-width: 1200px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          padding: 12px; min-width: 0; }
h2 { font-size: 15px; margin: 0 0 8px; }
.muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 8px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 4px 8px; }
.card b { font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
tr.req { cursor: pointer; }
tr.req:hover, tr.req:focus { background: #eef4ff; outline: none; }
.badge { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 12px;
         border: 1px solid currentColor; }
.s-idle { color: var(--ok); } .s-busy { color: var(--busy); } .s-booting { color: var(--warn); }
.s-recycling { color: var(--muted); } .s-parked { color: #6941c6; }
.bad { color: var(--bad); } .ok { color: var(--ok); } .warn { color: var(--warn); }
#detail { white-space: pre-wrap; word-break: break-word; font-size: 12px; max-height: 60vh;
          overflow: auto; background: var(--bg); padding: 8px; border-radius: 6px; }
#keyform { display: none; gap: 8px; flex-wrap: wrap; }
#keyform input { flex: 1 1 200px; padding: 4px 6px; }
svg { width: 100%; height: auto; display: block; }
.chart-controls { display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 6px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
            border-radius: 2px; }
</style>
</head>
<body>
<header>
  <h1>clibridge</h1>
  <span id="status" class="muted">loading…</span>
  <span id="fake" class="bad"></span>
  <span class="muted">updated <span id="updated">never</span></span>
</header>
<main>
  <form id="keyform">
    <label for="key">This server needs its admin key:</label>
    <input id="key" type="password" autocomplete="off" placeholder="admin key">
    <button type="submit">Open</button>
  </form>
  <section id="pools-section">
    <h2>Pools</h2>
    <div class="cards" id="summary"></div>
    <div class="scroll"><table id="workers">
      <thead><tr><th>backend</th><th>worker</th><th>pid</th><th>state</th><th>age</th>
        <th>turns</th><th>RSS</th><th>account</th></tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <section id="accounts-section" hidden>
    <h2>Accounts</h2>
    <div class="scroll"><table id="accounts">
      <thead><tr><th>backend</th><th>account</th><th>state</th><th>cooling until</th>
        <th>why</th><th>subscription window</th><th>used</th><th>resets</th></tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <section id="requests-section">
    <h2>Last requests</h2>
    <p id="no-ledger" class="muted" hidden>The request ledger is not enabled on this server.</p>
    <div class="scroll"><table id="requests">
      <thead><tr><th>time</th><th>key</th><th>model</th><th>dialect</th><th>status</th>
        <th>first content</th><th>duration</th><th>tokens</th><th>continued</th></tr></thead>
      <tbody></tbody>
    </table></div>
    <pre id="detail" hidden></pre>
  </section>
  <section id="usage-section">
    <h2>Usage, last 24 hours</h2>
    <div class="chart-controls">
      <select id="usage-by" aria-label="group by">
        <option value="by_model">per model</option><option value="by_key">per key</option>
      </select>
      <select id="usage-metric" aria-label="metric">
        <option value="tokens">tokens per hour</option>
        <option value="requests">requests per hour</option>
      </select>
    </div>
    <div id="chart"></div>
    <div class="legend" id="legend"></div>
  </section>
</main>
<script>
"use strict";
const POLL_MS = 1000;
// the page's own path (behind a proxy prefix too), without a trailing slash
const BASE = location.pathname.replace(/\/+$/, "");
const COLORS = ["#175cd3", "#dc6803", "#067647", "#6941c6", "#b42318", "#0e9384",
                "#c11574", "#667085"];
let last = null;
let openId = null;

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children || []) node.append(c);
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}
function fmtAge(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  return (n / 1048576).toFixed(0) + " MiB";
}
function fmtSecs(s) {
  return (s === null || s === undefined) ? "" : (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s";
}
function fmtTime(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(typeof t === "number" ? t * 1000 : t);
  return isNaN(d) ? String(t) : d.toLocaleTimeString();
}
function headers() {
  const key = sessionStorage.getItem("clibridge-admin-key");
  return key ? {"Authorization": "Bearer " + key} : {};
}
function stateClass(state) {
  return "badge s-" + (state.startsWith("parked") ? "parked" : state);
}

function drawPools(data) {
  const summary = document.getElementById("summary");
  const cards = [el("span", {class: "card"}, ["429s last minute: ",
                   el("b", {id: "rejected-minute", text: String(data.rejected_last_minute)})]),
                 el("span", {class: "card"}, ["open turns: ",
                   el("b", {text: String(data.open_turns)})])];
  for (const pool of data.pools) {
    cards.push(el("span", {class: "card", "data-pool": pool.name}, [
      pool.name + ": ", el("b", {text: pool.in_flight + "/" + pool.permits_total}),
      " in flight, queue ", el("b", {class: "queued", text: String(pool.queued)}),
      ", served ", el("b", {text: String(pool.served)}),
      ", rejected ", el("b", {text: String(pool.rejected)})]));
  }
  summary.replaceChildren(...cards);
  const rows = [];
  for (const pool of data.pools) {
    for (const w of pool.workers) {
      rows.push(el("tr", {"data-worker": pool.name + "-" + w.id}, [
        el("td", {text: w.backend}), el("td", {text: String(w.id)}),
        el("td", {text: w.pid === null ? "" : String(w.pid)}),
        el("td", {}, [el("span", {class: stateClass(w.state), text: w.state})]),
        el("td", {text: fmtAge(w.age)}), el("td", {text: String(w.turns)}),
        el("td", {text: fmtBytes(w.rss)}), el("td", {text: w.account})]));
    }
  }
  if (!rows.length) rows.push(el("tr", {}, [el("td", {colspan: "8", class: "muted",
                                               text: "no workers"})]));
  document.querySelector("#workers tbody").replaceChildren(...rows);
}

function fmtPercent(p) {
  return (p === null || p === undefined) ? "" : (Math.round(p * 10) / 10) + " %";
}
function fmtReset(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(t * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return (sameDay ? "" : d.toLocaleDateString() + " ") + d.toLocaleTimeString();
}
// one row per account and subscription window (one row when it reported none)
function drawAccounts(data) {
  const rows = [];
  for (const pool of data.pools) {
    for (const a of pool.accounts || []) {
      const cooling = !a.available;
      const cells = [
        el("td", {text: pool.name}), el("td", {text: a.name}),
        el("td", {}, [el("span", {class: "badge " + (cooling ? "bad" : "ok"),
                                  text: a.state.replace("_", " ") +
                                        (cooling ? " (cooling down)" : "")})]),
        el("td", {text: cooling ? fmtTime(a.until) + " (" + fmtAge(a.cooling_down_for) + ")"
                                : ""}),
        el("td", {text: a.why || ""})];
      const windows = a.windows.length ? a.windows : [null];
      windows.forEach((w, i) => {
        const first = i === 0 ? cells : cells.map(() => el("td"));
        const used = w ? w.used_percent : null;
        rows.push(el("tr", {"data-account": pool.name + "-" + a.name}, [...first,
          el("td", {text: w ? w.name : "", title: w && w.status ? w.status : ""}),
          el("td", {class: used !== null && a.warn_percent !== null && used >= a.warn_percent
                           ? "warn" : "",
                    text: w ? (used === null ? (w.status || "") : fmtPercent(used)) : ""}),
          el("td", {text: w ? fmtReset(w.resets_at) : ""})]));
      });
    }
  }
  document.getElementById("accounts-section").hidden = !rows.length;
  document.querySelector("#accounts tbody").replaceChildren(...rows);
}

function tokensOf(r) {
  if (r.input_tokens === null && r.output_tokens === null) return "";
  const cached = (r.cache_read_tokens || 0) + (r.cache_write_tokens || 0);
  return (r.input_tokens ?? 0) + " in / " + (r.output_tokens ?? 0) + " out" +
         (cached ? " / " + cached + " cache" : "");
}
function drawRequests(data) {
  document.getElementById("no-ledger").hidden = data.ledger;
  const rows = (data.requests || []).map((r) => {
    const failed = r.status >= 400 || r.error_type;
    const model = el("td", {text: r.model_asked ?? ""});
    if (r.backend) model.title = r.backend + ": " + (r.cli_model ?? "");
    const row = el("tr", {class: "req", tabindex: "0", "data-id": r.request_id}, [
      el("td", {text: fmtTime(r.started)}), el("td", {text: r.key ?? "—"}), model,
      el("td", {text: r.dialect ?? ""}),
      el("td", {class: failed ? "bad" : "ok",
                text: String(r.status) + (r.error_type ? " " + r.error_type : "")}),
      el("td", {text: fmtSecs(r.ttfc_s)}), el("td", {text: fmtSecs(r.duration_s)}),
      el("td", {text: tokensOf(r)}), el("td", {text: r.continued ? "yes" : "no"})]);
    row.addEventListener("click", () => openRequest(r.request_id));
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") openRequest(r.request_id); });
    return row;
  });
  document.querySelector("#requests tbody").replaceChildren(...rows);
}
async function openRequest(id) {
  const detail = document.getElementById("detail");
  if (openId === id && !detail.hidden) { detail.hidden = true; openId = null; return; }
  openId = id;
  const resp = await fetch(BASE + "/requests/" + encodeURIComponent(id), {headers: headers()});
  detail.textContent = resp.ok ? JSON.stringify(await resp.json(), null, 2)
                               : "request " + id + ": HTTP " + resp.status;
  detail.hidden = false;
}

function drawChart(data) {
  const by = document.getElementById("usage-by").value;
  const metric = document.getElementById("usage-metric").value;
  const series = ((data.usage || {})[by] || []).slice(0, COLORS.length);
  // drawn at the container's width: text keeps its size on a phone and on a wide screen
  const W = Math.max(280, document.getElementById("chart").clientWidth || 640);
  const H = 220, L = 48, R = 20, T = 10, B = 24;
  const end = Math.floor(data.now / 3600) * 3600, start = end - 23 * 3600;
  let max = 0;
  for (const s of series) for (const p of s.points) max = Math.max(max, p[metric] || 0);
  max = max || 1;
  const x = (t) => L + (W - L - R) * (t - start) / (end - start);
  const y = (v) => H - B - (H - T - B) * v / max;
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img",
                           "aria-label": "usage per hour", id: "usage-chart"});
  root.append(svg("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#98a2b3"}));
  for (const f of [0, 0.5, 1]) {
    const label = svg("text", {x: L - 4, y: y(max * f) + 4, "text-anchor": "end",
                               "font-size": 10, fill: "#667085"});
    const v = max * f;
    label.textContent = max < 10 && v !== Math.round(v) ? v.toFixed(1) : String(Math.round(v));
    root.append(label);
  }
  for (const h of W < 480 ? [0, 12, 23] : [0, 6, 12, 18, 23]) {
    const t = start + h * 3600;
    const label = svg("text", {x: x(t), y: H - 6, "text-anchor": "middle", "font-size": 10,
                               fill: "#667085"});
    label.textContent = new Date(t * 1000).getHours() + ":00";
    root.append(label);
  }
  const legend = [];
  series.forEach((s, i) => {
    const color = COLORS[i];
    const pts = s.points.filter((p) => p.t >= start && p.t <= end)
                        .sort((a, b) => a.t - b.t);
    if (pts.length > 1) {
      root.append(svg("polyline", {fill: "none", stroke: color, "stroke-width": 2,
        points: pts.map((p) => x(p.t) + "," + y(p[metric] || 0)).join(" ")}));
    }
    for (const p of pts) {
      const dot = svg("circle", {cx: x(p.t), cy: y(p[metric] || 0), r: 3, fill: color,
                                 class: "point"});
      const tip = svg("title");
      tip.textContent = s.name + " " + new Date(p.t * 1000).getHours() + ":00: " +
                        (p[metric] || 0) + " " + metric;
      dot.append(tip);
      root.append(dot);
    }
    legend.push(el("span", {}, [el("i", {style: "background:" + color}), s.name]));
  });
  if (!series.length) {
    const none = svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#667085"});
    none.textContent = data.ledger ? "no requests in the last 24 hours" : "no ledger";
    root.append(none);
  }
  document.getElementById("chart").replaceChildren(root);
  document.getElementById("legend").replaceChildren(...legend);
}

function draw(data) {
  last = data;
  const status = document.getElementById("status");
  status.textContent = (data.ready ? "ready" : "not ready") + ": " + data.reason;
  status.className = data.ready ? "ok" : "bad";
  document.getElementById("fake").textContent = data.fake ? "FAKE CLI (canned replies)" : "";
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  drawPools(data);
  drawAccounts(data);
  drawRequests(data);
  drawChart(data);
}

async function poll() {
  try {
    const resp = await fetch(BASE + "/state", {headers: headers(), cache: "no-store"});
    if (resp.status === 401 || resp.status === 403) {
      document.getElementById("keyform").style.display = "flex";
      document.getElementById("status").textContent = "needs the admin key";
    } else if (resp.ok) {
      document.getElementById("keyform").style.display = "none";
      draw(await resp.json());
    } else {
      document.getElementById("status").textContent = "server answered HTTP " + resp.status;
    }
  } catch (err) {
    document.getElementById("status").textContent = "server unreachable (" + err.message + ")";
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("clibridge-admin-key", document.getElementById("key").value);
  document.getElementById("key").value = "";
});
for (const id of ["usage-by", "usage-metric"]) {
  document.getElementById(id).addEventListener("change", () => { if (last) drawChart(last); });
}
poll();
</script>
</body>
</html>
"""
