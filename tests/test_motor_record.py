"""The simulated motor record's sequences, field by field (docs/motor-record.md), as a
CA client sees them: monitors of DMOV/MOVN/RBV/VAL in arrival order (pyepics)."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix, wait_until

PORT = configure_loopback_ca()  # before pyepics starts libca

import threading  # noqa: E402
import time  # noqa: E402

import epics  # noqa: E402
import pytest  # noqa: E402

from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402

pytestmark = pytest.mark.timeout(60)
FIELDS = ("DMOV", "MOVN", "RBV", "VAL", "STOP", "SPMG", "MSTA", "HOMF")


@pytest.fixture(scope="module")
def rec():
    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("R"), port=PORT, time_scale=1.0,
                       names="stage_x") as ioc:
        name = ioc.prefix + "STAGE:X"
        pvs = {f: epics.PV(f"{name}.{f}", form="native") for f in FIELDS}
        for pv in pvs.values():
            assert pv.wait_for_connection(5)
        pvs["VELO"] = epics.PV(f"{name}.VELO")
        pvs["VELO"].put(20.0, wait=True)
        yield ioc, pvs


class Recorder:
    def __init__(self, pvs):
        self.events: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        self.pvs = pvs
        for field in ("DMOV", "MOVN", "VAL"):
            pvs[field].add_callback(self._cb, field=field)

    def _cb(self, value=None, field=None, **kw):
        with self.lock:
            self.events.append((field, value))

    def settle(self, t=0.3):
        time.sleep(t)
        with self.lock:
            events, self.events = self.events, []
        return events

    def of(self, events, field):
        return [v for f, v in events if f == field]


def test_move_sequence_and_put_completion(rec):
    ioc, pvs = rec
    pvs["VAL"].put(0.0, wait=True)
    r = Recorder(pvs)
    r.settle(0.2)
    t0 = time.monotonic()
    pvs["VAL"].put(2.0, wait=True)  # completes when the motion is over
    assert time.monotonic() - t0 >= 0.09  # 2 mm at 20 mm/s
    assert pvs["RBV"].get(use_monitor=False) == pytest.approx(2.0)
    ev = r.settle()
    assert r.of(ev, "DMOV") == [0, 1] and r.of(ev, "MOVN") == [1, 0]
    assert ev.index(("DMOV", 0)) < ev.index(("MOVN", 1)) < ev.index(("MOVN", 0)) < ev.index(("DMOV", 1))
    msta = int(pvs["MSTA"].get(use_monitor=False))
    assert msta & (1 << 1) and not msta & (1 << 10)  # DONE, not MOVING


@pytest.mark.parametrize("target", ["here", "within a step"])
def test_null_move_pulses_dmov_and_completes(rec, target):
    ioc, pvs = rec
    here = pvs["RBV"].get(use_monitor=False)
    r = Recorder(pvs)
    r.settle(0.1)
    pvs["VAL"].put(here if target == "here" else here + 4e-5, wait=True, timeout=5)
    ev = r.settle()
    assert r.of(ev, "DMOV") == [0, 1]  # "guaranteed ... 1/0/1 pulse"
    assert r.of(ev, "MOVN") == []      # nothing moved


def _dmov_1(pvs, timeout=10):
    wait_until(lambda: pvs["DMOV"].get(use_monitor=False) == 1, timeout, interval=0.01, what="DMOV to return to 1")


def test_retarget_keeps_dmov_0_and_completes_once(rec):
    ioc, pvs = rec
    pvs["VAL"].put(-5.0, wait=True)
    r = Recorder(pvs)
    r.settle(0.1)
    done = []
    pvs["VAL"].put(5.0, use_complete=True, callback=lambda **kw: done.append("first"))
    time.sleep(0.1)
    pvs["VAL"].put(-2.0, use_complete=True, callback=lambda **kw: done.append("second"))  # reversal
    _dmov_1(pvs)
    ev = r.settle(0.3)
    assert r.of(ev, "DMOV") == [0, 1]  # one complete motion
    assert pvs["RBV"].get(use_monitor=False) == pytest.approx(-2.0)
    assert sorted(done) == ["first", "second"]  # each put completes, once


def test_stop_mid_move(rec):
    ioc, pvs = rec
    pvs["VAL"].put(-5.0, wait=True)
    done = []
    pvs["VAL"].put(5.0, use_complete=True, callback=lambda **kw: done.append(1))
    time.sleep(0.15)
    pvs["STOP"].put(1, wait=True)
    _dmov_1(pvs)
    time.sleep(0.1)
    rbv, val = pvs["RBV"].get(use_monitor=False), pvs["VAL"].get(use_monitor=False)
    assert -5.0 < rbv < 5.0 and val == pytest.approx(rbv)  # VAL = RBV when stopped
    assert pvs["STOP"].get(use_monitor=False) == 0 and done == [1]


def test_spmg_pause_go_and_stop(rec):
    ioc, pvs = rec
    pvs["VAL"].put(0.0, wait=True)
    try:
        pvs["SPMG"].put("Pause", wait=True)
        done = []
        pvs["VAL"].put(1.0, use_complete=True, callback=lambda **kw: done.append(1))
        time.sleep(0.2)
        assert pvs["DMOV"].get(use_monitor=False) == 0 and not done  # waits for Go
        assert pvs["RBV"].get(use_monitor=False) == pytest.approx(0.0)
        pvs["SPMG"].put("Go", wait=True)
        _dmov_1(pvs)
        time.sleep(0.1)
        assert pvs["RBV"].get(use_monitor=False) == pytest.approx(1.0) and done == [1]
        pvs["SPMG"].put("Stop", wait=True)
        pvs["VAL"].put(3.0, wait=True, timeout=5)  # accepted, but the motor stays: VAL = RBV
        assert pvs["VAL"].get(use_monitor=False) == pytest.approx(1.0)
        assert pvs["RBV"].get(use_monitor=False) == pytest.approx(1.0)
    finally:
        pvs["SPMG"].put("Go", wait=True)


def test_home_forward_resets(rec):
    ioc, pvs = rec
    pvs["VAL"].put(1.5, wait=True)
    pvs["HOMF"].put(1, wait=True)
    wait_until(lambda: pvs["HOMF"].get(use_monitor=False) == 0, 5, what="HOMF to return to 0")
    assert pvs["RBV"].get(use_monitor=False) == pytest.approx(0.0)
    assert int(pvs["MSTA"].get(use_monitor=False)) & (1 << 14)  # HOMED
