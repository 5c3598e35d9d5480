package status

// pageHTML is the whole page. {{.}} is the redacted snapshot JSON.
const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>walship status</title>
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2430; --muted:#6b7480; --line:#d9dde3; --ok:#1a9a5b; --warn:#d48806; --crit:#d0312d; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; background:#1d2430; color:#fff; }
header h1 { margin:0; font-size:18px; font-weight:600; }
header .meta { color:#b8c0cc; font-size:13px; }
header .live { margin-left:auto; font-size:12px; color:#b8c0cc; }
main { padding:16px 24px; max-width:1280px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px; margin-bottom:16px; }
h2 { margin:0 0 8px; font-size:15px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); font-variant-numeric:tabular-nums; }
th { color:var(--muted); font-weight:500; font-size:12px; }
.num { text-align:right; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; color:#fff; background:var(--warn); }
.badge.ok, .badge.up, .badge.snapshotting { background:var(--ok); } .badge.critical, .badge.failed, .badge.down { background:var(--crit); }
.warnings { list-style:none; margin:0; padding:0; }
.warnings li { padding:6px 10px; margin:4px 0; border-left:4px solid var(--warn); background:#fff8e6; }
.warnings li.critical { border-color:var(--crit); background:#fdecec; }
.muted { color:var(--muted); }
.charts { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
.legend { font-size:12px; color:var(--muted); margin-top:4px; }
.legend span { margin-right:12px; white-space:nowrap; }
.legend i { display:inline-block; width:10px; height:3px; margin-right:4px; vertical-align:middle; }
svg text { font:12px system-ui, sans-serif; fill:var(--ink); }
svg .small { font-size:11px; fill:var(--muted); }
#error { display:none; color:var(--crit); }
</style>
</head>
<body>
<header><h1 id="title">walship</h1><span class="meta" id="meta"></span><span class="live" id="live">embedded data</span></header>
<main>
<section id="warnings-section"><h2>Warnings</h2><ul class="warnings" id="warnings"></ul><p id="error"></p></section>
<section><h2>Pipeline</h2><svg id="pipeline" width="100%" viewBox="0 0 1000 120" role="img" aria-label="pipeline"></svg></section>
<section><div class="charts">
 <div><h2>Lag, last hour</h2><svg id="chart-lag" class="chart" width="100%" viewBox="0 0 600 220" role="img" aria-label="lag chart"></svg><div class="legend" id="legend-lag"></div></div>
 <div><h2>Throughput, last hour (records/s)</h2><svg id="chart-rate" class="chart" width="100%" viewBox="0 0 600 220" role="img" aria-label="throughput chart"></svg><div class="legend" id="legend-rate"></div></div>
</div></section>
<section><h2>Dependencies</h2><table id="dependencies"><thead><tr><th>dependency</th><th>needed for readiness</th><th>state</th><th>since</th><th>last error</th><th>at</th></tr></thead><tbody></tbody></table></section>
<section id="group-section" style="display:none"><h2>HA group</h2><p id="group"></p><table id="members"><thead><tr><th>member</th><th>role</th><th class="num">position</th><th>last heard</th></tr></thead><tbody></tbody></table></section>
<section><h2>Positions</h2><table id="positions"><thead><tr><th>component</th><th>kind</th><th>target</th><th class="num">LSN</th><th class="num">lag records</th><th class="num">lag bytes</th><th class="num">lag</th><th>state</th></tr></thead><tbody></tbody></table></section>
<section><h2>Lag objectives</h2><table id="objectives"><thead><tr><th>component</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th class="num">p99.9</th><th class="num">samples</th><th>state</th></tr></thead><tbody></tbody></table></section>
<section><h2>Archive</h2><div id="archive" class="muted">no archive configured</div></section>
</main>
<script id="initial" type="application/json">{{.}}</script>
<script>
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fdf", "#e8590c", "#2b9348", "#9c36b5", "#c2255c", "#0b7285", "#e67700", "#5c940d"];
const colors = {};
function colorOf(c) { if (!(c in colors)) colors[c] = PALETTE[Object.keys(colors).length % PALETTE.length]; return colors[c]; }
function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmtDur(s) {
  if (s === undefined || s === null) return "";
  if (s < 0.001) return Math.round(s * 1e6) + " µs";
  if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 0) + " ms";
  if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fmtNum(n) { return Number(n || 0).toLocaleString("en-US"); }
function fmtBytes(b) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; b = Number(b || 0);
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + " " + u[i];
}
function fmtRate(r) { return r >= 1000 ? (r / 1000).toFixed(1) + "k" : r >= 10 ? r.toFixed(0) : r.toFixed(1); }
function fmtTime(t) { if (!t || t.startsWith("0001")) return "—"; return new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"); }
// levelOf is the state to show: a missing one is "unknown", never ok.
function levelOf(s) { return s || "unknown"; }
// colourOf: only a state that says all is well is green; down or failed
// is red; anything else (unknown, retrying, degraded, ...) is amber.
function colourOf(s) {
  s = levelOf(s);
  if (s === "ok" || s === "up" || s === "snapshotting") return "#1a9a5b";
  if (s === "failed" || s === "critical" || s === "down") return "#d0312d";
  return "#d48806";
}

function box(svg, x, y, w, h, title, lines, state, id) {
  const g = el("svg:g", {id: id, "data-state": levelOf(state)});
  g.appendChild(el("svg:rect", {x: x, y: y, width: w, height: h, rx: 8, fill: "#fff", stroke: colourOf(state), "stroke-width": 2}));
  g.appendChild(el("svg:text", {x: x + 12, y: y + 20, "font-weight": 600}, title));
  lines.forEach((l, i) => g.appendChild(el("svg:text", {x: x + 12, y: y + 38 + i * 16, class: i ? "small" : ""}, l)));
  svg.appendChild(g);
}
function arrow(svg, x1, y1, x2, y2) {
  svg.appendChild(el("svg:path", {d: "M" + x1 + " " + y1 + " C" + (x1 + 60) + " " + y1 + " " + (x2 - 60) + " " + y2 + " " + x2 + " " + y2, fill: "none", stroke: "#8a94a3", "stroke-width": 2}));
  svg.appendChild(el("svg:path", {d: "M" + x2 + " " + y2 + " l-8 -5 v10 z", fill: "#8a94a3"}));
}
function drawPipeline(s) {
  const svg = document.getElementById("pipeline");
  svg.replaceChildren();
  const sinks = s.sinks || [];
  const bh = 76, gap = 12;
  const H = Math.max(120, sinks.length * (bh + gap) + 20);
  svg.setAttribute("viewBox", "0 0 1000 " + H);
  const mid = H / 2;
  if (s.source) {
    const so = s.source;
    const lines = ["LSN " + fmtNum(so.lsn) + (so.position ? "  ·  source " + so.position : ""),
      (so.slot_bytes ? "slot lag " + fmtBytes(so.slot_bytes) + "  ·  " : "") + "lag " + fmtDur(so.lag) + (so.error ? "  ·  " + so.error : "")];
    if (so.incremental) lines.push("incremental " + (so.incremental.table || "") + " " + fmtNum(so.incremental.rows) +
      " rows  ·  " + so.incremental.pending + " pending");
    box(svg, 10, mid - bh / 2, 300, bh, "source: " + so.kind + " " + (so.name || ""), lines, so.state, "node-source");
    arrow(svg, 310, mid, 360, mid);
  }
  if (s.wal) {
    const w = s.wal;
    box(svg, 362, mid - bh / 2, 280, bh, "WAL", ["LSN " + fmtNum(w.first_lsn) + " … " + fmtNum(w.visible_lsn),
      w.segments + " segments  ·  " + fmtBytes(w.size_bytes) + (w.error ? "  ·  " + w.error : "")], w.state, "node-wal");
  }
  sinks.forEach((k, i) => {
    const y = 10 + i * (bh + gap) + (H - 20 - sinks.length * (bh + gap) + gap) / 2;
    arrow(svg, 642, mid, 690, y + bh / 2);
    box(svg, 692, y, 300, bh, k.kind + ": " + k.name, ["LSN " + fmtNum(k.lsn) + "  ·  lag " + fmtDur(k.lag),
      fmtNum(k.lag_records) + " records behind" + (k.error ? "  ·  " + k.error : "")], k.state, "node-" + k.kind + "-" + k.name);
  });
}

function drawChart(id, legendId, series, value, fmt, now) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const W = 600, H = 220, L = 64, R = 10, T = 10, B = 24;
  const pw = W - L - R, ph = H - T - B;
  const end = now, start = end - 3600e3;
  let ymax = 0;
  series.forEach(s => s.points.forEach(p => { ymax = Math.max(ymax, value(p)); }));
  ymax = ymax > 0 ? ymax * 1.1 : 1;
  const plot = el("svg:rect", {x: L, y: T, width: pw, height: ph, fill: "#fff", class: "plot"});
  svg.appendChild(plot);
  for (let i = 0; i <= 4; i++) {
    const y = T + ph - ph * i / 4;
    svg.appendChild(el("svg:line", {x1: L, x2: L + pw, y1: y, y2: y, stroke: "#e3e6ea"}));
    svg.appendChild(el("svg:text", {x: L - 6, y: y + 4, "text-anchor": "end", class: "small"}, fmt(ymax * i / 4)));
  }
  for (let m = 0; m <= 60; m += 15) {
    const x = L + pw * m / 60;
    svg.appendChild(el("svg:text", {x: x, y: H - 6, "text-anchor": "middle", class: "small"}, m === 60 ? "now" : "-" + (60 - m) + "m"));
  }
  const legend = document.getElementById(legendId);
  legend.replaceChildren();
  let drawn = 0;
  series.forEach(s => {
    const pts = s.points.map(p => {
      const x = L + pw * (Date.parse(p.t) - start) / (end - start);
      const y = T + ph - ph * value(p) / ymax;
      return [Math.max(L, Math.min(L + pw, x)), y];
    });
    if (pts.length === 0) return;
    if (pts.length === 1) pts.push([pts[0][0] + 2, pts[0][1]]);
    const line = el("svg:polyline", {points: pts.map(p => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "),
      fill: "none", stroke: colorOf(s.component), "stroke-width": 2, "stroke-linejoin": "round", "data-component": s.component});
    svg.appendChild(line);
    drawn += pts.length;
    const item = el("span");
    const sw = el("i"); sw.style.background = colorOf(s.component);
    item.append(sw, s.component);
    legend.appendChild(item);
  });
  if (!drawn) svg.appendChild(el("svg:text", {x: L + pw / 2, y: T + ph / 2, "text-anchor": "middle", class: "small"}, "no data yet"));
  svg.setAttribute("data-points", drawn);
  // The plot's on-page box, for tests and tools that look at pixels.
  const r = plot.getBoundingClientRect();
  svg.setAttribute("data-bbox", [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round).join(","));
}

function cell(tr, text, cls) { const td = el("td", cls ? {class: cls} : {}, text); tr.appendChild(td); return td; }
function badge(state) { return el("span", {class: "badge " + levelOf(state)}, levelOf(state)); }

function render(s) {
  document.getElementById("title").textContent = s.title || "walship";
  document.getElementById("meta").textContent = [s.role, s.host, s.version, "as of " + fmtTime(s.time)].filter(Boolean).join("  ·  ");
  const ws = document.getElementById("warnings");
  ws.replaceChildren();
  (s.warnings || []).forEach(w => ws.appendChild(el("li", {class: w.level}, w.component + ": " + w.message + (w.since ? " (since " + fmtTime(w.since) + ")" : ""))));
  if (!ws.children.length) ws.appendChild(el("li", {class: "muted", style: "border-color:#1a9a5b;background:#eefaf3"}, "no warnings"));
  drawPipeline(s);

  const now = Date.parse(s.time);
  const series = s.series || [];
  drawChart("chart-lag", "legend-lag", series.filter(x => x.component !== "wal"), p => p.lag, fmtDur, now);
  drawChart("chart-rate", "legend-rate", series, p => p.rate, fmtRate, now);

  const tb = document.querySelector("#positions tbody");
  tb.replaceChildren();
  const rows = [];
  if (s.source) rows.push({c: "source/" + s.source.kind, kind: s.source.kind, target: s.source.name, lsn: s.source.lsn, lr: "", lb: s.source.slot_bytes ? fmtBytes(s.source.slot_bytes) : "", lag: s.source.lag, state: s.source.state});
  if (s.wal) rows.push({c: "wal", kind: "wal", target: s.wal.dir, lsn: s.wal.visible_lsn, lr: "", lb: fmtBytes(s.wal.size_bytes), lag: null, state: s.wal.state});
  (s.sinks || []).forEach(k => rows.push({c: k.kind + "/" + k.name, kind: k.kind, target: k.target, lsn: k.lsn, lr: fmtNum(k.lag_records), lb: fmtBytes(k.lag_bytes), lag: k.lag, state: k.state}));
  rows.forEach(r => {
    const tr = el("tr", {"data-component": r.c});
    cell(tr, r.c); cell(tr, r.kind); cell(tr, r.target || "");
    cell(tr, fmtNum(r.lsn), "num lsn"); cell(tr, r.lr, "num"); cell(tr, r.lb, "num"); cell(tr, r.lag === null ? "" : fmtDur(r.lag), "num");
    cell(tr, "").appendChild(badge(r.state));
    tb.appendChild(tr);
  });

  const db = document.querySelector("#dependencies tbody");
  db.replaceChildren();
  (s.dependencies || []).forEach(d => {
    const tr = el("tr", {"data-dependency": d.name, "data-state": d.state});
    cell(tr, d.name); cell(tr, d.required ? "yes" : "no (degraded when down)");
    cell(tr, "").appendChild(badge(d.state));
    cell(tr, fmtTime(d.since)); cell(tr, d.error || "—"); cell(tr, fmtTime(d.error_at));
    db.appendChild(tr);
  });
  if (!db.children.length) { const tr = el("tr"); cell(tr, "no external dependencies", "muted"); db.appendChild(tr); }

  const g = s.group;
  document.getElementById("group-section").style.display = g ? "" : "none";
  if (g) {
    document.getElementById("group").textContent = "group " + g.name + " · this member " + g.member + " is " + g.role +
      " · leader " + (g.leader || "none") + " · term " + g.term + (g.role === "leader" ? " · lease left " + fmtDur(g.lease_left) : "") +
      (g.loss ? " · LOST: " + g.loss : "");
    const mb = document.querySelector("#members tbody");
    mb.replaceChildren();
    (g.members || []).forEach(m => {
      const tr = el("tr", {"data-member": m.name, "data-role": m.role});
      cell(tr, m.name); cell(tr, m.role); cell(tr, fmtNum(m.position), "num"); cell(tr, fmtTime(m.seen));
      mb.appendChild(tr);
    });
  }

  const ob = document.querySelector("#objectives tbody");
  ob.replaceChildren();
  (s.lag || []).forEach(l => {
    const tr = el("tr", {"data-component": l.component, title: l.breach || ""});
    cell(tr, l.component);
    [l.p50, l.p95, l.p99, l.p999].forEach(v => cell(tr, l.samples ? fmtDur(v) : "—", "num"));
    cell(tr, fmtNum(l.samples), "num");
    cell(tr, "").appendChild(badge(l.level));
    ob.appendChild(tr);
  });
  if (!ob.children.length) { const tr = el("tr"); cell(tr, "no lag samples yet", "muted"); ob.appendChild(tr); }

  const a = document.getElementById("archive");
  a.replaceChildren();
  if (s.archive) {
    const ar = s.archive;
    a.className = "";
    const p = el("p");
    p.append(el("b", {}, "PITR window: "), el("span", {id: "pitr-oldest"}, fmtTime(ar.oldest)), " → ", el("span", {id: "pitr-newest"}, fmtTime(ar.newest)),
      "  ·  " + fmtNum(ar.segments) + " segments  ·  " + (ar.encrypted ? "encrypted (key " + ar.key_id + ")" : "not encrypted") + "  ·  " + ar.url);
    a.appendChild(p);
    const t = el("table", {id: "snapshots"});
    t.innerHTML = "<thead><tr><th>snapshot LSN</th><th>commit time</th><th class=num>size</th></tr></thead>";
    const b = el("tbody");
    (ar.snapshots || []).forEach(sn => { const tr = el("tr"); cell(tr, fmtNum(sn.lsn), "lsn"); cell(tr, fmtTime(sn.time)); cell(tr, fmtBytes(sn.size), "num"); b.appendChild(tr); });
    if (!b.children.length) { const tr = el("tr"); cell(tr, "no base snapshots yet", "muted"); b.appendChild(tr); }
    t.appendChild(b);
    a.appendChild(t);
  }
  document.body.setAttribute("data-rendered", s.time);
}

render(JSON.parse(document.getElementById("initial").textContent));
async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.getElementById("live").textContent = "live · updated " + new Date().toLocaleTimeString();
    document.getElementById("error").style.display = "none";
  } catch (e) {
    const er = document.getElementById("error");
    er.textContent = "live updates failed: " + e.message + " (showing the last data)";
    er.style.display = "block";
  }
}
setInterval(poll, 2000);
</script>
</body>
</html>
`
