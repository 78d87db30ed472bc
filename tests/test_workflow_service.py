"""A three-station workflow campaign over HTTP: a real uvicorn server, the stations'
workers as separate `sdl workflow worker` processes on the same store; samples and
workflows under the access rules; live task and sample events; the RO-Crate."""

from __future__ import annotations

import io
import json
import subprocess
import time
import zipfile

import pytest

from sdl.client import ServiceError
from sdl.service.testing import start_lab
from sdl.testing import wait_until
from sdl.workflows.campaign import spawn_worker
from sdl.workflows.stations import three_station_workflow

STATIONS = ["sim-synth", "sim-beamline", "sim-uvvis"]


def listen(client, types: str) -> list[dict]:
    """Events of ``types`` on the client's live stream, collected in a thread (no idle timeout:
    the workers' processes take a few seconds to start)."""
    import threading

    events: list[dict] = []
    connected = threading.Event()

    def run() -> None:
        for ev in client.stream(types=types, timeout=120.0):
            if ev["type"] == "hello":
                connected.set()
            else:
                events.append(ev)

    threading.Thread(target=run, daemon=True).start()
    assert connected.wait(20)
    return events


@pytest.fixture
def lab(tmp_path):
    lab = start_lab(tmp_path, instruments=[{"name": n, "external": True} for n in STATIONS])
    url = lab.service.settings.store_url
    procs = [spawn_worker(url, n, lease_s=2.0, seed=i, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, n in enumerate(STATIONS)]
    yield lab
    for p in procs:
        p.terminate()
        p.wait(10)
    lab.server.stop()


def test_workflow_campaign_over_http(lab):
    alice, bob = lab.user(), lab.user()
    prop = lab.proposal(alice, STATIONS, kind="proprietary")
    other = lab.proposal(bob, ["sim-synth"], kind="open")
    events = listen(alice, "task,sample")
    bob_events = listen(bob, "task,sample")

    # refused before anything runs, naming the task and field
    bad = three_station_workflow()
    bad["tasks"][1]["options"] = {"exposure": -1}
    with pytest.raises(ServiceError) as e:
        alice.post("/api/workflow-campaigns", {"proposal_id": prop["id"], "spec": {"workflow": bad}})
    assert e.value.status == 422 and e.value.field == "spec.workflow.tasks.xrd.options.exposure"
    for spec, field in (({"budget": -1}, "spec.budget"),
                        ({"agent": "botorch", "agent_options": {"beta": -1}}, "spec.agent_options.beta")):
        with pytest.raises(ServiceError) as e:  # refused before anything is stored or runs
            alice.post("/api/workflow-campaigns", {"proposal_id": prop["id"],
                                                   "spec": {"workflow": three_station_workflow(), **spec}})
        assert e.value.status == 422 and e.value.field == field, e.value
    with pytest.raises(ServiceError) as e:  # bob's proposal does not include the beamline
        bob.post("/api/workflow-campaigns", {"proposal_id": other["id"], "spec": {"workflow": three_station_workflow()}})
    assert e.value.status == 403

    c = alice.post("/api/workflow-campaigns", {"proposal_id": prop["id"], "spec": {
        "workflow": three_station_workflow(), "budget": 3, "parallel": 2, "agent": "random"}})
    cid = c["id"]
    c = wait_until(lambda: (c := alice.get(f"/api/workflow-campaigns/{cid}"))["status"] == "completed" and c, 180,
                   interval=0.3, what=lambda: f"the campaign completed: {alice.get(f'/api/workflow-campaigns/{cid}')}")
    assert len(c["observations"]) == 3 and all(o["ok"] for o in c["observations"])

    # the stations' time is charged to the proposal (usage, hours allocations)
    usage = {r["instrument"]: r for r in alice.get("/api/usage", proposal_id=prop["id"])}
    assert set(usage) == set(STATIONS) and all(r["succeeded"] >= 3 for r in usage.values())

    wf = alice.get(f"/api/workflows/{c['workflows'][0]['id']}")
    assert {t["name"]: t["status"] for t in wf["tasks"]} == {"make": "done", "xrd": "done", "uvvis": "done",
                                                              "reduce": "done"}
    assert sorted(wf["edges"]) == [["make", "uvvis"], ["make", "xrd"], ["uvvis", "reduce"], ["xrd", "reduce"]]
    samples = alice.get("/api/samples", campaign_id=cid)
    assert len(samples) == 3
    s = alice.get(f"/api/samples/{samples[0]['id']}")
    assert s["history"][0]["kind"] == "made" and any(h["kind"] == "measured" for h in s["history"])
    assert s["made_by"]["run_uid"]

    # the runs a workflow made are read like any other run: by the proposal's members
    run_uid = s["made_by"]["run_uid"]
    run = alice.get(f"/api/runs/{run_uid}")
    assert run["proposal_id"] == prop["id"] and run["documents"][0]["name"] == "start"

    # a proprietary proposal's workflows, samples and runs are its members' alone
    for path in (f"/api/samples/{s['id']}", f"/api/workflows/{wf['id']}", f"/api/workflow-campaigns/{cid}",
                 f"/api/workflow-campaigns/{cid}/rocrate", f"/api/runs/{run_uid}"):
        with pytest.raises(ServiceError) as e:
            bob.get(path)
        assert e.value.status == 404
    assert bob.get("/api/samples", campaign_id=cid) == [] and bob.get("/api/workflows", campaign_id=cid) == []
    with pytest.raises(ServiceError) as e:
        bob.post(f"/api/workflows/{wf['id']}/cancel", {"reason": "mine now"})
    assert e.value.status == 404

    # the sample's full history is in the campaign's RO-Crate
    z = zipfile.ZipFile(io.BytesIO(alice.get(f"/api/workflow-campaigns/{cid}/rocrate")))
    meta = json.loads(z.read("ro-crate-metadata.json"))
    assert any(e["@id"] == f"samples/{s['id']}.json" for e in meta["@graph"])
    exported = json.loads(z.read(f"samples/{s['id']}.json"))
    assert [h["kind"] for h in exported["history"]] == [h["kind"] for h in s["history"]]

    # live events: task and sample changes, to members only
    wait_until(lambda: any(e.get("kind") == "discarded" for e in events), 10, interval=0.2, what="a 'discarded' event")
    kinds = {(e["type"], e.get("kind") or e.get("status")) for e in events}
    # task changes are published from the store by a polling pump: a short task may be seen
    # only as done, never as running
    assert ("sample", "made") in kinds and ("sample", "measured") in kinds
    assert ("task", "running") in kinds or ("task", "done") in kinds, kinds
    assert bob_events == []


def test_a_closed_proposals_workflow_waits(lab):
    alice = lab.user()
    prop = lab.proposal(alice, STATIONS)
    wf = alice.post("/api/workflows", {"proposal_id": prop["id"], "workflow": three_station_workflow(),
                                       "parameters": {"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 500.0}})
    lab.admin.post(f"/api/proposals/{prop['id']}/close", {"comment": "beamtime over"})
    time.sleep(4)  # the workers poll every 0.1 s
    assert alice.get(f"/api/workflows/{wf['id']}")["tasks"][0]["status"] == "ready"


def test_single_workflow_submission_and_cancel(lab):
    alice = lab.user()
    prop = lab.proposal(alice, STATIONS)
    wf = alice.post("/api/workflows", {"proposal_id": prop["id"], "workflow": three_station_workflow(
        transit={"seconds": 0}), "parameters": {"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 500.0}})
    assert wf["status"] == "running" and wf["tasks"][0]["status"] == "ready"
    out = alice.post(f"/api/workflows/{wf['id']}/cancel", {"reason": "changed my mind"})
    assert out["status"] == "cancelled"
    with pytest.raises(ServiceError) as e:
        alice.post("/api/workflows", {"proposal_id": prop["id"], "workflow": three_station_workflow(),
                                      "parameters": {"A": 2.0, "B": 0.3, "C": 0.5, "temperature": 500.0}})
    assert e.value.status == 422 and e.value.field == "parameters.A"  # named as in the request
    with pytest.raises(ServiceError) as e:
        alice.post("/api/workflows", {"proposal_id": prop["id"], "workflow": three_station_workflow(),
                                      "parameters": {}})
    assert e.value.status == 422 and e.value.field == "parameters"


def test_service_restart_resumes_the_workflow_campaign(lab):
    from sdl.client import Client
    from sdl.service.server import LiveServer

    alice = lab.user()
    prop = lab.proposal(alice, STATIONS)
    c = alice.post("/api/workflow-campaigns", {"proposal_id": prop["id"], "spec": {
        "workflow": three_station_workflow(), "budget": 4, "parallel": 1, "agent": "random"}})
    cid = c["id"]
    wait_until(lambda: alice.get(f"/api/workflow-campaigns/{cid}")["observations"], 120, interval=0.2,
               what="a first observation")
    settings = lab.service.settings
    lab.server.stop()  # the service goes away mid-campaign; the stations' workers carry on
    server = LiveServer(settings).start()
    lab.server = server  # the fixture stops this one
    again = Client(server.url, alice.token)
    c = wait_until(lambda: (c := again.get(f"/api/workflow-campaigns/{cid}"))["status"] == "completed" and c, 180,
                   interval=0.3, what="the campaign completed after the restart")
    assert c["status"] == "completed" and len(c["observations"]) == 4 and all(o["ok"] for o in c["observations"])
    assert len({o["suggestion_id"] for o in c["observations"]}) == 4
    assert again.get("/api/samples", campaign_id=cid) and all(
        s["state"] == "discarded" for s in again.get("/api/samples", campaign_id=cid))
