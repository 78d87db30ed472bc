"""Agents: the protocol, the baselines, the GP agents and the Ax default agent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdl.agents import AGENTS, make_agent
from sdl.agents.encoding import SpaceEncoder
from sdl.agents.gp import heavy_tailed
from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.sim_devices.pool import PoolModel
from sdl.space import ChoiceParameter, Composition, FixedParameter, Objective, RangeParameter, SearchSpace

MAX = [Objective(name="y", direction="maximize")]
#: Fewer acquisition restarts: keeps the model-based tests fast (the defaults are for campaigns).
FAST = {"num_restarts": 2, "raw_samples": 64}


def mixed_space() -> SearchSpace:
    return SearchSpace(
        parameters=[
            RangeParameter(name="a", lower=0, upper=1),
            RangeParameter(name="b", lower=0, upper=1),
            RangeParameter(name="c", lower=0, upper=1),
            RangeParameter(name="T", lower=100, upper=500),
            RangeParameter(name="rate", lower=0.01, upper=10, log_scale=True),
            RangeParameter(name="n", lower=1, upper=9, value_type="int"),
            ChoiceParameter(name="solvent", values=["water", "ethanol", "toluene"]),
            FixedParameter(name="pressure", value=1.0),
        ],
        compositions=[Composition(components=["a", "b", "c"])],
    )


def toy_space() -> SearchSpace:
    return SearchSpace(
        parameters=[RangeParameter(name="a", lower=0, upper=1), RangeParameter(name="b", lower=0, upper=1),
                    RangeParameter(name="T", lower=0, upper=1)],
        compositions=[Composition(components=["a", "b"])],
    )


def toy_value(p: dict) -> float:
    """A smooth bump with its maximum at a = 0.7, T = 0.3."""
    return math.exp(-((p["a"] - 0.7) ** 2 + (p["T"] - 0.3) ** 2) / 0.05)


def feed(agent, n: int, f=toy_value, batch: int = 1) -> list[dict]:
    points = []
    while len(points) < n:
        for s in agent.ask(batch):
            points.append(s.params)
            agent.tell([Observation(suggestion_id=s.id, params=s.params, values={"y": f(s.params)})])
    return points


# ------------------------------------------------------------------ registry and input checks
def test_unknown_agent_is_rejected_naming_the_field():
    with pytest.raises(InvalidInput) as err:
        make_agent("genius", toy_space(), MAX)
    assert err.value.field == "agent" and "random" in err.value.message


def test_unknown_option_is_rejected_with_the_allowed_ones():
    with pytest.raises(InvalidInput) as err:
        make_agent("botorch", toy_space(), MAX, acqf="ei")
    assert err.value.field == "agent_options" and "acquisition" in err.value.message


def test_ask_needs_a_positive_count():
    agent = make_agent("random", toy_space(), MAX)
    with pytest.raises(InvalidInput) as err:
        agent.ask(0)
    assert err.value.field == "n"


# ------------------------------------------------------------------ encoding
def test_encoder_round_trip_every_parameter_kind():
    space = mixed_space()
    enc = SpaceEncoder(space)
    assert enc.dim == 2 + 1 + 1 + 1 + 3  # a, b (c implied), T, rate, n, one-hot solvent
    point = {"a": 0.2, "b": 0.5, "c": 0.3, "T": 250.0, "rate": 0.1, "n": 4, "solvent": "ethanol", "pressure": 1.0}
    x = enc.encode(point)
    assert x[3] == pytest.approx((math.log10(0.1) + 2) / 3)  # log scale
    back = enc.decode(x)
    assert back["solvent"] == "ethanol" and back["n"] == 4 and back["pressure"] == 1.0
    for k in ("a", "b", "c", "T", "rate"):
        assert back[k] == pytest.approx(point[k])
    space.validate_point(back)


def test_random_design_is_uniform_on_the_simplex_and_valid():
    enc = SpaceEncoder(mixed_space())
    X = enc.random(2000, np.random.default_rng(0))
    pts = [enc.decode(x) for x in X]
    for p in pts[:50]:
        mixed_space().validate_point(p)
    a = np.array([p["a"] for p in pts])
    # uniform on the 2-simplex: the marginal of one fraction is Beta(1, 2), mean 1/3
    assert a.mean() == pytest.approx(1 / 3, abs=0.02)
    assert {p["solvent"] for p in pts} == {"water", "ethanol", "toluene"}


# ------------------------------------------------------------------ baselines
@pytest.mark.parametrize("name", ["random", "sobol", "grid"])
def test_baselines_give_valid_points_and_are_seeded(name):
    space = mixed_space()
    a = make_agent(name, space, MAX, seed=3)
    b = make_agent(name, space, MAX, seed=3)
    pa = [s.params for s in a.ask(4)]
    pb = [s.params for s in b.ask(4)]
    assert pa == pb
    for p in pa:
        space.validate_point(p)
        assert p["a"] + p["b"] + p["c"] == pytest.approx(1.0)
    assert len({tuple(sorted(p.items())) for p in pa}) == 4


@pytest.mark.parametrize("name", ["random", "sobol", "grid", "botorch", "bo"])
def test_pool_agents_only_suggest_unmeasured_listed_points(name):
    pool = PoolModel.bundled("p3ht")
    space = pool.search_space()
    agent = make_agent(name, space, [pool.objective], seed=1, **({"n_init": 3} if name in ("botorch", "bo") else {}))
    seen = set()
    for _ in range(3):
        for s in agent.ask(2):
            row = pool.index_of(s.params)
            assert row not in seen
            seen.add(row)
            agent.tell([Observation(params=s.params, values={pool.objective.name: float(pool.values[row])})])
    assert len(seen) == 6


# ------------------------------------------------------------------ model-based agents
def test_botorch_finds_the_bump_and_explains_itself():
    agent = make_agent("botorch", toy_space(), MAX, seed=0, n_init=3, **FAST)
    pts = feed(agent, 9)
    best = max(toy_value(p) for p in pts)
    assert best > 0.8
    s = agent.ask(1)[0]
    prov = s.provenance
    assert prov.agent == "botorch" and prov.model.startswith("SingleTaskGP")
    assert prov.acquisition_value is not None and prov.predicted_mean["y"] is not None
    assert prov.predicted_sd["y"] >= 0 and prov.model_extra["fit_loo_r2"] is not None
    assert s.params["a"] + s.params["b"] == pytest.approx(1.0)


def test_botorch_batch_points_are_distinct_and_avoid_pending():
    agent = make_agent("botorch", toy_space(), MAX, seed=0, **FAST)
    feed(agent, 6)
    batch = agent.ask(3)
    xs = np.array([[s.params["a"], s.params["T"]] for s in batch])
    d = np.linalg.norm(xs[:, None] - xs[None], axis=-1)[np.triu_indices(3, 1)]
    assert d.min() > 1e-3  # jointly chosen: not the same point three times
    assert len(agent.pending) == 3


def test_heavy_tailed_detection():
    assert heavy_tailed(np.array([1.0, 5.0, 300.0]))
    assert not heavy_tailed(np.array([1.0, 5.0, 10.0]))
    assert not heavy_tailed(np.array([-1.0, 5.0, 300.0]))


@pytest.mark.parametrize("name", ["botorch", "gp-ei", "random", "sobol"])
def test_restart_gives_the_same_next_suggestion(name):
    opts = FAST if name in ("botorch", "gp-ei") else {}
    first = make_agent(name, toy_space(), MAX, seed=7, **opts)
    pts = feed(first, 6)
    pending = [s.params for s in first.ask(1)]
    nxt = first.ask(1)[0].params
    # a new agent rebuilt from what the store holds: observations and pending points
    again = make_agent(name, toy_space(), MAX, seed=7, **opts)
    again.tell([Observation(params=p, values={"y": toy_value(p)}) for p in pts])
    again.add_pending(pending)
    assert again.ask(1)[0].params == pytest.approx(nxt)


def test_ax_agent_suggests_valid_compositions_with_provenance_and_restarts_identically():
    space = toy_space()
    first = make_agent("bo", space, MAX, seed=2, **FAST)
    pts = feed(first, 6)
    s = first.ask(1)[0]
    assert s.provenance.agent == "bo" and "Ax" in s.provenance.model
    assert s.provenance.predicted_mean is not None and "y" in s.provenance.predicted_mean
    assert s.params["a"] + s.params["b"] == pytest.approx(1.0)
    space.validate_point(s.params)
    again = make_agent("bo", space, MAX, seed=2, **FAST)
    again.tell([Observation(params=p, values={"y": toy_value(p)}) for p in pts])
    assert again.ask(1)[0].params == pytest.approx(s.params)


def test_failed_observations_are_not_data():
    agent = make_agent("botorch", toy_space(), MAX, seed=0, **FAST)
    feed(agent, 5)
    agent.tell([Observation(params={"a": 0.5, "b": 0.5, "T": 0.5}, ok=False)])
    assert len(agent.good_observations()) == 5
    assert agent.ask(1)[0].provenance.model_extra["n_observations"] == 5


def test_every_registered_agent_is_constructible():
    for name in AGENTS:
        agent = make_agent(name, toy_space(), MAX)
        assert agent.ask(1)[0].params


def test_ucb_beta_on_a_pool_follows_its_size():
    """The pool default explores (beta 3) on pools a campaign measures a good share of and
    exploits (beta 1) on pools of LARGE_POOL_ROWS rows or more (docs/agents.md, the suite);
    an explicit ``beta`` wins either way."""
    from sdl.agents.gp import LARGE_POOL_ROWS
    from sdl.pools import load_pool

    betas = {}
    for name in ("snar", "agnp", "p3ht", "suzuki", "buchwald_a"):
        pool = load_pool(name)
        betas[name] = (len(pool.points), make_agent("bo", pool.search_space(), [pool.objective], seed=0)._default("beta"))
        explicit = make_agent("bo", pool.search_space(), [pool.objective], seed=0, beta=2.0)
        assert explicit.options["beta"] == 2.0
    assert all((rows >= LARGE_POOL_ROWS) == (beta == 1.0) for rows, beta in betas.values()), betas
    assert [b for _, b in betas.values()] == [3.0, 3.0, 3.0, 1.0, 1.0], betas
