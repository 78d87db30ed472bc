"""One runner per workflow campaign, through the store: a service resuming the campaigns
it finds running and a CLI runner (or two of either) never drive one campaign together;
a dead runner's lease is taken over (at once when its process is gone on this host)."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import pytest

from sdl.errors import InvalidInput
from sdl.workflows import resources as res
from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign
from sdl.workflows.engine import Engine
from sdl.workflows.stations import three_station_workflow

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def campaign(store):
    return create_workflow_campaign(store, {"workflow": three_station_workflow(transit={"seconds": 0}),
                                            "budget": 3, "parallel": 1, "agent": "random", "time_scale": 0})


def _plant(store, cid: str, holder: str, seconds: float) -> None:
    """Another runner's lease, as its process left it."""
    with store.session() as s:
        exp = res.now(s) + dt.timedelta(seconds=seconds)
        assert res.try_hold_runner(s, cid, holder, "their-token", exp) is None


def test_a_live_runner_keeps_a_second_one_out(store):
    campaign = create_workflow_campaign(store, {"workflow": three_station_workflow(transit={"seconds": 0}),
                                                "budget": 8, "parallel": 1, "agent": "random", "time_scale": 0})
    first = WorkflowCampaignRunner(store, campaign, lease_s=2.0)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("first", first.run("threads", timeout=120)))
    th.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and first._renewed is None:
        time.sleep(0.05)
    second = WorkflowCampaignRunner(store, campaign, lease_s=2.0)
    second.standby_s = 1.0
    second.holder = "runner:1@another-host"  # the first one is renewing: a live runner elsewhere
    with pytest.raises(InvalidInput) as e:
        second.run("none", timeout=60)
    assert e.value.field == "campaign_id" and "another runner" in str(e.value)
    assert "first" not in out  # it was refused while the first was still running
    th.join(120)
    assert out["first"] == "completed"
    assert len(store.observations(campaign)) == 8
    assert Engine(store).locks() == []  # the lease was let go with the end of the campaign


def test_a_dead_runners_lease_is_waited_out_then_taken(store, campaign):
    _plant(store, campaign, "runner:1@another-host", seconds=5.0)
    with store.session() as s:
        expiry = res.held(s, res.runner_resource(campaign))[0].expires_at
    runner = WorkflowCampaignRunner(store, campaign, lease_s=2.0)
    assert runner.run("threads", timeout=120) == "completed"
    first = min(w.created_at for w in Engine(store).workflows(campaign))
    assert first >= expiry  # nothing was submitted while the other runner's lease ran
    assert len(store.observations(campaign)) == 3 and Engine(store).locks() == []


def test_a_runner_whose_process_is_gone_here_is_taken_over_at_once(store, campaign):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _plant(store, campaign, f"runner:{gone.pid}@{socket.gethostname()}", seconds=600)
    runner = WorkflowCampaignRunner(store, campaign, lease_s=2.0)
    runner.standby_s = 5.0  # it must not need to wait out the 600 s lease
    assert runner.run("threads", timeout=120) == "completed"


def test_a_service_runner_stands_by_until_halted(store, campaign):
    _plant(store, campaign, "runner:1@another-host", seconds=600)
    runner = WorkflowCampaignRunner(store, campaign, lease_s=2.0)  # standby_s None: waits, as a service does
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("status", runner.run("none", timeout=60)))
    th.start()
    time.sleep(1.0)
    assert th.is_alive() and store.observations(campaign) == [] and Engine(store).workflows(campaign) == []
    runner.halt()
    th.join(10)
    assert out["status"] == "stopped"
    assert store.campaign(campaign).status != "failed"
