"""A whole (short) campaign over Channel Access: the same observations as the same
campaign on the in-process lab, and its documents replay to the same values."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import pytest  # noqa: E402

from sdl.campaign import CampaignRunner, create_campaign  # noqa: E402
from sdl.replay import replay  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402
from sdl.database import scratch_store_url  # noqa: E402
from sdl.store import Store  # noqa: E402

pytestmark = pytest.mark.timeout(60)

SEED = 3
SPEC = {"instrument": "sim-xrd", "agent": "sobol", "budget": 3, "seed": SEED}


def test_campaign_over_ca_matches_in_process(tmp_path):
    with serve_sim_lab("sim-xrd", seed=SEED, prefix=unique_prefix("K"), port=PORT) as ioc:
        instrument = ioc.epics_instrument()
        assert instrument.lab is None and instrument.options["epics_prefix"] == ioc.prefix
        store_ca = Store(scratch_store_url(tmp_path / "ca.sqlite"))
        cid = create_campaign(store_ca, SPEC)
        assert CampaignRunner(store_ca, cid, instrument=instrument).run() == "completed"
    store_ref = Store(scratch_store_url(tmp_path / "ref.sqlite"))
    cid_ref = create_campaign(store_ref, SPEC)
    assert CampaignRunner(store_ref, cid_ref).run() == "completed"

    obs_ca, obs_ref = store_ca.observations(cid), store_ref.observations(cid_ref)
    assert len(obs_ca) == len(obs_ref) == 3 and all(o.ok for o in obs_ca)
    assert [o.params for o in obs_ca] == [o.params for o in obs_ref]
    assert [o.values for o in obs_ca] == [o.values for o in obs_ref]  # one physics, two transports
    assert all(r["match"] for r in replay(store_ca, cid))
    store_ca.close()
    store_ref.close()


def test_ioc_in_a_subprocess_serves_and_stops():
    from sdl.epics_lab import epics_devices

    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("Q"), port=PORT, names="ring,sim",
                       mode="process") as ioc:
        assert ioc.running and ioc.lab is None
        ring = epics_devices(ioc.prefix, names=["ring_current"])["ring_current"]
        assert ring.current.get(use_monitor=False) == 400.0
        sim = ioc.sim_control()
        sim.inject_fault("ring", "beam_dump")
        assert ring.current.get(use_monitor=False) == 0.0
        assert ring.beam.get(use_monitor=False) == "no beam"
        sim.clear_fault("ring")
        assert ring.current.get(use_monitor=False) == 400.0
        process = ioc._process
    assert process.poll() is not None  # stopped with the block
