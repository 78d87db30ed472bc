// Instruments: state, queue in predicted order, the current run live, plans; staff
// controls. Submitting an experiment through a form made from the plan's JSON schema.
import { api, stream, html, raw, fmt, state, short } from "./api.js";
import { schemaForm } from "./schemaform.js";
import { showFieldErrors } from "./proposals.js";

const isStaff = (me) => me.role === "scientist" || me.role === "admin";

export async function instrumentsView({ view, onLeave }) {
  async function draw() {
    const list = await api("/instruments");
    view.innerHTML = html`<h2>Instruments</h2><div class="table-wrap"><table id="instruments-table">
      <thead><tr><th>name</th><th>state</th><th class="num">queued</th><th>running item</th><th class="num">dedicated share</th><th>plans</th></tr></thead>
      <tbody>${list.map((i) => html`<tr data-name="${i.name}"><td><a href="#/instruments/${encodeURIComponent(i.name)}">${i.name}</a></td>
        <td>${state(i.status.state)}</td><td class="num">${i.queue_length}</td><td>${short(i.status.current_item)}</td>
        <td class="num">${(100 * i.dedicated_fraction).toFixed(0)} %</td><td>${Object.keys(i.plans).join(", ")}</td></tr>`)}</tbody></table></div>`.s;
  }
  await draw();
  const t = setInterval(() => draw().catch(() => {}), 3000);
  onLeave(() => clearInterval(t));
}

export async function instrumentView({ view, me, onLeave }, name) {
  const inst = await api(`/instruments/${encodeURIComponent(name)}`);
  view.innerHTML = html`<h2>Instrument ${inst.name}</h2>
    <p>${inst.description || ""}</p>
    <dl class="row"><dt>state</dt><dd id="inst-state">${state(inst.status.state)}</dd><dt>queued</dt><dd id="inst-queued">${inst.queue_length}</dd>
      <dt>dedicated share</dt><dd>${(100 * inst.dedicated_fraction).toFixed(0)} %</dd>
      <dt>objectives</dt><dd>${inst.objectives.map((o) => `${o.name} (${o.direction})`).join(", ")}</dd></dl>
    ${isStaff(me) ? html`<form id="control-form" class="row" novalidate aria-label="instrument control">
        <label for="c-reason">reason</label><input id="c-reason" name="reason" size="30">
        <label><input type="checkbox" name="immediate" checked> pause the running plan at its next checkpoint</label>
        <button type="submit" value="pause">Pause</button><button type="submit" value="resume">Resume</button>
        <button type="submit" value="abort">Abort running</button><span id="control-result" role="status"></span></form>` : ""}
    ${me.role === "admin" ? html`<form id="share-form" class="row" novalidate><label for="s-frac">dedicated fraction (0–1)</label>
        <input id="s-frac" name="fraction" type="number" min="0" max="1" step="0.05" value="${inst.dedicated_fraction}">
        <button type="submit">Set</button><p class="field-error" data-field="dedicated_fraction" role="alert"></p></form>` : ""}
    <h3>Current run <span class="muted" id="live-state">connecting…</span></h3>
    <div id="current-run"><p class="muted">waiting for a run…</p></div>
    <h3>Queue, in the order it will run</h3><div id="queue" class="table-wrap"></div>
    <h3>Plans it accepts</h3>
    <ul>${Object.entries(inst.plans).map(([pn, s]) => html`<li><a href="#/submit?instrument=${encodeURIComponent(inst.name)}&plan=${encodeURIComponent(pn)}">${pn}</a>: ${s.description}
      <span class="muted">(parameters: ${Object.keys(s.properties).join(", ")})</span></li>`)}</ul>`.s;

  async function drawQueue() {
    const q = await api(`/instruments/${encodeURIComponent(name)}/queue?limit=50`);
    view.querySelector("#queue").innerHTML = html`<table id="queue-table"><caption class="muted">${q.length} shown</caption>
      <thead><tr><th>#</th><th>id</th><th>kind</th><th>status</th><th>proposal</th><th>plan</th><th>parameters</th></tr></thead>
      <tbody>${q.map((x) => html`<tr><td>${x.position}</td><td>${short(x.id)}</td><td>${x.kind}</td><td>${state(x.status)}${x.blocked ? " (held)" : ""}</td>
        <td>${x.redacted && !x.proposal_id ? "another proposal" : x.proposal_id}</td><td>${x.plan || ""}</td>
        <td>${x.parameters ? Object.entries(x.parameters).map(([k, v]) => `${k}=${fmt(v, 3)}`).join(" ") : "(not yours)"}</td></tr>`)}</tbody></table>`.s;
    const i = await api(`/instruments/${encodeURIComponent(name)}`);
    view.querySelector("#inst-state").innerHTML = state(i.status.state).s;
    view.querySelector("#inst-queued").textContent = i.queue_length;
  }

  // the current run, live: its readings as the documents arrive
  let run = null, pending = false;
  function drawRun() {
    pending = false;
    if (!run) return;
    const fields = [...new Set(run.events.flatMap((e) => Object.keys(e.data)))].slice(0, 8);
    view.querySelector("#current-run").innerHTML = html`<p>run <a href="#/runs/${run.uid}">${short(run.uid)}</a>
      ${run.plan ? "(" + run.plan + ")" : ""} ${run.stop ? html`finished: ${state(run.stop)}` : "running"}; ${run.events.length} reading(s)</p>
      <div class="table-wrap"><table id="readings"><thead><tr><th>seq</th>${fields.map((f) => html`<th class="num">${f}</th>`)}</tr></thead>
      <tbody>${run.events.slice(-10).map((e) => html`<tr><td>${e.seq_num}</td>${fields.map((f) => html`<td class="num">${typeof e.data[f] === "number" ? fmt(e.data[f]) : "…"}</td>`)}</tr>`)}</tbody></table></div>`.s;
  }
  let queueTimer = null;
  const s = stream({ instrument: name, types: "document,queue,instrument" }, (e) => {
    if (e.type === "document") {
      if (e.name === "start") run = { uid: e.doc.uid, plan: e.doc.plan_name, events: [], stop: null };
      else if (run && e.name === "event") run.events.push(e.doc);
      else if (run && e.name === "stop") run.stop = e.doc.exit_status;
      if (!pending) { pending = true; setTimeout(drawRun, 150); }
    } else if (e.type === "queue" || e.type === "instrument") {
      if (!queueTimer) queueTimer = setTimeout(() => { queueTimer = null; drawQueue().catch(() => {}); }, 400);
    }
  }, (st) => { view.querySelector("#live-state").textContent = st === "live" ? "(live)" : "(" + st + ")"; });
  onLeave(() => { s.close(); clearTimeout(queueTimer); });

  const cform = view.querySelector("#control-form");
  if (cform) cform.addEventListener("submit", async (e) => {
    e.preventDefault();
    const action = e.submitter ? e.submitter.value : "pause";
    if (action === "abort" && e.submitter.dataset.armed !== "1") { // two steps: a slip of the finger aborts nothing
      e.submitter.dataset.armed = "1";
      e.submitter.textContent = "Confirm abort";
      cform.querySelector("#control-result").textContent = "press Confirm abort within 5 s to abort the running plan";
      setTimeout(() => { e.submitter.dataset.armed = ""; e.submitter.textContent = "Abort running"; }, 5000);
      return;
    }
    const f = new FormData(cform);
    const body = { reason: f.get("reason") };
    if (action === "pause") body.immediate = f.get("immediate") === "on";
    try {
      const r = await api(`/instruments/${encodeURIComponent(name)}/${action}`, { method: "POST", body });
      cform.querySelector("#control-result").textContent = `${action}: done` + (r.aborted_item ? `, aborted ${short(r.aborted_item)}` : "");
      view.querySelector("#inst-state").innerHTML = state(r.status.state).s;
      setTimeout(() => drawQueue().catch(() => {}), 500); // the worker takes the new state up at once; show it
    } catch (err) { cform.querySelector("#control-result").textContent = err.message; }
  });
  const sform = view.querySelector("#share-form");
  if (sform) sform.addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await api(`/instruments/${encodeURIComponent(name)}/share`, { method: "PUT", body: { dedicated_fraction: Number(new FormData(sform).get("fraction")) } }); window.dispatchEvent(new HashChangeEvent("hashchange")); }
    catch (err) { showFieldErrors(sform, err); }
  });
  await drawQueue(); // after the controls are wired: a click never meets a form without its handler
}

export async function submitView({ view, me, params, onLeave }) {
  const [props, instruments] = await Promise.all([api("/proposals?status=approved"), api("/instruments")]);
  const mine = props.filter((p) => me.proposals && p.id in me.proposals);
  const served = Object.fromEntries(instruments.map((i) => [i.name, i]));
  if (!mine.length) {
    view.innerHTML = html`<h2>Submit an experiment</h2><p>You need an approved proposal first: <a href="#/proposals">create one</a> and wait for an admin's approval.</p>`.s;
    return;
  }
  view.innerHTML = html`<h2>Submit an experiment</h2>
    <form id="submit-form" class="grid" novalidate aria-label="submit an experiment">
      <label for="x-proposal">proposal</label><select id="x-proposal" name="proposal_id">${mine.map((p) => html`<option value="${p.id}">${p.id}: ${p.title}</option>`)}</select>
      <label for="x-instrument">instrument</label><select id="x-instrument" name="instrument"></select>
      <label for="x-plan">plan</label><div><select id="x-plan" name="plan"></select><p class="hint" id="x-plan-desc"></p></div>
      <fieldset class="full"><legend>Parameters</legend><div id="x-params" class="grid-inner"></div></fieldset>
      <label for="x-priority">priority (−10…10)</label><div><input id="x-priority" name="priority" type="number" value="0" min="-10" max="10"><p class="hint">orders your proposal's own items only</p><p class="field-error" data-field="priority" role="alert"></p></div>
      <label for="x-note">note</label><input id="x-note" name="note" size="40">
      <div class="full"><button class="primary" type="submit">Submit</button> <span id="submit-error" class="error" role="alert"></span></div>
    </form>
    <div id="submitted" aria-live="polite"></div>`.s;
  const form = view.querySelector("#submit-form");
  const selP = form.querySelector("#x-proposal"), selI = form.querySelector("#x-instrument"), selPlan = form.querySelector("#x-plan");
  const paramsBox = form.querySelector("#x-params");
  paramsBox.classList.add("grid");
  let sf = null;
  function fillInstruments() {
    const p = mine.find((x) => x.id === selP.value);
    const names = p.instruments.filter((n) => n in served);
    selI.innerHTML = html`${names.map((n) => html`<option ${n === params.get("instrument") ? raw("selected") : ""}>${n}</option>`)}`.s;
    fillPlans();
  }
  function fillPlans() {
    const inst = served[selI.value];
    if (!inst) { selPlan.innerHTML = ""; paramsBox.innerHTML = '<p class="muted">this proposal has no instrument served here</p>'; return; }
    selPlan.innerHTML = html`${Object.keys(inst.plans).map((n) => html`<option ${n === params.get("plan") ? raw("selected") : ""}>${n}</option>`)}`.s;
    drawParams();
  }
  function drawParams() {
    const schema = served[selI.value].plans[selPlan.value];
    form.querySelector("#x-plan-desc").textContent = schema.description;
    sf = schemaForm(paramsBox, schema);
  }
  selP.addEventListener("change", fillInstruments);
  selI.addEventListener("change", fillPlans);
  selPlan.addEventListener("change", drawParams);
  if (params.get("proposal")) selP.value = params.get("proposal");
  fillInstruments();

  let poll = null;
  onLeave(() => clearInterval(poll));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    form.querySelector("#submit-error").textContent = "";
    showFieldErrors(form, null);
    sf.clearErrors();
    const body = { proposal_id: f.get("proposal_id"), instrument: f.get("instrument"), plan: f.get("plan"),
                   parameters: sf.values(), priority: Number(f.get("priority") || 0), note: f.get("note") };
    try {
      const item = await api("/experiments", { method: "POST", body });
      const out = view.querySelector("#submitted");
      const draw = (it) => {
        out.innerHTML = html`<h3>Submitted</h3><p id="item-status">experiment <code>${it.id}</code>: ${state(it.status)}
          ${it.run_uid ? html` · run <a href="#/runs/${it.run_uid}">${short(it.run_uid)}</a>` : ""}</p>
          ${it.result ? html`<p id="item-result">result: ${Object.entries(it.result.values || it.result).map(([k, v]) => `${k} = ${typeof v === "number" ? fmt(v) : JSON.stringify(v)}`).join(", ")}</p>` : ""}
          ${it.error ? html`<p class="error">${it.error}</p>` : ""}`.s;
      };
      draw(item);
      clearInterval(poll);
      poll = setInterval(async () => {
        const it = await api(`/experiments/${item.id}`);
        draw(it);
        if (!["queued", "running"].includes(it.status)) clearInterval(poll);
      }, 700);
    } catch (err) {
      if (err.status === 422) showFieldErrors(form, err); // the form's own fields (priority, ...)
      const left = err.status === 422 ? sf.showErrors(err) : [err];
      if (left.length || err.status !== 422) form.querySelector("#submit-error").textContent = err.message;
    }
  });
}
