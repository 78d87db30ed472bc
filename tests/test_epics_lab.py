"""The simulated lab served by soft IOCs and driven through the EPICS device classes:
the autonomous step gives the same documents and figure of merit as in-process, robot
and detector faults fail the step with the device's message (shutter closed), an
unreachable IOC is named, limits are refused before motion, a beam dump suspends a
run that resumes without losing or repeating an event."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import time  # noqa: E402

import bluesky.plan_stubs as bps  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.utils import FailedStatus  # noqa: E402
from ophyd.utils import LimitError  # noqa: E402

from sdl.epics_lab import epics_devices, epics_lab_devices  # noqa: E402
from sdl.errors import DeviceFault  # noqa: E402
from sdl.instruments import make_instrument  # noqa: E402
from sdl.plans import autonomous_step  # noqa: E402
from sdl.reduction import reduce_run  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402

pytestmark = pytest.mark.timeout(60)

SEED = 7
POINT = ([0.5, 0.3, 0.2], 420.0)


@pytest.fixture(scope="module")
def ioc():
    with serve_sim_lab("sim-xrd", seed=SEED, prefix=unique_prefix("L"), port=PORT) as served:
        yield served


@pytest.fixture(scope="module")
def lab(ioc):
    return epics_lab_devices(ioc.prefix)


@pytest.fixture(scope="module")
def sim(ioc):
    return ioc.sim_control()


@pytest.fixture(scope="module")
def reference():
    """The same instrument in-process (same seed): the documents the EPICS run must match."""
    return make_instrument("sim-xrd", seed=SEED)


def run_step(devices, reduction, *, slot, sample_id, composition=POINT[0], temperature=POINT[1]):
    RE = RunEngine({})
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(autonomous_step(devices, composition, temperature, slot=slot, sample_id=sample_id, exposure=2.0,
                       md={"reduction": reduction}))
    return docs


def test_autonomous_step_same_documents_and_fom_as_in_process(ioc, lab, reference):
    docs_ca = run_step(lab, reference.reduction, slot=1, sample_id="ca-1")
    docs_ref = run_step(reference.devices, reference.reduction, slot=1, sample_id="ca-1")
    fom_ca, fom_ref = reduce_run(docs_ca), reduce_run(docs_ref)
    assert fom_ca == fom_ref  # same seed, same physics: identical counts over CA
    assert 0.0 < fom_ca["fom"] < 1.0
    names = [n for n, _ in docs_ca]
    assert names == [n for n, _ in docs_ref] == ["start", "descriptor", "event", "stop"]
    ev_ca, ev_ref = docs_ca[2][1], docs_ref[2][1]
    assert sorted(ev_ca["data"]) == sorted(ev_ref["data"]) == ["detector_spectrum", "detector_total_counts",
                                                                "ring_current"]
    np.testing.assert_array_equal(ev_ca["data"]["detector_spectrum"], ev_ref["data"]["detector_spectrum"])
    desc = docs_ca[1][1]["data_keys"]
    assert desc["detector_spectrum"]["shape"] == [len(reference.lab.detector.two_theta.get())]
    assert desc["ring_current"]["units"] == "mA"
    assert docs_ca[-1][1]["exit_status"] == "success"
    # the sample is back in its slot, the shutter closed, on both transports
    rec = ioc.lab.sample("ca-1")
    assert rec.location == "rack" and rec.slot == 1
    assert lab.shutter.state.get(use_monitor=False) == "closed"
    assert lab.changer.mounted_sample.get() == ""


def test_robot_fault_fails_the_step_with_its_message_shutter_closed(ioc, lab, sim, reference):
    sim.inject_fault("robot", "jam")
    with pytest.raises(FailedStatus) as info:
        run_step(lab, reference.reduction, slot=2, sample_id="jam-1")
    fault = info.value.__cause__
    assert isinstance(fault, DeviceFault) and fault.device == "robot"
    assert "gripper jammed while making 'jam-1'" in fault.message
    assert lab.robot.state.get(use_monitor=False) == "error"
    assert "gripper jammed" in lab.robot.error_message.get(use_monitor=False)
    assert lab.shutter.state.get(use_monitor=False) == "closed"
    # the next step works (no operator reset needed for the next command)
    docs = run_step(lab, reference.reduction, slot=2, sample_id="jam-2")
    assert docs[-1][1]["exit_status"] == "success"
    assert lab.robot.state.get(use_monitor=False) == "idle"


def test_changer_drop_and_detector_timeout_are_device_faults(ioc, lab, sim, reference):
    sim.inject_fault("changer", "drop")
    with pytest.raises(FailedStatus) as info:
        run_step(lab, reference.reduction, slot=3, sample_id="drop-1")
    assert isinstance(info.value.__cause__, DeviceFault)
    assert info.value.__cause__.device == "changer" and "dropped sample 'drop-1'" in str(info.value.__cause__)
    assert ioc.lab.sample("drop-1").lost
    assert lab.shutter.state.get(use_monitor=False) == "closed"
    sim.clear_fault("changer")
    assert lab.changer.state.get(use_monitor=False) == "idle"
    assert lab.changer.error_message.get(use_monitor=False) == ""

    sim.inject_fault("detector", "timeout")
    with pytest.raises(FailedStatus) as info:
        run_step(lab, reference.reduction, slot=4, sample_id="to-1")
    assert info.value.__cause__.device == "detector" and "timeout" in info.value.__cause__.message
    # the finally-plan closed the shutter and put the sample back
    assert lab.shutter.state.get(use_monitor=False) == "closed"
    assert ioc.lab.sample("to-1").location == "rack"


def test_command_errors_carry_the_robot_message(ioc, lab):
    st = lab.changer.load.set(24)  # empty slot
    with pytest.raises(DeviceFault, match="slot 24 is empty"):
        st.wait(5)
    assert lab.changer.error_code.get(use_monitor=False) == 1
    lab.changer.home.set(1).wait(5)  # operator home/reset clears it
    assert lab.changer.state.get(use_monitor=False) == "idle"
    assert lab.changer.error_code.get(use_monitor=False) == 0
    # the door interlock refuses a load before the robot moves
    ioc.write("CHANGER:DOOR", "open")
    try:
        assert lab.changer.door.get(use_monitor=False) == "open"
        with pytest.raises(DeviceFault, match="door interlock"):
            lab.changer.load.set(1).wait(5)
        assert lab.changer.mounted_sample.get() == ""
    finally:
        ioc.write("CHANGER:DOOR", "closed")


def test_limits_refused_before_motion(ioc, lab):
    RE = RunEngine({})
    before = ioc.lab.stage_x.position
    with pytest.raises(LimitError, match="outside of range"):
        RE(bps.mv(lab.stage_x, 12.0))
    assert ioc.lab.stage_x.position == before
    RE(bps.mv(lab.stage_x, 1.5))
    assert ioc.lab.stage_x.position == pytest.approx(1.5)
    with pytest.raises(LimitError):
        lab.detector.exposure_time.set(0.0)


def test_unreachable_pv_named_within_timeout():
    t0 = time.monotonic()
    with pytest.raises(DeviceFault) as info:
        epics_devices("SDLNOWHERE:", names=["robot", "shutter"], timeout=0.5)
    assert time.monotonic() - t0 < 5.0
    message = str(info.value)
    assert "SDLNOWHERE:ROBOT:" in message and "did not connect within 0.5 s" in message


def test_pv_layout_doc_lists_every_served_pv(ioc):
    from pathlib import Path

    from sdl.sim_devices.ioc import list_pvs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "pv-layout.md").read_text()
    rows = list_pvs(prefix=ioc.prefix, lab=ioc.lab, motor_fields=False)
    served = set(ioc.pvs)
    assert {r["name"] for r in rows} == served, ({r["name"] for r in rows} ^ served)
    for name in served:
        suffix = name[len(ioc.prefix):]
        assert f"`{suffix}" in doc or f"`{suffix.split(':')[0]}:`" in doc, f"{suffix} missing from docs/pv-layout.md"
