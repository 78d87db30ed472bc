// Who am I, proposals: create, see state / usage / charges, members, and (admins) decide.
import { api, ApiError, html, raw, fmt, state, short } from "./api.js";

const isStaff = (me) => me.role === "scientist" || me.role === "admin";

function proposalRows(props, me) {
  return html`<div class="table-wrap"><table id="proposals-table"><caption class="muted">${props.length} proposal(s)</caption>
    <thead><tr><th>id</th><th>title</th><th>kind</th><th>status</th><th>instruments</th>
    <th class="num">experiments used / allocated</th><th class="num">hours used / allocated</th><th>mine</th></tr></thead>
    <tbody>${props.map((p) => html`<tr data-id="${p.id}"><td><a href="#/proposals/${p.id}">${p.id}</a></td><td>${p.title}</td>
      <td>${p.kind}</td><td>${state(p.status)}</td><td>${p.instruments.join(", ")}</td>
      <td class="num">${p.usage ? p.usage.experiments : "–"} / ${fmt(p.allocation.experiments)}</td>
      <td class="num">${p.usage ? fmt(p.usage.hours, 3) : "–"} / ${fmt(p.allocation.hours)}</td>
      <td>${me.proposals && p.id in me.proposals ? me.proposals[p.id] : ""}</td></tr>`)}</tbody></table></div>`;
}

export async function homeView({ view, me }) {
  const fresh = await api("/me");
  Object.assign(me, fresh);
  const [all, items] = await Promise.all([api("/proposals"), api("/experiments?limit=20")]);
  const props = all.filter((p) => p.id in (me.proposals || {}));
  view.innerHTML = html`<h2>Me</h2>
    <dl class="row"><dt>name</dt><dd id="me-name">${me.name}</dd><dt>role</dt><dd id="me-role">${me.role}</dd>
      <dt>e-mail</dt><dd>${me.email || "–"}</dd></dl>
    <h3>My proposals</h3>
    ${props.length ? proposalRows(props, me) : html`<p>None yet. <a href="#/proposals">Ask for beamtime</a>: create a proposal.</p>`}
    <h3>My recent experiments</h3>
    ${items.length ? html`<div class="table-wrap"><table id="experiments-table"><thead><tr><th>id</th><th>instrument</th><th>kind</th><th>status</th>
      <th>parameters</th><th>result</th><th>run</th><th>submitted</th></tr></thead>
      <tbody>${items.map((x) => html`<tr data-id="${x.id}"><td>${short(x.id)}</td><td>${x.instrument}</td><td>${x.kind}${x.campaign_id ? html` (<a href="#/campaigns/${x.campaign_id}">campaign</a>)` : ""}</td>
        <td>${state(x.status)}</td><td>${x.parameters ? Object.entries(x.parameters).map(([k, v]) => `${k}=${fmt(v, 3)}`).join(" ") : ""}</td>
        <td>${x.result && x.result.values ? Object.entries(x.result.values).map(([k, v]) => `${k}=${fmt(v)}`).join(" ") : x.error || ""}</td>
        <td>${x.run_uid ? html`<a href="#/runs/${x.run_uid}">${short(x.run_uid)}</a>` : ""}</td><td>${x.created_at}</td></tr>`)}</tbody></table></div>`
      : html`<p class="muted">none yet</p>`}
    <h3>Where to go</h3>
    <ul><li><a href="#/submit">Submit an experiment</a></li><li><a href="#/campaigns">Start or watch a campaign</a></li>
      <li><a href="#/instruments">Instruments and their queues</a></li>
      ${isStaff(me) ? html`<li><a href="#/facility">Facility: utilisation, usage, audit log</a></li>` : ""}</ul>`.s;
}

export async function proposalsView({ view, me }) {
  const [props, instruments] = await Promise.all([api("/proposals"), api("/instruments")]);
  const pending = props.filter((p) => p.status === "pending");
  view.innerHTML = html`<h2>Proposals</h2>
    ${me.role === "admin" && pending.length ? html`<p class="banner" id="pending-note">${pending.length} proposal(s) wait for a decision: open one to approve or reject it.</p>` : ""}
    ${proposalRows(props, me)}
    <h3 id="new-proposal">New proposal</h3>
    <form id="proposal-form" class="grid" novalidate aria-labelledby="new-proposal">
      <label for="p-title">title *</label><div><input id="p-title" name="title" required size="40"><p class="field-error" data-field="title" role="alert"></p></div>
      <label for="p-abstract">abstract</label><div><textarea id="p-abstract" name="abstract" rows="3" cols="40"></textarea></div>
      <label for="p-kind">kind</label><div><select id="p-kind" name="kind"><option value="proprietary">proprietary: data for members only</option>
        <option value="open">open: data public after the embargo</option><option value="coalition">coalition: shared with the coalition</option></select>
        <p class="field-error" data-field="kind" role="alert"></p></div>
      <label for="p-coalition">coalition</label><div><input id="p-coalition" name="coalition"><p class="hint">only for kind coalition</p><p class="field-error" data-field="coalition" role="alert"></p></div>
      <span>instruments *</span><fieldset><legend class="muted">the instruments it may use</legend>
        ${instruments.map((i) => html`<label><input type="checkbox" name="instruments" value="${i.name}"> ${i.name}</label> `)}
        <p class="field-error" data-field="instruments" role="alert"></p></fieldset>
      <label for="p-exp">allocation: experiments</label><div><input id="p-exp" name="experiments" type="number" min="1" step="1"><p class="field-error" data-field="allocation.experiments" role="alert"></p></div>
      <label for="p-hours">allocation: hours</label><div><input id="p-hours" name="hours" type="number" min="0" step="any"><p class="field-error" data-field="allocation.hours" role="alert"></p></div>
      <label for="p-members">members</label><div><input id="p-members" name="members" size="40" placeholder="user names, comma-separated"><p class="field-error" data-field="members" role="alert"></p></div>
      <div class="full"><button class="primary" type="submit">Create proposal</button> <span id="proposal-result" role="status"></span></div>
    </form>`.s;
  const form = view.querySelector("#proposal-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const num = (k) => (f.get(k) === "" ? null : Number(f.get(k)));
    const body = {
      title: f.get("title"), abstract: f.get("abstract"), kind: f.get("kind"),
      instruments: f.getAll("instruments"),
      allocation: { experiments: num("experiments"), hours: num("hours") },
      members: String(f.get("members")).split(",").map((s) => s.trim()).filter(Boolean),
    };
    if (f.get("coalition")) body.coalition = f.get("coalition");
    showFieldErrors(form, null);
    try {
      const p = await api("/proposals", { method: "POST", body });
      location.hash = `#/proposals/${p.id}`;
    } catch (err) {
      showFieldErrors(form, err);
      form.querySelector("#proposal-result").textContent = err.message;
    }
  });
}

/** Put a 422's messages on the form's fields (by data-field; members.0 goes on members). */
export function showFieldErrors(form, err) {
  form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  if (!err || !(err instanceof ApiError)) return;
  const details = Array.isArray(err.body.detail) ? err.body.detail : [{ field: err.field, msg: err.message }];
  for (const d of details) {
    let field = d.field || "";
    let box = null;
    while (field && !(box = form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`))) {
      field = field.includes(".") ? field.slice(0, field.lastIndexOf(".")) : "";
    }
    if (!box) continue;
    box.textContent = d.msg + (d.input != null ? ` (got ${d.input})` : "");
    const input = box.parentElement.querySelector("input, select, textarea");
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

export async function proposalView({ view, me }, id) {
  const p = await api(`/proposals/${encodeURIComponent(id)}`);
  const isMember = me.proposals && p.id in me.proposals;
  const [usage, audit] = await Promise.all([
    api(`/usage?proposal_id=${encodeURIComponent(id)}`).catch(() => []),
    isMember || me.role === "admin" ? api(`/proposals/${encodeURIComponent(id)}/audit?limit=50`).catch(() => []) : [],
  ]);
  const isPI = me.proposals && me.proposals[p.id] === "pi";
  const alloc = (used, a) => (a == null ? `${fmt(used, 3)} (no limit)` : `${fmt(used, 3)} of ${a} (${(100 * used / a).toFixed(0)} %)`);
  view.innerHTML = html`<h2>Proposal ${p.id}: ${p.title}</h2>
    <dl class="row"><dt>status</dt><dd id="proposal-status">${state(p.status)}</dd><dt>kind</dt><dd>${p.kind}${p.coalition ? " (" + p.coalition + ")" : ""}</dd>
      <dt>dedicated time</dt><dd>${p.dedicated ? "yes" : "no (shared)"}</dd><dt>embargo until</dt><dd>${p.embargo_until || "–"}</dd>
      <dt>instruments</dt><dd>${p.instruments.join(", ")}</dd></dl>
    ${p.abstract ? html`<p>${p.abstract}</p>` : ""}
    <h3>Usage against allocation</h3>
    <p id="proposal-usage">experiments: ${alloc(p.usage ? p.usage.experiments : 0, p.allocation.experiments)};
      hours: ${alloc(p.usage ? p.usage.hours : 0, p.allocation.hours)}</p>
    <div class="table-wrap"><table id="charges-table"><caption class="muted">charges per instrument (the meter; the queue's
      fair-share charge is 1 per experiment + 1 per instrument-minute)</caption>
      <thead><tr><th>instrument</th><th class="num">experiments</th><th class="num">succeeded</th><th class="num">instrument hours</th><th class="num">fair-share charge</th></tr></thead>
      <tbody>${usage.map((u) => html`<tr><td>${u.instrument}</td><td class="num">${u.experiments}</td><td class="num">${u.succeeded}</td>
        <td class="num">${fmt(u.hours, 3)}</td><td class="num">${fmt(u.experiments + u.seconds / 60, 4)}</td></tr>`)}</tbody></table></div>
    <h3>Members</h3>
    <ul>${(p.members || []).map((m) => html`<li>${m.name} (${m.role})</li>`)}</ul>
    ${isPI || me.role === "admin" ? html`<form id="member-form" class="row" novalidate><label for="m-user">add member</label>
      <input id="m-user" name="user" placeholder="user name"><select name="role" aria-label="role"><option>member</option><option>pi</option></select>
      <button type="submit">Add</button><p class="field-error" data-field="user" role="alert"></p></form>` : ""}
    ${me.role === "admin" ? html`<h3 id="decide-title">Decision (admin)</h3>
      <form id="decide-form" class="grid" novalidate aria-labelledby="decide-title">
        <label for="d-exp">allocation: experiments</label><div><input id="d-exp" name="experiments" type="number" min="1" value="${p.allocation.experiments ?? ""}"><p class="field-error" data-field="allocation.experiments" role="alert"></p></div>
        <label for="d-hours">allocation: hours</label><div><input id="d-hours" name="hours" type="number" step="any" value="${p.allocation.hours ?? ""}"><p class="field-error" data-field="allocation.hours" role="alert"></p></div>
        <label for="d-embargo">embargo until</label><div><input id="d-embargo" name="embargo" type="date"><p class="hint">open proposals: data public after this date</p><p class="field-error" data-field="embargo_until" role="alert"></p></div>
        <label for="d-dedicated">dedicated time</label><div><input id="d-dedicated" name="dedicated" type="checkbox" ${p.dedicated ? raw("checked") : ""}> <span class="hint">counts against the instruments' dedicated fraction</span></div>
        <label for="d-comment">comment</label><div><input id="d-comment" name="comment" size="40"></div>
        <div class="full row"><button class="primary" type="submit" name="decision" value="approve">Approve</button>
          <button type="submit" name="decision" value="reject">Reject</button><button type="submit" name="decision" value="close">Close</button>
          <span id="decide-result" role="status"></span></div>
      </form>` : ""}
    ${audit.length ? html`<h3>Audit log</h3><div class="table-wrap"><table><thead><tr><th>when</th><th>who</th><th>what</th><th>detail</th></tr></thead>
      <tbody>${audit.map((a) => html`<tr><td>${a.at}</td><td>${a.actor}</td><td>${a.action}</td><td><code>${JSON.stringify(a.detail).slice(0, 160)}</code></td></tr>`)}</tbody></table></div>` : ""}`.s;

  const mform = view.querySelector("#member-form");
  if (mform) mform.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(mform);
    try { await api(`/proposals/${p.id}/members`, { method: "POST", body: { user: f.get("user"), role: f.get("role") } }); window.dispatchEvent(new HashChangeEvent("hashchange")); }
    catch (err) { showFieldErrors(mform, err); if (!mform.querySelector(".field-error").textContent) mform.querySelector(".field-error").textContent = err.message; }
  });
  const dform = view.querySelector("#decide-form");
  if (dform) dform.addEventListener("submit", async (e) => {
    e.preventDefault();
    const decision = e.submitter ? e.submitter.value : "approve";
    const f = new FormData(dform);
    const num = (k) => (f.get(k) === "" ? null : Number(f.get(k)));
    let body = { comment: f.get("comment") };
    if (decision === "approve") {
      body = { ...body, allocation: { experiments: num("experiments"), hours: num("hours") }, dedicated: f.get("dedicated") === "on" };
      if (f.get("embargo")) body.embargo_until = f.get("embargo") + "T00:00:00Z";
    }
    showFieldErrors(dform, null);
    try {
      await api(`/proposals/${p.id}/${decision}`, { method: "POST", body });
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (err) {
      showFieldErrors(dform, err);
      dform.querySelector("#decide-result").textContent = err.message;
    }
  });
}
