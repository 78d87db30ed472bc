"""The closed loop on the simulated lab: ask, run, store, reduce, tell; failures; resume."""

import pytest

from sdl.campaign import CampaignRunner, Progress, create_campaign, validate_spec
from sdl.errors import InvalidInput
from sdl.replay import replay


def _run(store, **spec):
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 4, **spec})
    runner = CampaignRunner(store, cid)
    return cid, runner, runner.run()


def test_campaign_runs_to_budget_and_documents_reproduce_observations(store):
    cid, runner, status = _run(store, budget=5)
    assert status == "completed"
    obs = store.observations(cid)
    assert len(obs) == 5 and all(o.ok for o in obs)
    runs = store.runs(cid)
    assert [r.status for r in runs] == ["success"] * 5
    for o in obs:
        names = [n for n, _ in store.documents(o.run_uid)]
        assert names[0] == "start" and names[-1] == "stop" and "event" in names
        start = store.documents(o.run_uid)[0][1]
        assert start["campaign_id"] == cid and start["suggestion_id"] == o.suggestion_id
        assert start["sample_id"] and "provenance" in start
        # the hidden truth is close to what was measured (noise only)
        assert abs(o.values["fom"] - o.extra["truth"]) < 0.2
    rows = replay(store, cid)
    assert len(rows) == 5 and all(r["match"] for r in rows)
    assert store.campaign(cid).status == "completed"


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"agent": "genius"}, "agent"),
        ({"instrument": "synchrotron-9"}, "instrument"),
        ({"budget": 0}, "budget"),
        ({"colour": "red"}, "colour"),
        ({"exposure": -1}, "exposure"),
    ],
)
def test_bad_spec_names_field(spec, field):
    with pytest.raises(InvalidInput) as info:
        validate_spec(spec)
    assert info.value.field == field
    if field in ("agent", "instrument"):
        assert "allowed" in str(info.value)


def test_unknown_agent_message_lists_allowed():
    with pytest.raises(InvalidInput, match=r"agent: unknown agent; allowed: \[.*'bo'.*'random'.*'sobol'"):
        validate_spec({"agent": "genius"})


def test_device_fault_recorded_and_campaign_continues(store):
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 3})
    runner = CampaignRunner(store, cid)
    runner.instrument.lab.inject_fault("changer", "drop")
    assert runner.run() == "completed"
    obs = store.observations(cid)
    assert [o.ok for o in obs] == [False, True, True]
    assert "dropped" in obs[0].extra["error"]
    assert [r.status for r in store.runs(cid)] == ["failed", "success", "success"]
    assert runner.instrument.lab.shutter.state.get() == "closed"


def test_failure_policy_stop(store):
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 3, "on_failure": "stop"})
    runner = CampaignRunner(store, cid)
    runner.instrument.lab.inject_fault("detector", "timeout")
    assert runner.run() == "failed"
    assert len(store.observations(cid)) == 1
    assert runner.instrument.lab.shutter.state.get() == "closed"


class _InterruptAfter(Progress):
    def __init__(self, n):
        self.n = n

    def experiment_done(self, done, total, observation, best):
        if done == self.n:
            raise KeyboardInterrupt


def test_interrupt_then_resume_loses_nothing_and_repeats_nothing(store):
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 6, "seed": 3})
    assert CampaignRunner(store, cid, progress=_InterruptAfter(2)).run() == "interrupted"
    before = store.observations(cid)
    assert len(before) == 2 and store.campaign(cid).status == "interrupted"
    assert CampaignRunner(store, cid).run() == "completed"
    after = store.observations(cid)
    assert len(after) == 6
    assert [o.model_dump() for o in after[:2]] == [o.model_dump() for o in before]
    sids = [o.suggestion_id for o in after]
    assert len(set(sids)) == 6  # no experiment measured twice
    successes = [r for r in store.runs(cid) if r.status == "success"]
    assert len(successes) == 6


def test_stopping_rule_target(store):
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 20,
                                  "stopping": {"target": -1.0}})
    assert CampaignRunner(store, cid).run() == "completed"
    assert len(store.observations(cid)) == 1
    assert "target" in store.campaign(cid).message


def test_pool_campaign_measures_table_values(store):
    cid = create_campaign(store, {"instrument": "pool:p3ht", "agent": "random", "budget": 4})
    runner = CampaignRunner(store, cid)
    assert runner.run() == "completed"
    for o in store.observations(cid):
        assert o.values["conductivity"] == pytest.approx(o.extra["truth"])
