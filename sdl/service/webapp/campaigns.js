// Campaigns: a form for the spec; the live view (plots, suggestions with the agent's
// reasons, approve / veto, add a point, start / pause / resume / stop); data downloads; runs.
import { api, stream, download, html, raw, fmt, state, short } from "./api.js";
import { convergence, projection, pareto, prediction } from "./charts.js";
import { schemaForm } from "./schemaform.js";
import { showFieldErrors } from "./proposals.js";

export async function campaignsView({ view, me, onLeave }) {
  const [list, props, instruments, agents] = await Promise.all([api("/campaigns"), api("/proposals?status=approved"),
    api("/instruments"), api("/agents")]);
  const mine = props.filter((p) => me.proposals && p.id in me.proposals);
  const served = Object.fromEntries(instruments.map((i) => [i.name, i]));
  const table = (cs) => html`<table id="campaigns-table"><caption class="muted">${cs.length} campaign(s) you can see (updated every few seconds)</caption>
      <thead><tr><th>id</th><th>name</th><th>instrument</th><th>agent</th><th>state</th><th class="num">experiments</th><th class="num">best</th><th>proposal</th></tr></thead>
      <tbody>${cs.slice().reverse().map((c) => html`<tr data-id="${c.id}"><td><a href="#/campaigns/${c.id}">${short(c.id)}</a></td><td>${c.name}</td>
        <td>${c.instrument}</td><td>${c.agent}</td><td>${state(c.state)}</td><td class="num">${c.experiments} / ${c.budget}</td>
        <td class="num">${c.best ? fmt(c.best.value) : "–"}</td><td>${c.proposal_id}</td></tr>`)}</tbody></table>`;
  view.innerHTML = html`<h2>Campaigns</h2>
    <div class="table-wrap" id="campaigns-list">${table(list)}</div>
    <h3 id="new-campaign">New campaign</h3>
    ${mine.length ? html`<form id="campaign-form" class="grid" novalidate aria-labelledby="new-campaign">
      <label for="k-proposal">proposal</label><select id="k-proposal" name="proposal_id">${mine.map((p) => html`<option value="${p.id}">${p.id}: ${p.title}</option>`)}</select>
      <label for="k-name">name</label><input id="k-name" name="name" size="30">
      <label for="k-instrument">instrument</label><div><select id="k-instrument" name="instrument"></select><p class="field-error" data-field="spec.instrument" role="alert"></p></div>
      <label for="k-agent">agent</label><div><select id="k-agent" name="agent">${agents.map((a) => html`<option ${a === "bo" ? raw("selected") : ""}>${a}</option>`)}</select><p class="field-error" data-field="spec.agent" role="alert"></p></div>
      <label for="k-budget">budget (experiments)</label><div><input id="k-budget" name="budget" type="number" min="1" value="20"><p class="field-error" data-field="spec.budget" role="alert"></p></div>
      <label for="k-batch">batch size</label><div><input id="k-batch" name="batch_size" type="number" min="1" max="64" value="1"><p class="field-error" data-field="spec.batch_size" role="alert"></p></div>
      <label for="k-seed">seed</label><div><input id="k-seed" name="seed" type="number" min="0" value="0"><p class="field-error" data-field="spec.seed" role="alert"></p></div>
      <label for="k-exposure">exposure (s)</label><div><input id="k-exposure" name="exposure" type="number" step="any" value="1"><p class="field-error" data-field="spec.exposure" role="alert"></p></div>
      <label for="k-target">stop at target</label><div><input id="k-target" name="target" type="number" step="any"><p class="hint">stop once the best value reaches this</p><p class="field-error" data-field="spec.stopping.target" role="alert"></p></div>
      <label for="k-patience">stop after no progress for</label><div><input id="k-patience" name="patience" type="number" min="1"><p class="hint">experiments</p><p class="field-error" data-field="spec.stopping.patience" role="alert"></p></div>
      <fieldset class="full"><legend>Search space (within the instrument's limits)</legend><div id="k-space" class="grid"></div>
        <p class="field-error" data-field="spec.space" role="alert"></p></fieldset>
      <fieldset class="full"><legend>Objectives</legend><div id="k-objectives"></div><p class="field-error" data-field="spec.objectives" role="alert"></p></fieldset>
      <label for="k-approve">approve before run</label><div><input id="k-approve" name="approve_before_run" type="checkbox">
        <span class="hint">each suggestion waits until a member of the proposal approves it</span></div>
      <label for="k-start">start at once</label><input id="k-start" name="start" type="checkbox" checked>
      <div class="full"><button class="primary" type="submit">Create campaign</button> <span id="campaign-error" class="error" role="alert"></span></div>
    </form>` : html`<p>You need an approved proposal to run a campaign: <a href="#/proposals">create one</a>.</p>`}`.s;
  const refresh = setInterval(async () => { // the list stays current; the form is left alone
    const box = view.querySelector("#campaigns-list");
    if (box.contains(document.activeElement)) return;
    try { box.innerHTML = table(await api("/campaigns")).s; } catch { /* the next tick retries */ }
  }, 4000);
  onLeave(() => clearInterval(refresh));
  const form = view.querySelector("#campaign-form");
  if (!form) return;
  const selP = form.querySelector("#k-proposal"), selI = form.querySelector("#k-instrument");
  function fillInstruments() {
    const p = mine.find((x) => x.id === selP.value);
    selI.innerHTML = html`${p.instruments.filter((n) => n in served).map((n) => html`<option>${n}</option>`)}`.s;
    fillSpace();
  }
  function fillSpace() {
    const inst = served[selI.value];
    const space = form.querySelector("#k-space"), objs = form.querySelector("#k-objectives");
    if (!inst) { space.innerHTML = ""; objs.innerHTML = ""; return; }
    space.innerHTML = html`${inst.space.parameters.map((p, i) => p.kind === "range" ? html`
      <span id="k-sp-${i}">${p.name}${p.units ? " (" + p.units + ")" : ""}</span>
      <div class="row" role="group" aria-labelledby="k-sp-${i}">
        <label>from <input name="lower-${i}" type="number" step="any" value="${p.lower}" size="8"></label>
        <label>to <input name="upper-${i}" type="number" step="any" value="${p.upper}" size="8"></label>
        <span class="hint">limits ${p.lower} … ${p.upper}</span>
        <p class="field-error" data-field="spec.space.parameters.${i}" role="alert"></p></div>` : html`<span>${p.name}</span><span>${p.kind}</span>`)}
      ${(inst.space.compositions || []).map((c) => html`<p class="hint full">${c.components.join(" + ")} = ${c.total} (kept)</p>`)}`.s;
    objs.innerHTML = html`${inst.objectives.map((o, i) => html`<div class="row"><label><input type="checkbox" name="obj-${i}" checked> ${o.name}</label>
      <label>direction <select name="dir-${i}"><option ${o.direction === "maximize" ? raw("selected") : ""}>maximize</option><option ${o.direction === "minimize" ? raw("selected") : ""}>minimize</option></select></label></div>`)}`.s;
  }
  selP.addEventListener("change", fillInstruments);
  selI.addEventListener("change", fillSpace);
  fillInstruments();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const inst = served[f.get("instrument")];
    const num = (k) => (f.get(k) === "" || f.get(k) == null ? null : Number(f.get(k)));
    const spec = { name: f.get("name"), instrument: f.get("instrument"), agent: f.get("agent"), budget: num("budget"),
                   batch_size: num("batch_size"), seed: num("seed"), exposure: num("exposure"),
                   stopping: { target: num("target"), patience: num("patience") },
                   approve_before_run: f.get("approve_before_run") === "on" };
    if (inst) {
      const space = JSON.parse(JSON.stringify(inst.space));
      let changed = false;
      space.parameters.forEach((p, i) => {
        if (p.kind !== "range") return;
        const lo = num(`lower-${i}`), hi = num(`upper-${i}`);
        if (lo !== p.lower || hi !== p.upper) { changed = true; p.lower = lo; p.upper = hi; }
      });
      if (changed) spec.space = space;
      const objs = inst.objectives.map((o, i) => ({ ...o, direction: f.get(`dir-${i}`) })).filter((o, i) => f.get(`obj-${i}`) === "on");
      if (objs.some((o, i) => o.direction !== inst.objectives[i].direction) || objs.length !== inst.objectives.length) spec.objectives = objs;
    }
    showFieldErrors(form, null);
    form.querySelector("#campaign-error").textContent = "";
    try {
      const c = await api("/campaigns", { method: "POST", body: { proposal_id: f.get("proposal_id"), spec, start: f.get("start") === "on" } });
      location.hash = `#/campaigns/${c.id}`;
    } catch (err) {
      showFieldErrors(form, err);
      form.querySelector("#campaign-error").textContent = err.message;
    }
  });
}

export async function campaignView({ view, me, onLeave }, id) {
  const cid = encodeURIComponent(id);
  const camp = await api(`/campaigns/${cid}`);
  const inst = await api(`/instruments/${encodeURIComponent(camp.instrument)}`).catch(() => null);
  const spec = camp.spec || {};
  const objectives = spec.objectives || (inst ? inst.objectives : [camp.objective]);
  const space = spec.space || (inst ? inst.space : { parameters: [] });
  const numeric = space.parameters.filter((p) => p.kind === "range").map((p) => p.name);
  // an optimiser's 3e-14 on a 0 ... 1 axis is its bound, 0: shown so, not as round-off noise
  const spans = Object.fromEntries(space.parameters.filter((p) => p.kind === "range").map((p) => [p.name, p.upper - p.lower]));
  const paramText = (k, v) => `${k}=${fmt(typeof v === "number" && Math.abs(v) < 1e-9 * (spans[k] || 0) ? 0 : v, 3)}`;
  const member = me.proposals && camp.proposal_id in me.proposals;
  const staff = me.role === "scientist" || me.role === "admin";
  let obs = camp.observations || [], sugs = camp.suggestions || [];
  const sign = (o) => (o.direction === "minimize" ? -1 : 1);

  view.innerHTML = html`<h2>Campaign ${camp.name || short(camp.id)}</h2>
    <dl class="row"><dt>state</dt><dd id="camp-state">${state(camp.state)}</dd>
      <dt>experiments</dt><dd class="live"><span id="shown-n" data-n="${obs.length}">${obs.length}</span> / ${camp.budget}</dd>
      <dt>best ${camp.objective.name}</dt><dd id="camp-best" class="live">${camp.best ? fmt(camp.best.value) : "–"}</dd>
      <dt>instrument</dt><dd><a href="#/instruments/${encodeURIComponent(camp.instrument)}">${camp.instrument}</a></dd>
      <dt>agent</dt><dd>${camp.agent}</dd><dt>proposal</dt><dd><a href="#/proposals/${camp.proposal_id}">${camp.proposal_id}</a></dd>
      <dt>approve before run</dt><dd id="camp-approve">${spec.approve_before_run ? "yes: suggestions wait for a member" : "no"}</dd>
      <dt>live</dt><dd id="live-state">connecting…</dd></dl>
    <p id="camp-message" class="muted">${camp.message}</p>
    ${member || staff ? html`<form id="camp-control" class="row" novalidate aria-label="campaign control">
      ${["start", "pause", "resume", "stop"].map((a) => html`<button type="submit" value="${a}">${a[0].toUpperCase() + a.slice(1)}</button>`)}
      <span id="control-result" role="status"></span></form>` : ""}
    <div class="row" aria-label="downloads"><span>Download:</span>
      <button type="button" data-dl="csv">table (CSV)</button><button type="button" data-dl="json">everything (JSON)</button>
      <button type="button" data-dl="rocrate">RO-Crate (zip)</button></div>
    <p id="approval-banner" class="banner" hidden></p>
    <h3>Plots</h3>
    <div class="charts">
      <figure id="chart-best"><figcaption>Best so far against experiments</figcaption><div></div></figure>
      <figure id="chart-pareto" ${objectives.length < 2 ? raw("hidden") : ""}><figcaption>Pareto front <span id="hv" class="live"></span></figcaption>
        ${objectives.length >= 2 ? html`<div class="row"><label>x <select id="par-a">${objectives.map((o, i) => html`<option value="${i}" ${i === 0 ? raw("selected") : ""}>${o.name}</option>`)}</select></label>
          <label>y <select id="par-b">${objectives.map((o, i) => html`<option value="${i}" ${i === 1 ? raw("selected") : ""}>${o.name}</option>`)}</select></label></div>`
          : ""}<div></div></figure>
      <figure id="chart-pred"><figcaption>Model prediction and uncertainty along
        <select id="pred-param" aria-label="parameter">${numeric.map((n) => html`<option>${n}</option>`)}</select></figcaption><div></div></figure>
    </div>
    ${objectives.length < 2 ? html`<p class="hint">One objective (${objectives[0].name}): a campaign with several objectives also shows its Pareto front and hypervolume.</p>` : ""}
    <h3>Every measured point (pairwise projections; larger = better, ★ = best)</h3>
    <div id="chart-pairs" class="pairs"></div>
    <h3>Suggestions <span class="muted">(the agent's reasons; newest first)</span></h3>
    ${member ? html`<div class="row"><label for="sug-reason">reason / comment for approve or veto</label><input id="sug-reason" size="40"></div>` : ""}
    <p id="sug-result" role="status" tabindex="-1"></p>
    <div id="suggestions" class="table-wrap"></div>
    ${member ? html`<h3 id="add-point-title">Add a point of your own</h3>
      <form id="point-form" class="grid" novalidate aria-labelledby="add-point-title"><div id="point-fields" class="grid full"></div>
        <label for="point-reason">reason</label><input id="point-reason" name="reason" size="40">
        <div class="full"><button type="submit">Add point</button> <span id="point-error" class="error" role="alert"></span></div></form>` : ""}`.s;

  const $ = (s) => view.querySelector(s);
  function drawCharts() {
    const o0 = objectives[0];
    const vals = obs.map((o) => (o.ok && o.values ? o.values[o0.name] : null));
    $("#chart-best div").innerHTML = convergence(vals, sign(o0), camp.budget, o0.name);
    const pairs = [];
    for (let i = 0; i < numeric.length; i++) for (let j = i + 1; j < numeric.length; j++) pairs.push([numeric[i], numeric[j]]);
    $("#chart-pairs").innerHTML = pairs.slice(0, 15).map(([a, b]) => projection(obs.filter((o) => o.ok), a, b, o0.name, sign(o0))).join("");
    if (objectives.length >= 2) {
      const a = objectives[+$("#par-a").value], b = objectives[+$("#par-b").value];
      const pts = obs.filter((o) => o.ok && o.values).map((o) => [o.values[a.name], o.values[b.name]]);
      const r = pareto(pts, [a.name, b.name], [sign(a), sign(b)]);
      $("#chart-pareto > div:last-child").innerHTML = r.svg;
      $("#hv").textContent = r.hv == null ? "" : `hypervolume ${fmt(r.hv)} (${r.front.length} on the front)`;
      $("#hv").dataset.hv = r.hv == null ? "" : r.hv;
    } else {
      $("#chart-pareto > div:last-child").innerHTML = "";
    }
    drawPrediction();
  }
  function drawPrediction() {
    const o0 = objectives[0], param = $("#pred-param").value;
    const measured = Object.fromEntries(obs.filter((o) => o.ok && o.values).map((o) => [o.suggestion_id, o.values[o0.name]]));
    const rows = sugs.map((s) => ({ params: s.params, mean: s.provenance && s.provenance.predicted_mean ? s.provenance.predicted_mean[o0.name] : null,
      sd: s.provenance && s.provenance.predicted_sd ? s.provenance.predicted_sd[o0.name] : null, measured: measured[s.id] }));
    $("#chart-pred div").innerHTML = param ? prediction(rows, param, o0.name) : "";
  }
  const waiting = (s) => spec.approve_before_run && s.status === "pending" && !(s.provenance && (s.provenance.approved || s.provenance.agent === "user"));
  let showAll = false;
  function drawSuggestions() {
    const box = $("#suggestions");
    if (box.contains(document.activeElement) && document.activeElement.tagName === "BUTTON") { sugsSoon(); return; }
    const measured = Object.fromEntries(obs.map((o) => [o.suggestion_id, o]));
    const o0 = objectives[0].name;
    const limit = showAll ? 5000 : 25;
    const rows = sugs.slice().reverse().slice(0, limit);
    box.innerHTML = html`${sugs.length > 25 ? html`<button type="button" id="sug-all" aria-pressed="${showAll}">${showAll ? "Show the newest 25" : `Show all ${sugs.length}`}</button>` : ""}
      <table id="suggestions-table"><caption class="muted">${sugs.length} suggestion(s)${sugs.length > limit ? `, newest ${limit} shown` : ""}</caption>
      <thead><tr><th>#</th><th>status</th><th>parameters</th><th>agent</th><th class="num">acquisition</th><th class="num">predicted ${o0}</th>
      <th class="num">measured ${o0}</th><th>reason</th><th>run</th>${member ? html`<th>actions</th>` : ""}</tr></thead>
      <tbody>${rows.map((s) => {
        const p = s.provenance || {}, o = measured[s.id];
        const st = waiting(s) ? "waiting" : s.status;
        return html`<tr data-id="${s.id}" data-status="${st}"><td>${s.seq}</td><td>${state(st === "waiting" ? "waiting" : st)}${st === "waiting" ? " for approval" : ""}${p.approved ? html`<br><span class="muted">approved by ${p.approved.by}</span>` : ""}${p.vetoed ? html`<br><span class="muted">vetoed by ${p.vetoed.by}${p.vetoed.reason ? ": " + p.vetoed.reason : ""}</span>` : ""}</td>
          <td>${Object.entries(s.params).map(([k, v]) => paramText(k, v)).join(" ")}</td><td>${p.agent}${p.model ? " / " + p.model : ""}</td>
          <td class="num">${p.acquisition ? p.acquisition + " " : ""}${fmt(p.acquisition_value)}</td>
          <td class="num">${p.predicted_mean && p.predicted_mean[o0] != null ? `${fmt(p.predicted_mean[o0])} ± ${fmt(p.predicted_sd ? p.predicted_sd[o0] : null, 2)}` : "–"}</td>
          <td class="num">${o ? (o.ok ? fmt(o.values[o0]) : "failed") : "–"}</td><td>${p.reason || ""}</td>
          <td>${o && o.run_uid ? html`<a href="#/runs/${o.run_uid}">${short(o.run_uid)}</a>` : ""}</td>
          ${member ? html`<td>${s.status === "pending" ? html`${waiting(s) ? html`<button type="button" data-approve="${s.id}" aria-label="approve suggestion ${s.seq}">Approve</button> ` : ""}<button type="button" data-veto="${s.id}" aria-label="veto suggestion ${s.seq}">Veto</button>` : ""}</td>` : ""}</tr>`;
      })}</tbody></table>`.s;
    const nWait = sugs.filter(waiting).length;
    $("#approval-banner").hidden = nWait === 0;
    $("#approval-banner").textContent = `${nWait} suggestion(s) wait for your approval before they run (Approve or Veto below).`;
  }

  // --- live: the stream's events update the page in place (no request per event, so a
  // watched campaign costs the service almost nothing); a full reload only now and then
  let drawTimer = null, sugTimer = null, tableTimer = null;
  function drawSoon() { if (!drawTimer) drawTimer = setTimeout(() => { drawTimer = null; drawCharts(); }, 250); }
  function tableSoon() {
    if (!tableTimer) tableTimer = setTimeout(() => { tableTimer = null; drawSuggestions(); drawPrediction(); }, 400);
  }
  function sugsSoon() { // reload the suggestions from the service (statuses the stream does not carry)
    if (sugTimer) return;
    sugTimer = setTimeout(async () => {
      sugTimer = null;
      try { reloaded(await api(`/campaigns/${cid}/suggestions`)); drawSuggestions(); drawPrediction(); } catch { /* next check retries */ }
    }, 700);
  }
  const FINAL = ["done", "failed", "vetoed"];
  function reloaded(list) { // keep what the stream brought while the reload was on its way
    const mine = new Map(sugs.map((x) => [x.id, x]));
    for (const x of list) {
      const m = mine.get(x.id);
      if (m && FINAL.includes(m.status) && !FINAL.includes(x.status)) x.status = m.status;
    }
    const ids = new Set(list.map((x) => x.id));
    sugs = list.concat(sugs.filter((x) => !ids.has(x.id)));
  }
  function applyToSuggestions(e) {
    const sug = sugs.find((x) => x.id === (e.suggestion_id || (e.observation && e.observation.suggestion_id)));
    if (e.event === "suggestion" && !sug) {
      const seq = e.seq != null ? e.seq : (sugs.length ? sugs[sugs.length - 1].seq + 1 : 0);
      sugs.push({ id: e.suggestion_id, seq, params: e.params, provenance: e.provenance || {}, status: "pending" });
    } else if (sug && e.event === "observation") sug.status = e.observation.ok ? "done" : "failed";
    else if (sug && e.event === "veto") { sug.status = "vetoed"; sug.provenance = { ...sug.provenance, vetoed: { by: e.by, reason: e.reason } }; }
    else if (sug && e.event === "approval") sug.provenance = { ...sug.provenance, approved: { by: e.by, comment: e.comment } };
    else { sugsSoon(); return; } // something the page does not know: ask the service
    tableSoon();
  }
  function showCount() {
    const n = $("#shown-n");
    n.textContent = obs.length;
    n.dataset.n = obs.length;
    const o0 = objectives[0];
    let best = null;
    for (const o of obs) if (o.ok && o.values && o.values[o0.name] != null && (best == null || sign(o0) * (o.values[o0.name] - best) > 0)) best = o.values[o0.name];
    $("#camp-best").textContent = fmt(best);
  }
  let seen = new Set(obs.map((o) => o.suggestion_id));
  async function resync() {
    obs = await api(`/campaigns/${cid}/observations`);
    seen = new Set(obs.map((o) => o.suggestion_id));
    showCount();
    drawSoon();
  }
  const s = stream({ campaign_id: id, types: "campaign" }, (e) => {
    if (e.type !== "campaign") return;
    if (e.event === "observation" && e.observation) {
      if (seen.has(e.observation.suggestion_id)) return;
      if (e.n === obs.length + 1) { obs.push(e.observation); seen.add(e.observation.suggestion_id); showCount(); drawSoon(); }
      else if (e.n > obs.length) resync().catch(() => {});
      applyToSuggestions(e);
    } else if (e.event === "state") {
      camp.state = e.state;
      $("#camp-state").innerHTML = state(e.state).s;
      $("#camp-message").textContent = e.message || "";
      sugsSoon();
    } else if (["suggestion", "veto", "approval"].includes(e.event)) applyToSuggestions(e);
  }, (st) => { $("#live-state").textContent = st; if (st === "live") resync().catch(() => {}); });
  let ticks = 0;
  const check = setInterval(async () => { // a dropped event must not leave the page behind
    try {
      const c = await api(`/campaigns/${cid}`);
      if (c.experiments !== obs.length) resync();
      if (c.state === "running" && ++ticks % 3 === 0) sugsSoon(); // statuses like "running" come this way
    } catch { /* offline: the next check retries */ }
  }, 4000);
  onLeave(() => { s.close(); clearInterval(check); clearTimeout(drawTimer); clearTimeout(sugTimer); clearTimeout(tableTimer); });

  drawCharts();
  drawSuggestions();
  view.querySelectorAll("#par-a, #par-b").forEach((el) => el.addEventListener("change", drawCharts));
  $("#pred-param").addEventListener("change", drawPrediction);

  const ctl = $("#camp-control");
  if (ctl) ctl.addEventListener("submit", async (e) => {
    e.preventDefault();
    const action = e.submitter ? e.submitter.value : "pause";
    try {
      const c = await api(`/campaigns/${cid}/${action}`, { method: "POST", body: { reason: "" } });
      $("#camp-state").innerHTML = state(c.state).s;
      $("#control-result").textContent = `${action}: now ${c.state}`;
    } catch (err) { $("#control-result").textContent = err.message; }
  });
  view.querySelectorAll("[data-dl]").forEach((b) => b.addEventListener("click", async () => {
    const kind = b.dataset.dl;
    const [path, name] = { csv: [`/campaigns/${cid}/table?format=csv`, `${id}.csv`], json: [`/campaigns/${cid}/export`, `${id}.json`],
      rocrate: [`/campaigns/${cid}/rocrate`, `${id}-rocrate.zip`] }[kind];
    try { await download(path, name); } catch (err) { $("#control-result").textContent = `download failed: ${err.message}`; }
  }));
  $("#suggestions").addEventListener("click", async (e) => {
    if (e.target.id === "sug-all") { showAll = !showAll; e.target.blur(); drawSuggestions(); $("#sug-all").focus(); return; }
    const b = e.target.closest("button[data-approve], button[data-veto]");
    if (!b) return;
    const reason = $("#sug-reason") ? $("#sug-reason").value : "";
    const [sid, action, body] = b.dataset.approve ? [b.dataset.approve, "approve", { comment: reason }] : [b.dataset.veto, "veto", { reason }];
    b.disabled = true;
    try {
      await api(`/campaigns/${cid}/suggestions/${sid}/${action}`, { method: "POST", body });
      $("#sug-result").textContent = `${action === "approve" ? "approved" : "vetoed"} suggestion ${short(sid)}`;
    } catch (err) { $("#sug-result").textContent = err.message; }
    $("#sug-result").focus(); // the row's buttons are redrawn: keyboard focus goes to the outcome
    reloaded(await api(`/campaigns/${cid}/suggestions`));
    drawSuggestions();
  });
  const pform = $("#point-form");
  if (pform && inst) {
    const schema = JSON.parse(JSON.stringify(inst.plans.autonomous_step));
    delete schema.properties.exposure;
    const sf = schemaForm($("#point-fields"), schema);
    pform.addEventListener("submit", async (e) => {
      e.preventDefault();
      $("#point-error").textContent = "";
      try {
        await api(`/campaigns/${cid}/points`, { method: "POST", body: { parameters: sf.values(), reason: $("#point-reason").value } });
        sf.clearErrors();
        $("#sug-result").textContent = "point added: it runs before the agent is asked again";
        sugsSoon();
      } catch (err) {
        const left = err.status === 422 ? sf.showErrors(err) : [err];
        if (left.length) $("#point-error").textContent = err.message;
      }
    });
  }
}

export async function runView({ view }, uid) {
  const run = await api(`/runs/${encodeURIComponent(uid)}`);
  const docs = run.documents || [];
  const events = docs.filter((d) => d.name === "event").map((d) => d.doc);
  const fields = [...new Set(events.flatMap((e) => Object.keys(e.data)))];
  view.innerHTML = html`<h2>Run ${short(run.uid)}</h2>
    <dl class="row"><dt>status</dt><dd>${state(run.status)}</dd><dt>campaign</dt><dd>${run.campaign_id ? html`<a href="#/campaigns/${run.campaign_id}">${short(run.campaign_id)}</a>` : "–"}</dd>
      <dt>started</dt><dd>${run.started_at}</dd><dt>finished</dt><dd>${run.finished_at || "–"}</dd>${run.reason ? html`<dt>reason</dt><dd>${run.reason}</dd>` : ""}</dl>
    <h3>Readings (${events.length} events)</h3>
    <div class="table-wrap"><table id="run-events"><thead><tr><th>seq</th>${fields.map((f) => html`<th class="num">${f}</th>`)}</tr></thead>
      <tbody>${events.slice(0, 500).map((e) => html`<tr><td>${e.seq_num}</td>${fields.map((f) => html`<td class="num">${typeof e.data[f] === "number" ? fmt(e.data[f]) : Array.isArray(e.data[f]) ? `[${e.data[f].length} values]` : e.data[f] ?? ""}</td>`)}</tr>`)}</tbody></table></div>
    <h3>Documents (${docs.length})</h3>
    ${docs.filter((d) => d.name !== "event").map((d) => html`<details><summary>${d.name}</summary><pre class="doc">${JSON.stringify(d.doc, null, 1).slice(0, 20000)}</pre></details>`)}`.s;
}
