"""What makes a scan point over CA cheap, each checked against a served IOC (process mode,
as the benchmark runs it):

- the IOC sends a put-completion reply only after the monitors posted before it
  (``sdl.sim_devices.ioc.ca_context``): at the reply, a monitor already holds the new frame;
- a detector trigger, its read and a motor move make no CA get, and the puts no pyepics
  poll: commands conclude from monitors, the spectrum is monitored (without pyepics'
  repr() of each update), the motor's limit switches come from monitors, puts are flushed;
- a shutter command concludes from its monitored STATE, also when it is already there;
- a command whose put completes without a BUSY 1 -> 0 still concludes (by reading fresh).
"""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix, wait_until

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import threading  # noqa: E402
import time  # noqa: E402

import epics  # noqa: E402
import epics.ca  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.plans import scan  # noqa: E402

from sdl.devices.motor import PostedBeforeDone  # noqa: E402
from sdl.epics_lab import epics_lab_devices  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def ioc():
    with serve_sim_lab("sim-xrd", seed=3, prefix=unique_prefix("S"), port=PORT, mode="process") as served:
        yield served


@pytest.fixture(scope="module")
def lab(ioc):
    devices = epics_lab_devices(ioc.prefix)
    devices.stage_x.velocity.set(1e4).wait(5)
    return devices


class CountGets:
    """Counts CA gets (pyepics' get entry points) made while active, and pyepics polls
    (``ca.put`` polls, sleeping in ``ca_pend_event``)."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        self.polls = 0
        poll = epics.ca.poll

        def counting_poll(*args, **kwargs):
            self.polls += 1
            return poll(*args, **kwargs)

        monkeypatch.setattr(epics.ca, "poll", counting_poll)
        for name in ("get_with_metadata", "get_complete_with_metadata", "get", "get_complete"):
            original = getattr(epics.ca, name)

            def counting(chid, *args, _orig=original, _name=name, **kwargs):
                self.calls.append(f"{_name} {epics.ca.name(chid)}")
                return _orig(chid, *args, **kwargs)

            monkeypatch.setattr(epics.ca, name, counting)


def test_put_completion_reply_follows_the_monitors_before_it(ioc):
    """At each ACQUIRE put-completion (CA callback thread), the TOTAL_COUNTS and BUSY monitors
    have already delivered the new exposure's values."""
    p = ioc.prefix
    counts: list[float] = []
    busy: list[int] = []
    tc = epics.PV(p + "DET:TOTAL_COUNTS", auto_monitor=True, callback=lambda value=None, **k: counts.append(value))
    bz = epics.PV(p + "DET:BUSY", auto_monitor=True, callback=lambda value=None, **k: busy.append(value))
    acquire = epics.PV(p + "DET:ACQUIRE")
    for pv in (tc, bz, acquire):
        assert pv.wait_for_connection(5)
    wait_until(lambda: counts and busy, 5, interval=0.01, what="the subscriptions' first values")
    at_reply: list[tuple[float, list[int]]] = []
    for _ in range(60):
        done = threading.Event()
        n_busy = len(busy)

        def completed(**kwargs):
            at_reply.append((counts[-1], busy[n_busy:]))
            done.set()

        acquire.put(1, callback=completed)
        assert done.wait(5)
        value, busy_updates = at_reply[-1]
        # BUSY 1 then 0 (posted around the exposure, TOTAL_COUNTS between them) arrived first
        assert busy_updates == [1, 0], f"put completed before its BUSY monitors: {busy_updates}"
        assert value == tc.get(use_monitor=False)
    assert len({v for v, _ in at_reply}) > 40  # exposures differ: the value check is not vacuous


def test_trigger_read_and_move_make_no_get_and_no_poll(lab, monkeypatch):
    det, motor = lab.detector, lab.stage_x
    assert isinstance(motor.low_limit_switch, PostedBeforeDone)
    det.trigger().wait(5)
    motor.set(0.5).wait(5)
    before = det.acquire.concluded_from_monitors
    gets = CountGets(monkeypatch)
    frames = []
    for i in range(20):
        motor.set(-1.0 + 0.1 * i).wait(5)
        det.trigger().wait(5)
        assert gets.calls == []
        assert gets.polls == 0  # puts flushed, no pend_event sleep
        frames.append(det.read())
    assert gets.calls == []  # the spectrum and the total come from their monitors
    monkeypatch.undo()
    assert det.acquire.concluded_from_monitors == before + 20
    assert motor.position == pytest.approx(0.9)
    np.testing.assert_array_equal(frames[-1]["detector_spectrum"]["value"], det.spectrum.get(use_monitor=False))
    assert frames[-1]["detector_total_counts"]["value"] == det.total_counts.get(use_monitor=False)
    assert det.spectrum._read_pv.char_value == f"<array size={len(frames[-1]['detector_spectrum']['value'])}, type=time_double>"
    for f in frames:  # each read is one exposure: its spectrum and its total
        assert float(np.sum(f["detector_spectrum"]["value"])) == f["detector_total_counts"]["value"]
    assert len({f["detector_spectrum"]["value"].tobytes() for f in frames}) == 20


def test_shutter_commands_make_no_get_and_conclude_when_repeated(lab, monkeypatch):
    """Open, open again (the readback is already there: no monitor update will come), close,
    close again: each Status finishes at once from the monitored STATE, with no CA get."""
    shutter = lab.shutter
    shutter.set("close").wait(5)
    gets = CountGets(monkeypatch)
    for what, reads in (("open", "open"), ("open", "open"), ("close", "closed"), ("close", "closed")) * 5:
        t0 = time.monotonic()
        shutter.set(what).wait(5)
        assert time.monotonic() - t0 < 2.0  # not the watchdog's 10 s
        assert shutter.state.get() == reads
    assert gets.calls == []
    assert gets.polls == 0  # the command puts are flushed too
    monkeypatch.undo()
    assert shutter.state.get(use_monitor=False) == "closed"


def test_scan_events_hold_each_points_frame(lab):
    """A scan over CA: every event carries its own exposure (monitored reads are never a frame late)."""
    events = []
    RunEngine({})(scan([lab.detector], lab.stage_x, -1.0, 1.0, 15),
                  lambda name, doc: events.append(doc) if name == "event" else None)
    totals = [e["data"]["detector_total_counts"] for e in events]
    sums = [float(np.sum(e["data"]["detector_spectrum"])) for e in events]
    assert len(events) == 15
    assert totals == pytest.approx(sums)
    assert len({np.asarray(e["data"]["detector_spectrum"]).tobytes() for e in events}) == 15


def test_command_without_busy_transition_concludes_by_reading(lab):
    """CHANGER:HOME 0 completes its put without running a command (BUSY never goes 1 -> 0):
    the status still finishes, through the fallback that reads BUSY/ERR_CODE/STATE fresh."""
    home = lab.changer.home
    before = home.concluded_by_reading
    home.set(0).wait(5)
    assert home.concluded_by_reading == before + 1


def test_motor_repr_is_the_stock_one_and_follows_kind_changes():
    """sdl's EpicsMotor remembers its repr (MoveStatus takes it on every move) but never a stale one."""
    import ophyd

    from sdl.devices.motor import EpicsMotor

    ours, stock = EpicsMotor("NO:SUCH:M1", name="m"), ophyd.EpicsMotor("NO:SUCH:M1", name="m")
    assert repr(ours) == repr(stock)
    assert repr(ours) is repr(ours)  # remembered
    ours.velocity.kind = stock.velocity.kind = "normal"
    assert repr(ours) == repr(stock) and "'velocity'" in repr(ours).split("configuration_attrs")[0]
