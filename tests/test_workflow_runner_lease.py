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
from sdl.testing import wait_until
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
    wait_until(lambda: first._renewed is not None, 30, interval=0.05, what="the first runner to renew its lease")
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


def test_a_step_longer_than_the_lease_keeps_the_campaign(store, campaign):
    # the lease is renewed by a thread of its own: a step of 3 s (an agent's fit on a long
    # campaign, a loaded machine) under a 1 s lease does not let a second runner take over
    first = WorkflowCampaignRunner(store, campaign, lease_s=1.0)
    step, slow = first.step, threading.Event()

    def slow_step():
        if not slow.is_set():
            slow.set()
            time.sleep(3.0)
        return step()

    first.step = slow_step
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("first", first.run("threads", timeout=120)))
    th.start()
    wait_until(slow.is_set, 30, interval=0.02, what="the first runner's slow step")
    time.sleep(1.2)  # past the lease the slow step started in
    second = WorkflowCampaignRunner(store, campaign, lease_s=1.0)
    second.standby_s = 1.0
    second.holder = "runner:1@another-host"
    with pytest.raises(InvalidInput, match="another runner"):
        second.run("none", timeout=60)
    th.join(120)
    assert out["first"] == "completed"
    assert len(store.observations(campaign)) == 3 and Engine(store).locks() == []


def test_a_runner_that_fails_to_start_lets_the_campaign_go(store, campaign, monkeypatch):
    # the agent cannot be made: no heartbeat is left renewing the lease of a campaign nobody
    # runs, and the next runner takes it at once
    import sdl.registry

    def broken(*a, **kw):
        raise RuntimeError("no agent today")

    monkeypatch.setattr(sdl.registry, "make_agent", broken)
    first = WorkflowCampaignRunner(store, campaign, lease_s=60.0)
    with pytest.raises(RuntimeError, match="no agent today"):
        first.run("none", timeout=60)
    assert not [t for t in threading.enumerate() if t.name.startswith("sdl-runner-lease")]
    monkeypatch.undo()
    second = WorkflowCampaignRunner(store, campaign, lease_s=60.0)
    second.standby_s = 1.0  # the 60 s lease was released, not left to expire
    second.holder = "runner:1@another-host"
    assert second.run("threads", timeout=120) == "completed"


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


def test_an_ended_workflow_is_recorded_before_the_next_is_asked_for(store):
    """A workflow that ends between the runner recording the ended ones and asking for the
    next is recorded first (next step): the agent sees it, and a target it reached starts
    nothing more (a second workflow used to be submitted in that gap)."""
    from sdl.registry import make_agent
    from sdl.workflows.worker import TaskWorker

    cid = create_workflow_campaign(store, {"workflow": three_station_workflow(transit={"seconds": 0}),
                                           "budget": 6, "parallel": 1, "agent": "random", "time_scale": 0,
                                           "stopping": {"target": -1e9}})
    runner = WorkflowCampaignRunner(store, cid, lease_s=30.0)
    runner.agent = make_agent("random", runner.space, runner.objectives, seed=0)
    assert runner.step() == "" and len(Engine(store).workflows(cid)) == 1
    workers = [TaskWorker(store, n, lease_s=30.0) for n in ("sim-synth", "sim-beamline", "sim-uvvis")]
    for _ in range(50):  # the first workflow runs to its end, the runner not looking
        if not any(w.run_once() for w in workers) and Engine(store).workflows(cid)[0].status != "running":
            break
    assert Engine(store).workflows(cid)[0].status == "done"
    record = runner._record_ended
    runner._record_ended = lambda: None  # it ended just after this step recorded the ended ones
    assert runner.step() == ""
    assert len(Engine(store).workflows(cid)) == 1  # nothing asked for before it is recorded
    runner._record_ended = record
    assert runner.step().startswith("target")  # recorded: the target is reached, nothing more runs
    assert len(Engine(store).workflows(cid)) == 1 and len(store.observations(cid)) == 1
