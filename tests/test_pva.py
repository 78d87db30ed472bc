"""PVAccess: the soft IOC serves the same PVs over PVA (p4p), with put-completion, and the
same campaign gives the same results over CA (classic ophyd), over PVA (ophyd-async) and
in-process."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, free_port, unique_prefix

PORT = configure_loopback_ca()  # before ophyd/epics start libca
PVA_PORT = free_port()

import dataclasses  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402
from sdl.sim_devices.ioc.pva import pva_client_environment  # noqa: E402

os.environ.update(pva_client_environment("127.0.0.1", PVA_PORT))  # before p4p starts a client

pytestmark = pytest.mark.timeout(120)
SEED = 3
SPEC = {"instrument": "sim-xrd", "agent": "sobol", "budget": 3, "seed": SEED}


def test_pva_serves_values_puts_with_completion_and_refusals():
    from p4p.client.thread import Context

    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("V"), port=PORT, pva_port=PVA_PORT,
                       time_scale=1.0, names="stage_x,ring,detector") as ioc:
        ctx = Context("pva")
        try:
            p = ioc.prefix
            assert ctx.get(p + "RING:CURRENT") == 400.0
            state = ctx.get(p + "DET:STATE")  # NTEnum
            assert list(state.raw.value.choices) == ["idle", "busy", "error"] and state.raw.value.index == 0
            ctx.put(p + "STAGE:X.VELO", 20.0, wait=True)
            ctx.put(p + "STAGE:X.VAL", 1.5, wait=True)  # completes when the move is over
            assert ctx.get(p + "STAGE:X.RBV") == pytest.approx(1.5)
            assert ctx.get(p + "STAGE:X.DMOV") == 1
            assert ioc.lab.stage_x.position == pytest.approx(1.5)  # one physics behind CA and PVA
            with pytest.raises(Exception, match="Limits|limits"):
                ctx.put(p + "STAGE:X.VAL", 50.0, wait=True)
            ctx.put(p + "DET:ACQUIRE", 1, wait=True)
            assert ctx.get(p + "DET:TOTAL_COUNTS") > 0
        finally:
            ctx.close()


def _run(instrument, path):
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.database import scratch_store_url
    from sdl.store import Store

    store = Store(scratch_store_url(path))
    cid = create_campaign(store, SPEC)
    assert CampaignRunner(store, cid, instrument=instrument).run() == "completed"
    obs = store.observations(cid)
    store.close()
    return obs


def test_same_campaign_over_ca_pva_and_in_process(tmp_path):
    from sdl.devices.async_devices import async_lab_devices

    with serve_sim_lab("sim-xrd", seed=SEED, prefix=unique_prefix("C"), port=PORT) as ioc:
        over_ca = _run(ioc.epics_instrument(), tmp_path / "ca.sqlite")
    with serve_sim_lab("sim-xrd", seed=SEED, prefix=unique_prefix("P"), port=PORT, pva_port=PVA_PORT) as ioc:
        instrument = ioc.epics_instrument()
        devices = async_lab_devices(ioc.prefix, protocol="pva")
        over_pva = _run(dataclasses.replace(instrument, devices=devices), tmp_path / "pva.sqlite")
    in_process = _run(None, tmp_path / "local.sqlite")
    assert len(over_ca) == len(over_pva) == len(in_process) == 3
    assert all(o.ok for o in over_ca + over_pva + in_process)
    assert [o.params for o in over_ca] == [o.params for o in over_pva] == [o.params for o in in_process]
    assert [o.values for o in over_ca] == [o.values for o in over_pva] == [o.values for o in in_process]


def test_soak_ophyd_async_motor_over_pva():
    """ophyd-async's Motor over PVA through moves, null moves, reversals, retargets, stops, scans."""
    from sdl.sim_devices.ioc import loopback_environment
    from sdl.sim_devices.ioc.soak import run_soak

    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("S"), port=PORT, pva_port=PVA_PORT,
                       time_scale=1.0, names="motors", mode="process") as ioc:
        env = {**loopback_environment("127.0.0.1", PORT), **pva_client_environment("127.0.0.1", PVA_PORT)}
        (result,) = run_soak(("ophyd-async-pva",), runs=1, moves=40, seed=5, pv=ioc.prefix + "STAGE:X", env=env,
                             hang_s=20)
    assert result["moves"] >= 40, result
    assert not any(result.get(k) for k in ("hangs", "callback_errors", "double_completions",
                                            "early_completions")) and not result["errors"], result
