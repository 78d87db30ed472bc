"""Failures are data: the simulated lab's failure region, the agents' feasibility model."""

from __future__ import annotations

import numpy as np
import pytest

from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.sim_devices.failures import DEMO, failure_region
from sdl.space import Objective, RangeParameter, SearchSpace


def test_failure_region_rules_and_errors():
    assert DEMO.fails({"A": 0.2, "B": 0.6, "C": 0.2, "temperature": 300})
    assert DEMO.fails({"A": 0.4, "B": 0.3, "C": 0.3, "temperature": 600})
    assert not DEMO.fails({"A": 0.29, "B": 0.45, "C": 0.26, "temperature": 419})  # the optimum forms
    assert failure_region("demo") is DEMO and failure_region(None) is None
    with pytest.raises(InvalidInput) as err:
        failure_region({"rules": [{"param": "B", "op": ">=", "bound": 1}]})
    assert err.value.field == "failure_region"


def _space():
    return SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1), RangeParameter(name="y", lower=0, upper=1)])


def _observations(rng, n=24):
    """Everything with x > 0.5 fails; the value rises with x, so the best is at the border."""
    out = []
    for x, y in rng.random((n, 2)):
        if x > 0.5:
            out.append(Observation(params={"x": float(x), "y": float(y)}, ok=False))
        else:
            out.append(Observation(params={"x": float(x), "y": float(y)}, values={"f": float(x - (y - 0.5) ** 2)}))
    return out


def test_feasibility_model_steers_suggestions_out_of_the_failure_region():
    from sdl.agents import make_agent

    obs = _observations(np.random.default_rng(1))
    picks = {}
    for mode in ("auto", "ignore"):
        agent = make_agent("botorch", _space(), [Objective(name="f")], seed=0, failure_model=mode, num_restarts=2,
                           raw_samples=64)
        agent.tell(obs)
        picks[mode] = agent.ask(1)
    assert all(s.params["x"] <= 0.55 for s in picks["auto"])
    assert "feasibility" in picks["auto"][0].provenance.model
    assert 0.0 <= picks["auto"][0].provenance.predicted_mean["p_success"] <= 1.0
    assert picks["auto"][0].provenance.predicted_mean["p_success"] >= 0.5
    assert "feasibility" not in picks["ignore"][0].provenance.model
    from sdl.agents.feasibility import FeasibilityModel

    X = np.array([[o.params["x"], o.params["y"]] for o in obs])
    p = FeasibilityModel(X, np.array([o.ok for o in obs]), seed=0).prob_np(np.array([[0.2, 0.5], [0.85, 0.5]]))
    assert p[0] > 0.8 and p[1] < 0.2
    with pytest.raises(InvalidInput) as err:
        make_agent("botorch", _space(), [Objective(name="f")], failure_model="yes")
    assert err.value.field == "failure_model"


def test_bo_with_failure_model_is_the_botorch_agent_and_restart_safe():
    from sdl.agents import make_agent
    from sdl.agents.gp import BoTorchAgent

    obs = _observations(np.random.default_rng(2), n=12)
    opts = {"failure_model": "auto", "num_restarts": 2, "raw_samples": 64}
    a = make_agent("bo", _space(), [Objective(name="f")], seed=3, **opts)
    assert isinstance(a, BoTorchAgent) and a.name == "bo"
    a.tell(obs)
    b = make_agent("bo", _space(), [Objective(name="f")], seed=3, **opts)
    b.tell(obs)
    assert a.ask(1)[0].params == b.ask(1)[0].params


def test_pool_agent_skips_rows_likely_to_fail():
    from sdl.agents import make_agent

    xs = np.linspace(0, 1, 41)
    space = SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1)], pool=[{"x": float(x)} for x in xs])
    obs = [Observation(params={"x": float(x)}, ok=False) if x > 0.6 else
           Observation(params={"x": float(x)}, values={"f": float(x)}) for x in xs[::4]]
    agent = make_agent("bo", space, [Objective(name="f")], seed=0)
    agent.tell(obs)
    assert all(s.params["x"] <= 0.65 for s in agent.ask(2))


def test_lab_refuses_points_in_the_failure_region_and_campaign_records_them(store):
    from sdl.campaign import CampaignRunner, create_campaign

    cid = create_campaign(store, {"instrument": "sim-xrd", "instrument_options": {"failure_region": "demo"},
                                  "agent": "random", "budget": 8, "seed": 1})
    assert CampaignRunner(store, cid).run() == "completed"
    obs = store.observations(cid)
    assert len(obs) == 8
    for o in obs:
        assert o.ok == (not DEMO.fails(o.params))
    assert any(not o.ok for o in obs) and any("no film formed" in o.extra.get("error", "") for o in obs)


def test_function_benchmark_counts_failed_experiments():
    from sdl.agents.benchmarking import function_problem, run_function_campaign

    run = run_function_campaign("random", function_problem("sim-xrd-fail"), 0, budget=12)
    assert len(run.failed) == 12 and any(run.failed)
    X = np.array(run.X)
    assert run.failed == DEMO.mask(X, ["A", "B", "C", "temperature"]).tolist()


def test_the_cli_says_each_failed_experiment_in_one_line(tmp_path):
    """A point the robot cannot make is data: one warning line each, no plan traceback."""
    import json
    import subprocess
    import sys

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"instrument": "sim-xrd", "agent": "sobol", "budget": 8, "seed": 1,
                                "instrument_options": {"failure_region": "demo"}}))
    done = subprocess.run([sys.executable, "-m", "sdl.cli", "campaign", "run", "--spec", str(spec), "--store",
                           f"sqlite:///{tmp_path / 'f.sqlite'}"], capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    failed = [line for line in said.splitlines() if "failed:" in line and "no film formed" in line]
    assert len(failed) >= 2, said  # seed 1 of sobol sends 4 of its 8 points into the region
    assert "Traceback" not in said and "Run aborted" not in said, said
