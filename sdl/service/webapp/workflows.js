// Workflows and samples: the user's workflow campaigns and workflows, a workflow's task
// graph (hand-written SVG) with each task's state following the stream's task events, and
// a sample's page (state, location, what made it, its history in order, its runs). Every
// read goes through the API, so its access rules are the page's: a sample of a proprietary
// proposal one is not a member of answers 404, and the page says so.
import { api, stream, download, html, fmt, state, short } from "./api.js";

/** The task states the API returns, each with a symbol (no meaning rests on colour). */
export const TASK_SYMBOL = { waiting: "?", ready: "…", running: "▶", done: "✓", failed: "✗", skipped: "↷", cancelled: "⊘" };
const FINAL = ["done", "failed", "skipped", "cancelled"];
const when = (iso) => (iso ? String(iso).replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/\+00:00$|Z$/, " UTC") : "–");
const params = (p) => Object.entries(p || {}).map(([k, v]) => `${k}=${fmt(v, 3)}`).join(" ");
const enc = encodeURIComponent;
/** {"values": {"fom": 0.2679}, "was": "x"} -> "values.fom=0.268 was=x" (a history row's detail, short). */
function flat(o, pre = "") {
  return Object.entries(o || {}).map(([k, v]) => (v && typeof v === "object" && !Array.isArray(v) ? flat(v, `${pre}${k}.`)
    : `${pre}${k}=${typeof v === "number" ? fmt(v, 3) : Array.isArray(v) ? `[${v.length}]` : v}`)).join(" ");
}

/** Lay the tasks out by depth (a task one column right of its last dependency) and draw
 *  them as boxes joined by arrows; each box says its task's name, station and state. */
export function taskGraph(tasks, gated = new Set()) {
  const by = Object.fromEntries(tasks.map((t) => [t.name, t]));
  const depth = {};
  const d = (n, path = new Set()) => {
    if (n in depth) return depth[n];
    if (path.has(n) || !by[n]) return 0; // the API validated the graph; never loop on a bad one
    path.add(n);
    depth[n] = by[n].after.length ? 1 + Math.max(...by[n].after.map((a) => d(a, path))) : 0;
    return depth[n];
  };
  tasks.forEach((t) => d(t.name));
  const cols = [];
  for (const t of tasks) (cols[depth[t.name]] = cols[depth[t.name]] || []).push(t);
  const W = 176, H = 62, GX = 56, GY = 16, PAD = 12;
  const rows = Math.max(1, ...cols.map((c) => c.length));
  const width = PAD * 2 + cols.length * W + (cols.length - 1) * GX, height = PAD * 2 + rows * H + (rows - 1) * GY;
  const pos = {};
  cols.forEach((col, i) => col.forEach((t, j) => {
    pos[t.name] = { x: PAD + i * (W + GX), y: PAD + ((rows - col.length) * (H + GY)) / 2 + j * (H + GY) };
  }));
  const edges = tasks.flatMap((t) => t.after.filter((a) => pos[a]).map((a) => {
    const x1 = pos[a].x + W, y1 = pos[a].y + H / 2, x2 = pos[t.name].x - 3, y2 = pos[t.name].y + H / 2, m = (x1 + x2) / 2;
    return html`<path class="edge" d="M${x1},${y1} C${m},${y1} ${m},${y2} ${x2},${y2}" marker-end="url(#wf-arrow)"><title>${a} → ${t.name}</title></path>`;
  }));
  const nodes = tasks.map((t) => {
    const { x, y } = pos[t.name];
    const where = t.instrument || (t.kind === "reduce" ? "reduction" : t.kind);
    const extra = [gated.has(t.name) ? "gated" : "", t.attempts > 1 ? `attempt ${t.attempts}` : ""].filter(Boolean).join(", ");
    return html`<g class="task st-${t.status}" data-task="${t.name}" data-status="${t.status}" transform="translate(${x},${y})">
      <title>${t.name} (${t.kind}${t.instrument ? " on " + t.instrument : ""}): ${t.status}${t.attempts ? `, attempts ${t.attempts}` : ""}${t.error ? ": " + t.error : ""}</title>
      <rect width="${W}" height="${H}" rx="6"></rect>
      <text class="name" x="10" y="18">${t.name}</text>
      <text x="10" y="35">${where}${extra ? ` (${extra})` : ""}</text>
      <text class="st" x="10" y="53">${TASK_SYMBOL[t.status] || "·"} ${t.status}</text></g>`;
  });
  return html`<svg class="graph" role="img" aria-labelledby="wf-graph-title" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">
    <title id="wf-graph-title">Task graph: ${tasks.map((t) => `${t.name} ${t.status}`).join(", ")}</title>
    <defs><marker id="wf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z"></path></marker></defs>
    ${edges}${nodes}</svg>`.s;
}

function progress(wf) {
  const done = wf.tasks.filter((t) => FINAL.includes(t.status)).length;
  const running = wf.tasks.filter((t) => t.status === "running").map((t) => t.name);
  return `${done}/${wf.tasks.length} ended${running.length ? `; running: ${running.join(", ")}` : ""}`;
}
const sampleOf = (wf) => (wf.tasks.find((t) => t.sample_id) || {}).sample_id;

/** Call `f` at most once per `ms` (the stream can bring many events at once). */
function soon(f, ms) {
  let t = null;
  const call = () => { if (!t) t = setTimeout(() => { t = null; f(); }, ms); };
  call.cancel = () => clearTimeout(t);
  return call;
}

// ------------------------------------------------------------------ the list
export async function workflowsView({ view, onLeave }) {
  view.innerHTML = html`<h2>Workflows</h2>
    <p class="muted">Workflows run one sample through several stations (see <code>docs/workflows.md</code>); a workflow campaign runs one per point its agent asks for. <span id="wf-live">connecting…</span></p>
    <h3>Workflow campaigns</h3><div id="wf-campaigns" class="table-wrap"></div>
    <h3>Workflows <span class="muted">(newest first)</span></h3><div id="wf-list" class="table-wrap"></div>`.s;
  const $ = (s) => view.querySelector(s);
  async function draw() {
    const wfs = (await api("/workflows?limit=300")).reverse();
    const cids = [...new Set(wfs.map((w) => w.campaign_id).filter(Boolean))].slice(0, 30);
    const camps = (await Promise.all(cids.map((c) => api(`/workflow-campaigns/${enc(c)}`).catch(() => null)))).filter(Boolean);
    $("#wf-campaigns").innerHTML = camps.length ? html`<table id="wf-campaigns-table"><thead><tr><th>id</th><th>name</th><th>state</th>
      <th class="num">workflows / budget</th><th class="num">observations</th><th>proposal</th></tr></thead>
      <tbody>${camps.map((c) => html`<tr data-id="${c.id}"><td><a href="#/workflow-campaigns/${enc(c.id)}">${short(c.id)}</a></td><td>${c.name}</td>
        <td>${state(c.status)}</td><td class="num">${c.workflows.length} / ${c.budget}</td><td class="num">${c.observations.length}</td>
        <td><a href="#/proposals/${enc(c.proposal_id)}">${c.proposal_id}</a></td></tr>`)}</tbody></table>`.s
      : html`<p class="muted">No workflow campaign you can see. Start one with <code>POST /api/workflow-campaigns</code> or <code>sdl workflow run</code>.</p>`.s;
    $("#wf-list").innerHTML = wfs.length ? html`<table id="wf-table"><caption class="muted">${wfs.length} workflow(s) you can see</caption>
      <thead><tr><th>id</th><th>campaign</th><th>state</th><th>tasks</th><th>sample</th><th>parameters</th><th>proposal</th></tr></thead>
      <tbody>${wfs.slice(0, 200).map((w) => { const smp = sampleOf(w); return html`<tr data-id="${w.id}"><td><a href="#/workflows/${enc(w.id)}">${short(w.id)}</a></td>
        <td>${w.campaign_id ? html`<a href="#/workflow-campaigns/${enc(w.campaign_id)}">${short(w.campaign_id)}</a>` : "single"}</td>
        <td>${state(w.status)}</td><td>${progress(w)}</td><td>${smp ? html`<a href="#/samples/${enc(smp)}">${short(smp)}</a>` : "–"}</td>
        <td>${params(w.params)}</td><td>${w.proposal_id}</td></tr>`; })}</tbody></table>`.s
      : html`<p class="muted">No workflow you can see.</p>`.s;
  }
  await draw();
  const later = soon(() => draw().catch(() => {}), 2500); // a busy lab sends many task events: redraw at most every 2.5 s
  const s = stream({ types: "task" }, () => later(), (st) => { $("#wf-live").textContent = st === "live" ? "Live." : st; });
  const t = setInterval(later, 5000);
  onLeave(() => { s.close(); clearInterval(t); later.cancel(); });
}

// ------------------------------------------------------------ one workflow
export async function workflowView({ view, me, onLeave }, id) {
  let wf = await api(`/workflows/${enc(id)}`);
  const gated = new Set((wf.spec.tasks || []).filter((t) => t.gate).map((t) => t.name));
  const member = me.proposals && wf.proposal_id in me.proposals;
  let liveN = 0;
  view.innerHTML = html`<h2>Workflow ${short(wf.id)}</h2>
    <dl class="row"><dt>state</dt><dd id="wf-state">${state(wf.status)}</dd>
      <dt>campaign</dt><dd>${wf.campaign_id ? html`<a href="#/workflow-campaigns/${enc(wf.campaign_id)}">${short(wf.campaign_id)}</a>` : "single submission"}</dd>
      <dt>proposal</dt><dd><a href="#/proposals/${enc(wf.proposal_id)}">${wf.proposal_id}</a></dd>
      <dt>sample</dt><dd id="wf-sample">–</dd><dt>parameters</dt><dd>${params(wf.params)}</dd>
      <dt>live</dt><dd><span id="wf-live">connecting…</span> (<span id="wf-live-n" data-n="0">0</span> task events)</dd></dl>
    <p id="wf-message" class="muted"></p>
    ${member ? html`<form id="wf-cancel" class="row" novalidate aria-label="cancel the workflow"><label for="wf-reason">reason</label>
      <input id="wf-reason" size="30"><button type="submit">Cancel workflow</button><span id="wf-cancel-result" role="status"></span></form>` : ""}
    <h3>Task graph</h3><div id="wf-graph" class="graph-wrap"></div>
    <p class="hint">${Object.entries(TASK_SYMBOL).map(([k, v]) => `${v} ${k}`).join(" · ")}. A task runs on its station once those before it have ended; the sample is at one station at a time.</p>
    <h3>Tasks</h3><div id="wf-tasks" class="table-wrap"></div>
    <h3>Values</h3><div id="wf-values"></div>`.s;
  const $ = (s) => view.querySelector(s);
  function draw() {
    $("#wf-graph").innerHTML = taskGraph(wf.tasks, gated);
    $("#wf-state").innerHTML = state(wf.status).s;
    $("#wf-message").textContent = wf.message || "";
    const smp = sampleOf(wf);
    $("#wf-sample").innerHTML = smp ? html`<a href="#/samples/${enc(smp)}">${smp}</a>`.s : "not made yet";
    $("#wf-tasks").innerHTML = html`<table id="wf-tasks-table"><thead><tr><th>task</th><th>kind</th><th>station</th><th>state</th>
      <th class="num">attempts</th><th>worker</th><th>run</th><th>result</th><th>error</th></tr></thead>
      <tbody>${wf.tasks.map((t) => html`<tr data-task="${t.name}" data-status="${t.status}"><td>${t.name}${gated.has(t.name) ? " (gated)" : ""}</td><td>${t.kind}</td>
        <td>${t.instrument || "–"}</td><td>${state(t.status)}</td><td class="num">${t.attempts}</td><td>${t.worker || "–"}</td>
        <td>${t.run_uid ? html`<code title="${t.run_uid}">${short(t.run_uid)}</code>` : "–"}</td>
        <td>${t.result ? params(Object.fromEntries(Object.entries(t.result).filter(([, v]) => typeof v === "number"))) : ""}</td>
        <td>${t.error || ""}</td></tr>`)}</tbody></table>`.s;
    const vals = (wf.result && wf.result.values) || null;
    const gates = (wf.result && wf.result.gates) || {};
    $("#wf-values").innerHTML = html`${vals ? html`<p id="wf-result">${params(vals)}</p>` : html`<p class="muted">none yet (the reduce task gives them)</p>`}
      ${Object.entries(gates).map(([k, v]) => html`<p>gate ${k}: ${v ? "sent on" : "held back by the cascade"}</p>`)}`.s;
    if (!member || wf.status !== "running") { const f = $("#wf-cancel"); if (f) f.hidden = true; }
  }
  draw();
  let fetching = false;
  const refetch = soon(async () => {
    if (fetching) { refetch(); return; }
    fetching = true;
    try { wf = await api(`/workflows/${enc(id)}`); draw(); } catch { /* the next event or tick retries */ }
    fetching = false;
  }, 600);
  const s = stream({ types: "task" }, (e) => {
    if (e.type !== "task" || e.workflow_id !== wf.id) return;
    const t = wf.tasks.find((x) => x.name === e.task);
    if (t) { // the event in place at once, then the details (run, result) from the API
      Object.assign(t, { status: e.status, attempts: e.attempts, error: e.error || "" });
      if (e.sample_id) t.sample_id = e.sample_id;
      liveN += 1;
      $("#wf-live-n").textContent = liveN;
      $("#wf-live-n").dataset.n = liveN;
      draw();
    }
    refetch();
  }, (st) => { $("#wf-live").textContent = st; if (st === "live") refetch(); });
  const tick = setInterval(() => { if (wf.status === "running") refetch(); }, 4000); // a dropped event must not leave the page behind
  onLeave(() => { s.close(); clearInterval(tick); refetch.cancel(); });
  const form = $("#wf-cancel");
  if (form) form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      wf = await api(`/workflows/${enc(id)}/cancel`, { method: "POST", body: { reason: $("#wf-reason").value } });
      $("#wf-cancel-result").textContent = `now ${wf.status}`;
      draw();
    } catch (err) { $("#wf-cancel-result").textContent = err.message; }
  });
}

// ---------------------------------------------------------- a workflow campaign
export async function workflowCampaignView({ view, onLeave }, id) {
  let c = await api(`/workflow-campaigns/${enc(id)}`);
  view.innerHTML = html`<h2>Workflow campaign ${c.name || short(c.id)}</h2>
    <dl class="row"><dt>state</dt><dd id="wc-state">${state(c.status)}</dd><dt>workflows</dt><dd id="wc-n" class="live"></dd>
      <dt>proposal</dt><dd><a href="#/proposals/${enc(c.proposal_id)}">${c.proposal_id}</a></dd></dl>
    <p id="wc-message" class="muted"></p>
    <div class="row"><button type="button" id="wc-crate">Download RO-Crate (zip, with every sample's history)</button><span id="wc-result" role="status"></span></div>
    <h3>Observations <span class="muted">(one per workflow, the values its reduction gave)</span></h3><div id="wc-obs" class="table-wrap"></div>
    <h3>Samples</h3><div id="wc-samples" class="table-wrap"></div>`.s;
  const $ = (s) => view.querySelector(s);
  async function draw() {
    c = await api(`/workflow-campaigns/${enc(id)}`);
    const samples = await api(`/samples?campaign_id=${enc(id)}`);
    const wstate = Object.fromEntries(c.workflows.map((w) => [w.id, w.status]));
    $("#wc-state").innerHTML = state(c.status).s;
    $("#wc-n").textContent = `${c.workflows.length} / ${c.budget} (${c.workflows.filter((w) => w.status === "running").length} running)`;
    $("#wc-message").textContent = c.message || "";
    const observed = new Set(c.observations.map((o) => (o.extra || {}).workflow_id));
    const running = c.workflows.filter((w) => !observed.has(w.id));
    $("#wc-obs").innerHTML = html`<table id="wc-obs-table"><thead><tr><th>#</th><th>workflow</th><th>state</th><th>sample</th><th>parameters</th><th>values</th><th>measured at</th></tr></thead>
      <tbody>${c.observations.map((o, i) => { const x = o.extra || {}; return html`<tr><td>${i + 1}</td>
        <td>${x.workflow_id ? html`<a href="#/workflows/${enc(x.workflow_id)}">${short(x.workflow_id)}</a>` : "–"}</td>
        <td>${o.ok ? state(wstate[x.workflow_id] || "done") : html`${state("failed")} ${x.error || ""}`}</td>
        <td>${x.sample_id ? html`<a href="#/samples/${enc(x.sample_id)}">${short(x.sample_id)}</a>` : "–"}</td>
        <td>${params(o.params)}</td><td>${params(o.values)}${x.estimate_source ? ` (${x.estimate_source})` : ""}</td><td>${(x.measured || []).join(", ")}</td></tr>`; })}
        ${running.map((w) => html`<tr><td></td><td><a href="#/workflows/${enc(w.id)}">${short(w.id)}</a></td><td>${state(w.status)}</td><td colspan="4" class="muted">no observation yet</td></tr>`)}</tbody></table>`.s;
    $("#wc-samples").innerHTML = html`<table id="wc-samples-table"><thead><tr><th>sample</th><th>state</th><th>station</th><th>position</th><th>updated</th></tr></thead>
      <tbody>${samples.map((x) => html`<tr data-id="${x.id}"><td><a href="#/samples/${enc(x.id)}">${x.id}</a></td><td>${state(x.state)}</td>
        <td>${x.location.station || "–"}</td><td>${x.location.position || "–"}</td><td>${when(x.updated_at)}</td></tr>`)}</tbody></table>`.s;
  }
  await draw();
  const later = soon(() => draw().catch(() => {}), 800);
  const s = stream({ types: "task,sample" }, (e) => {
    if (e.campaign_id === id || (e.type === "task" && c.workflows.some((w) => w.id === e.workflow_id))) later();
  }, () => {});
  const t = setInterval(() => { if (c.status === "running") later(); }, 4000);
  onLeave(() => { s.close(); clearInterval(t); later.cancel(); });
  $("#wc-crate").addEventListener("click", async () => {
    try { await download(`/workflow-campaigns/${enc(id)}/rocrate`, `${id}-rocrate.zip`); $("#wc-result").textContent = "downloaded"; }
    catch (err) { $("#wc-result").textContent = `download failed: ${err.message}`; }
  });
}

// ---------------------------------------------------------------- a sample
export async function sampleView({ view, onLeave }, id) {
  let smp = await api(`/samples/${enc(id)}`);
  let wf = null;
  let liveN = 0;
  view.innerHTML = html`<h2>Sample ${smp.id}</h2>
    <dl class="row"><dt>state</dt><dd id="smp-state"></dd><dt>where</dt><dd id="smp-where"></dd>
      <dt>workflow</dt><dd>${smp.workflow_id ? html`<a href="#/workflows/${enc(smp.workflow_id)}">${short(smp.workflow_id)}</a>` : "–"}</dd>
      <dt>campaign</dt><dd>${smp.campaign_id ? html`<a href="#/workflow-campaigns/${enc(smp.campaign_id)}">${short(smp.campaign_id)}</a>` : "–"}</dd>
      <dt>proposal</dt><dd><a href="#/proposals/${enc(smp.proposal_id)}">${smp.proposal_id}</a></dd>
      <dt>live</dt><dd><span id="smp-live">connecting…</span> (<span id="smp-live-n">0</span> events)</dd></dl>
    <h3>Made by</h3><div id="smp-made"></div>
    <h3>History <span class="muted">(every move and measurement, oldest first)</span></h3><div id="smp-history" class="table-wrap"></div>
    <h3>Runs</h3><div id="smp-runs" class="table-wrap"></div>`.s;
  const $ = (s) => view.querySelector(s);
  const taskName = (tid) => { const t = wf && wf.tasks.find((x) => x.id === tid); return t ? t.name : (tid ? short(tid) : "–"); };
  function draw() {
    $("#smp-state").innerHTML = state(smp.state).s;
    const { station, position } = smp.location;
    $("#smp-where").textContent = station || position ? `${station || "–"} / ${position || "–"}` : "not in the lab any more";
    const m = smp.made_by;
    $("#smp-made").innerHTML = html`<dl class="row"><dt>task</dt><dd id="smp-made-task">${taskName(m.task_id)}</dd>
      <dt>run</dt><dd>${m.run_uid ? html`<code title="${m.run_uid}">${short(m.run_uid)}</code>` : "–"}</dd><dt>at</dt><dd>${when(smp.created_at)}</dd>
      <dt>parameters</dt><dd id="smp-params">${params(m.params)}</dd></dl>`.s;
    $("#smp-history").innerHTML = html`<table id="smp-history-table"><caption class="muted">${smp.history.length} event(s)</caption>
      <thead><tr><th>#</th><th>time</th><th>what</th><th>state after</th><th>station</th><th>position</th><th>actor</th><th>task</th><th>run</th><th>detail</th></tr></thead>
      <tbody>${smp.history.map((h, i) => html`<tr data-kind="${h.kind}"><td>${i + 1}</td><td>${when(h.at)}</td><td>${h.kind}</td><td>${state(h.state)}</td>
        <td>${h.station}</td><td>${h.position}</td><td>${h.actor}</td><td>${taskName(h.task_id)}</td>
        <td>${h.run_uid ? html`<code title="${h.run_uid}">${short(h.run_uid)}</code>` : ""}</td>
        <td class="detail">${flat(h.detail).slice(0, 300)}</td></tr>`)}</tbody></table>`.s;
    // the runs: what made it and every measurement, with the task that ran it and what it gave
    const uids = [...new Set([m.run_uid, ...smp.history.map((h) => h.run_uid)].filter(Boolean))];
    const byRun = Object.fromEntries((wf ? wf.tasks : []).filter((t) => t.run_uid).map((t) => [t.run_uid, t]));
    $("#smp-runs").innerHTML = uids.length ? html`<table id="smp-runs-table"><thead><tr><th>run</th><th>task</th><th>station</th><th>task state</th><th>result</th></tr></thead>
      <tbody>${uids.map((u) => { const t = byRun[u]; const ev = smp.history.find((h) => h.run_uid === u) || {}; return html`<tr data-run="${u}"><td><a href="#/runs/${u}"><code>${u}</code></a></td>
        <td>${t ? t.name : taskName(ev.task_id)}</td><td>${t ? t.instrument : ev.station || ""}</td><td>${t ? state(t.status) : "–"}</td>
        <td>${t && t.result ? params(Object.fromEntries(Object.entries(t.result).filter(([, v]) => typeof v === "number"))) : ""}</td></tr>`; })}</tbody></table>`.s
      : html`<p class="muted">no run yet</p>`.s;
  }
  async function reload() {
    smp = await api(`/samples/${enc(id)}`);
    if (smp.workflow_id) wf = await api(`/workflows/${enc(smp.workflow_id)}`).catch(() => wf);
    draw();
  }
  await reload();
  const later = soon(() => reload().catch(() => {}), 500);
  const s = stream({ types: "sample" }, (e) => {
    if (e.type !== "sample" || e.sample_id !== smp.id) return;
    liveN += 1;
    $("#smp-live-n").textContent = liveN;
    later();
  }, (st) => { $("#smp-live").textContent = st; if (st === "live") later(); });
  const t = setInterval(later, 5000);
  onLeave(() => { s.close(); clearInterval(t); later.cancel(); });
}
