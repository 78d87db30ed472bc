"""A package sdl has never seen (examples/alignment, pip-installed: ``pip install -e
examples/alignment``) adds an instrument through its entry point, and every command
handles it: ``sdl instruments list``, ``sdl campaign run|resume|replay``, ``sdl serve``
(schema, submit, campaign), ``sdl worker``, ``sdl ioc`` (its double over CA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

sdl_alignment = pytest.importorskip("sdl_alignment", reason="pip install -e examples/alignment")
import sdl_alignment.model  # noqa: E402

from sdl.ca_env import free_port  # noqa: E402
from sdl.testing import served_double  # noqa: E402
from sdl.service import crashtest  # noqa: E402

NAME = "mirror-alignment"
SDL = [sys.executable, "-m", "sdl.cli"]


def sdl(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(SDL + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_alignment_conforms():
    from sdl.testing import assert_instrument_conforms

    assert_instrument_conforms(NAME, points=2)


def test_cli_lists_runs_resumes_and_replays_the_plugin_instrument(tmp_path, store_url):
    out = sdl("instruments", "list", "--json")
    listed = {i["name"]: i for i in json.loads(out.stdout)["instruments"]}
    assert listed[NAME]["source"].endswith("(sdl-example-alignment 0.1.0)")
    assert listed[NAME]["plans"] == ["align_shot"] and listed[NAME]["simulated_double"]
    assert "beam_spot" in json.loads(out.stdout)["reductions"]

    # a campaign interrupted after 2 of 5 experiments, resumed by the CLI, replayed from its documents
    from sdl.campaign import CampaignRunner, Progress, create_campaign
    from sdl.store import Store

    store = Store(store_url)
    cid = create_campaign(store, {"instrument": NAME, "agent": "sobol", "budget": 5, "seed": 2})

    class StopAfterTwo(Progress):
        def experiment_done(self, done, total, observation, best):
            if done == 2:
                raise KeyboardInterrupt

    assert CampaignRunner(store, cid, progress=StopAfterTwo()).run() == "interrupted"
    assert len(store.observations(cid)) == 2
    out = sdl("campaign", "resume", cid, "--store", store_url)
    assert out.returncode == 0, out.stdout + out.stderr
    obs = store.observations(cid)
    assert len(obs) == 5 and len({o.suggestion_id for o in obs}) == 5 and all(o.ok for o in obs)
    assert {"intensity", "size"} <= set(obs[0].values)
    assert store.documents(obs[0].run_uid)[0][1]["reduction"]["name"] == "beam_spot"
    out = sdl("campaign", "replay", cid, "--store", store_url)
    assert out.returncode == 0 and "0 mismatches" in out.stdout, out.stdout + out.stderr
    out = sdl("campaign", "run", "--instrument", NAME, "--agent", "random", "--budget", "2", "--store", store_url)
    assert out.returncode == 0, out.stdout + out.stderr
    store.close()


def test_serve_and_worker_run_the_plugin_instrument(tmp_path):
    from sdl.client import Client
    from sdl.database import scratch_store_url

    url = scratch_store_url(tmp_path / "store.sqlite")
    port = crashtest.free_port()
    service = crashtest.start_service(tmp_path, url, port, instruments=NAME)
    worker = None
    try:
        crashtest.wait_http(port, service)
        worker = crashtest.start_worker(tmp_path, url, NAME, time_scale=0.0, worker_id="align-1")
        admin = Client(f"http://127.0.0.1:{port}", crashtest.ADMIN_TOKEN)
        user = admin.create_user("beamline-alice")
        alice = Client(f"http://127.0.0.1:{port}", user["token"])
        inst = alice.instrument(NAME)
        schema = inst["plans"]["align_shot"]
        assert schema["properties"]["pitch"] == {"type": "number", "minimum": 1.0, "maximum": 6.0,
                                                 "x-units": "mrad", "description": "pitch (mrad)"}
        assert schema["properties"]["frames"]["maximum"] == 20 and schema["x-dofs"] == ["bend", "pitch"]
        prop = admin.approve(alice.create_proposal("focus the beam", [NAME])["id"])
        from sdl.client import ServiceError

        with pytest.raises(ServiceError) as err:  # checked against the plan's schema at submit time
            alice.submit(prop["id"], NAME, {"pitch": 9.0, "bend": 0.0})
        assert err.value.status == 422 and err.value.field == "parameters.pitch"
        item = alice.submit(prop["id"], NAME, {"pitch": 3.4, "bend": 0.07, "frames": 2})
        done = alice.wait(item["id"], timeout=120)
        assert done["status"] == "done", done
        values = done["result"]["values"]
        assert values["intensity"] > 0.9 * sdl_alignment.model.truth({"pitch": 3.4, "bend": 0.07})["intensity"]
        docs = alice.documents(item["id"])
        assert sum(d["name"] == "event" for d in docs) == 2 and docs[0]["doc"]["worker"] == "align-1"
        camp = alice.create_campaign(prop["id"], {"instrument": NAME, "agent": "random", "budget": 3, "seed": 1},
                                     start=True)
        final = alice.wait_campaign(camp["id"], timeout=180)
        assert final["state"] == "completed" and final["experiments"] == 3, final
    finally:
        for p in (worker, service):
            if p is not None:
                p.terminate(20)
                p.close()


def test_sdl_ioc_serves_the_double_and_the_instrument_drives_it(tmp_path):
    """``sdl ioc --instrument mirror-alignment``: the package's caproto double; the same
    instrument with ``epics_prefix`` runs a campaign over Channel Access."""
    prefix = f"AL{os.getpid()}:"
    with served_double(NAME, prefix) as (port, env):
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"instrument": NAME, "agent": "sobol", "budget": 3, "seed": 0,
                                    "instrument_options": {"epics_prefix": prefix}}))
        store = f"sqlite:///{tmp_path / 's.sqlite'}"
        out = sdl("campaign", "run", "--spec", str(spec), "--store", store, "--id", "ca", env=env, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        from sdl.store import Store

        s = Store(store)
        obs = s.observations("ca")
        assert len(obs) == 3 and all(o.ok for o in obs)
        for o in obs:  # measured over CA = the model at the point, within the counting noise
            assert abs(o.values["intensity"] - o.extra["truth"]) < 1000 + 0.03 * o.extra["truth"], o
        ev = [d for n, d in s.documents(obs[0].run_uid) if n == "event"][0]
        assert len(ev["data"]["camera_image"]) == sdl_alignment.model.N ** 2  # the frame came over CA
        s.close()


@pytest.mark.slow
def test_benchmark_bo_needs_at_most_half_the_experiments_of_random(tmp_path):
    """The acceptance benchmark, 10 seeds (about 15 min on 2 busy cores): the median number
    of experiments bo needs to reach 95 % of the best achievable intensity is at most half
    of random's, and the two-objective campaign reports a Pareto front."""
    from sdl_alignment.bench import main

    out = tmp_path / "bench.json"
    assert main(["--seeds", "10", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["median_bo"] <= 0.5 * summary["median_random"]
    assert summary["pareto_front"] and all({"intensity", "size"} <= set(r) for r in summary["pareto_front"])


def test_a_toml_profile_drives_the_double_as_stock_records_with_an_area_detector_like_camera(tmp_path):
    """No Python: setpoint/readback pairs and a camera with Acquire (put completion) and
    ArrayData, reduced by the stock reductions (sum of the frame, FWHM of its profile)."""
    from pathlib import Path

    from sdl.store import Store

    port = free_port()
    prefix = f"ALT{os.getpid()}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "SDL_TEST_CA"))}
    env.update(EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST="127.0.0.1")
    ioc = subprocess.Popen(SDL + ["ioc", "--instrument", NAME, "--prefix", prefix, "--port", str(port)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in ioc.stdout:
            if line.startswith("READY"):
                break
        profile = tmp_path / "camera.toml"
        example = Path(__file__).resolve().parents[1] / "examples" / "profiles" / "alignment_camera.toml"
        profile.write_text(example.read_text().replace("AL:", prefix))
        store = f"sqlite:///{tmp_path / 's.sqlite'}"
        out = sdl("campaign", "run", "--profile", str(profile), "--instrument", "mirror-toml", "--agent", "sobol",
                  "--budget", "3", "--store", store, "--id", "toml", env={**env, "EPICS_CA_SERVER_PORT": str(port)},
                  timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        s = Store(store)
        obs = s.observations("toml")
        m = sdl_alignment.model
        assert len(obs) == 3
        for o in obs:  # the frame's sum: the beam through the aperture plus the flat background
            expected = m.truth(o.params)["intensity"] + m.BACKGROUND * m.N ** 2
            assert o.ok and abs(o.values["counts"] - expected) < 1000 + 0.03 * expected, o
            assert o.values["width"] > 0
        s.close()
    finally:
        ioc.terminate()
        ioc.wait(10)
