// Hand-written SVG charts: a few hundred lines instead of a charting library. Every series
// differs by shape or dash as well as colour, and carries a text legend.
import { esc } from "./api.js";

const W = 420, H = 260, L = 56, R = 12, T = 14, B = 38;

function extent(vals) {
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
  if (hi === lo) { const d = Math.abs(hi) * 0.05 || 1; lo -= d; hi += d; }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}
const num = (v) => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(2) : +v.toPrecision(3));

function frame(xr, yr, xLabel, yLabel, w = W, h = H, intX = false) {
  const x = (v) => L + (w - L - R) * (v - xr[0]) / (xr[1] - xr[0]);
  const y = (v) => T + (h - T - B) * (1 - (v - yr[0]) / (yr[1] - yr[0]));
  let s = `<line class="axis" x1="${L}" y1="${h - B}" x2="${w - R}" y2="${h - B}"/>`;
  s += `<line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${h - B}"/>`;
  for (let i = 0; i <= 4; i++) {
    let xv = xr[0] + (xr[1] - xr[0]) * i / 4;
    const yv = yr[0] + (yr[1] - yr[0]) * i / 4;
    if (intX) xv = Math.round(xv);
    s += `<text x="${x(xv)}" y="${h - B + 14}" text-anchor="middle">${num(xv)}</text>`;
    s += `<text x="${L - 4}" y="${y(yv) + 4}" text-anchor="end">${num(yv)}</text>`;
  }
  s += `<text x="${(L + w - R) / 2}" y="${h - 6}" text-anchor="middle">${esc(xLabel)}</text>`;
  s += `<text transform="translate(12 ${(T + h - B) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`;
  return { x, y, s };
}
function svg(body, label, w = W, h = H) {
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(label)}">${body}</svg>`;
}
function empty(label, text = "no measurements yet") {
  return svg(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(text)}</text>`, label);
}

/** Best-so-far against experiments: measured values (open circles), best so far (thick step line). */
export function convergence(values, sign, budget, objective) {
  const label = `${objective}: measured values and best so far against experiments`;
  const pts = values.map((v, i) => [i + 1, v]).filter(([, v]) => v != null && isFinite(v));
  if (!pts.length) return empty(label);
  const f = frame([0, Math.max(budget || 1, values.length)], extent(pts.map((p) => p[1])), "experiment", objective, W, H, true);
  let s = f.s, best = null, d = "";
  for (const [i, v] of pts) {
    s += `<circle class="obs" cx="${f.x(i)}" cy="${f.y(v)}" r="3"><title>#${i}: ${num(v)}</title></circle>`;
  }
  values.forEach((v, i) => {
    if (v == null || !isFinite(v)) return;
    if (best == null || sign * (v - best) > 0) best = v;
    d += d ? ` H${f.x(i + 1)} V${f.y(best)}` : `M${f.x(i + 1)} ${f.y(best)}`;
  });
  if (best != null) d += ` H${f.x(values.length)}`;
  s += `<path class="best" d="${d}"/>`;
  s += `<text x="${W - R}" y="${T + 8}" text-anchor="end">— best so far (thick) ○ measured</text>`;
  return svg(s, label);
}

/** One pairwise projection of the measured points; the best one drawn as a star. */
export function projection(obs, px, py, objective, sign, w = 260, h = 220) {
  const label = `measured points: ${py} against ${px}`;
  const pts = obs.filter((o) => o.params[px] != null && o.params[py] != null);
  if (!pts.length) return empty(label);
  const f = frame(extent(pts.map((o) => +o.params[px])), extent(pts.map((o) => +o.params[py])), px, py, w, h);
  let s = f.s;
  const vals = pts.map((o) => o.values && o.values[objective]).filter((v) => v != null && isFinite(v));
  let bestObs = null;
  for (const o of pts) {
    const v = o.values && o.values[objective];
    if (v != null && isFinite(v) && (bestObs == null || sign * (v - bestObs.values[objective]) > 0)) bestObs = o;
  }
  const [lo, hi] = vals.length ? [Math.min(...vals), Math.max(...vals)] : [0, 1];
  for (const o of pts) {
    const v = o.values && o.values[objective];
    // better points are drawn larger: size, not only shade, carries the value
    const q = v == null || hi === lo ? 0.5 : (sign > 0 ? (v - lo) : (hi - v)) / (hi - lo);
    s += `<circle class="obs" cx="${f.x(+o.params[px])}" cy="${f.y(+o.params[py])}" r="${(2 + 4 * q).toFixed(1)}">` +
      `<title>${esc(px)}=${num(+o.params[px])} ${esc(py)}=${num(+o.params[py])} ${esc(objective)}=${v == null ? "–" : num(v)}</title></circle>`;
  }
  if (bestObs) {
    const cx = f.x(+bestObs.params[px]), cy = f.y(+bestObs.params[py]);
    s += `<path class="star" d="M${cx} ${cy - 7} L${cx + 2} ${cy - 2} L${cx + 7} ${cy - 2} L${cx + 3} ${cy + 1} L${cx + 5} ${cy + 6} L${cx} ${cy + 3} L${cx - 5} ${cy + 6} L${cx - 3} ${cy + 1} L${cx - 7} ${cy - 2} L${cx - 2} ${cy - 2} Z"><title>best</title></path>`;
  }
  return svg(s, label, w, h);
}

/** The non-dominated points of two objectives (signs: +1 maximise, -1 minimise). */
export function paretoFront(points, signs) {
  const ok = points.filter((p) => p.every((v) => v != null && isFinite(v)));
  const dominated = (a, b) => signs.every((s, k) => s * b[k] >= s * a[k]) && signs.some((s, k) => s * b[k] > s * a[k]);
  return ok.filter((a) => !ok.some((b) => dominated(a, b)));
}

/** Hypervolume of two objectives against a reference point (the worst value of each). */
export function hypervolume(points, signs, ref) {
  const front = paretoFront(points, signs).map((p) => [signs[0] * p[0], signs[1] * p[1]]);
  const r = [signs[0] * ref[0], signs[1] * ref[1]];
  front.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  let hv = 0, prev = r[1];
  for (const [a, b] of front) {
    if (a <= r[0] || b <= prev) continue;
    hv += (a - r[0]) * (b - prev);
    prev = b;
  }
  return hv;
}
export function worstPoint(points, signs) {
  const ok = points.filter((p) => p.every((v) => v != null && isFinite(v)));
  return signs.map((s, k) => (s > 0 ? Math.min(...ok.map((p) => p[k])) : Math.max(...ok.map((p) => p[k]))));
}

/** Two objectives: every point (open circles), the Pareto front (filled squares on a dashed line). */
export function pareto(points, names, signs) {
  const label = `Pareto front of ${names[0]} and ${names[1]}`;
  const ok = points.filter((p) => p.every((v) => v != null && isFinite(v)));
  if (!ok.length) return { svg: empty(label), hv: null, front: [] };
  const f = frame(extent(ok.map((p) => p[0])), extent(ok.map((p) => p[1])), names[0], names[1]);
  let s = f.s;
  for (const p of ok) s += `<circle class="obs" cx="${f.x(p[0])}" cy="${f.y(p[1])}" r="3"/>`;
  const front = paretoFront(ok, signs).sort((a, b) => a[0] - b[0]);
  if (front.length) s += `<path class="front" d="${front.map((p, i) => (i ? "L" : "M") + f.x(p[0]) + " " + f.y(p[1])).join(" ")}"/>`;
  for (const p of front) s += `<rect class="front-pt" x="${f.x(p[0]) - 3.5}" y="${f.y(p[1]) - 3.5}" width="7" height="7"/>`;
  s += `<text x="${W - R}" y="${T + 8}" text-anchor="end">■ Pareto front ○ measured</text>`;
  const hv = hypervolume(ok, signs, worstPoint(ok, signs));
  return { svg: svg(s, label), hv, front };
}

/** The model's prediction (mean ± 2 sd, bars with diamonds) where the agent suggested, and
 *  the measured value (circles), along one parameter. */
export function prediction(rows, param, objective) {
  const label = `model prediction and uncertainty of ${objective} along ${param}`;
  const pts = rows.filter((r) => r.params[param] != null && (r.mean != null || r.measured != null));
  if (!pts.some((r) => r.mean != null)) return empty(label, "this agent reports no prediction (try agent bo)");
  const ys = [];
  pts.forEach((r) => { if (r.mean != null) { ys.push(r.mean - 2 * (r.sd || 0), r.mean + 2 * (r.sd || 0)); } if (r.measured != null) ys.push(r.measured); });
  const f = frame(extent(pts.map((r) => +r.params[param])), extent(ys), param, objective);
  let s = f.s;
  for (const r of pts) {
    const x = f.x(+r.params[param]);
    if (r.mean != null) {
      const sd = r.sd || 0;
      s += `<line class="pred" x1="${x}" x2="${x}" y1="${f.y(r.mean - 2 * sd)}" y2="${f.y(r.mean + 2 * sd)}"/>`;
      s += `<path class="pred-pt" d="M${x} ${f.y(r.mean) - 4} L${x + 4} ${f.y(r.mean)} L${x} ${f.y(r.mean) + 4} L${x - 4} ${f.y(r.mean)} Z"><title>predicted ${num(r.mean)} ± ${num(2 * sd)}</title></path>`;
    }
    if (r.measured != null) s += `<circle class="obs" cx="${x}" cy="${f.y(r.measured)}" r="3"><title>measured ${num(r.measured)}</title></circle>`;
  }
  s += `<text x="${W - R}" y="${T + 8}" text-anchor="end">◆ predicted ±2 sd  ○ measured</text>`;
  return svg(s, label);
}
