"""The web page the service serves at ``/``: plain HTML and JavaScript, no build step.

Instruments with their state and queue, campaigns with a live convergence plot (SVG,
redrawn from the WebSocket stream), the live event log. The token is taken from the
address (``/#token=...``, then kept in the browser's localStorage) or typed in.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sdl cloud lab</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em; color: #222; }
 h1 { font-size: 1.3em; margin: 0 0 .4em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
 table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
 .state-running { color: #06c; } .state-paused { color: #c60; } .state-idle { color: #090; }
 .muted { color: #888; } #log { height: 12em; overflow: auto; font: 12px monospace; background: #f7f7f7; padding: 4px; }
 #campaigns tr { cursor: pointer; } #campaigns tr.sel { background: #eef; }
 svg { background: #fcfcfc; border: 1px solid #ddd; }
</style>
</head>
<body>
<h1>sdl cloud lab</h1>
<div id="login">
  token <input id="token" size="50" type="password" autocomplete="off"> <button id="save">use</button>
  <a id="signin" href="/api/auth/login" hidden>sign in with your institution</a>
  <span id="status" class="muted">not connected</span>
</div>
<h2>Instruments</h2>
<table id="instruments"><thead><tr><th>name</th><th>state</th><th>queued</th><th>running</th><th>dedicated</th><th>plans</th></tr></thead><tbody></tbody></table>
<h2>Queue <span id="queue-title" class="muted"></span></h2>
<table id="queue"><thead><tr><th>#</th><th>id</th><th>kind</th><th>status</th><th>proposal</th><th>plan</th><th>parameters</th></tr></thead><tbody></tbody></table>
<h2>Campaigns</h2>
<table id="campaigns"><thead><tr><th>id</th><th>instrument</th><th>agent</th><th>state</th><th>progress</th><th>best</th></tr></thead><tbody></tbody></table>
<h2>Convergence <span id="plot-title" class="muted"></span></h2>
<svg id="plot" width="640" height="300" viewBox="0 0 640 300"></svg>
<h2>Live events</h2>
<div id="log"></div>
<script>
"use strict";
const $ = (s) => document.querySelector(s);
let token = "", selected = null, campaigns = {}, ws = null, instrument = null;
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) { localStorage.setItem("sdl_token", hash.get("token")); history.replaceState(null, "", location.pathname); }
token = localStorage.getItem("sdl_token") || "";
$("#token").value = token;
fetch("/health").then(r => r.json()).then(h => { if (h.sign_in) $("#signin").hidden = false; }).catch(() => {});
$("#save").onclick = () => { token = $("#token").value.trim(); localStorage.setItem("sdl_token", token); start(); };

async function api(path) {
  const r = await fetch("/api" + path, { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) throw new Error(r.status + " " + (await r.text()));
  return r.json();
}
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c])); }
function fmt(v) { return v == null ? "-" : (typeof v === "number" ? v.toPrecision(4) : esc(v)); }
function log(text) { const el = $("#log"); const d = document.createElement("div"); d.textContent = new Date().toLocaleTimeString() + " " + text; el.prepend(d); while (el.childNodes.length > 200) el.removeChild(el.lastChild); }

async function refreshInstruments() {
  const list = await api("/instruments");
  $("#instruments tbody").innerHTML = list.map(i =>
    `<tr data-name="${esc(i.name)}"><td>${esc(i.name)}</td><td class="state-${esc(i.status.state)}">${esc(i.status.state)}</td>` +
    `<td>${i.queue_length}</td><td>${i.status.current_item ? esc(i.status.current_item.slice(0, 8)) : "-"}</td>` +
    `<td>${(100 * i.dedicated_fraction).toFixed(0)} %</td><td>${Object.keys(i.plans).map(esc).join(", ")}</td></tr>`).join("");
  if (!instrument && list.length) instrument = list[0].name;
  document.querySelectorAll("#instruments tbody tr").forEach(tr => { tr.style.cursor = "pointer"; tr.onclick = () => { instrument = tr.dataset.name; refreshQueue(); }; });
  await refreshQueue();
}
async function refreshQueue() {
  if (!instrument) return;
  const q = await api("/instruments/" + encodeURIComponent(instrument) + "/queue?limit=50");
  $("#queue-title").textContent = instrument + " (" + q.length + " shown; predicted order)";
  $("#queue tbody").innerHTML = q.map(x =>
    `<tr><td>${x.position}</td><td>${esc(x.id.slice(0, 8))}</td><td>${esc(x.kind)}</td><td>${esc(x.status)}${x.blocked ? " (held)" : ""}</td>` +
    `<td>${x.redacted ? (x.proposal_id ? esc(x.proposal_id) : "<i>other proposal</i>") : esc(x.proposal_id)}</td><td>${esc(x.plan || "")}</td>` +
    `<td>${x.parameters ? esc(Object.entries(x.parameters).map(([k, v]) => k + "=" + (typeof v === "number" ? v.toPrecision(3) : v)).join(" ")) : ""}</td></tr>`).join("");
}
async function refreshCampaigns() {
  const list = await api("/campaigns");
  campaigns = {}; list.forEach(c => campaigns[c.id] = c);
  if (!selected && list.length) selected = list[list.length - 1].id;
  $("#campaigns tbody").innerHTML = list.map(c =>
    `<tr data-id="${esc(c.id)}" class="${c.id === selected ? "sel" : ""}"><td>${esc(c.id.slice(0, 8))}</td><td>${esc(c.instrument)}</td>` +
    `<td>${esc(c.agent)}</td><td>${esc(c.state)}</td><td>${c.experiments}/${c.budget}</td><td>${fmt(c.best && c.best.value)}</td></tr>`).join("");
  document.querySelectorAll("#campaigns tbody tr").forEach(tr => tr.onclick = () => { selected = tr.dataset.id; refreshCampaigns(); });
  if (selected) await drawSelected();
}
async function drawSelected() {
  const c = await api("/campaigns/" + selected + "/observations");
  const info = campaigns[selected] || {};
  const name = info.objective ? info.objective.name : "value";
  const sign = info.objective && info.objective.direction === "minimize" ? -1 : 1;
  const ys = c.map(o => (o.ok && o.values[name] != null) ? o.values[name] : null);
  let best = null; const trace = ys.map(v => { if (v != null && (best == null || sign * (v - best) > 0)) best = v; return best; });
  $("#plot-title").textContent = selected.slice(0, 8) + " " + name + " (" + (info.objective ? info.objective.direction : "") + ")";
  draw(ys, trace, Math.max(info.budget || 1, ys.length));
}
function draw(ys, trace, n) {
  const W = 640, H = 300, L = 50, R = 10, T = 10, B = 30;
  const vals = ys.filter(v => v != null);
  const svg = $("#plot");
  if (!vals.length) { svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no observations yet</text>`; return; }
  let lo = Math.min(...vals), hi = Math.max(...vals); if (hi === lo) { hi += 1; lo -= 1; }
  const x = i => L + (W - L - R) * (i + 1) / Math.max(n, 1), y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  let s = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>`;
  s += `<text x="${L - 4}" y="${y(hi) + 4}" text-anchor="end" font-size="11">${hi.toPrecision(3)}</text><text x="${L - 4}" y="${y(lo) + 4}" text-anchor="end" font-size="11">${lo.toPrecision(3)}</text>`;
  s += `<text x="${W - R}" y="${H - 8}" text-anchor="end" font-size="11">experiment ${n}</text>`;
  ys.forEach((v, i) => { if (v != null) s += `<circle class="obs" cx="${x(i)}" cy="${y(v)}" r="3" fill="#999"/>`; });
  let d = ""; trace.forEach((v, i) => { if (v == null) return; d += (d ? ` H${x(i)} V${y(v)}` : `M${x(i)} ${y(v)}`); });
  if (d) s += `<path id="best" d="${d}" fill="none" stroke="#06c" stroke-width="2"/>`;
  svg.innerHTML = s;
}
let queueTimer = null;
function refreshQueueSoon() { if (!queueTimer) queueTimer = setTimeout(() => { queueTimer = null; refreshQueue().catch(() => {}); }, 500); }
function connect() {
  if (ws) ws.close();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  // the token travels as a subprotocol, not in the address (addresses end up in logs)
  ws = new WebSocket(`${proto}://${location.host}/api/stream?types=campaign,queue,instrument`, ["sdl.bearer", token]);
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "hello") { $("#status").textContent = "live as " + e.user + " (" + e.role + ")"; return; }
    if (e.type === "campaign") { log(`campaign ${e.campaign_id.slice(0, 8)} ${e.event}` + (e.event === "observation" ? ` n=${e.n} best=${fmt(e.best)}` : (e.state ? " " + e.state : "")));
      if (e.campaign_id === selected && (e.event === "observation" || e.event === "state")) refreshCampaigns(); }
    else if (e.type === "queue") { log(`${e.instrument} item ${e.item_id.slice(0, 8)} ${e.status}`); if (e.instrument === instrument) refreshQueueSoon(); }
    else if (e.type === "instrument") { log(`${e.instrument} ${e.state}`); refreshInstruments(); }
  };
  ws.onclose = () => { $("#status").textContent = "stream closed; reconnecting"; setTimeout(connect, 2000); };
}
async function start() {
  if (!token) { $("#status").textContent = "enter a token"; return; }
  try { const me = await api("/me"); $("#status").textContent = "signed in as " + me.name + " (" + me.role + ")"; }
  catch (e) { $("#status").textContent = "sign-in failed: " + e.message; return; }
  await refreshInstruments(); await refreshCampaigns(); connect();
}
setInterval(() => { if (token) { refreshInstruments().catch(() => {}); refreshCampaigns().catch(() => {}); } }, 3000);
start();
</script>
</body>
</html>
"""
