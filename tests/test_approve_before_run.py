"""Approve before run: a campaign option where each agent suggestion waits for a member
of the proposal to approve it (bluesky-queueserver users ask for this, issue 359); and
the other endpoints the web app added (agents, utilisation)."""

from __future__ import annotations

import time

import pytest

from sdl.campaign import CampaignRunner, CampaignSpec, create_campaign
from sdl.client import ServiceError
from sdl.errors import InvalidInput
from sdl.service.testing import start_lab
from sdl.testing import wait_until

SPEC = {"instrument": "sim-xrd", "agent": "random", "budget": 2, "seed": 2, "approve_before_run": True}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("approve"), ("sim-xrd",))
    yield lab
    lab.close()
    lab.server.stop()


def test_suggestions_wait_for_a_members_approval(lab):
    alice, bob, eve = lab.user(), lab.user(), lab.user()
    prop = lab.proposal(alice, ["sim-xrd"], members=[bob])
    camp = alice.create_campaign(prop["id"], SPEC, start=True)
    cid = camp["id"]
    first = wait_until(lambda: alice.get(f"/api/campaigns/{cid}/suggestions"), 20, interval=0.05, what="a suggestion")[0]
    time.sleep(1.5)  # the planner ticks every 0.5 s: it must not queue the unapproved point
    assert alice.experiments(campaign_id=cid) == [] and alice.campaign(cid)["experiments"] == 0

    with pytest.raises(ServiceError) as exc:  # not a member: the campaign does not exist for eve
        eve.post(f"/api/campaigns/{cid}/suggestions/{first['id']}/approve", {})
    assert exc.value.status == 404
    with pytest.raises(ServiceError) as exc:  # staff who are not members may not approve either
        lab.admin.post(f"/api/campaigns/{cid}/suggestions/{first['id']}/approve", {})
    assert exc.value.status in (403, 404)
    with pytest.raises(ServiceError) as exc:
        bob.post(f"/api/campaigns/{cid}/suggestions/{first['id']}/approve", {"comment": "ok", "extra": 1})
    assert exc.value.status == 422 and exc.value.field == "extra"

    out = bob.post(f"/api/campaigns/{cid}/suggestions/{first['id']}/approve", {"comment": "looks safe"})
    assert out["approved"]["by"] == bob.user["name"]
    wait_until(lambda: alice.campaign(cid)["experiments"] == 1, 20, interval=0.05, what="one experiment")
    with pytest.raises(ServiceError) as exc:  # done: nothing left to approve
        bob.post(f"/api/campaigns/{cid}/suggestions/{first['id']}/approve", {})
    assert exc.value.status == 409

    # the next one waits too; a veto makes the agent suggest again, which waits in turn
    second = wait_until(lambda: [s for s in alice.get(f"/api/campaigns/{cid}/suggestions") if s["status"] == "pending"],
                        20, interval=0.05, what="a pending suggestion")[0]
    alice.veto(cid, second["id"], "not that one")
    third = wait_until(lambda: [s for s in alice.get(f"/api/campaigns/{cid}/suggestions") if s["status"] == "pending"],
                       20, interval=0.05, what="a pending suggestion")[0]
    assert third["id"] != second["id"]
    time.sleep(1.0)
    assert alice.campaign(cid)["experiments"] == 1
    alice.post(f"/api/campaigns/{cid}/suggestions/{third['id']}/approve", {})
    final = alice.wait_campaign(cid, timeout=30)
    assert final["state"] == "completed" and final["experiments"] == 2
    audit = [a["action"] for a in alice.get(f"/api/proposals/{prop['id']}/audit")]
    assert audit.count("campaign.approve") == 2 and "campaign.veto" in audit


def test_a_point_a_member_adds_runs_without_further_approval(lab):
    alice = lab.user()
    prop = lab.proposal(alice, ["sim-xrd"])
    cid = alice.create_campaign(prop["id"], {**SPEC, "budget": 1}, start=True)["id"]
    wait_until(lambda: alice.get(f"/api/campaigns/{cid}/suggestions"), 20, interval=0.05, what="a suggestion")
    alice.add_point(cid, {"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 300.0}, "mine")
    final = alice.wait_campaign(cid, timeout=30)
    [obs] = final["observations"]
    assert obs["params"]["temperature"] == 300.0


def test_without_the_option_nothing_waits(lab):
    alice = lab.user()
    prop = lab.proposal(alice, ["sim-xrd"])
    cid = alice.create_campaign(prop["id"], {**SPEC, "approve_before_run": False}, start=True)["id"]
    assert alice.wait_campaign(cid, timeout=30)["experiments"] == 2


def test_a_local_run_refuses_the_option(store):
    cid = create_campaign(store, CampaignSpec(instrument="sim-xrd", agent="random", budget=1,
                                              approve_before_run=True))
    with pytest.raises(InvalidInput) as exc:
        CampaignRunner(store, cid).run()
    assert exc.value.field == "approve_before_run"


def test_agents_and_utilisation(lab):
    user = lab.user()
    assert {"bo", "random"} <= set(user.get("/api/agents"))
    with pytest.raises(ServiceError) as exc:
        user.get("/api/usage/utilisation")
    assert exc.value.status == 404
    with pytest.raises(ServiceError) as exc:
        lab.admin.get("/api/usage/utilisation", hours=0)
    assert exc.value.status == 422
    lab.admin.pause("sim-xrd", reason="check")
    time.sleep(0.5)
    u = lab.admin.get("/api/usage/utilisation")["instruments"]["sim-xrd"]
    assert u["state"] == "paused" and u["paused_seconds"] >= 0.5
    lab.admin.resume("sim-xrd")
