"""The web app's workflow and sample pages, end to end (issue 14, "on the page"): Debian's
Chromium driven by Playwright against a real uvicorn server whose three stations are
worked by `sdl workflow worker` processes (instant simulation). A member watches a
workflow's task graph go from waiting to done live, from the stream's task events; opens
its sample and reads its history in order with time and actor, and its runs; follows a
workflow campaign to its end; a non-member of the proprietary proposal is refused with
the API's 404. Any console error, page error or CSP violation fails a test (the browser
helpers are test_web_app's). Screenshots go to ``$SDL_ARTIFACTS/web``.
"""

from __future__ import annotations

import subprocess

import pytest

from test_web_app import TABLET, browser, open_as, wait_js  # noqa: F401 - fixtures and the CSP-safe poll, reused

from sdl.service.testing import start_lab
from sdl.testing import wait_until
from sdl.workflows.campaign import spawn_worker
from sdl.workflows.stations import three_station_workflow

STATIONS = ["sim-synth", "sim-beamline", "sim-uvvis"]
POINT = {"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 500.0}
GRAPH = "() => [...document.querySelectorAll('#wf-graph g.task')].map((g) => [g.dataset.task, g.dataset.status])"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A service whose stations are external (their workers are processes on the same store)."""
    lab = start_lab(tmp_path_factory.mktemp("webwf"), instruments=[{"name": n, "external": True} for n in STATIONS])
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def workers(lab):
    """The stations' worker processes, started at once (they take a few seconds to start)."""
    url = lab.service.settings.store_url
    procs = [spawn_worker(url, n, lease_s=2.0, seed=i, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, n in enumerate(STATIONS)]
    yield procs
    for p in procs:  # all at once: each finishes its poll
        p.terminate()
    for p in procs:
        p.wait(10)


def test_a_workflow_live_its_sample_and_a_non_member_refused(open_as, lab, workers):  # noqa: F811
    alice, bob = lab.user(), lab.user()
    prop = lab.proposal(alice, STATIONS, kind="proprietary")
    lab.admin.pause("sim-synth", reason="the page first")  # the workflow waits until the page is open
    wf = alice.post("/api/workflows", {"proposal_id": prop["id"], "parameters": POINT,
                                       "workflow": three_station_workflow(transit={"seconds": 0})})
    wid = wf["id"]

    # before the synthesis station works: the graph as the API gives it, the stream connected
    s = open_as(alice)
    page = s.go(f"#/workflows/{wid}", "#wf-graph svg.graph g.task")
    wait_js(page, "() => document.querySelector('#wf-live').textContent === 'live'")
    assert page.evaluate(GRAPH) == [["make", "ready"], ["xrd", "waiting"], ["uvvis", "waiting"], ["reduce", "waiting"]]
    assert page.locator("#wf-graph path.edge").count() == 4
    assert page.locator("#wf-tasks-table tbody tr").count() == 4
    s.shot("workflow-waiting")

    # the station resumes: the same page (never reloaded) follows the tasks to done
    page.evaluate("() => { window.__same_page = true; }")
    lab.admin.resume("sim-synth")
    seen: dict[str, set[str]] = {}
    states: dict[str, str] = {}

    def graph_done() -> bool:
        states.clear()
        states.update(page.evaluate(GRAPH))
        for k, v in states.items():
            seen.setdefault(k, set()).add(v)
        return set(states.values()) == {"done"}

    wait_until(graph_done, 60, interval=0.05, what=lambda: f"the graph to reach done: {states}")
    assert page.evaluate("() => window.__same_page") is True
    assert int(page.get_attribute("#wf-live-n", "data-n")) >= 1  # task events from the stream were applied
    assert len(seen["make"]) >= 2 and "waiting" in seen["reduce"]  # watched as it went, not drawn once at the end
    api_wf = alice.get(f"/api/workflows/{wid}")
    assert api_wf["status"] == "done" and {t["status"] for t in api_wf["tasks"]} == {"done"}
    page.wait_for_selector("#wf-state:has-text('done')")
    page.wait_for_selector("#wf-result:has-text('fom=')")
    s.shot("workflow-done")

    # its sample: state, location, what made it, the history in the API's order, the runs
    page.click("#wf-sample a")
    page.wait_for_selector("#smp-history-table")
    sid = api_wf["tasks"][0]["sample_id"]
    smp = alice.get(f"/api/samples/{sid}")
    wait_js(page, "(n) => document.querySelectorAll('#smp-history-table tbody tr').length === n", len(smp["history"]))
    kinds = page.evaluate("() => [...document.querySelectorAll('#smp-history-table tbody tr')].map((r) => r.dataset.kind)")
    assert kinds == [h["kind"] for h in smp["history"]] and kinds[0] == "made" and "measured" in kinds
    first = page.locator("#smp-history-table tbody tr").first.inner_text()
    assert smp["history"][0]["actor"] in first and smp["history"][0]["at"][:19].replace("T", " ") in first
    assert smp["state"] in page.inner_text("#smp-state")
    loc = smp["location"]
    assert page.inner_text("#smp-where") == (f"{loc['station']} / {loc['position']}" if loc["station"] else
                                             "not in the lab any more")  # discarded after its measurements
    assert page.inner_text("#smp-made-task") == "make"
    runs = {t["run_uid"] for t in api_wf["tasks"] if t["run_uid"]}
    assert len(runs) == 3 and set(page.evaluate(
        "() => [...document.querySelectorAll('#smp-runs-table tbody tr')].map((r) => r.dataset.run)")) == runs
    s.shot("sample")
    page.locator("#smp-runs-table a[href^='#/runs/']").first.click()  # a workflow's run opens like any run
    page.wait_for_selector("#run-events")
    assert page.locator("#run-events tbody tr").count() >= 1
    page = s.go("#/workflows", f"#wf-table tr[data-id='{wid}']")
    s.shot("workflows")
    t = open_as(alice, viewport=TABLET)  # a tablet: the graph and the history scroll inside their boxes
    for where, sel in ((f"#/workflows/{wid}", "#wf-graph svg"), (f"#/samples/{sid}", "#smp-history-table")):
        tpage = t.go(where, sel)
        assert tpage.evaluate("() => document.documentElement.scrollWidth") <= TABLET["width"], where

    # a non-member: the proprietary proposal's sample and workflow are not found, as over HTTP
    b = open_as(bob)
    b.expected.append(r"status of 404")
    bpage = b.go(f"#/samples/{sid}", f"#view .error:has-text('{sid}')")
    assert bpage.inner_text("#view .error") == f"404: sample '{sid}' not found"
    b.shot("sample-refused")
    bpage = b.go(f"#/workflows/{wid}", f"#view .error:has-text('{wid}')")
    assert bpage.inner_text("#view .error") == f"404: workflow '{wid}' not found"
    b.go("#/workflows", "#wf-list p, #wf-list table")
    assert bpage.locator(f"#wf-list tr[data-id='{wid}']").count() == 0


def test_a_workflow_campaign_to_its_end_on_the_page(open_as, lab, workers):  # noqa: F811
    alice = lab.user()
    prop = lab.proposal(alice, STATIONS)
    c = alice.post("/api/workflow-campaigns", {"proposal_id": prop["id"], "spec": {
        "name": "two samples", "workflow": three_station_workflow(transit={"seconds": 0}), "budget": 2,
        "parallel": 2, "agent": "random"}})
    s = open_as(alice)
    page = s.go("#/workflows", f"#wf-campaigns-table tr[data-id='{c['id']}']")
    page.click(f"#wf-campaigns-table tr[data-id='{c['id']}'] a")
    page.wait_for_selector("#wc-state:has-text('completed')", timeout=60_000)
    wait_js(page, "() => document.querySelectorAll('#wc-samples-table tbody tr').length === 2")
    api_c = alice.get(f"/api/workflow-campaigns/{c['id']}")
    assert api_c["status"] == "completed" and len(api_c["observations"]) == 2
    states = page.evaluate("() => [...document.querySelectorAll('#wc-samples-table tbody tr')].map((r) => r.dataset.id)")
    assert sorted(states) == sorted(x["id"] for x in alice.get("/api/samples", campaign_id=c["id"]))
    assert page.locator("#wc-obs-table tbody tr").count() == 2
    s.shot("workflow-campaign")
