"""ophyd's EpicsMotor (sdl.devices.motor: the stock class with its move/done race closed,
see tests/test_motor_race.py) against the soft motor-record IOC: moves the simulated
axis, reports DMOV, honours limits, stops on STOP. Real time (time scale 1) so moves last."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix, wait_until

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import time  # noqa: E402

import pytest  # noqa: E402
from ophyd.utils import LimitError  # noqa: E402

from sdl.devices.motor import EpicsMotor  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ioc():
    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("M"), port=PORT, time_scale=1.0,
                       names="motors") as served:
        yield served


@pytest.fixture(scope="module")
def stage_x(ioc):
    m = EpicsMotor(ioc.prefix + "STAGE:X", name="stage_x")
    m.wait_for_connection(timeout=5)
    m.velocity.set(20.0).wait(2)  # fast moves for the tests that do not time them
    return m


def test_move_reports_dmov_and_moves_the_sim_axis(ioc, stage_x):
    sim = ioc.lab.stage_x
    dmov = []
    cid = stage_x.motor_done_move.subscribe(lambda value, **kw: dmov.append(int(value)), run=False)
    status = stage_x.move(2.5, wait=False)
    status.wait(5)
    stage_x.motor_done_move.unsubscribe(cid)
    assert status.success
    assert stage_x.position == pytest.approx(2.5)
    assert sim.position == pytest.approx(2.5)  # one physics: the in-process axis moved
    assert stage_x.user_readback.get(use_monitor=False) == pytest.approx(2.5)
    assert stage_x.motor_done_move.get(use_monitor=False) == 1
    assert 0 in dmov and dmov[-1] == 1  # DMOV went 0 during the move, then 1
    assert stage_x.egu == "mm"
    assert stage_x.read()["stage_x"]["value"] == pytest.approx(2.5)


def test_soft_limits_refused_before_motion(ioc, stage_x):
    wait_until(lambda: stage_x.limits == (-10.0, 10.0),
               what=lambda: f"stage_x.limits == (-10.0, 10.0), now {stage_x.limits}")
    before = stage_x.position
    with pytest.raises(LimitError, match="outside of range"):
        stage_x.move(10.5, wait=False)
    time.sleep(0.1)
    assert stage_x.position == before and ioc.lab.stage_x.position == before
    assert stage_x.motor_done_move.get(use_monitor=False) == 1
    # narrowing HLM narrows what ophyd allows (VAL's control limits follow HLM/LLM)
    stage_x.high_limit_travel.set(5.0).wait(5)
    try:
        wait_until(lambda: stage_x.limits == (-10.0, 5.0),
                   what=lambda: f"stage_x.limits == (-10.0, 5.0), now {stage_x.limits}")
        with pytest.raises(LimitError):
            stage_x.move(6.0, wait=False)
    finally:
        stage_x.high_limit_travel.set(10.0).wait(5)
        wait_until(lambda: stage_x.limits == (-10.0, 10.0),
                   what=lambda: f"stage_x.limits == (-10.0, 10.0), now {stage_x.limits}")


def test_stop_stops_where_it_is(ioc, stage_x):
    stage_x.move(0.0, wait=True, timeout=5)
    stage_x.velocity.set(4.0).wait(2)  # 8 mm at 4 mm/s: 2 s
    try:
        status = stage_x.move(8.0, wait=False)
        time.sleep(0.4)
        assert stage_x.moving and stage_x.motor_done_move.get(use_monitor=False) == 0
        stage_x.stop()
        wait_until(lambda: status.done, 3, what="the stopped move's status to finish")
        assert stage_x.motor_done_move.get(use_monitor=False) == 1
        pos = stage_x.user_readback.get(use_monitor=False)
        assert 0.5 < pos < 7.0, pos
        assert ioc.lab.stage_x.position == pytest.approx(pos)
        assert stage_x.user_setpoint.get(use_monitor=False) == pytest.approx(pos)  # VAL = where it stopped
    finally:
        stage_x.velocity.set(20.0).wait(2)


def test_pyepics_put_completion_waits_for_the_move(ioc):
    # Another axis through plain pyepics (not mixed with ophyd signals of the same PVs).
    import epics

    pv = ioc.prefix + "STAGE:Y"
    assert epics.caput(pv + ".VELO", 20.0, wait=True, timeout=5) == 1
    t0 = time.monotonic()
    assert epics.caput(pv + ".VAL", -4.0, wait=True, timeout=5) == 1
    assert time.monotonic() - t0 >= 0.15  # 4 mm at 20 mm/s
    assert epics.caget(pv + ".DMOV", use_monitor=False) == 1
    assert epics.caget(pv + ".RBV", use_monitor=False) == pytest.approx(-4.0)
    assert ioc.lab.stage_y.position == pytest.approx(-4.0)
    # the IOC refuses an out-of-limit VAL too (a client that skips the check) and flags LVIO
    epics.caput(pv + ".VAL", 50.0, wait=True, timeout=5)
    time.sleep(0.1)
    assert epics.caget(pv + ".LVIO", use_monitor=False) == 1
    assert ioc.lab.stage_y.position == pytest.approx(-4.0)


def test_mono_energy_axis_in_kev(ioc):
    mono = EpicsMotor(ioc.prefix + "MONO:ENERGY", name="mono_energy")
    mono.wait_for_connection(timeout=5)
    assert mono.egu == "keV" and mono.limits == (5.0, 25.0)
    mono.velocity.set(50.0).wait(2)
    mono.move(9.0, timeout=5)
    assert mono.position == pytest.approx(9.0)
    with pytest.raises(LimitError):
        mono.move(30.0, wait=False)


def test_bluesky_scan_over_the_motor(ioc, stage_x):
    from bluesky import RunEngine
    from bluesky.plans import scan

    RE = RunEngine({})
    events = []
    RE.subscribe(lambda name, doc: events.append(doc) if name == "event" else None)
    RE(scan([stage_x], stage_x, -1.0, 1.0, 5))
    assert [e["data"]["stage_x"] for e in events] == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
