// The HTTP API and the live stream, as the signed-in user. Also the one HTML helper
// (`html`), which escapes every interpolated value unless it is wrapped in `raw()`.

export class ApiError extends Error {
  constructor(status, body) {
    const d = body && body.detail;
    super((body && body.message) || (typeof d === "string" ? d : JSON.stringify(d)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.field = this.body.field || null;
  }
}

export const session = { token: localStorage.getItem("sdl_token") || "", me: null };

export function setToken(token) {
  session.token = token;
  if (token) localStorage.setItem("sdl_token", token); else localStorage.removeItem("sdl_token");
}

export async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: "Bearer " + session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch("/api" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    let b;
    try { b = await r.json(); } catch { b = { detail: r.statusText }; }
    throw new ApiError(r.status, b);
  }
  return raw ? r : r.json();
}

/** Fetch with the token and save the answer as a file (a plain link cannot send the token). */
export async function download(path, filename) {
  const r = await api(path, { raw: true });
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url; a.download = filename; document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The live stream (WebSocket; the token travels as a subprotocol, never in the address).
 *  Reconnects until closed; `onEvent(e)` gets each event, `onState(text)` the connection state. */
export function stream(params, onEvent, onState = () => {}) {
  let ws = null, closed = false, timer = null;
  const q = new URLSearchParams(params).toString();
  function open() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/api/stream${q ? "?" + q : ""}`, ["sdl.bearer", session.token]);
    ws.addEventListener("message", (m) => {
      const e = JSON.parse(m.data);
      if (e.type === "hello") onState("live");
      onEvent(e);
    });
    ws.addEventListener("close", () => {
      if (closed) return;
      onState("reconnecting");
      timer = setTimeout(open, 1500);
    });
  }
  open();
  // A socket still connecting is closed once it opens: closing it earlier makes the browser
  // warn "closed before the connection is established" (leaving a page right after opening it).
  return { close() {
    closed = true; clearTimeout(timer);
    if (ws && ws.readyState === WebSocket.CONNECTING) ws.addEventListener("open", () => ws.close());
    else if (ws) ws.close();
  } };
}

// ----------------------------------------------------------------- HTML helpers
const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function esc(v) { return String(v == null ? "" : v).replace(/[&<>"']/g, (c) => ESC[c]); }
class Raw { constructor(s) { this.s = s; } toString() { return this.s; } }
export function raw(s) { return new Raw(s); }
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => {
    if (Array.isArray(v)) v = v.map((x) => (x instanceof Raw ? x.s : esc(x))).join("");
    else v = v instanceof Raw ? v.s : esc(v);
    out += v + strings[i + 1];
  });
  return raw(out);
}
export function fmt(v, digits = 4) {
  if (v == null || v === "") return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(digits);
  return String(v);
}
export function state(s) { return html`<span class="state state-${s}">${s}</span>`; }
export function short(id) { return id ? String(id).slice(0, 8) : "–"; }
