"""Beam dumps over Channel Access: a bluesky SuspendFloor on the ring current pauses the
run and resumes it when the beam is back, with no event lost or repeated. The lab runs
at time scale 0.01 so exposures and robot moves take real (short) time."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.plans import count  # noqa: E402

from sdl.epics_lab import beam_guard, beam_suspender, checkpoint_after_save, epics_lab_devices  # noqa: E402
from sdl.plans import autonomous_step  # noqa: E402
from sdl.reduction import reduce_run  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402

pytestmark = pytest.mark.timeout(60)

TIME_SCALE = 0.01
EXPOSURE = 20.0  # nominal s: 0.2 s at this time scale


@pytest.fixture(scope="module")
def ioc():
    with serve_sim_lab("sim-xrd", seed=5, prefix=unique_prefix("S"), port=PORT, time_scale=TIME_SCALE) as served:
        yield served


@pytest.fixture(scope="module")
def lab(ioc):
    return epics_lab_devices(ioc.prefix)


@pytest.fixture(scope="module")
def sim(ioc):
    return ioc.sim_control()


def dump(sim, times: dict, hold: float) -> threading.Thread:
    def run():
        times["dump"] = time.monotonic()
        sim.beam_dump.set(1).wait(5)
        time.sleep(hold)
        times["restore"] = time.monotonic()
        sim.beam_dump.set(0).wait(5)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_dump_between_shots_pauses_count_without_lost_or_repeated_events(lab, sim):
    RE = RunEngine({})
    RE.install_suspender(beam_suspender(lab.ring_current, sleep=0.1))
    events: list = []
    times: dict = {}
    threads: list = []

    def on_doc(name, doc):
        if name == "event":
            events.append((time.monotonic(), doc))
            if doc["seq_num"] == 2 and not threads:
                threads.append(dump(sim, times, 0.4))

    RE.subscribe(on_doc)
    RE(checkpoint_after_save(count([lab.detector, lab.ring_current], num=5, delay=0.1)))
    threads[0].join(5)
    assert [d["seq_num"] for _, d in events] == [1, 2, 3, 4, 5]  # none lost, none repeated
    assert all(d["data"]["ring_current"] == 400.0 for _, d in events)  # none taken without beam
    assert not [t for t, _ in events if times["dump"] < t < times["restore"]]  # paused meanwhile


def test_dump_during_the_exposure_retakes_it_and_the_step_completes(ioc, lab, sim):
    reduction = ioc.instrument.reduction
    RE = RunEngine({})
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    times: dict = {}
    threads: list = []

    def on_shutter(value=None, **kwargs):
        if value == "open" and not threads:
            threads.append(dump(sim, times, 0.4))

    cid = lab.shutter.state.subscribe(on_shutter, run=False)
    try:
        plan = autonomous_step(lab, [0.4, 0.4, 0.2], 450.0, slot=1, sample_id="dump-1", exposure=EXPOSURE,
                               md={"reduction": reduction})
        RE(beam_guard(plan, lab.shutter, beam_suspender(lab.ring_current, sleep=0.1)))
    finally:
        lab.shutter.state.unsubscribe(cid)
    threads[0].join(5)
    assert times, "the beam was never dumped"
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 1 and events[0]["seq_num"] == 1
    assert events[0]["data"]["ring_current"] == 400.0
    assert events[0]["time"] > times["restore"]  # the exposure was retaken with beam
    assert docs[-1][1]["exit_status"] == "success"
    assert 0.0 <= reduce_run(docs)["fom"] <= 1.0
    # one sample made and back in its slot: synthesis and load were not repeated
    assert ioc.lab.sample("dump-1").location == "rack"
    assert [s.sample_id for s in ioc.lab.samples()] == ["dump-1"]
    assert lab.shutter.state.get(use_monitor=False) == "closed"


def test_dump_while_the_robots_work_does_not_pause_them(ioc, lab, sim):
    reduction = ioc.instrument.reduction
    RE = RunEngine({})
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    times: dict = {}
    t0 = time.monotonic()
    thread = dump(sim, times, 1.0)  # beam back after the make (0.6 s) and load (0.2 s)
    plan = autonomous_step(lab, [0.2, 0.5, 0.3], 380.0, slot=2, sample_id="dump-2", exposure=EXPOSURE,
                           md={"reduction": reduction})
    RE(beam_guard(plan, lab.shutter, beam_suspender(lab.ring_current, sleep=0.1)))
    thread.join(5)
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 1 and events[0]["data"]["ring_current"] == 400.0
    assert events[0]["time"] > times["restore"]  # the exposure waited for the beam
    assert time.monotonic() - t0 >= 1.0
    assert ioc.lab.sample("dump-2").location == "rack"
