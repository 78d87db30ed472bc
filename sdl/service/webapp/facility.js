// Facility views for staff: utilisation per instrument, dedicated vs shared share against
// the target, usage per proposal, the audit log (admins).
import { api, html, raw, fmt, state } from "./api.js";

const pct = (x) => `${(100 * x).toFixed(1)} %`;
const dur = (s) => (s >= 3600 ? `${(s / 3600).toFixed(2)} h` : s >= 60 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`);

/** A horizontal bar in three patterns (busy solid, paused hatched, idle empty), with the numbers as text. */
function bar(u) {
  const w = 300, b = w * u.busy_fraction, p = w * u.paused_fraction;
  return `<svg class="chart" viewBox="0 0 ${w} 18" width="${w}" height="18" role="img" aria-label="busy ${pct(u.busy_fraction)}, paused ${pct(u.paused_fraction)}, idle ${pct(u.idle_fraction)}">
    <defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#8a4b00" stroke-width="3"/></pattern></defs>
    <rect x="0" y="1" width="${b}" height="16" fill="#0b57d0"/><rect x="${b}" y="1" width="${p}" height="16" fill="url(#hatch)"/>
    <rect x="0.5" y="1" width="${w - 1}" height="16" fill="none" stroke="#777"/></svg>`;
}

export async function facilityView({ view, me, params }) {
  const hours = Number(params.get("hours") || 24);
  const [util, shares, usage, audit] = await Promise.all([
    api(`/usage/utilisation?hours=${hours}`), api("/usage/shares"), api("/usage"),
    me.role === "admin" ? api("/audit?limit=100") : Promise.resolve(null),
  ]);
  view.innerHTML = html`<h2>Facility</h2>
    <h3>Utilisation per instrument</h3>
    <p class="muted">from ${util.since} to ${util.until} (${dur(util.window_seconds)}; the last ${hours} h or since the lab's first record).
      Bar: solid = busy, hatched = paused, empty = idle.</p>
    <div class="table-wrap"><table id="utilisation-table"><thead><tr><th>instrument</th><th>state now</th><th class="num">busy</th><th class="num">paused</th>
      <th class="num">idle</th><th>down now</th><th>share of time</th></tr></thead>
      <tbody>${Object.entries(util.instruments).map(([n, u]) => html`<tr data-name="${n}"><td>${n}</td><td>${state(u.state)}</td>
        <td class="num">${dur(u.busy_seconds)} (${pct(u.busy_fraction)})</td><td class="num">${dur(u.paused_seconds)} (${pct(u.paused_fraction)})</td>
        <td class="num">${dur(u.idle_seconds)} (${pct(u.idle_fraction)})</td><td>${u.down ? "yes" : "no"}</td><td>${raw(bar(u))}</td></tr>`)}</tbody></table></div>
    <h3>Dedicated and shared time against the target</h3>
    <div class="table-wrap"><table id="shares-table"><thead><tr><th>instrument</th><th class="num">dedicated time</th><th class="num">shared time</th>
      <th class="num">dedicated share</th><th class="num">target</th></tr></thead>
      <tbody>${Object.entries(shares).map(([n, s]) => {
        const tot = s.dedicated_seconds + s.shared_seconds;
        return html`<tr><td>${n}</td><td class="num">${dur(s.dedicated_seconds)} (${s.dedicated_experiments})</td><td class="num">${dur(s.shared_seconds)} (${s.shared_experiments})</td>
          <td class="num">${tot ? pct(s.dedicated_seconds / tot) : "–"}</td><td class="num">${pct(s.dedicated_fraction_target)}</td></tr>`;
      })}</tbody></table></div>
    <h3>Usage per proposal</h3>
    <div class="table-wrap"><table id="usage-table"><thead><tr><th>proposal</th><th>title</th><th>instrument</th><th class="num">experiments</th>
      <th class="num">succeeded</th><th class="num">hours</th><th class="num">allocation (exp. / h)</th></tr></thead>
      <tbody>${usage.map((u) => html`<tr><td><a href="#/proposals/${u.proposal_id}">${u.proposal_id}</a></td><td>${u.title || ""}</td><td>${u.instrument}</td>
        <td class="num">${u.experiments}</td><td class="num">${u.succeeded}</td><td class="num">${fmt(u.hours, 3)}</td>
        <td class="num">${fmt(u.allocation_experiments)} / ${fmt(u.allocation_hours)}</td></tr>`)}</tbody></table></div>
    ${audit ? html`<h3>Audit log (newest 100)</h3><div class="table-wrap"><table id="audit-table"><thead><tr><th>when</th><th>who</th><th>what</th><th>target</th><th>detail</th></tr></thead>
      <tbody>${audit.map((a) => html`<tr><td>${a.at}</td><td>${a.actor}</td><td>${a.action}</td><td>${a.target_type} ${a.target_id.slice(0, 16)}</td>
        <td><code>${JSON.stringify(a.detail).slice(0, 140)}</code></td></tr>`)}</tbody></table></div>` : ""}`.s;
}
