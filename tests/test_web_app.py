"""The web app, end to end: Debian's Chromium driven by Playwright against a real uvicorn
server on loopback, each journey as the role that does it, under the page's strict
Content-Security-Policy (no inline script, style or handler; everything from 'self'):
any console error, page error or CSP violation fails the test. Screenshots of each main view go to ``$SDL_ARTIFACTS`` (default
``test-artifacts/web``; not committed).

Needs ``pip install playwright`` and a Chromium on the machine (``apt install chromium``);
no browser is downloaded (``playwright install`` is never run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

if os.environ.get("SDL_REQUIRE_CHROMIUM"):  # CI: a missing browser driver is a failure, not a skip
    import playwright.sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="pip install playwright (the Python package only)")

from sdl.client import Client  # noqa: E402
from sdl.service.settings import InstrumentConfig  # noqa: E402
from sdl.service.testing import Lab, start_lab  # noqa: E402
from sdl.testing import wait_until  # noqa: E402

CHROMIUM = next((p for p in (os.environ.get("SDL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and os.path.exists(p)), None)
if CHROMIUM is None:
    if os.environ.get("SDL_REQUIRE_CHROMIUM"):
        raise RuntimeError("SDL_REQUIRE_CHROMIUM is set but no Chromium was found (apt install chromium)")
    pytest.skip("no Chromium on this machine (apt install chromium)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
SLOW = "pool:agnp"  # a run takes a few seconds here (time_scale 0.05)
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 768, "height": 1024}
ARTIFACTS = Path(os.environ.get("SDL_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts") / "web"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("web"), ("sim-xrd", "pool:p3ht", InstrumentConfig(name=SLOW, time_scale=0.05)))
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Session:
    """One signed-in browser tab; records console errors, page errors and CSP violations."""

    def __init__(self, browser, lab: Lab, token: str | None, viewport=LAPTOP):
        self.lab = lab
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.expected: list[str] = []  # patterns of console messages a test provokes on purpose
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.goto(lab.url + "/" + (f"#token={token}" if token else ""))
        if token:
            self.page.wait_for_selector("#me-name")

    def go(self, hash_: str, wait_for: str):
        self.page.evaluate("h => { location.hash = h; }", hash_)
        self.page.wait_for_selector(wait_for)
        return self.page

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        problems = [p for p in self.problems if not any(re.search(e, p) for e in self.expected)]
        assert not problems, problems


@pytest.fixture
def open_as(browser, lab):
    sessions: list[Session] = []

    def open_(client: Client | None, viewport=LAPTOP) -> Session:
        s = Session(browser, lab, client.token if client else None, viewport)
        sessions.append(s)
        return s

    yield open_
    for s in sessions:
        s.close()


def wait_js(page, expr: str, arg=None, timeout: float = 30.0):
    """Poll a JavaScript expression until it is truthy. (Playwright's wait_for_function
    evaluates its predicate with eval inside the page, which the page's CSP forbids.)"""
    try:
        return wait_until(lambda: page.evaluate(expr, arg), timeout, interval=0.05, what=expr)
    except AssertionError as exc:  # callers catch the browser's timeout
        raise playwright_api.TimeoutError(str(exc)) from None


def _approved(lab: Lab, name: str, instruments=("sim-xrd", "pool:p3ht")) -> tuple[Client, dict]:
    user = lab.user(f"{name}-{int(time.time() * 1000) % 10**7}")
    return user, lab.proposal(user, list(instruments))


# ------------------------------------------------------------------ journeys
def test_the_page_runs_under_a_strict_csp_that_blocks_inline_script(open_as, lab):
    s = open_as(lab.user())
    s.expected.append(r"Content Security Policy")
    blocked = s.page.evaluate("""() => new Promise((done) => {
        document.addEventListener('securitypolicyviolation', (e) => done(e.violatedDirective));
        const el = document.createElement('script');
        el.textContent = 'window.__inline = 1';
        document.body.append(el);
        setTimeout(() => done(window.__inline ? 'ran' : 'no event'), 2000);
    })""")
    assert blocked.startswith("script-src"), blocked
    assert s.page.evaluate("window.__inline") is None
    html = s.page.content()
    assert " onclick=" not in html and "<style" not in html


def test_leaving_a_live_view_before_its_stream_connects_is_quiet(open_as, lab):
    """A view closed while its WebSocket is still connecting (a click away right after opening
    it) must not make the browser warn "closed before the connection is established"."""
    s = open_as(lab.user())
    opened = s.page.evaluate("""async () => {
        const api = await import('/static/api.js');
        const states = [];
        for (let i = 0; i < 5; i++) api.stream({}, () => {}, (st) => states.push(st)).close();
        await new Promise((done) => setTimeout(done, 1500));  // the sockets open, then close
        return states;
    }""")
    assert "reconnecting" not in opened  # closed on purpose: none tries again
    assert not s.problems, s.problems


def test_sign_in_with_the_form_and_a_wrong_token(open_as, lab):
    s = open_as(None)
    page = s.page
    s.expected.append(r"status of 401")
    page.wait_for_selector("#signin:not([hidden])")
    page.fill("#token", "sdl_not-a-token")
    page.press("#token", "Enter")
    page.wait_for_selector("#signin-error:has-text('sign-in failed')")
    user = lab.user()
    page.fill("#token", user.token)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#me-name")
    assert page.inner_text("#who") == f"signed in as {user.user['name']} (user)"
    s.shot("sign-in")
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("localStorage.getItem('sdl_token')") is None


def test_a_user_creates_a_proposal_and_an_admin_approves_it(open_as, lab):
    user, colleague = lab.user(), lab.user()
    mate = colleague.user["name"]
    s = open_as(user)
    page = s.go("#/proposals", "#proposal-form")
    page.fill("#p-title", "phase search from the browser")
    page.check("input[name=instruments][value='sim-xrd']")
    page.fill("#p-exp", "50")
    page.fill("#p-members", "no-such-user")
    s.expected.append(r"status of 422")
    page.click("#proposal-form button[type=submit]")  # 422 on members.0: shown on the members field
    page.wait_for_selector(".field-error[data-field=members]:has-text('no such user')")
    assert page.get_attribute("#p-members", "aria-invalid") == "true"
    page.fill("#p-members", mate)
    page.click("#proposal-form button[type=submit]")
    page.wait_for_selector("#proposal-status:has-text('pending')")
    pid = page.evaluate("location.hash").split("/")[-1]
    s.shot("proposal-created")
    prop = user.get(f"/api/proposals/{pid}")
    assert prop["status"] == "pending" and prop["instruments"] == ["sim-xrd"]
    assert {m["name"] for m in prop["members"]} == {user.user["name"], mate}

    a = open_as(lab.admin)
    apage = a.go("#/proposals", "#pending-note")
    apage.click(f"a[href='#/proposals/{pid}']")
    apage.wait_for_selector("#decide-form")
    apage.fill("#d-exp", "120")
    apage.fill("#d-hours", "5")
    apage.check("#d-dedicated")
    apage.fill("#d-comment", "fine")
    a.shot("proposal-review")
    apage.click("#decide-form button[value=approve]")
    apage.wait_for_selector("#proposal-status:has-text('approved')")
    prop = user.get(f"/api/proposals/{pid}")
    assert prop["status"] == "approved" and prop["allocation"] == {"experiments": 120, "hours": 5.0}
    assert prop["dedicated"] is True
    page.reload()
    page.wait_for_selector("#proposal-status:has-text('approved')")
    assert "of 120" in page.inner_text("#proposal-usage")
    # the user runs something: the proposal page shows it against the allocation, with its charge
    item = user.submit(pid, "sim-xrd", {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420})
    user.wait(item["id"], timeout=30)
    page.reload()
    page.wait_for_selector("#charges-table tbody tr")
    assert "1 of 120" in page.inner_text("#proposal-usage")
    row = page.inner_text("#charges-table tbody tr").split("\t")
    assert row[:3] == ["sim-xrd", "1", "1"] and float(row[4]) >= 1.0
    # and closes it; then rejects another
    apage.click("#decide-form button[value=close]")
    apage.wait_for_selector("#proposal-status:has-text('closed')")
    other = user.create_proposal("not this time", ["sim-xrd"])
    apage = a.go(f"#/proposals/{other['id']}", "#decide-form")
    apage.fill("#d-comment", "out of scope")
    apage.click("#decide-form button[value=reject]")
    apage.wait_for_selector("#proposal-status:has-text('rejected')")
    assert user.get(f"/api/proposals/{other['id']}")["status"] == "rejected"


def test_submit_an_experiment_through_the_generated_form(open_as, lab):
    user, prop = _approved(lab, "submitter")
    s = open_as(user)
    page = s.go(f"#/submit?proposal={prop['id']}&instrument=sim-xrd", "#x-params input[name=temperature]")
    form = page.locator("#x-params")
    for k, v in {"A": "0.3", "B": "0.45", "C": "0.25", "temperature": "900"}.items():
        form.locator(f"input[name={k}]").fill(v)
    assert "✓ sums to 1" in page.inner_text("#x-params")
    s.expected.append(r"status of 422")
    page.click("#submit-form button[type=submit]")
    err = form.locator(".field-error[data-field=temperature]")
    err.wait_for()
    assert "out of range" in err.inner_text() and "650" in err.inner_text()
    assert form.locator("input[name=temperature]").get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.name") == "temperature"  # focus goes to the field
    assert not user.experiments(proposal_id=prop["id"])  # nothing was queued
    s.shot("submit-field-error")
    form.locator("input[name=temperature]").fill("420")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#item-status:has-text('done')", timeout=30_000)
    page.wait_for_selector("#item-result")
    s.shot("submit-done")
    [item] = user.experiments(proposal_id=prop["id"])
    assert item["status"] == "done" and item["parameters"]["temperature"] == 420
    assert item["id"] in page.inner_text("#item-status")
    page = s.go("#/", f"#experiments-table tr[data-id='{item['id']}']")  # and on the home page, with its result
    row = page.inner_text(f"#experiments-table tr[data-id='{item['id']}']")
    assert "done" in row and "fom=" in row and "temperature=420" in row

    # a pool instrument: the candidates are a searchable list that fills the fields
    page = s.go(f"#/submit?proposal={prop['id']}&instrument=pool:p3ht", "[data-pick]")
    n_all = page.locator("[data-pick]").count()
    page.locator("#x-params input[type=search]").fill("75")
    wait_js(page, f"document.querySelectorAll('[data-pick]').length < {n_all}")
    page.locator("[data-pick]").first.click()
    picked = page.locator("#x-params input[name=p3ht_content]").input_value()
    assert picked != ""
    # switching instrument redraws the form from the other schema (and drops the old one's listeners)
    page.select_option("#x-instrument", "sim-xrd")
    page.locator("#x-params input[name=A]").fill("0.5")
    page.locator("#x-params input[name=B]").fill("0.5")
    page.locator("#x-params input[name=C]").fill("0.1")
    assert "now 1.1 ✗ must sum to 1" in page.inner_text("#x-params")
    page.click("#x-params [data-normalise]")
    assert float(page.locator("#x-params input[name=C]").input_value()) == pytest.approx(0.1 / 1.1, rel=1e-5)
    assert "✓ sums to 1" in page.inner_text("#x-params")


def _rows(page, status):
    return page.locator(f"#suggestions-table tbody tr[data-status='{status}']")


def test_campaign_approve_before_run_veto_live_plots_and_rocrate(open_as, lab, tmp_path):
    user, prop = _approved(lab, "campaigner")
    s = open_as(user)
    page = s.go("#/campaigns", "#campaign-form")
    page.select_option("#k-proposal", prop["id"])
    page.select_option("#k-instrument", "sim-xrd")
    page.select_option("#k-agent", "random")
    page.fill("#k-name", "browser campaign")
    page.fill("#k-budget", "3")
    page.fill("#k-seed", "3")
    page.fill("input[name=upper-3]", "900")  # temperature above the instrument's limit: 422 on that field
    page.check("#k-approve")
    s.expected.append(r"status of 422")
    page.click("#campaign-form button[type=submit]")
    page.wait_for_selector(".field-error[data-field='spec.space.parameters.3']:has-text('limit')")
    page.fill("input[name=upper-3]", "600")
    page.click("#campaign-form button[type=submit]")
    page.wait_for_selector("#shown-n")
    cid = page.evaluate("location.hash").split("/")[-1]
    assert user.campaign(cid)["spec"]["approve_before_run"] is True

    # the first suggestion waits for a member: nothing runs until it is approved
    _rows(page, "waiting").first.wait_for(timeout=30_000)
    page.wait_for_selector("#approval-banner:not([hidden])")
    time.sleep(1.0)
    assert user.campaign(cid)["experiments"] == 0 and not user.experiments(campaign_id=cid)
    s.shot("campaign-awaiting-approval")
    decisions: list[tuple[str, str]] = []
    while user.campaign(cid)["state"] != "completed":
        decided = [sid for _, sid in decisions]
        try:  # the first suggestion shown as waiting that was not decided yet
            sid = wait_js(page, """(decided) => {
                const r = [...document.querySelectorAll("#suggestions-table tr[data-status='waiting']")]
                  .find((tr) => !decided.includes(tr.dataset.id));
                return r ? r.dataset.id : null; }""", decided, timeout=5)
        except playwright_api.TimeoutError:
            continue
        veto = len(decisions) == 1  # the second suggestion is vetoed, every other one approved
        page.fill("#sug-reason", "too hot for the furnace" if veto else "looks fine")
        page.click(f"#suggestions-table tr[data-id='{sid}'] button[data-{'veto' if veto else 'approve'}]")
        page.wait_for_selector(f"#sug-result:has-text('{short(sid)}')")
        decisions.append(("veto" if veto else "approve", sid))
        assert len(decisions) < 10, decisions
    sugs = {x["id"]: x for x in user.get(f"/api/campaigns/{cid}/suggestions")}
    for what, sid in decisions:
        prov = sugs[sid]["provenance"]
        if what == "veto":
            assert sugs[sid]["status"] == "vetoed" and prov["vetoed"]["reason"] == "too hot for the furnace"
        else:
            assert sugs[sid]["status"] == "done" and prov["approved"]["by"] == user.user["name"]
    assert [w for w, _ in decisions] == ["approve", "veto", "approve", "approve"]

    # live: the page shows every measurement and the plots, without a reload
    page.wait_for_selector("#shown-n[data-n='3']")
    page.wait_for_selector("#camp-state:has-text('completed')")
    # the plots are redrawn at most 4 times a second: wait for the last redraw
    wait_js(page, "document.querySelectorAll('#chart-best circle.obs').length === 3")
    assert page.locator("#chart-pairs svg").count() == 6  # 4 parameters: 6 pairs
    assert page.locator("#chart-best path.best").count() == 1
    best = max(o["values"]["fom"] for o in user.get(f"/api/campaigns/{cid}/observations"))
    assert float(page.inner_text("#camp-best")) == pytest.approx(best, rel=1e-3)
    page.wait_for_selector("#suggestions-table tbody tr[data-status='vetoed']")
    s.shot("campaign")

    with page.expect_download() as dl:
        page.click("button[data-dl=rocrate]")
    path = tmp_path / "crate.zip"
    dl.value.save_as(path)
    assert dl.value.suggested_filename == f"{cid}-rocrate.zip"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        meta = json.loads(z.read("ro-crate-metadata.json"))
    assert "table.csv" in names and any(n.startswith("runs/") for n in names)
    assert meta["@graph"]
    with page.expect_download() as dl:
        page.click("button[data-dl=csv]")
    dl.value.save_as(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("seq,suggestion_id,status")

    with page.expect_download() as dl:
        page.click("button[data-dl=json]")
    dl.value.save_as(tmp_path / "c.json")
    export = json.loads((tmp_path / "c.json").read_text())
    assert export["id"] == cid and len(export["runs"]) == 3 and export["runs"][0]["documents"]

    # the run's documents, one click away
    page.locator("#suggestions-table a[href^='#/runs/']").first.click()
    page.wait_for_selector("#run-events tbody tr")
    s.shot("run")


def short(x: str) -> str:
    return x[:8]


def test_add_a_point_shows_the_field_error_then_runs_it(open_as, lab):
    user, prop = _approved(lab, "pointer")
    camp = user.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 2,
                                             "approve_before_run": True}, start=True)
    s = open_as(user)
    page = s.go(f"#/campaigns/{camp['id']}", "#point-form input[name=temperature]")
    for k, v in {"A": "2e-14", "B": "0.3", "C": "0.7", "temperature": "100"}.items():
        page.locator(f"#point-fields input[name={k}]").fill(v)
    s.expected.append(r"status of 422")
    page.click("#point-form button[type=submit]")
    page.wait_for_selector("#point-fields .field-error[data-field=temperature]:has-text('150')")
    page.locator("#point-fields input[name=temperature]").fill("300")
    page.click("#point-form button[type=submit]")
    page.wait_for_selector("#sug-result:has-text('point added')")
    # a point a member adds needs no further approval: it runs while the agent's waits
    def point_done():
        done = [x for x in user.get(f"/api/campaigns/{camp['id']}/suggestions") if x["provenance"]["agent"] == "user"]
        return done if done and done[0]["status"] == "done" else None

    done = wait_until(point_done, 30, interval=0.2, what="the member's point done")
    assert done and done[0]["status"] == "done" and done[0]["params"]["temperature"] == 300
    # A = 2e-14 on its 0 ... 1 axis is shown as its bound, 0, not as round-off noise
    assert done[0]["params"]["A"] == pytest.approx(2e-14)
    page.wait_for_selector(f"#suggestions-table tr[data-id='{done[0]['id']}'] td:has-text('A=0 B=0.300 C=0.700')")
    # pause, resume, stop from the page; the state follows live
    for action, st in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        page.click(f"#camp-control button[value={action}]")
        page.wait_for_selector(f"#control-result:has-text('{action}: now {st}')")
        page.wait_for_selector(f"#camp-state:has-text('{st}')")
        assert user.campaign(camp["id"])["state"] == st
    s.expected.append(r"status of 409")
    page.click("#camp-control button[value=resume]")  # a stopped campaign cannot resume: the 409 is shown
    page.wait_for_selector("#control-result:has-text('campaign is stopped')")


def test_a_scientist_pauses_and_resumes_an_instrument(open_as, lab):
    sci = lab.user(role="scientist")
    s = open_as(sci)
    page = s.go("#/instruments", "#instruments-table tr[data-name='pool:p3ht']")
    s.shot("instruments")
    page.click("a[href='#/instruments/pool%3Ap3ht']")
    page.wait_for_selector("#control-form")
    page.fill("#c-reason", "realigning the sample stage")
    page.click("#control-form button[value=pause]")
    page.wait_for_selector("#control-result:has-text('pause: done')")
    page.wait_for_selector("#inst-state:has-text('paused')")
    assert sci.instrument("pool:p3ht")["status"]["state"] == "paused"
    audit = lab.admin.get("/api/audit", action="instrument.pause")
    assert audit[0]["actor"] == sci.user["name"] and audit[0]["detail"]["reason"] == "realigning the sample stage"
    s.shot("instrument-paused")
    # while it is paused a user's experiment waits in the queue: the scientist sees where
    # (its proposal, not its parameters); the user, watching the instrument, sees it run live
    user, prop = _approved(lab, "queued", ("pool:p3ht",))
    u = open_as(user)
    u.go("#/instruments/pool%3Ap3ht", "#queue-table")
    u.page.wait_for_selector("#live-state:has-text('live')")
    point = lab.service.workers["pool:p3ht"].instrument.space.pool[7]
    item = user.submit(prop["id"], "pool:p3ht", dict(point))
    row = page.locator("#queue-table tbody tr", has_text=prop["id"])
    row.wait_for()
    assert "queued" in row.inner_text() and "(not yours)" in row.inner_text()
    s.shot("instrument-queue")
    page.click("#control-form button[value=resume]")
    page.wait_for_selector("#control-result:has-text('resume: done')")
    assert user.wait(item["id"], timeout=30)["status"] == "done"
    page.wait_for_selector("#inst-state:has-text('idle')")
    assert sci.instrument("pool:p3ht")["status"]["state"] == "idle"
    u.page.wait_for_selector("#current-run:has-text('finished')")
    assert u.page.locator("#readings tbody tr").count() >= 1
    run_uid = user.experiment(item["id"])["run_uid"]
    assert u.page.get_attribute("#current-run a", "href") == f"#/runs/{run_uid}"
    u.page.wait_for_selector("#inst-state:has-text('idle')")  # the stream redraws state and queue too
    u.page.wait_for_selector("#queue-table caption:has-text('0 shown')")
    u.shot("instrument-live-run")
    # a user sees no controls
    assert u.page.locator("#control-form").count() == 0


def test_a_scientist_aborts_a_running_experiment_in_two_steps(open_as, lab):
    user, prop = _approved(lab, "aborted", (SLOW,))
    point = dict(lab.service.workers[SLOW].instrument.space.pool[3])
    item = user.submit(prop["id"], SLOW, point)
    sci = lab.user(role="scientist")
    s = open_as(sci)
    page = s.go("#/instruments/pool%3Aagnp", "#control-form")
    page.wait_for_selector("#inst-state:has-text('running')", timeout=20_000)
    page.click("#control-form button[value=abort]")
    page.wait_for_selector("#control-form button[value=abort]:has-text('Confirm abort')")
    assert user.experiment(item["id"])["status"] == "running"  # the first press aborts nothing
    page.fill("#c-reason", "sample holder jammed")
    page.click("#control-form button[value=abort]")
    page.wait_for_selector(f"#control-result:has-text('aborted {item['id'][:8]}')", timeout=20_000)
    done = user.wait(item["id"], timeout=30)
    assert done["status"] == "aborted"
    s.shot("instrument-aborted")


def test_an_admin_reads_utilisation(open_as, lab):
    user, prop = _approved(lab, "metered")
    item = user.submit(prop["id"], "sim-xrd", {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420})
    user.wait(item["id"], timeout=30)
    lab.admin.pause("pool:p3ht", reason="utilisation test")
    time.sleep(0.3)
    lab.admin.resume("pool:p3ht")
    a = open_as(lab.admin)
    page = a.go("#/facility", "#utilisation-table tr[data-name='sim-xrd']")
    api_util = lab.admin.get("/api/usage/utilisation")
    xrd = api_util["instruments"]["sim-xrd"]
    assert xrd["busy_seconds"] > 0 and api_util["instruments"]["pool:p3ht"]["paused_seconds"] >= 0.3
    assert abs(xrd["busy_seconds"] + xrd["paused_seconds"] + xrd["idle_seconds"] - api_util["window_seconds"]) < 0.05
    row = page.inner_text("#utilisation-table tr[data-name='sim-xrd']")
    assert re.search(r"\d+(\.\d+)? %", row)
    assert page.locator("#usage-table tbody tr").count() >= 1
    assert prop["id"] in page.inner_text("#usage-table")
    assert page.locator("#audit-table tbody tr").count() >= 1
    a.shot("facility")
    # the dedicated/shared split per instrument
    apage = a.go("#/instruments/sim-xrd", "#share-form")
    apage.fill("#s-frac", "1.5")
    a.expected.append(r"status of 422")
    apage.click("#share-form button[type=submit]")
    apage.wait_for_selector("#share-form .field-error:has-text('1')")
    apage.fill("#s-frac", "0.3")
    apage.click("#share-form button[type=submit]")
    apage.wait_for_selector("dd:has-text('30 %')")
    assert lab.admin.instrument("sim-xrd")["dedicated_fraction"] == 0.3
    lab.admin.request("PUT", "/api/instruments/sim-xrd/share", json={"dedicated_fraction": 0.0})
    # users have no facility view
    u = open_as(user)
    assert u.page.locator("#nav-facility").is_hidden()
    with pytest.raises(Exception) as exc:
        user.get("/api/usage/utilisation")
    assert getattr(exc.value, "status", None) == 404


# ------------------------------------------------------------------ live speed
MIN_RATE = 5.0  # experiments per second the live view must keep up with


@pytest.mark.parametrize("N_FAST", [60, pytest.param(400, marks=pytest.mark.slow)])
def test_the_live_view_keeps_up_with_a_fast_campaign(open_as, lab, N_FAST):
    """Shown count against the server's, sampled every 0.25 s while the campaign runs. A
    campaign slower than MIN_RATE (a machine busy with other work: `pytest -n 2`) proves
    nothing about keeping up, so it is run once more before the test gives up and skips."""
    rate = _watch_a_fast_campaign(open_as, lab, N_FAST)
    if rate < MIN_RATE:  # a busy machine: once more before giving up
        rate = _watch_a_fast_campaign(open_as, lab, N_FAST)
    if rate < MIN_RATE:  # the machine could not run the campaign that fast: the check would prove nothing
        pytest.skip(f"the campaign ran at {rate:.1f} experiments/s here, below the {MIN_RATE:g}/s to check against")


def _watch_a_fast_campaign(open_as, lab, N_FAST: int) -> float:
    """One campaign watched live; its rate, and (when it reached MIN_RATE) the page kept up."""
    user, prop = _approved(lab, "fast", ("sim-xrd",))
    camp = user.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": N_FAST, "seed": 5})
    s = open_as(user)
    page = s.go(f"#/campaigns/{camp['id']}", "#live-state:has-text('live')")
    user.campaign_action(camp["id"], "start")
    samples, t0 = [], time.time()
    while time.time() - t0 < 30 + N_FAST / MIN_RATE:
        server = user.campaign(camp["id"])
        shown = int(page.get_attribute("#shown-n", "data-n"))
        samples.append((time.time() - t0, server["experiments"], shown))
        if server["state"] == "completed" and shown == server["experiments"]:
            break
        time.sleep(0.25)
    t_end, n_end, _ = samples[-1]
    first = next(t for t, n, _ in samples if n > 0)
    rate = (n_end - 1) / max(t_end - first, 1e-6)
    lags = [n - shown for _, n, shown in samples]
    print(f"campaign rate {rate:.1f} experiments/s; page lag max {max(lags)}, mean {sum(lags) / len(lags):.2f} "
          f"over {len(samples)} samples")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"live-lag-{N_FAST}.json").write_text(json.dumps({"rate_per_s": rate, "samples": samples}))
    assert samples[-1][1] == samples[-1][2] == N_FAST
    if rate < MIN_RATE:
        return rate
    # a sample is taken after the server's count and before the page's: one in flight is allowed
    assert max(lags) <= 3, samples
    wait_js(page, f"document.querySelectorAll('#chart-best circle.obs').length === {N_FAST}")
    s.shot(f"campaign-live-{N_FAST}")
    return rate


# ------------------------------------------------------------------ charts
def test_model_prediction_along_a_parameter(open_as, lab):
    """A model-based agent reports its prediction (mean, sd) with each suggestion; the plot
    draws one diamond and one ±2 sd bar per such suggestion, along the chosen parameter."""
    user, prop = _approved(lab, "modeller", ("sim-xrd",))
    camp = user.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "gp-ei", "budget": 3, "seed": 1,
                                             "agent_options": {"n_init": 2}}, start=True)
    user.wait_campaign(camp["id"], timeout=120)
    sugs = user.get(f"/api/campaigns/{camp['id']}/suggestions")
    predicted = [x for x in sugs if (x["provenance"].get("predicted_mean") or {}).get("fom") is not None]
    assert len(predicted) == 1
    s = open_as(user)
    page = s.go(f"#/campaigns/{camp['id']}", "#chart-pred svg")
    page.select_option("#pred-param", "temperature")
    wait_js(page, "document.querySelectorAll('#chart-pred path.pred-pt').length === 1")
    assert page.locator("#chart-pred line.pred").count() == 1
    assert page.locator("#chart-pred circle.obs").count() == 3
    titles = page.locator("#chart-pred path.pred-pt title").all_text_contents()
    want = sorted(x["provenance"]["predicted_mean"]["fom"] for x in predicted)
    got = sorted(float(t.split()[1]) for t in titles)
    assert got == pytest.approx(want, rel=1e-2)
    s.shot("campaign-model")


def _hv_reference(points, signs):
    """Hypervolume of 2-D points (maximise after signing) against the worst point, by a grid."""
    pts = [(signs[0] * a, signs[1] * b) for a, b in points]
    ref = (min(p[0] for p in pts), min(p[1] for p in pts))
    xs = sorted({p[0] for p in pts} | {ref[0]})
    hv = 0.0
    for x0, x1 in zip(xs, xs[1:]):
        top = max((p[1] for p in pts if p[0] >= x1), default=ref[1])
        hv += (x1 - x0) * (top - ref[1])
    return hv


def test_pareto_front_and_hypervolume_match_a_reference(open_as, lab):
    """The built-in instruments measure one objective each, so the chart module is checked
    on its own, in the browser, against a reference computed here."""
    import random

    s = open_as(lab.user())
    rng = random.Random(4)
    pts = [(rng.uniform(0, 10), rng.uniform(-5, 5)) for _ in range(40)]
    for signs in ([1, 1], [1, -1], [-1, -1]):
        got = s.page.evaluate("""async ([pts, signs]) => {
            const m = await import('/static/charts.js');
            const r = m.pareto(pts, ['a', 'b'], signs);
            document.querySelector('#view').innerHTML = r.svg;
            return {hv: r.hv, front: r.front.length, squares: document.querySelectorAll('#view rect.front-pt').length};
        }""", [pts, signs])
        want = _hv_reference(pts, signs)
        front = [p for p in pts if not any(all(sg * q[k] >= sg * p[k] for k, sg in enumerate(signs)) and q != p
                                           for q in pts)]
        assert got["hv"] == pytest.approx(want, rel=1e-9)
        assert got["front"] == got["squares"] == len(front)
    s.shot("pareto")


# ------------------------------------------------------------------ tablet, keyboard, no colour
def test_tablet_width_keyboard_only_and_text_states(open_as, lab):
    user, prop = _approved(lab, "tablet")
    camp = user.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 4}, start=True)
    user.wait_campaign(camp["id"], timeout=60)
    s = open_as(None, viewport=TABLET)
    page = s.page
    page.wait_for_selector("#signin:not([hidden])")
    # keyboard only: Tab to the token field, type, Enter; then Tab to a nav link and Enter
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "token":
            break
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(user.token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#me-name")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "#/campaigns":
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("#campaigns-table")
    for name, hash_, sel in [("tablet-campaigns", "#/campaigns", "#campaign-form"),
                             ("tablet-campaign", f"#/campaigns/{camp['id']}", "#chart-best svg"),
                             ("tablet-submit", "#/submit", "#x-params input")]:
        s.go(hash_, sel)
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{hash_} is {overflow} px wider than a tablet"
        s.shot(name)
    # readable without colour: each state is written out, each chart series has a text legend
    s.go(f"#/campaigns/{camp['id']}", "#chart-best svg")
    assert page.inner_text("#camp-state").strip().endswith("completed")
    assert "best so far" in page.text_content("#chart-best svg")
    page.emulate_media(color_scheme="light", forced_colors="active")
    s.shot("tablet-campaign-forced-colours")
