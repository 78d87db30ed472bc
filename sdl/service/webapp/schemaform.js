// A form generated from a plan's JSON schema (the service's GET /api/instruments/{name}):
// units and limits as hints, compositions that must sum to a total, pools as a searchable
// list. The browser does not check the limits itself (novalidate): the service does, and
// its 422 message is shown on the field it names.
import { api, esc, html, raw, fmt } from "./api.js";

let counter = 0;

export function schemaForm(container, schema, { initial = {} } = {}) {
  const id = `sf${++counter}`;
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const rows = Object.entries(props).map(([name, p]) => {
    const fid = `${id}-${name}`, units = p["x-units"] ? ` (${p["x-units"]})` : "";
    const limits = p.minimum != null || p.maximum != null
      ? `allowed ${p.minimum ?? (p.exclusiveMinimum != null ? ">" + p.exclusiveMinimum : "")} … ${p.maximum ?? ""}${p["x-units"] ? " " + p["x-units"] : ""}` : "";
    const value = initial[name] ?? p.default ?? p.const ?? "";
    let input;
    if (p.const !== undefined) {
      input = html`<input id="${fid}" name="${name}" value="${p.const}" readonly aria-describedby="${fid}-hint ${fid}-err">`;
    } else if (p.enum) {
      input = html`<select id="${fid}" name="${name}" aria-describedby="${fid}-hint ${fid}-err">${p.enum.map((v) => html`<option ${v === value ? raw("selected") : ""}>${v}</option>`)}</select>`;
    } else {
      input = html`<input id="${fid}" name="${name}" type="number" step="${p.type === "integer" ? 1 : "any"}" inputmode="decimal"
        ${p.minimum != null ? raw(`min="${esc(p.minimum)}"`) : ""} ${p.maximum != null ? raw(`max="${esc(p.maximum)}"`) : ""}
        value="${value}" ${required.has(name) ? raw('aria-required="true"') : ""} aria-describedby="${fid}-hint ${fid}-err">`;
    }
    return html`<label for="${fid}">${name}${units}${required.has(name) ? " *" : ""}</label>
      <div>${input}<p class="hint" id="${fid}-hint">${limits}${p.const !== undefined ? "fixed by the instrument" : ""}</p>
      <p class="field-error" id="${fid}-err" data-field="${name}" role="alert"></p></div>`;
  });
  const constraints = schema["x-constraints"] || [];
  const pool = schema["x-pool"];
  container.innerHTML = html`${rows}
    ${constraints.map((c, i) => html`<div class="full"><p id="${id}-sum${i}" class="hint" aria-live="polite"></p>
      <button type="button" data-normalise="${i}">Scale ${c.components.join(", ")} to sum to ${c.total}</button></div>`)}
    ${pool ? html`<fieldset class="full"><legend>Candidates (${pool.size}): only these samples can be made</legend>
      <label for="${id}-search">Search</label> <input id="${id}-search" type="search" placeholder="e.g. 45">
      <div class="pool-list table-wrap" id="${id}-pool"><p class="muted">loading…</p></div></fieldset>` : ""}`.s;
  const field = (n) => container.querySelector(`[name="${CSS.escape(n)}"]`);

  function updateSums() {
    constraints.forEach((c, i) => {
      const sum = c.components.reduce((a, n) => a + (parseFloat(field(n)?.value) || 0), 0);
      const ok = Math.abs(sum - c.total) < 1e-6;
      container.querySelector(`#${id}-sum${i}`).textContent =
        `${c.description}: now ${+sum.toPrecision(6)} ${ok ? "✓ sums to " + c.total : "✗ must sum to " + c.total}`;
    });
  }
  // a container gets a new form when the plan or instrument changes: drop the old one's listener
  if (container.sfAbort) container.sfAbort.abort();
  container.sfAbort = new AbortController();
  container.addEventListener("input", updateSums, { signal: container.sfAbort.signal });
  container.querySelectorAll("[data-normalise]").forEach((b) => b.addEventListener("click", () => {
    const c = constraints[+b.dataset.normalise];
    const vals = c.components.map((n) => parseFloat(field(n).value) || 0), sum = vals.reduce((a, v) => a + v, 0);
    if (sum > 0) c.components.forEach((n, k) => { field(n).value = +(vals[k] * c.total / sum).toPrecision(6); });
    updateSums();
  }));
  updateSums();

  if (pool) {
    api(pool.url.replace(/^\/api/, "")).then((cands) => {
      const list = container.querySelector(`#${id}-pool`), search = container.querySelector(`#${id}-search`);
      const names = Object.keys(cands[0] || {});
      function draw() {
        const q = search.value.trim().toLowerCase();
        const hits = cands.map((c, i) => [c, i]).filter(([c]) => !q || names.some((n) => String(c[n]).toLowerCase().includes(q)));
        list.innerHTML = html`<table><caption class="muted">${hits.length} of ${cands.length} shown</caption>
          <thead><tr><th>#</th>${names.map((n) => html`<th class="num">${n}</th>`)}<th></th></tr></thead><tbody>
          ${hits.slice(0, 200).map(([c, i]) => html`<tr><td>${i}</td>${names.map((n) => html`<td class="num">${fmt(c[n])}</td>`)}
          <td><button type="button" data-pick="${i}">Use #${i}</button></td></tr>`)}</tbody></table>`.s;
      }
      list.addEventListener("click", (e) => {
        const b = e.target.closest("[data-pick]");
        if (!b) return;
        const c = cands[+b.dataset.pick];
        for (const n of names) if (field(n)) field(n).value = c[n];
        updateSums();
      });
      search.addEventListener("input", draw);
      draw();
    }).catch((e) => { container.querySelector(`#${id}-pool`).textContent = "could not load the candidates: " + e.message; });
  }

  return {
    values() {
      const out = {};
      for (const [name, p] of Object.entries(props)) {
        const el = field(name);
        if (!el || el.value === "") continue;
        if (p.enum) out[name] = p.enum.find((v) => String(v) === el.value) ?? el.value;
        else if (p.const !== undefined) out[name] = p.const;
        else out[name] = Number(el.value);
      }
      return out;
    },
    clearErrors() {
      container.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
      container.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    },
    /** Put a 422 answer's messages on the fields they name; returns those it could not place. */
    showErrors(err, prefix = "parameters.") {
      this.clearErrors();
      const details = Array.isArray(err.body && err.body.detail) ? err.body.detail : [{ field: err.field, msg: err.message }];
      const left = [];
      let first = null;
      for (const d of details) {
        const name = (d.field || "").startsWith(prefix) ? d.field.slice(prefix.length) : null;
        const el = name != null && field(name);
        if (!el) { left.push(d); continue; }
        el.setAttribute("aria-invalid", "true");
        container.querySelector(`.field-error[data-field="${CSS.escape(name)}"]`).textContent =
          d.msg + (d.input != null ? ` (got ${d.input})` : "");
        first = first || el;
      }
      if (first) first.focus();
      return left;
    },
  };
}
