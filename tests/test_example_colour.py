"""The colour-matching station (examples/colour_station, ``pip install -e
examples/colour_station``): a robotics engineer's instrument defined only through the
public plug-in interface -- plan arguments instead of motors, wells from sdl's sample
slot, its own reduction -- in-process and over Channel Access (its caproto double)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("sdl_colour", reason="pip install -e examples/colour_station")
from sdl_colour import optics  # noqa: E402

from sdl.testing import served_double  # noqa: E402

NAME = "colour-station"
SDL = [sys.executable, "-m", "sdl.cli"]


def test_colour_station_conforms():
    from sdl.testing import assert_instrument_conforms

    assert_instrument_conforms(NAME, points=2)


def test_colour_station_campaign_measures_the_mix_it_asked_for(store):
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.instruments import make_instrument
    from sdl.replay import replay

    inst = make_instrument(NAME)
    assert inst.source.endswith("(sdl-example-colour-station 0.1.0)")
    assert inst.plan("mix_and_measure").point_args == ["red", "yellow", "blue"] and not inst.dofs
    assert inst.plan_schema()["properties"]["integration_ms"]["x-units"] == "ms"
    cid = create_campaign(store, {"instrument": NAME, "agent": "sobol", "budget": 5, "seed": 3})
    assert CampaignRunner(store, cid).run() == "completed"
    obs = store.observations(cid)
    for o in obs:
        # the reduction of the measured spectrum is the model's distance at the point, within the noise
        assert o.values["colour_distance"] == pytest.approx(optics.distance(o.params), abs=3 * optics.NOISE)
        start = store.documents(o.run_uid)[0][1]
        assert start["well"] == start["suggestion_seq"] % 24 + 1  # the well is the sample slot sdl gave
    assert all(r["match"] for r in replay(store, cid))
    from sdl.report import summarize

    summary = summarize(store, cid)  # the instrument's objective is minimised: the best is the smallest
    assert summary["objective"]["direction"] == "minimize"
    assert summary["best"]["value"] == min(o.values["colour_distance"] for o in obs)


def test_colour_station_over_channel_access(tmp_path):
    prefix = f"CS{os.getpid()}:"
    with served_double(NAME, prefix) as (port, env):
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"instrument": NAME, "agent": "sobol", "budget": 2, "seed": 0,
                                    "instrument_options": {"epics_prefix": prefix}}))
        store = f"sqlite:///{tmp_path / 's.sqlite'}"
        out = subprocess.run(SDL + ["campaign", "run", "--spec", str(spec), "--store", store, "--id", "ca"],
                             env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        from sdl.store import Store

        s = Store(store)
        obs = s.observations("ca")
        assert len(obs) == 2
        for o in obs:
            assert o.ok and o.values["colour_distance"] == pytest.approx(optics.distance(o.params),
                                                                         abs=3 * optics.NOISE)
        s.close()


def test_demo_over_channel_access_gives_the_in_process_numbers(tmp_path):
    """``sdl demo --epics --instrument colour-station`` serves the package's double and
    drives it over CA: the same observations as the in-process demo with the same seed."""
    from sdl.store import Store, sqlite_url

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "SDL_TEST_CA"))}
    values = {}
    for mode in ("local", "epics"):
        out = tmp_path / mode
        args = SDL + ["demo", "--instrument", NAME, "--agent", "random", "--budget", "3", "--seed", "5",
                      "--out", str(out)] + (["--epics"] if mode == "epics" else [])
        run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        s = Store(sqlite_url(out / "demo.sqlite"))
        cid = s.campaigns()[0].id
        values[mode] = [(o.params, o.values) for o in s.observations(cid)]
        s.close()
    assert "driven over Channel Access" in run.stdout
    assert values["epics"] == values["local"] and len(values["local"]) == 3
