"""Live operation: the WebSocket stream of documents and campaign events, pause /
resume / abort of a running plan (a slowed-down instrument), restart of the service
(interrupted work runs again, running campaigns carry on), and the web page."""

from __future__ import annotations


import httpx
import pytest

from sdl.service.db import ItemRow
from sdl.service.settings import InstrumentConfig
from sdl.service.testing import Lab, collect_events, start_lab
from sdl.testing import wait_until

XRD = {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420.0}
SLOW = "pool:agnp"  # a run takes about a second here (time_scale 0.01)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-live"),
                    ["sim-xrd", InstrumentConfig(name=SLOW, time_scale=0.01)])
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def alice(lab):
    return lab.user("live-alice")


@pytest.fixture(scope="module")
def prop(lab, alice):
    return lab.proposal(alice, ["sim-xrd", SLOW])


@pytest.fixture(scope="module")
def sci(lab):
    return lab.user("live-sci", role="scientist")


def test_stream_documents_of_an_experiment(lab: Lab, alice, prop):
    box: dict = {}
    t, events = collect_events(alice, lambda e: e["type"] == "queue" and e["status"] == "done"
                         and e["item_id"] == box.get("id"), instrument="sim-xrd", types="document,queue")
    box["id"] = alice.submit(prop["id"], "sim-xrd", XRD)["id"]
    t.join(20)
    docs = [e for e in events if e["type"] == "document" and e["item_id"] == box["id"]]
    assert [d["name"] for d in docs] == ["start", "descriptor", "event", "stop"]
    assert docs[2]["doc"]["data"]["detector_spectrum"]  # the pattern itself, live
    statuses = [e["status"] for e in events if e["type"] == "queue" and e["item_id"] == box["id"]]
    assert statuses[-2:] == ["running", "done"]
    delays = [e["_received"] - e["doc"]["time"] for e in docs]
    assert max(delays) < 2.0, delays


def test_stream_campaign_events(lab: Lab, alice, prop):
    camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 4})
    t, events = collect_events(alice, lambda e: e.get("event") == "state" and e.get("state") == "completed",
                         campaign_id=camp["id"])
    alice.campaign_action(camp["id"], "start")
    t.join(30)
    kinds = [e.get("event") for e in events if e["type"] == "campaign"]
    assert kinds.count("observation") == 4 and kinds.count("suggestion") == 4
    assert kinds[-1] == "state"
    obs = [e for e in events if e.get("event") == "observation"]
    assert [e["n"] for e in obs] == [1, 2, 3, 4]
    assert obs[-1]["best"] == max(e["observation"]["values"]["fom"] for e in obs)
    sug = [e for e in events if e.get("event") == "suggestion"]
    assert all(e["provenance"]["agent"] == "random" for e in sug)
    assert {e["campaign_id"] for e in events if e["type"] == "document"} == {camp["id"]}


def _wait_status(client, item_id, status, timeout=20):
    """Until the experiment has ``status``; the timeout message says the status it has."""
    return wait_until(lambda: (it := client.experiment(item_id))["status"] == status and it, timeout,
                      what=lambda: f"{item_id} {status}, now {client.experiment(item_id)['status']}")


def test_pause_resume_a_running_plan(lab: Lab, alice, prop, sci):
    point = alice.get(f"/api/instruments/{SLOW}/pool")[0]
    item = alice.submit(prop["id"], SLOW, point)
    _wait_status(alice, item["id"], "running")
    out = sci.pause(SLOW, immediate=True, reason="check the gripper")
    assert out["status"]["paused"] is True
    w = lab.service.workers[SLOW]
    wait_until(lambda: w.RE.state == "paused", 10, what=lambda: f"the RunEngine paused, now {w.RE.state}")  # at the next checkpoint
    assert alice.instrument(SLOW)["status"]["state"] == "paused"
    assert alice.experiment(item["id"])["status"] == "running"
    sci.resume(SLOW)
    done = alice.wait(item["id"], timeout=20)
    assert done["status"] == "done" and done["result"]["values"]["loss"] is not None
    events = [d["doc"] for d in alice.documents(item["id"]) if d["name"] == "event"]
    assert len(events) == 1  # nothing repeated over the pause
    actions = [a["action"] for a in lab.admin.get("/api/audit", limit=50)]
    assert "instrument.pause" in actions and "instrument.resume" in actions


def test_abort_running_and_paused(lab: Lab, alice, prop, sci):
    point = alice.get(f"/api/instruments/{SLOW}/pool")[1]
    item = alice.submit(prop["id"], SLOW, point)
    _wait_status(alice, item["id"], "running")
    out = sci.abort(item["id"], reason="wrong sample")
    assert out["status"] == "aborted" and out["redacted"]  # staff may abort, not read
    out = alice.experiment(item["id"])
    assert out["status"] == "aborted" and out["error"] == "wrong sample"
    run = alice.get(f"/api/runs/{out['run_uid']}") if out["run_uid"] else None
    if run is not None:
        assert run["status"] == "aborted"
        assert run["documents"][-1]["doc"]["exit_status"] == "abort"
    # abort while paused, through the instrument
    item2 = alice.submit(prop["id"], SLOW, point)
    _wait_status(alice, item2["id"], "running")
    sci.pause(SLOW, immediate=True)
    w = lab.service.workers[SLOW]
    wait_until(lambda: w.RE.state == "paused", 10, what=lambda: f"the RunEngine paused, now {w.RE.state}")
    r = sci.post(f"/api/instruments/{SLOW}/abort", {"reason": "operator"})
    assert r["aborted_item"] == item2["id"]
    _wait_status(alice, item2["id"], "aborted")
    assert alice.experiment(item2["id"])["error"] == "operator"
    sci.resume(SLOW)
    # the instrument works on
    again = alice.wait(alice.submit(prop["id"], "sim-xrd", XRD)["id"])
    assert again["status"] == "done"


def test_restart_carries_on(tmp_path):
    from sdl.client import Client
    from sdl.service.server import LiveServer
    from sdl.service.testing import scratch_settings

    # time scale 0.05: the slow run takes about 5 s, so it is still running when the service stops
    # (at 0.01 it could end before the campaign had made its two experiments on a loaded machine)
    settings = scratch_settings(tmp_path, ["sim-xrd", InstrumentConfig(name=SLOW, time_scale=0.05)])
    lab = Lab(LiveServer(settings).start())
    token = lab.server.admin_token
    alice = lab.user("restart-alice")
    prop = lab.proposal(alice, ["sim-xrd", SLOW])
    point = alice.get(f"/api/instruments/{SLOW}/pool")[0]
    camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 12},
                                 start=True)
    slow = alice.submit(prop["id"], SLOW, point)
    _wait_status(alice, slow["id"], "running")
    wait_until(lambda: alice.campaign(camp["id"])["experiments"] >= 2, 20, what="two campaign experiments")
    assert alice.experiment(slow["id"])["status"] == "running", "the slow run ended before the stop: slow it down"
    lab.server.stop()  # graceful: the running plan is interrupted, not lost
    # a crash leaves an item 'running': make one
    lab2_settings = settings
    from sdl.service.db import ServiceDB

    db = ServiceDB(settings.store_url)
    crashed = "c" * 32
    with db.session() as s:
        s.add(ItemRow(id=crashed, kind="experiment", instrument="sim-xrd", plan="autonomous_step",
                      params={**XRD, "exposure": 1.0}, proposal_id=prop["id"], user_id=alice.user["id"],
                      status="running", attempts=1))
    db.close()
    lab2 = Lab(LiveServer(lab2_settings).start())
    try:
        assert lab2.server.admin_token is None
        alice2 = Client(lab2.url, alice.token)
        assert Client(lab2.url, token).me()["role"] == "admin"
        done = alice2.wait(slow["id"], timeout=30)
        assert done["status"] == "done" and done["attempts"] == 2
        assert alice2.wait(crashed, timeout=30)["status"] == "done"
        final = alice2.wait_campaign(camp["id"], timeout=60)
        assert final["state"] == "completed" and final["experiments"] == 12
        assert len({o["suggestion_id"] for o in final["observations"]}) == 12  # nothing measured twice
    finally:
        lab2.close()
        lab2.server.stop()


def test_web_page(lab: Lab, alice, prop):
    """The shell and its files come from the package; no inline script (the journeys in a
    real browser are tests/test_web_app.py)."""
    r = httpx.get(lab.url + "/")
    assert r.status_code == 200 and "sdl cloud lab" in r.text
    assert '<script type="module" src="/static/app.js"></script>' in r.text
    assert "<script>" not in r.text and "<style" not in r.text and " on" + "click=" not in r.text
    for name, ctype in [("app.js", "text/javascript"), ("campaigns.js", "text/javascript"), ("app.css", "text/css")]:
        f = httpx.get(f"{lab.url}/static/{name}")
        assert f.status_code == 200 and f.headers["content-type"].startswith(ctype), name
    assert "/api/stream" in httpx.get(lab.url + "/static/api.js").text
    for bad in ("nope.js", "..%2Fweb.py", "web.py", ".hidden.js"):
        assert httpx.get(f"{lab.url}/static/{bad}").status_code == 404, bad


def test_expired_lease_is_recovered(lab: Lab, alice, prop):
    """An item left 'running' by a worker process that died (no heartbeat) runs again."""
    import datetime as dt

    stale = "e" * 32
    with lab.service.db.session() as s:
        s.add(ItemRow(id=stale, kind="experiment", instrument="sim-xrd", plan="autonomous_step",
                      params={**XRD, "exposure": 1.0}, proposal_id=prop["id"], user_id=alice.user["id"],
                      status="running", attempts=1, worker="elsewhere:4242:sim-xrd",
                      heartbeat_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)))
    assert lab.service.recover(expired_only=True) == 1  # the planner does this every few seconds
    done = alice.wait(stale, timeout=30)
    assert done["status"] == "done" and done["attempts"] == 2
    assert any(a["action"] == "experiment.recover" and a["target_id"] == stale
               for a in alice.get(f"/api/proposals/{prop['id']}/audit"))


def test_stream_token_in_query_or_subprotocol(lab: Lab, alice):
    import json as _json

    from websockets.sync.client import connect

    base = lab.server.ws_url + "/api/stream"
    with connect(f"{base}?token={alice.token}") as ws:
        assert _json.loads(ws.recv(timeout=10))["user"] == "live-alice"
    with connect(base, subprotocols=["sdl.bearer", alice.token]) as ws:
        assert ws.subprotocol == "sdl.bearer"
        assert _json.loads(ws.recv(timeout=10))["type"] == "hello"
    with connect(base) as ws:
        assert _json.loads(ws.recv(timeout=10))["status"] == 401
