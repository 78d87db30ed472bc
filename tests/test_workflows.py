"""Workflows across stations: samples, resource locks with leases, the task graph and
its failure policies (in-process workers on a SQLite store; the multi-process and
kill -9 tests are in test_workflow_crash.py)."""

from __future__ import annotations

import time

import pytest

from sdl.errors import InvalidInput
from sdl.workflows.engine import HOTEL, Engine
from sdl.workflows.graph import validate_workflow
from sdl.workflows.stations import three_station_workflow
from sdl.workflows.worker import TaskWorker

POINT = {"A": 0.5, "B": 0.3, "C": 0.2, "temperature": 600.0}
STATIONS = ("sim-synth", "sim-beamline", "sim-uvvis")


@pytest.fixture
def workers(store):
    ws = {name: TaskWorker(store, name, lease_s=5.0, transit_seed=1) for name in STATIONS}
    return ws


def drain(workers, engine, wid=None, rounds=50):
    for _ in range(rounds):
        ran = [w.run_once() for w in workers.values()]
        if wid is not None and engine.workflow(wid)["status"] != "running":
            return
        if not any(ran) and wid is None:
            return


def point(store):
    from sdl.instruments import make_instrument

    inst = make_instrument("sim-synth")
    return {p.name: POINT[p.name] for p in inst.space.parameters} if set(inst.space.names) == set(POINT) else \
        inst.space.validate_point(dict(zip(inst.space.names, [1.0 / (len(inst.space.names) - 1)] *
                                           (len(inst.space.names) - 1) + [600.0])))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("change,field", [
    (lambda w: w["tasks"][1].update(instrument="nope"), "workflow.tasks.xrd.instrument"),
    (lambda w: w["tasks"][1].update(plan="nope"), "workflow.tasks.xrd.plan"),
    (lambda w: w["tasks"][1].update(options={"exposure": -1}), "workflow.tasks.xrd.options.exposure"),
    (lambda w: w["tasks"][1].update(options={"gain": 1}), "workflow.tasks.xrd.options.gain"),
    (lambda w: w["tasks"][2].update(after=["ghost"]), "workflow.tasks.uvvis.after"),
    (lambda w: w["tasks"][0].update(after=["xrd"]), "workflow.tasks.make.after"),
    (lambda w: w["tasks"][3].update(objectives={"fom": "xrd"}), "workflow.tasks.reduce.objectives.fom"),
    (lambda w: w["tasks"][3].update(objectives={"fom": "make.x"}), "workflow.tasks.reduce.objectives.fom"),
    (lambda w: w["tasks"].append({"name": "xrd", "kind": "measure", "instrument": "sim-uvvis", "after": ["make"]}),
     "workflow.tasks.xrd.name"),
    (lambda w: w["tasks"][1].update(kind="bake"), "workflow.tasks.xrd.kind"),
    (lambda w: w.update(on_failure="pray"), "workflow.on_failure"),
    (lambda w: w["tasks"][3].update(instrument="sim-uvvis"), "workflow.tasks.reduce.instrument"),
    (lambda w: w["tasks"].pop(0), "workflow.tasks.xrd.after"),
])
def test_validation_names_task_and_field(change, field):
    wf = three_station_workflow()
    change(wf)
    with pytest.raises(InvalidInput) as e:
        validate_workflow(wf)
    assert e.value.field == field, str(e.value)


def test_cycle_is_refused():
    wf = three_station_workflow()
    wf["tasks"][1]["after"] = ["make", "uvvis"]
    wf["tasks"][2]["after"] = ["make", "xrd"]
    with pytest.raises(InvalidInput, match="cycle"):
        validate_workflow(wf)


# ------------------------------------------------------------------ one workflow
def test_three_station_workflow_tracks_the_sample(store, workers):
    eng = Engine(store)
    p = point(store)
    wid = eng.submit(three_station_workflow(), p, proposal_id="P1")
    drain(workers, eng, wid)
    wf = eng.workflow(wid)
    assert wf["status"] == "done", wf
    assert {t["name"]: t["status"] for t in wf["tasks"]} == {"make": "done", "xrd": "done", "uvvis": "done",
                                                              "reduce": "done"}
    values = wf["result"]["values"]
    assert set(values) == {"fom", "uvvis_score"} and 0 <= values["fom"] <= 1
    assert set(wf["result"]["runs"]) == {"make", "xrd", "uvvis"}
    sid = wf["tasks"][0]["sample_id"]
    sample = eng.sample(sid)
    assert sample["made_by"]["run_uid"] == wf["result"]["runs"]["make"]
    assert sample["made_by"]["params"] == pytest.approx(p) or sample["made_by"]["params"].keys() == p.keys()
    kinds = [e["kind"] for e in sample["history"]]
    assert kinds[0] == "made" and kinds[-1] == "discarded"
    # each measurement: in transit -> arrived at the station -> measured (with its run) -> back to the hotel
    for station in ("sim-beamline", "sim-uvvis"):
        i = next(k for k, e in enumerate(sample["history"]) if e["kind"] == "arrived" and e["station"] == station)
        assert sample["history"][i - 1]["state"] == "in_transit"
        assert sample["history"][i + 1]["kind"] == "measured" and sample["history"][i + 1]["run_uid"]
        assert sample["history"][i + 2]["station"] == HOTEL
    assert all(e["actor"] for e in sample["history"]) and [e["at"] for e in sample["history"]] == sorted(
        e["at"] for e in sample["history"])
    assert sample["state"] == "discarded"
    assert eng.locks() == []  # everything released
    # the runs are in the record, with their documents
    for uid in wf["result"]["runs"].values():
        names = [n for n, _ in store.documents(uid)]
        assert names[0] == "start" and names[-1] == "stop"


def test_a_make_waits_for_a_free_hotel_position(store, workers):
    eng = Engine(store)
    p = point(store)
    w1 = eng.submit(three_station_workflow(hotel_capacity=1), p)
    w2 = eng.submit(three_station_workflow(hotel_capacity=1), p)
    assert workers["sim-synth"].run_once()  # w1's make
    assert not workers["sim-synth"].run_once()  # w2's make waits: the one hotel position is taken
    assert {t["name"]: t["status"] for t in eng.workflow(w2)["tasks"]}["make"] == "ready"
    drain(workers, eng, w1)
    assert eng.workflow(w1)["status"] == "done"
    drain(workers, eng, w2)
    assert eng.workflow(w2)["status"] == "done"


def test_a_device_is_held_by_one_task_at_a_time(store):
    eng = Engine(store)
    p = point(store)
    for _ in range(2):
        eng.submit(three_station_workflow(), p)
    c1 = eng.claim("sim-synth", "w1")
    c2 = eng.claim("sim-synth", "w2")  # a second worker of the same station: the device is busy
    assert c1 is not None and c2 is None
    held = [lk for lk in eng.locks() if lk["resource"] == "device:sim-synth"]
    assert len(held) == 1 and held[0]["task_id"] == c1.id


def test_dead_worker_lease_expires_and_task_is_retried(store, workers):
    eng = Engine(store, lease_s=0.3)
    wid = eng.submit(three_station_workflow(), point(store))
    workers["sim-synth"].run_once()
    claim = eng.claim("sim-beamline", "doomed")  # claims, then "dies": never renews nor finishes
    assert claim is not None
    eng.sample_event(claim, "in_transit", state="in_transit", station="transit", position="hotel -> sim-beamline")
    assert any(lk["task_id"] == claim.id for lk in eng.locks())
    time.sleep(0.5)
    assert eng.sweep() == [claim.id]
    assert not any(lk["task_id"] == claim.id for lk in eng.locks())  # nothing held past the lease
    t = next(t for t in eng.workflow(wid)["tasks"] if t["name"] == "xrd")
    assert t["status"] == "ready" and "interrupted" in t["error"]
    sample = eng.sample(t["sample_id"])
    assert sample["history"][-1]["kind"] == "recovered" and sample["state"] == "made"
    assert sample["location"]["station"] == HOTEL
    drain(workers, eng, wid)
    assert eng.workflow(wid)["status"] == "done"
    assert eng.locks() == []


def test_cancel_releases_everything(store, workers):
    eng = Engine(store)
    wid = eng.submit(three_station_workflow(dispose="keep"), point(store))
    workers["sim-synth"].run_once()
    claim = eng.claim("sim-uvvis", "w")
    assert len(eng.locks()) == 3  # the sample's hotel position, the spectrometer, the sample
    eng.cancel(wid, "user asked")
    wf = eng.workflow(wid)
    assert wf["status"] == "cancelled"
    assert {t["status"] for t in wf["tasks"]} <= {"done", "cancelled"}
    assert [lk["holder"].split(":")[0] for lk in eng.locks()] == ["sample"]  # kept sample keeps its position
    from sdl.workflows.engine import LeaseLost

    with pytest.raises(LeaseLost):
        eng.renew(claim)


@pytest.mark.parametrize("policy,status,xrd", [("retry", "done", "done"), ("skip", "done", "skipped"),
                                               ("fail", "failed", "failed")])
def test_failure_policy(store, workers, policy, status, xrd):
    eng = Engine(store)
    wid = eng.submit(three_station_workflow(on_failure=policy), point(store))
    workers["sim-beamline"].instrument.lab.inject_fault("detector", "timeout")  # the next exposure fails
    drain(workers, eng, wid)
    wf = eng.workflow(wid)
    assert wf["status"] == status, wf
    t = {t["name"]: t for t in wf["tasks"]}
    assert t["xrd"]["status"] == xrd
    if policy == "retry":
        assert t["xrd"]["attempts"] == 2 and wf["result"]["values"]["fom"] >= 0
    if policy == "skip":
        assert "fom" not in wf["result"]["values"] and "uvvis_score" in wf["result"]["values"]
    assert eng.locks() == []


def test_sample_dropped_in_transit_is_lost(store, workers):
    eng = Engine(store)
    wid = eng.submit(three_station_workflow(transit={"seconds": 0, "drop_probability": 1.0}), point(store))
    drain(workers, eng, wid)
    wf = eng.workflow(wid)
    sid = wf["tasks"][0]["sample_id"]
    s = eng.sample(sid)
    assert s["state"] == "lost" and s["history"][-1]["kind"] == "lost"
    assert wf["status"] == "failed" and "lost" in wf["message"] or wf["status"] == "failed"
    assert eng.locks() == []


def test_two_proposals_share_the_beamline_fairly_without_deadlock(store, workers):
    eng = Engine(store)
    p = point(store)
    ids = {pid: [eng.submit(three_station_workflow(hotel_capacity=3), p, proposal_id=pid) for _ in range(4)]
           for pid in ("P1", "P2")}  # P1 submits all its work first
    order: dict[str, list[str]] = {"sim-synth": [], "sim-beamline": []}
    for _ in range(200):
        ran = False
        for name, w in workers.items():
            claim = w.engine.claim(name, w.worker_id)
            if claim is None:
                continue
            ran = True
            if name in order:
                order[name].append(claim.task.proposal_id)
            w.execute(claim)
        if not ran:
            break
    assert all(eng.workflow(w)["status"] == "done" for ws in ids.values() for w in ws)  # no deadlock
    for name, seq in order.items():
        # least-used-first: P2 is served as soon as it waits, never after all of P1's work
        assert seq[:4].count("P2") >= 2, (name, seq)
    assert eng.locks() == []


# ------------------------------------------------------------------ cascade
def test_cascade_sends_only_promising_samples_to_the_beamline(store):
    from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign
    from sdl.workflows.stations import cascade_workflow

    cid = create_workflow_campaign(store, {
        "workflow": cascade_workflow(transit={"seconds": 0}), "budget": 10, "parallel": 1, "agent": "random",
        "cascade": {"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 3, "kappa": 0.0}})
    runner = WorkflowCampaignRunner(store, cid, lease_s=30)
    assert runner.objectives[0].name == "fom_est"
    assert runner.run("threads", timeout=300) == "completed"
    obs = store.observations(cid)
    assert len(obs) == 10 and all(o.ok for o in obs)
    measured = [o for o in obs if "fom" in o.values]
    held = [o for o in obs if "fom" not in o.values]
    assert len(measured) >= 3 and held, "the cascade held no sample back"
    assert all(o.extra["estimate_source"] == "measured" for o in measured)
    assert all(o.extra["estimate_source"].startswith("predicted") and "uvvis_score" in o.values for o in held)
    assert all(o.extra["measured"] == ["uvvis"] for o in held)
    # a held sample's gated task is skipped, with the reason
    wf = Engine(store).workflow(held[0].extra["workflow_id"])
    xrd = next(t for t in wf["tasks"] if t["name"] == "xrd")
    assert xrd["status"] == "skipped" and "gate" in xrd["error"]


@pytest.mark.parametrize("cascade,field", [
    ({"task": "uvvis", "cheap": "uvvis_score", "objective": "fom"}, "cascade.task"),
    ({"task": "xrd", "cheap": "nope", "objective": "fom"}, "cascade.cheap"),
    ({"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 0}, "cascade.warmup"),
])
def test_cascade_spec_is_checked(cascade, field):
    from sdl.workflows.campaign import validate_campaign
    from sdl.workflows.stations import cascade_workflow

    with pytest.raises(InvalidInput) as e:
        validate_campaign({"workflow": cascade_workflow(), "cascade": cascade})
    assert field in str(e.value)


@pytest.mark.parametrize("name", STATIONS)
def test_stations_are_conforming_plugins(name):
    from sdl.instrument_check import assert_instrument_conforms
    from sdl.registry import registry

    assert registry().source("instruments", name).startswith("entry point sdl.instruments:")
    assert_instrument_conforms(name)


def test_campaign_spec_errors_name_the_field():
    from sdl.workflows.campaign import validate_campaign

    wf = three_station_workflow()
    for data, field in [
        ({"workflow": wf, "objectives": [{"name": "nope", "direction": "maximize"}]}, "objectives"),
        ({"workflow": wf, "budget": 0}, "budget"),
        ({"workflow": wf, "agent": "oracle"}, "agent"),
        ({"workflow": wf, "space": {"parameters": [{"name": "x", "lower": 0, "upper": 1}]}}, "space"),
        ({"workflow": {**wf, "tasks": wf["tasks"][:3]}}, "workflow"),  # no reduce task
    ]:
        with pytest.raises(InvalidInput) as e:
            validate_campaign(data)
        assert field in str(e.value), (field, str(e.value))


def test_an_instrument_paused_by_the_operator_takes_no_workflow_task(store, workers):
    from sdl.service.db import ServiceDB
    from sdl.service.dispatch import Dispatcher

    eng = Engine(store)
    wid = eng.submit(three_station_workflow(), point(store))
    d = Dispatcher(ServiceDB(store.url), lease_timeout_s=10, max_attempts=3)
    d.set_paused("sim-synth", True)
    assert not workers["sim-synth"].run_once()
    d.set_paused("sim-synth", False)
    drain(workers, eng, wid)
    assert eng.workflow(wid)["status"] == "done"


@pytest.mark.parametrize("lease", [0, -1, float("nan")])
def test_an_engine_refuses_a_lease_that_would_lose_every_task(store, lease):
    with pytest.raises(InvalidInput, match="lease_s: must be above 0"):
        Engine(store, lease_s=lease)


def test_a_runner_refuses_bad_workers_or_timeout_before_the_campaign_runs(store):
    from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign

    cid = create_workflow_campaign(store, {"workflow": three_station_workflow(), "budget": 1, "agent": "random"})
    runner = WorkflowCampaignRunner(store, cid)
    with pytest.raises(InvalidInput, match="workers: allowed"):
        runner.run("bogus")
    with pytest.raises(InvalidInput, match="timeout: must be above 0"):
        runner.run("none", timeout=-1)
    assert store.campaign(cid).status == "created"


def test_stations_with_long_names_run_a_workflow(store, tmp_path, monkeypatch):
    # a station may be any registered instrument, named up to 255 characters like the service's
    # instruments (sdl.database.INSTRUMENT_NAME_MAX): its device lock, the sample's station and
    # position ("A -> B" in transit) must fit on PostgreSQL too (SQLite does not check lengths)
    from sdl.database import INSTRUMENT_NAME_MAX
    from sdl.registry import reset

    long = {n: f"{n}.{'x' * (INSTRUMENT_NAME_MAX - len(n) - 1)}" for n in STATIONS}
    profile = tmp_path / "long_names.py"
    profile.write_text(
        "import dataclasses\nfrom sdl.workflows import stations\n\n\n"
        "def renamed(factory):\n"
        "    return lambda ctx: dataclasses.replace(factory(ctx), name=ctx.name)\n\n\n"
        f"INSTRUMENTS = {{{long['sim-synth']!r}: renamed(stations.sim_synth), "
        f"{long['sim-beamline']!r}: renamed(stations.sim_beamline), "
        f"{long['sim-uvvis']!r}: renamed(stations.sim_uvvis)}}\n")
    monkeypatch.setenv("SDL_PROFILE", str(profile))
    reset()
    try:
        wf = three_station_workflow()
        for t in wf["tasks"]:
            if t.get("instrument"):
                t["instrument"] = long[t["instrument"]]
        workers = {name: TaskWorker(store, name, lease_s=5.0, transit_seed=1) for name in long.values()}
        eng = Engine(store)
        wid = eng.submit(wf, point(store), proposal_id="P1")
        drain(workers, eng, wid)
        done = eng.workflow(wid)
        assert done["status"] == "done", done
        sample = eng.sample(done["tasks"][0]["sample_id"])
        assert {e["station"] for e in sample["history"] if e["kind"] == "arrived"} == {long["sim-beamline"],
                                                                                       long["sim-uvvis"]}
        assert {e["position"].split(" -> ")[1] for e in sample["history"] if e["kind"] == "in_transit"} == {
            long["sim-beamline"], long["sim-uvvis"]}
        assert eng.locks() == []
    finally:
        monkeypatch.delenv("SDL_PROFILE")
        reset()
