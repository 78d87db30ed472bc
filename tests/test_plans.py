"""Bluesky plans (sdl.plans) on the simulated lab, run by a real RunEngine."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.utils import LimitError

from sdl.errors import DeviceFault
from sdl.instruments import make_instrument
from sdl.models import Provenance, Suggestion
from sdl.plans import LabDevices, acquire, autonomous_step, load, measure, synthesize, unload
from sdl.reduction import reduce_run, reduction_spec
from sdl.sim_devices.lab import SimLab
from sdl.sim_devices.materials import MaterialsModel


@pytest.fixture(scope="module")
def RE() -> RunEngine:
    return RunEngine(context_managers=[])


@pytest.fixture(scope="module")
def model() -> MaterialsModel:
    return MaterialsModel(seed=0)


@pytest.fixture(scope="module")
def optimum(model) -> dict:
    return model.optimum()


@pytest.fixture
def lab(model) -> SimLab:
    return SimLab(model, time_scale=0, seed=1)


def xrd_reduction(model: MaterialsModel) -> dict:
    params = {**model.reduction_params(), "two_theta": model.two_theta.tolist(), "field": "detector_spectrum"}
    return reduction_spec("xrd_target_phase", **params)


def run(RE: RunEngine, plan) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE(plan, lambda name, doc: docs.append((name, doc)))
    return docs


def run_failing(RE: RunEngine, plan) -> tuple[BaseException, list[tuple[str, dict]]]:
    docs: list[tuple[str, dict]] = []
    with pytest.raises(Exception) as e:
        RE(plan, lambda name, doc: docs.append((name, doc)))
    return e.value, docs


def device_fault_in(exc: BaseException) -> DeviceFault:
    """The DeviceFault behind a RunEngine error (bluesky wraps it in FailedStatus)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, DeviceFault):
            return seen
        seen = seen.__cause__ or seen.__context__
    raise AssertionError(f"no DeviceFault behind {exc!r}")


def names(docs) -> list[str]:
    return [n for n, _ in docs]


def doc(docs, name: str) -> dict:
    found = [d for n, d in docs if n == name]
    assert len(found) == 1, (name, names(docs))
    return found[0]


def step(lab, composition, temperature, *, slot=1, sample_id="s1", exposure=1.0, md=None):
    return autonomous_step(
        LabDevices.from_lab(lab), composition, temperature, slot=slot, sample_id=sample_id, exposure=exposure, md=md
    )


# ---------------------------------------------------------------- the autonomous step
def test_autonomous_step_documents_carry_the_ids(RE, lab, model, optimum):
    md = {"campaign_id": "camp-7", "suggestion_id": "sug-42", "proposal": "p-1", "reduction": xrd_reduction(model)}
    docs = run(RE, step(lab, optimum["composition"], optimum["temperature"], slot=4, sample_id="S-0001", md=md))
    assert names(docs) == ["start", "descriptor", "event", "stop"]
    start = doc(docs, "start")
    assert start["plan_name"] == "autonomous_step"
    assert start["sample_id"] == "S-0001" and start["slot"] == 4
    assert start["campaign_id"] == "camp-7" and start["suggestion_id"] == "sug-42" and start["proposal"] == "p-1"
    assert start["composition"] == pytest.approx(optimum["composition"])
    assert start["temperature"] == pytest.approx(optimum["temperature"])
    assert start["reduction"]["name"] == "xrd_target_phase"
    descriptor = doc(docs, "descriptor")
    assert descriptor["name"] == "primary" and descriptor["run_start"] == start["uid"]
    assert descriptor["data_keys"]["detector_spectrum"]["shape"] == [model.two_theta.size]
    event = doc(docs, "event")
    assert len(event["data"]["detector_spectrum"]) == model.two_theta.size
    assert event["data"]["ring_current"] == 400.0
    assert event["data"]["detector_total_counts"] > 1e4
    stop = doc(docs, "stop")
    assert stop["exit_status"] == "success" and stop["num_events"] == {"primary": 1}


def test_reduced_step_gives_the_true_fom(RE, lab, model, optimum):
    # the optimum and the metastable basin centre: a high and a middling FoM
    lo, hi = model.temperature_range
    meta = (model.landscape.centres[1].tolist(), float(lo + model.landscape.temps[1] * (hi - lo)))
    for i, (x, t) in enumerate([(optimum["composition"], optimum["temperature"]), meta]):
        docs = run(RE, step(lab, x, t, slot=i + 1, sample_id=f"s{i}", exposure=10.0,
                            md={"reduction": xrd_reduction(model)}))
        truth = model.figure_of_merit(x, t)
        assert reduce_run(docs)["fom"] == pytest.approx(truth, abs=0.015)
    assert truth < optimum["fom"] - 0.2


def test_after_a_normal_step_the_shutter_is_closed_and_the_sample_is_home(RE, lab, optimum):
    run(RE, step(lab, optimum["composition"], optimum["temperature"], slot=6, sample_id="s6"))
    assert lab.shutter.state.get() == "closed"
    assert lab.changer.mounted_sample.get() == ""
    rec = lab.sample("s6")
    assert (rec.location, rec.slot) == ("rack", 6)
    assert [h.split(" ", 1)[1] for h in rec.history] == ["rack 6", "gripper", "beam", "gripper", "rack 6"]
    assert {d.state.get() for d in (lab.robot, lab.changer, lab.detector)} == {"idle"}


def test_a_normal_step_spends_no_round_trip_on_cleanup(RE, lab, optimum):
    """Each message to a device is a round trip over Channel Access: a step that succeeded
    closes the shutter once (in ``acquire``) and does not re-read the changer, and the
    exposure time and the shutter's opening are set together, behind one wait."""
    msgs = []
    RE.msg_hook = msgs.append
    try:
        run(RE, step(lab, optimum["composition"], optimum["temperature"], slot=7, sample_id="s7"))
    finally:
        RE.msg_hook = None
    shutter_sets = [m.args[0] for m in msgs if m.command == "set" and m.obj is lab.shutter]
    assert shutter_sets == ["open", "close"]
    assert not [m for m in msgs if m.command == "read" and m.obj is lab.changer.mounted_sample]
    setup = [m for m in msgs if m.command == "set" and m.obj in (lab.detector.exposure_time, lab.shutter)][:2]
    assert [m.obj for m in setup] == [lab.detector.exposure_time, lab.shutter]
    assert setup[0].kwargs["group"] == setup[1].kwargs["group"]
    between = msgs[msgs.index(setup[0]):msgs.index(setup[1])]
    assert not [m for m in between if m.command == "wait"]


def test_an_operator_abort_during_the_exposure_still_cleans_up(model, optimum):
    """The RunEngine throws its abort into the plan as an exception: the step's cleanup
    (shutter, then the sample back to its slot) runs as for a device failure."""
    from bluesky.utils import RunEngineInterrupted

    RE = RunEngine(context_managers=[])
    lab = SimLab(model, time_scale=0.01, seed=1)  # the 100 s exposure lasts 1 s

    def pause_when_open(value=None, **_):
        if value == "open":
            RE.request_pause(defer=False)

    lab.shutter.state.subscribe(pause_when_open, run=False)
    docs: list = []
    with pytest.raises(RunEngineInterrupted):
        RE(step(lab, optimum["composition"], optimum["temperature"], slot=4, sample_id="s4", exposure=100.0),
           lambda name, d: docs.append((name, d)))
    assert RE.state == "paused" and lab.changer.mounted_sample.get() == "s4"
    RE.abort("the operator stopped it")
    assert doc(docs, "stop")["exit_status"] == "abort"
    assert lab.shutter.state.get() == "closed" and lab.changer.mounted_sample.get() == ""
    assert (lab.sample("s4").location, lab.sample("s4").slot) == ("rack", 4)


def test_detector_timeout_fails_the_run_and_cleans_up(RE, lab, optimum):
    lab.inject_fault("detector", "timeout")
    exc, docs = run_failing(RE, step(lab, optimum["composition"], optimum["temperature"], slot=3, sample_id="s3"))
    fault = device_fault_in(exc)
    assert fault.device == "detector" and "timeout" in fault.message
    stop = doc(docs, "stop")
    assert stop["exit_status"] == "fail"
    assert "timeout" in stop["reason"]  # the record says why
    assert "event" not in names(docs)
    # cleanup: shutter closed, sample back in its rack slot
    assert lab.shutter.state.get() == "closed"
    assert lab.changer.mounted_sample.get() == ""
    rec = lab.sample("s3")
    assert (rec.location, rec.slot, rec.lost) == ("rack", 3, False)
    assert lab.registry.beam is None


def test_changer_drop_fails_the_step_with_a_device_fault(RE, lab, optimum):
    lab.inject_fault("changer", "drop")
    exc, docs = run_failing(RE, step(lab, optimum["composition"], optimum["temperature"], slot=2, sample_id="s2"))
    fault = device_fault_in(exc)
    assert fault.device == "changer" and "dropped" in fault.message and "'s2'" in fault.message
    stop = doc(docs, "stop")
    assert stop["exit_status"] == "fail" and "dropped" in stop["reason"]
    assert lab.sample("s2").lost and lab.sample("s2").location == "lost"
    assert lab.shutter.state.get() == "closed" and lab.changer.mounted_sample.get() == ""
    # the lab goes on: the next step works
    docs = run(RE, step(lab, optimum["composition"], optimum["temperature"], slot=2, sample_id="s2b"))
    assert doc(docs, "stop")["exit_status"] == "success"


def test_robot_jam_fails_the_step_before_anything_is_mounted(RE, lab, optimum):
    lab.inject_fault("robot", "jam")
    exc, docs = run_failing(RE, step(lab, optimum["composition"], optimum["temperature"], slot=5, sample_id="s5"))
    fault = device_fault_in(exc)
    assert fault.device == "robot" and "jammed" in fault.message
    assert names(docs) == ["start", "stop"]
    assert lab.samples() == [] and lab.registry.slots == {}
    assert lab.shutter.state.get() == "closed"


def test_invalid_point_fails_the_step_naming_the_field(RE, lab):
    exc, docs = run_failing(RE, step(lab, [0.5, 0.2, 0.1], 400.0))
    fault = device_fault_in(exc)
    assert fault.device == "robot" and "composition" in fault.message and "sum to 1" in fault.message
    assert doc(docs, "stop")["exit_status"] == "fail"
    assert lab.samples() == []


def test_occupied_slot_fails_the_step_and_leaves_the_occupant(RE, lab, optimum):
    run(RE, step(lab, optimum["composition"], optimum["temperature"], slot=1, sample_id="first"))
    exc, _ = run_failing(RE, step(lab, optimum["composition"], optimum["temperature"], slot=1, sample_id="second"))
    assert "occupied by sample 'first'" in device_fault_in(exc).message
    assert lab.sample("first").slot == 1 and lab.changer.mounted_sample.get() == ""


def test_beam_dump_gives_a_run_with_no_signal(RE, lab, model, optimum):
    lab.inject_fault("ring", "beam_dump")
    docs = run(RE, step(lab, optimum["composition"], optimum["temperature"], md={"reduction": xrd_reduction(model)}))
    event = doc(docs, "event")
    assert event["data"]["ring_current"] == 0.0  # the monitor records why
    assert reduce_run(docs)["fom"] == 0.0
    lab.clear_fault("ring")
    docs = run(RE, step(lab, optimum["composition"], optimum["temperature"], slot=2, sample_id="s2",
                        md={"reduction": xrd_reduction(model)}))
    assert reduce_run(docs)["fom"] == pytest.approx(optimum["fom"], abs=0.03)


def test_step_timing_follows_the_time_scale(RE, model, optimum):
    import time

    lab = SimLab(model, time_scale=0.002)  # make 60 + load 20 + 2x shutter 0.5 + expose 1 + unload 20 = 102 s
    t0 = time.monotonic()
    run(RE, step(lab, optimum["composition"], optimum["temperature"]))
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 1.5


# ---------------------------------------------------------------- the building blocks
def test_synthesize_load_unload_stubs(RE, lab):
    def plan():
        yield from synthesize(lab.robot, [0.2, 0.3, 0.5], 400.0, 9, "stub")
        yield from load(lab.changer, 9)
        mounted = yield from bps.rd(lab.changer.mounted_sample)
        assert mounted == "stub"
        yield from unload(lab.changer, 10)

    RE(plan())
    rec = lab.sample("stub")
    assert (rec.location, rec.slot) == ("rack", 10)
    assert rec.params == pytest.approx({"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 400.0})


def test_measure_is_a_standalone_run_and_closes_the_shutter(RE, lab, model):
    lab.robot.composition.put(np.array([0.2, 0.3, 0.5]))
    lab.robot.temperature.put(400.0)
    lab.robot.sample_id.put("m1")
    lab.robot.make.set(1).wait(1)
    lab.changer.load.set(1).wait(1)
    docs = run(RE, measure(lab.detector, lab.shutter, [lab.ring_current], exposure=2.0, md={"note": "x"}))
    assert names(docs) == ["start", "descriptor", "event", "stop"]
    start = doc(docs, "start")
    assert start["plan_name"] == "measure" and start["exposure"] == 2.0 and start["note"] == "x"
    assert lab.detector.exposure_time.get() == 2.0
    assert lab.shutter.state.get() == "closed"
    event = doc(docs, "event")
    assert event["data"]["detector_total_counts"] > 20 * 2.0 * 2.0 * model.two_theta.size


def test_acquire_closes_the_shutter_when_the_detector_fails(RE, lab):
    lab.inject_fault("detector", "timeout")

    def plan():
        yield from bps.open_run()
        yield from acquire(lab.detector, lab.shutter, exposure=1.0)
        yield from bps.close_run()

    exc, docs = run_failing(RE, plan())
    assert "timeout" in device_fault_in(exc).message
    assert lab.shutter.state.get() == "closed"


def test_stage_moves_through_the_run_engine_and_limits_hold(RE, lab):
    RE(bps.mv(lab.stage_x, 3.0, lab.stage_y, -2.5))
    assert (lab.stage_x.position, lab.stage_y.position) == (3.0, -2.5)
    with pytest.raises(LimitError):
        RE(bps.mv(lab.stage_x, 12.0))
    assert lab.stage_x.position == 3.0


# ---------------------------------------------------------------- instruments
def test_sim_xrd_instrument_step_plan(RE):
    inst = make_instrument("sim-xrd", seed=3)
    opt = inst.optimum
    params = {**dict(zip(inst.options["composition_names"], opt["composition"])), "temperature": opt["temperature"]}
    suggestion = Suggestion(params=params, provenance=Provenance(agent="test"))
    plan = inst.step_plan(suggestion, slot=2, sample_id="i-1", exposure=10.0, md={"campaign_id": "c-9"})
    docs = run(RE, plan)
    start = doc(docs, "start")
    assert start["suggestion_id"] == suggestion.id and start["campaign_id"] == "c-9"
    assert start["instrument"] == "sim-xrd" and start["sample_id"] == "i-1"
    assert reduce_run(docs)["fom"] == pytest.approx(inst.truth(params), abs=0.015)
    assert inst.lab.shutter.state.get() == "closed" and inst.lab.sample("i-1").slot == 2


def test_pool_instrument_step_returns_the_table_value(RE):
    inst = make_instrument("pool:p3ht")
    pool = inst.lab.pool
    for i, row in enumerate((5, 100)):
        params = pool.as_dict(row)
        suggestion = Suggestion(params=params, provenance=Provenance(agent="test"))
        docs = run(RE, inst.step_plan(suggestion, slot=i + 1, sample_id=f"p{i}", exposure=1.0, md={}))
        assert reduce_run(docs) == {"conductivity": pytest.approx(pool.values[row])}
        assert doc(docs, "event")["data"]["detector_value"] == pool.values[row]
    # a point that is not in the table cannot be made
    lab = inst.lab
    off = [float(v) + 0.5 for v in pool.points[5]]
    exc, docs = run_failing(RE, step(lab, off, 0.0, slot=9, sample_id="off"))
    assert "listed samples" in device_fault_in(exc).message
