"""ophyd-async devices beside classic ophyd: the conformance kit on ophyd-async's Motor and
sdl's AsyncDetector (CA, and the mock backend), and a campaign whose detector is the
ophyd-async one giving the same observations as the in-process lab."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from sdl.devices.async_devices import AsyncDetector, Blocking, connect_async, motor  # noqa: E402
from sdl.errors import DeviceFault  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402
from sdl.testing import DeviceCase, checks_for, run_check  # noqa: E402

pytestmark = pytest.mark.timeout(90)
SEED = 3


@pytest.fixture
def ioc():
    # one IOC at a time on the port: a second one would share the UDP search port
    with serve_sim_lab("sim-xrd", seed=SEED, prefix=unique_prefix("Y"), port=PORT) as served:
        yield served


def _cases(ioc) -> list[DeviceCase]:
    sim = ioc.sim_control()

    def blocking(device):
        def make():
            connect_async(device)
            return Blocking(device)
        return make

    def provoke(dev):
        sim.inject_fault("detector", "timeout")
        return dev.trigger()

    return [
        DeviceCase("async.stage_x", blocking(motor(ioc.prefix + "STAGE:X", name="stage_x")), ("readable", "movable"),
                   bad_setpoint=10.5, good_setpoint=2.0, timeout=10),
        DeviceCase("async.detector", blocking(AsyncDetector(ioc.prefix + "DET:", name="detector")),
                   ("readable", "triggerable", "commandable"), provoke_failure=provoke, failure_message="timeout",
                   recover=lambda d: sim.clear_fault("detector"), timeout=10),
    ]


def test_conformance_kit_on_ophyd_async_devices(ioc):
    for case in _cases(ioc):
        for check in checks_for(case):
            run_check(case, check)


def test_async_detector_in_the_mock_backend():
    """ophyd-async's mock backend: the same class, no IOC; a failed command is a DeviceFault."""
    from ophyd_async.core import set_mock_value

    det = AsyncDetector("MOCK:DET:", name="detector")
    connect_async(det, mock=True)
    set_mock_value(det.exposure_time, 0.1)
    Blocking(det).trigger().wait(5)
    set_mock_value(det.error_code, 1)
    set_mock_value(det.error_message, "detector readout timeout")
    with pytest.raises(DeviceFault, match="readout timeout"):
        Blocking(det).trigger().wait(5)


def test_campaign_with_an_ophyd_async_detector_matches_in_process(tmp_path):
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.database import scratch_store_url
    from sdl.replay import replay
    from sdl.store import Store

    spec = {"instrument": "sim-xrd", "agent": "sobol", "budget": 3, "seed": SEED}
    with serve_sim_lab("sim-xrd", seed=SEED, prefix=unique_prefix("Z"), port=PORT) as ioc:  # a fresh lab
        instrument = ioc.epics_instrument()
        detector = AsyncDetector(ioc.prefix + "DET:", name="detector")
        connect_async(detector)
        instrument = dataclasses.replace(instrument,
                                         devices=dataclasses.replace(instrument.devices, detector=detector))
        store = Store(scratch_store_url(tmp_path / "async.sqlite"))
        cid = create_campaign(store, spec)
        assert CampaignRunner(store, cid, instrument=instrument).run() == "completed"
    ref = Store(scratch_store_url(tmp_path / "ref.sqlite"))
    rid = create_campaign(ref, spec)
    assert CampaignRunner(ref, rid).run() == "completed"
    got, want = store.observations(cid), ref.observations(rid)
    assert len(got) == 3 and all(o.ok for o in got)
    assert [o.params for o in got] == [o.params for o in want]
    assert [o.values for o in got] == [o.values for o in want]
    assert all(r["match"] for r in replay(store, cid))
    store.close()
    ref.close()
