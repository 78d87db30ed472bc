// sdl cloud lab: the web app. Plain ES modules, no build step; one view per address
// (#/proposals, #/campaigns/ID, ...), each drawn from the HTTP API and, where it is live,
// the WebSocket stream. No inline script or handler anywhere (strict CSP).
import { api, ApiError, session, setToken, html } from "./api.js";
import { proposalsView, proposalView, homeView } from "./proposals.js";
import { instrumentsView, instrumentView, submitView } from "./instruments.js";
import { campaignsView, campaignView, runView } from "./campaigns.js";
import { facilityView } from "./facility.js";
import { workflowsView, workflowView, workflowCampaignView, sampleView } from "./workflows.js";

const $ = (s) => document.querySelector(s);
let cleanup = null;

const routes = [
  [/^$/, homeView],
  [/^proposals$/, proposalsView],
  [/^proposals\/([^/]+)$/, proposalView],
  [/^instruments$/, instrumentsView],
  [/^instruments\/([^/]+)$/, instrumentView],
  [/^submit$/, submitView],
  [/^campaigns$/, campaignsView],
  [/^campaigns\/([^/]+)$/, campaignView],
  [/^runs\/([^/]+)$/, runView],
  [/^facility$/, facilityView],
  [/^workflows$/, workflowsView],
  [/^workflows\/([^/]+)$/, workflowView],
  [/^workflow-campaigns\/([^/]+)$/, workflowCampaignView],
  [/^samples\/([^/]+)$/, sampleView],
];

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* the old view is gone anyway */ } cleanup = null; }
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const view = $("#view");
  if (!session.me) return;
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").replace(/^#\/?/, "");
    if ((target === "" && path === "") || (target && path.startsWith(target))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, fn] of routes) {
    const m = path.match(re);
    if (!m) continue;
    view.innerHTML = '<p class="muted">loading…</p>';
    try {
      const ctx = { view, me: session.me, params: new URLSearchParams(query || ""), onLeave: (f) => { cleanup = f; } };
      await fn(ctx, ...m.slice(1).map(decodeURIComponent));
      document.title = ($("#view h2") ? $("#view h2").textContent + " · " : "") + "sdl cloud lab";
    } catch (e) {
      view.innerHTML = html`<p class="error" role="alert">${e instanceof ApiError ? `${e.status}: ${e.message}` : e.message}</p>`.s;
      if (e instanceof ApiError && e.status === 401) signOut("your token was refused: sign in again");
    }
    return;
  }
  view.innerHTML = html`<p class="error">no such page: ${path}</p>`.s;
}

async function signIn() {
  try {
    if (!session.token) throw new Error("no token");
    session.me = await api("/me");
  } catch (e) {
    session.me = null;
    $("#signin").hidden = false;
    $("#nav").hidden = true;
    $("#signout").hidden = true;
    $("#who").textContent = "";
    $("#view").innerHTML = "";
    $("#signin-error").textContent = session.token ? `sign-in failed: ${e.message}` : "";
    return false;
  }
  $("#signin").hidden = true;
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  $("#nav-facility").hidden = !["scientist", "admin"].includes(session.me.role);
  $("#who").textContent = `signed in as ${session.me.name} (${session.me.role})`;
  return true;
}

function signOut(message = "") {
  setToken("");
  session.me = null;
  if (cleanup) { cleanup(); cleanup = null; }
  signIn().then(() => { $("#signin-error").textContent = message; $("#token").focus(); });
}

$("#signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  setToken($("#token").value.trim());
  $("#token").value = "";
  if (await signIn()) { await route(); $("#main").focus(); }
});
$("#signout").addEventListener("click", () => signOut("signed out"));
window.addEventListener("hashchange", () => { if (!location.hash.startsWith("#token=")) route().then(() => $("#main").focus({ preventScroll: true })); });

// with an identity provider configured, offer its sign-in (it comes back to /#token=...)
fetch("/health").then((r) => r.json()).then((h) => { if (h.sign_in) $("#oidc").hidden = false; }).catch(() => {});

(async function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) { // a link with the token: keep it, take it out of the address
    setToken(hash.get("token"));
    history.replaceState(null, "", location.pathname + "#/");
  }
  if (await signIn()) await route();
})();
