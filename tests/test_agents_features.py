"""Agents, issue 5: search-space features, linear constraints, several objectives, outcome
constraints, batches with pending points, repeats, provenance and restarts.

Kept fast: small budgets, few acquisition restarts (``FAST``), one Ax model step per test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdl.agents import make_agent
from sdl.agents.constraints import ConstraintSet, parse_constraint
from sdl.agents.encoding import SpaceEncoder
from sdl.agents.multiobjective import default_reference, hypervolume, pareto_front, pareto_indices
from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.sim_devices.pool import PoolModel
from sdl.space import ChoiceParameter, Composition, FixedParameter, Objective, RangeParameter, SearchSpace

MAX = [Objective(name="y")]
TWO = [Objective(name="y"), Objective(name="cost", direction="minimize")]
FAST = {"num_restarts": 2, "raw_samples": 64}


def box(names=("x", "z")) -> SearchSpace:
    return SearchSpace(parameters=[RangeParameter(name=n, lower=0, upper=1) for n in names])


def mixed_space(total: float = 1.0) -> SearchSpace:
    return SearchSpace(
        parameters=[
            RangeParameter(name="a", lower=0, upper=total),
            RangeParameter(name="b", lower=0, upper=total),
            RangeParameter(name="c", lower=0, upper=total),
            RangeParameter(name="T", lower=100, upper=500),
            RangeParameter(name="rate", lower=0.01, upper=10, log_scale=True),
            RangeParameter(name="n", lower=1, upper=9, value_type="int"),
            ChoiceParameter(name="solvent", values=["water", "ethanol"]),
            FixedParameter(name="pressure", value=1.0),
        ],
        compositions=[Composition(components=["a", "b", "c"], total=total)],
    )


def mixed_value(p: dict) -> float:
    t = p["a"] / (p["a"] + p["b"] + p["c"])
    return -(t - 0.5) ** 2 - (p["T"] - 300) ** 2 / 1e5 - (p["n"] - 4) ** 2 / 50 + 0.3 * (p["solvent"] == "water") \
        - (math.log10(p["rate"]) - 0) ** 2 / 20


def bump(p: dict) -> float:
    return math.exp(-((p["x"] - 0.7) ** 2 + (p["z"] - 0.3) ** 2) / 0.05)


def two_values(p: dict) -> dict:
    """Two conflicting objectives on the box: y peaks at x = 1, cost grows with x and z."""
    return {"y": p["x"] + 0.3 * p["z"], "cost": p["x"] ** 2 + p["z"]}


def run(agent, n: int, f, batch: int = 1) -> list[dict]:
    points = []
    while len(points) < n:
        for s in agent.ask(batch):
            v = f(s.params)
            points.append(s.params)
            agent.tell([Observation(params=s.params, values=v if isinstance(v, dict) else {"y": v})])
    return points


def observations(points, f) -> list[Observation]:
    out = []
    for p in points:
        v = f(p)
        out.append(Observation(params=p, values=v if isinstance(v, dict) else {"y": v}))
    return out


def seeded_points(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    return make_agent("random", space, MAX, seed=seed).random_points(n, np.random.default_rng(seed))


# ------------------------------------------------------------------ every kind of parameter
@pytest.mark.parametrize("total", [1.0, 100.0])
def test_botorch_model_step_keeps_every_parameter_kind_valid(total):
    space = mixed_space(total)
    agent = make_agent("botorch", space, MAX, seed=1, n_init=4, **FAST)
    agent.tell(observations(seeded_points(space, 6, seed=total == 1.0), mixed_value))
    for s in agent.ask(2 if total == 1.0 else 1):
        p = space.validate_point(s.params)
        assert isinstance(p["n"], int) and 1 <= p["n"] <= 9
        assert p["solvent"] in ("water", "ethanol") and p["pressure"] == 1.0
        assert 0.01 <= p["rate"] <= 10
        assert p["a"] + p["b"] + p["c"] == pytest.approx(total)
        assert s.provenance.model.startswith("SingleTaskGP")


def test_ax_model_step_keeps_every_parameter_kind_valid_in_percent():
    space = mixed_space(100.0)
    agent = make_agent("bo", space, MAX, seed=1, n_init=4, **FAST)
    agent.tell(observations(seeded_points(space, 5), mixed_value))
    s = agent.ask(1)[0]
    p = space.validate_point(s.params)
    assert p["a"] + p["b"] + p["c"] == pytest.approx(100.0)
    assert isinstance(p["n"], int) and p["pressure"] == 1.0 and p["solvent"] in ("water", "ethanol")
    assert "Ax" in s.provenance.model


def test_log_scale_is_searched_uniformly_in_decades():
    space = SearchSpace(parameters=[RangeParameter(name="rate", lower=0.001, upper=1000, log_scale=True)])
    pts = make_agent("random", space, MAX, seed=0).random_points(2000, np.random.default_rng(0))
    decades = np.log10([p["rate"] for p in pts])
    assert np.mean(decades < 0) == pytest.approx(0.5, abs=0.05)  # half below 1 on a log scale


# ------------------------------------------------------------------ linear constraints
def test_constraint_parsing_and_errors():
    space = mixed_space()
    c = parse_constraint("2*a - 0.5 * b + 3 >= T / 1" if False else "2*a - 0.5 * b + 3 >= c", space)
    assert c.coefficients == {"a": 2.0, "b": -0.5, "c": -1.0} and c.op == ">=" and c.bound == -3.0
    assert c.satisfied({"a": 0.0, "b": 0.0, "c": 3.0}) and not c.satisfied({"a": 0.0, "b": 0.0, "c": 3.1})
    assert parse_constraint("T <= 400", space).bound == 400.0
    assert parse_constraint("a + b<=0.8", space).coefficients == {"a": 1.0, "b": 1.0}
    for bad, word in [("a + q <= 1", "unknown"), ("rate + a <= 1", "log"), ("solvent <= 1", "choice"),
                      ("a + b", "'<='"), ("a + b < 1", "'<='"), ("a * b <= 1", "read"), ("3 <= 4", "no parameter"),
                      ("pressure <= 2", "fixed")]:
        with pytest.raises(InvalidInput) as err:
            parse_constraint(bad, space)
        assert err.value.field == "parameter_constraints" and word in err.value.message, (bad, err.value.message)
    with pytest.raises(InvalidInput) as err:  # reported when the agent is made, before any experiment
        make_agent("bo", space, MAX, parameter_constraints=["a + q <= 1"])
    assert err.value.field == "parameter_constraints"


def test_constraint_in_unit_coordinates_matches_the_point():
    space = mixed_space(100.0)
    enc = SpaceEncoder(space)
    cons = ConstraintSet(["c <= 30", "2*a + T >= 260", "n - a <= 3"], space)
    X = enc.random(500, np.random.default_rng(0))
    mask = cons.unit_mask(enc, X)
    direct = np.array([cons.satisfied(enc.decode(x)) for x in X])
    # the integer parameter is rounded on decoding: compare on the points away from rounding
    n_frac = np.array([abs(enc.decode(x)["n"] - (1 + 8 * x[enc._index["n"].start])) for x in X])
    assert 0.2 < mask.mean() < 0.8
    assert np.array_equal(mask[n_frac < 0.05], direct[n_frac < 0.05])


@pytest.mark.parametrize("name", ["random", "sobol", "grid", "botorch"])
def test_linear_constraints_are_honoured(name):
    # the bump's top (x = 0.7, z = 0.3) is outside: the best feasible point is (0.8, 0.4)
    agent = make_agent(name, box(), MAX, seed=0, parameter_constraints=["x + z >= 1.2", "z <= 0.9"],
                       **({"n_init": 3, **FAST} if name == "botorch" else {}))
    pts = run(agent, 8, bump)
    assert all(p["x"] + p["z"] >= 1.2 - 1e-9 and p["z"] <= 0.9 + 1e-9 for p in pts)
    if name == "botorch":
        assert max(bump(p) for p in pts) > 0.45  # it goes to the constraint boundary near the top


def test_ax_honours_linear_constraints_with_an_implied_component():
    space = SearchSpace(
        parameters=[RangeParameter(name=k, lower=0, upper=1) for k in ("a", "b", "c")]
        + [RangeParameter(name="T", lower=0, upper=1)],
        compositions=[Composition(components=["a", "b", "c"])],
    )
    cons = ["c <= 0.2", "a - T <= 0.1"]  # c is the implied component: Ax sees 1 - a - b <= 0.2
    agent = make_agent("bo", space, MAX, seed=0, n_init=4, parameter_constraints=cons, **FAST)
    pts = run(agent, 6, lambda p: p["c"] + p["T"])  # pushes against both constraints
    assert all(p["c"] <= 0.2 + 1e-7 and p["a"] - p["T"] <= 0.1 + 1e-7 for p in pts)
    assert all(p["a"] + p["b"] + p["c"] == pytest.approx(1.0) for p in pts)


def test_integer_parameters_are_rounded_into_the_feasible_set():
    space = SearchSpace(parameters=[RangeParameter(name="n", lower=0, upper=10, value_type="int"),
                                    RangeParameter(name="m", lower=0, upper=10, value_type="int")])
    agent = make_agent("botorch", space, MAX, seed=0, n_init=3, parameter_constraints=["n + m <= 7"], **FAST)
    pts = run(agent, 6, lambda p: float(p["n"] + 0.9 * p["m"]))
    assert all(p["n"] + p["m"] <= 7 for p in pts)
    assert max(p["n"] + 0.9 * p["m"] for p in pts) >= 6.2  # found the corner region


def test_pool_agents_skip_infeasible_rows():
    pool = PoolModel.bundled("p3ht")
    space = pool.search_space()
    for name in ("random", "botorch"):
        agent = make_agent(name, space, [pool.objective], seed=0, n_init=3,
                           parameter_constraints=["p3ht_content >= 60"]) if name == "botorch" else \
            make_agent(name, space, [pool.objective], seed=0, parameter_constraints=["p3ht_content >= 60"])
        for _ in range(5):
            for s in agent.ask(1):
                assert s.params["p3ht_content"] >= 60
                agent.tell([Observation(params=s.params, values={"conductivity": pool.value(s.params)})])


def test_impossible_constraints_are_reported():
    agent = make_agent("random", box(), MAX, parameter_constraints=["x + z >= 3"])
    with pytest.raises(InvalidInput) as err:
        agent.ask(1)
    assert err.value.field == "parameter_constraints"


# ------------------------------------------------------------------ several objectives
def obs_of(values) -> list[Observation]:
    return [Observation(params={"x": 0.0, "z": 0.0}, values={"y": a, "cost": b}) for a, b in values]


def test_pareto_front_and_hypervolume_by_hand():
    obs = obs_of([(1, 1), (2, 3), (0.5, 0.2), (1, 2), (2, 3)])  # maximise y, minimise cost
    front = pareto_front(obs, TWO)
    assert [(o.values["y"], o.values["cost"]) for o in front] == [(1, 1), (2, 3), (0.5, 0.2)]
    # reference y >= 0, cost <= 4: staircase areas 0.5*3.8 + 0.5*3 + 1*1 = 4.4
    assert hypervolume(obs, TWO, {"y": 0.0, "cost": 4.0}) == pytest.approx(4.4)
    assert hypervolume(obs, TWO, [0.0, 4.0]) == pytest.approx(4.4)
    assert hypervolume(obs, TWO, {"y": 5.0, "cost": 4.0}) == 0.0  # nothing beats the reference
    failed = Observation(params={"x": 0, "z": 0}, values={"y": 9.0, "cost": 0.0}, ok=False)
    assert hypervolume(obs + [failed], TWO, [0.0, 4.0]) == pytest.approx(4.4)  # failures are not data
    assert pareto_indices([[1, 1], [1, 1]], [1, 1]) == [0]
    with pytest.raises(InvalidInput) as err:
        hypervolume(obs, TWO, {"y": 0.0})
    assert err.value.field == "reference"
    ref = default_reference(np.array([[1.0, 1.0], [2.0, 3.0]]), [1.0, -1.0])
    assert ref[0] < 1.0 and ref[1] > 3.0


def test_botorch_several_objectives_grow_the_hypervolume_and_explain_each():
    agent = make_agent("botorch", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0}, **FAST)
    pts = run(agent, 4, two_values)
    hv_start = agent.hypervolume({"y": 0.0, "cost": 2.0})
    run(agent, 2, two_values, batch=2)
    assert agent.hypervolume({"y": 0.0, "cost": 2.0}) > hv_start
    front = agent.pareto_front()
    assert front and all(set(o.values) == {"y", "cost"} for o in front)
    s = agent.ask(1)[0]
    prov = s.provenance
    assert prov.acquisition == "qLogNEHVI" and set(prov.predicted_mean) == {"y", "cost"}
    assert set(prov.predicted_sd) == {"y", "cost"} and prov.model_extra["fit_loo_r2"] is not None
    assert len(pts) == 4


def test_an_objective_that_is_a_parameter_is_known_exactly():
    # minimise the parameter "cost" itself while maximising y: the agent models cost exactly
    space = SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1),
                                    RangeParameter(name="cost", lower=10, upper=20)])

    def f(p):
        return {"y": math.sin(3 * p["x"]) + 0.05 * p["cost"], "cost": p["cost"]}

    agent = make_agent("botorch", space, TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 20.0}, **FAST)
    agent.tell(observations(seeded_points(space, 6), f))
    s = agent.ask(1)[0]
    prov = s.provenance
    assert "cost known exactly" in prov.model and prov.model.startswith("1 SingleTaskGPs")
    assert prov.predicted_sd["cost"] == pytest.approx(0.0, abs=1e-9)
    assert prov.predicted_mean["cost"] == pytest.approx(s.params["cost"], rel=1e-6)
    assert prov.predicted_sd["y"] > 0
    # a measured outcome that merely shares no name with a parameter still gets a GP
    plain = make_agent("botorch", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0}, **FAST)
    plain.tell(observations(seeded_points(box(), 6), two_values))
    assert "known exactly" not in plain.ask(1)[0].provenance.model


def test_outcome_constraints_steer_the_botorch_agent():
    # maximise x + z / 2, but the measured "stress" (= x + z) must stay <= 1: the best feasible
    # point is x = 1, z = 0; without the constraint it is x = z = 1
    def f(p):
        return {"y": p["x"] + 0.5 * p["z"], "stress": p["x"] + p["z"]}

    cons = [{"metric": "stress", "op": "<=", "bound": 1.0}]
    agent = make_agent("botorch", box(), MAX, seed=0, n_init=4, outcome_constraints=cons, **FAST)
    agent.tell(observations(seeded_points(box(), 8), f))
    free = make_agent("botorch", box(), MAX, seed=0, n_init=4, **FAST)
    free.tell(observations(seeded_points(box(), 8), f))
    s = agent.ask(1)[0]
    unconstrained = free.ask(1)[0].params
    prov = s.provenance
    assert "stress" in prov.predicted_mean and "outcome constraints" in prov.acquisition
    # without the constraint the agent goes for x + z > 1; with it, it stays (nearly) feasible and high in x
    assert unconstrained["x"] + unconstrained["z"] > 1.2
    assert s.params["x"] + s.params["z"] <= 1.1 and s.params["x"] > 0.6
    assert prov.predicted_mean["stress"] <= 1.1
    with pytest.raises(InvalidInput) as err:
        make_agent("botorch", box(), MAX, outcome_constraints=[{"metric": "y", "op": "<=", "bound": 1}])
    assert err.value.field == "outcome_constraints"


def test_ax_several_objectives_with_outcome_constraint_and_restart():
    cons = [{"metric": "stress", "op": "<=", "bound": 1.5}]

    def f(p):
        return {**two_values(p), "stress": p["x"] + p["z"]}

    space = box()
    pts = seeded_points(space, 6, seed=3)
    agent = make_agent("ax", space, TWO, seed=4, n_init=5, outcome_constraints=cons,
                       reference_point=[0.0, 2.0], **FAST)
    agent.tell(observations(pts, f))
    s = agent.ask(1)[0]
    assert s.provenance.acquisition == "qLogNEHVI"
    assert set(s.provenance.predicted_mean) >= {"y", "cost"}
    assert s.provenance.model_extra["fit_loo_r2"] is not None
    front = agent.pareto_front()
    assert front and len(front) <= 6
    # restart: a new agent told the same observations suggests the same point
    again = make_agent("ax", space, TWO, seed=4, n_init=5, outcome_constraints=cons,
                       reference_point=[0.0, 2.0], **FAST)
    again.tell(observations(pts, f))
    assert again.ask(1)[0].params == pytest.approx(s.params)


def test_botorch_several_objectives_restart_identically():
    space = box()
    pts = seeded_points(space, 5, seed=5)
    first = make_agent("botorch", space, TWO, seed=5, n_init=4, **FAST)
    first.tell(observations(pts, two_values))
    nxt = first.ask(1)[0].params
    again = make_agent("botorch", space, TWO, seed=5, n_init=4, **FAST)
    again.tell(observations(pts, two_values))
    assert again.ask(1)[0].params == pytest.approx(nxt)


def test_pool_with_two_objectives():
    pool = PoolModel.bundled("agnp")
    space = pool.search_space()
    objs = [Objective(name="loss", direction="minimize"), Objective(name="qtot", direction="minimize")]
    agent = make_agent("bo", space, objs, seed=0, n_init=2)
    for _ in range(2):
        for s in agent.ask(2):
            agent.tell([Observation(params=s.params, values={"loss": pool.value(s.params), "qtot": s.params["qtot"]})])
    assert len(agent.pareto_front()) >= 1 and agent.hypervolume([1.0, 1000.0]) > 0
    assert agent.ask(1)[0].provenance.acquisition == "qLogNEHVI"


# ------------------------------------------------------------------ batches and pending points
@pytest.mark.parametrize("name", ["botorch", "bo"])
def test_pending_points_change_the_next_suggestion(name):
    space = box()
    pts = seeded_points(space, 6)
    a = make_agent(name, space, MAX, seed=2, n_init=5, **FAST)
    a.tell(observations(pts, bump))
    first = a.ask(1)[0].params
    b = make_agent(name, space, MAX, seed=2, n_init=5, **FAST)
    b.tell(observations(pts, bump))
    b.add_pending([first])  # e.g. on the instrument right now
    batch = [s.params for s in b.ask(2)]  # and a batch is jointly chosen: distinct points
    xy = np.array([[p["x"], p["z"]] for p in [first, *batch]])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    assert d[0, 1] > 0.02 and d[0, 2] > 0.02  # neither repeats the pending point
    assert d[1, 2] > 1e-3
    assert len(b.pending) == 3


def test_pool_batch_is_distinct_and_avoids_pending():
    pool = PoolModel.bundled("p3ht")
    agent = make_agent("bo", pool.search_space(), [pool.objective], seed=0, n_init=4)
    rows = [int(i) for i in np.random.default_rng(0).choice(len(pool), 6, replace=False)]
    agent.tell([Observation(params=pool.as_dict(r), values={"conductivity": float(pool.values[r])}) for r in rows])
    single = pool.index_of(agent.ask(1)[0].params)  # now pending
    batch = [pool.index_of(s.params) for s in agent.ask(3)]
    assert len(set(batch)) == 3 and single not in batch and not set(batch) & set(rows)


# ------------------------------------------------------------------ repeats and noise
@pytest.mark.parametrize("name", ["botorch", "bo"])
def test_repeated_points_are_averaged_not_fatal(name):
    space = box()
    rng = np.random.default_rng(0)
    pts = seeded_points(space, 5)
    obs = observations(pts, bump)
    same = {"x": 0.5, "z": 0.5}
    noisy = [bump(same) + 0.05 * rng.standard_normal() for _ in range(4)]
    obs += [Observation(params=dict(same), values={"y": v}) for v in noisy]
    agent = make_agent(name, space, MAX, seed=0, n_init=5, **FAST)
    agent.tell(obs)
    s = agent.ask(1)[0]
    space.validate_point(s.params)
    assert s.provenance.predicted_mean is not None
    # the model's belief at the repeated point is close to the average of its repeats
    if name == "botorch":
        import torch

        from sdl.agents.gp import fit_gp

        X = agent.encoder.encode_many([o.params for o in obs])
        y = np.array([o.values["y"] for o in obs])
        model = fit_gp(X, y, 0)
        with torch.no_grad():
            mu = float(model.posterior(torch.as_tensor(agent.encoder.encode(same))[None]).mean)
        assert mu == pytest.approx(np.mean(noisy), abs=0.08)


def test_pool_repeats_of_a_row_are_accepted():
    pool = PoolModel.bundled("p3ht")
    agent = make_agent("bo", pool.search_space(), [pool.objective], seed=0, n_init=3)
    row = pool.as_dict(7)
    agent.tell([Observation(params=row, values={"conductivity": v}) for v in (10.0, 12.0, 11.0)])
    agent.tell([Observation(params=pool.as_dict(r), values={"conductivity": float(pool.values[r])}) for r in (1, 2)])
    s = agent.ask(2)
    assert all(pool.index_of(x.params) not in (7, 1, 2) for x in s)


def test_pessimistic_prior_expects_the_worst_far_from_the_data():
    import numpy as np
    import torch

    from sdl.agents.gp import fit_gp

    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 0.3, size=(12, 2))  # measured only in one corner
    y = np.sin(10 * X[:, 0]) + X[:, 1]
    far = torch.tensor([[1.0, 1.0]])
    models = fit_gp(X, y, 0), fit_gp(X, y, 0, pessimistic=True)
    with torch.no_grad():
        usual, pessimistic = (float(m.posterior(far).mean) for m in models)
    assert pessimistic == pytest.approx(y.min(), abs=0.02 * np.ptp(y))  # the worst measured
    assert pessimistic < usual - 0.2 * np.ptp(y)


def test_several_objectives_use_the_pessimistic_prior_by_default():
    agent = make_agent("botorch", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0}, **FAST)
    agent.tell(observations(seeded_points(box(), 6), two_values))
    assert "prior mean: the worst measured" in agent.ask(1)[0].provenance.model
    off = make_agent("botorch", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0},
                     pessimistic_prior=False, **FAST)
    off.tell(observations(seeded_points(box(), 6), two_values))
    assert "prior mean" not in off.ask(1)[0].provenance.model


# ------------------------------------------------------------------ pool quantile coordinates
def test_pool_quantile_map_uses_mid_ranks_over_the_pool():
    from sdl.agents.gp import pool_quantile_map

    pool_x = np.array([[0.0, 0.5], [0.0, 0.1], [0.0, 0.9], [0.01, 0.3], [1.0, 0.7]])
    q = pool_quantile_map(pool_x)
    got = q(pool_x)
    # column 0: three ties at 0 share the mid-rank 1.5 of 5; 0.01 is the 4th, 1.0 the 5th
    assert got[:, 0].tolist() == pytest.approx([0.3, 0.3, 0.3, 0.7, 0.9])
    assert got[:, 1].tolist() == pytest.approx([0.5, 0.1, 0.9, 0.3, 0.7])
    # the crowded end is spread out: 0 -> 0.01 is 1 % of the raw range and 40 % of the quantiles
    assert got[3, 0] - got[0, 0] == pytest.approx(0.4)
    # a point between pool values (a user's own) lands between their quantiles
    assert 0.3 < q(np.array([[0.005, 0.2]]))[0, 0] < 0.7


def test_quantile_pool_agent_suggests_open_rows_and_restarts_identically():
    pool = PoolModel.bundled("p3ht")
    rows = [int(i) for i in np.random.default_rng(1).choice(len(pool), 8, replace=False)]
    obs = [Observation(params=pool.as_dict(r), values={"conductivity": float(pool.values[r])}) for r in rows]

    def agent():
        a = make_agent("bo", pool.search_space(), [pool.objective], seed=3, n_init=4, pool_input_map="quantile",
                       beta=3.0)
        a.tell(obs)
        return a

    first = agent().ask(3)
    batch = [pool.index_of(s.params) for s in first]
    assert len(set(batch)) == 3 and not set(batch) & set(rows)
    assert all("quantiles" in s.provenance.model for s in first)  # the model saw quantile coordinates
    assert [pool.index_of(s.params) for s in agent().ask(3)] == batch  # rebuilt from observations alone
    s = agent().ask(1)[0]
    assert s.provenance.predicted_sd["conductivity"] > 0 and s.provenance.acquisition == "UCB"


def test_pool_input_map_errors_name_the_option():
    pool = PoolModel.bundled("p3ht")
    with pytest.raises(InvalidInput) as err:
        make_agent("bo", pool.search_space(), [pool.objective], pool_input_map="rank")
    assert err.value.field == "pool_input_map" and "quantile" in err.value.message
    with pytest.raises(InvalidInput) as err:
        make_agent("botorch", box(), [Objective(name="y")], pool_input_map="quantile")
    assert err.value.field == "pool_input_map" and "no pool" in err.value.message


def test_pools_crowded_at_one_end_use_quantiles_by_default():
    from sdl.agents.gp import crowded

    spread = np.random.default_rng(0).uniform(size=(50, 3))
    assert not crowded(spread)
    piled = spread.copy()
    piled[:30, 1] = 0.01  # most rows at the bottom of one input (additives at trace levels)
    assert crowded(piled)
    assert crowded(1.0 - piled)  # or at the top

    def first_model(name):
        pool = PoolModel.bundled(name)
        rows = [int(i) for i in np.random.default_rng(2).choice(len(pool), 6, replace=False)]
        agent = make_agent("bo", pool.search_space(), [pool.objective], seed=0, n_init=4)
        agent.tell([Observation(params=pool.as_dict(r), values={pool.objective.name: float(pool.values[r])})
                    for r in rows])
        return agent.ask(1)[0].provenance.model

    assert "quantiles" in first_model("p3ht")  # D2, D6, D8 medians at 2-3 % of their ranges
    assert "quantiles" not in first_model("agnp")  # flow rates spread over their ranges


# ------------------------------------------------------------------ objectives with a floor
def test_floored_detects_values_piled_at_the_worst():
    from sdl.agents.gp import floored

    assert floored(np.array([0.0, 0.0, 0.01, 0.4, 0.9, 0.3, 0.0, 0.6]))  # 3 of 8 at the floor
    assert not floored(np.linspace(0.0, 1.0, 12))  # one value per level: no pile-up
    assert not floored(np.array([0.0, 0.0, 1.0]))  # too few to tell
    assert not floored(np.zeros(6))  # no range at all


def test_floor_log_maps_to_log_space_and_back():
    import torch

    from sdl.agents.gp import FLOOR_OFFSET, FloorLog

    u = np.array([-0.01, -0.01, 0.2, 0.99])
    f = FloorLog(u)
    z = f.forward(u)
    assert z[0] == pytest.approx(math.log(FLOOR_OFFSET * 1.0))  # the floor sits offset above -inf
    assert np.allclose(f.back(z), u)
    assert torch.allclose(f.back(torch.as_tensor(z)), torch.as_tensor(u))


def dead_below(p: dict) -> dict:
    """Nothing forms below t = 0.4 (y = 0 for every x); above it a bump in x grows with t."""
    y = 0.0 if p["t"] < 0.4 else (p["t"] - 0.4) * 2 * math.exp(-((p["x"] - 0.6) ** 2) / 0.02)
    return {"y": y, "t": p["t"]}


def test_floor_transform_spends_fewer_experiments_where_nothing_forms():
    space = SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1),
                                    RangeParameter(name="t", lower=0, upper=1)])
    objs = [Objective(name="y"), Objective(name="t", direction="minimize")]
    dead, model = {}, {}
    for on in (True, False):
        agent = make_agent("botorch", space, objs, seed=1, n_init=4, reference_point={"y": -0.05, "t": 1.0},
                           floor_transform=on, **FAST)
        agent.tell(observations(agent.random_points(6, np.random.default_rng(1)), dead_below))
        picks = run(agent, 10, dead_below)
        dead[on] = sum(p["t"] < 0.35 for p in picks)
        model[on] = agent.ask(1)[0].provenance
    assert dead[True] < dead[False], dead
    assert "y on log(distance above its floor)" in model[True].model
    assert "floor" not in model[False].model
    assert model[True].predicted_mean["y"] > -0.1  # reported in y's own units, not log space


def test_floor_transform_auto_is_off_for_smooth_objectives_and_errors_name_it():
    agent = make_agent("botorch", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0}, **FAST)
    agent.tell(observations(seeded_points(box(), 6), two_values))
    assert "floor" not in agent.ask(1)[0].provenance.model
    with pytest.raises(InvalidInput) as err:
        make_agent("botorch", box(), TWO, seed=0, floor_transform="yes")
    assert err.value.field == "floor_transform" and "auto" in str(err.value)
    with pytest.raises(InvalidInput) as err:  # one plain objective: nothing it would change
        make_agent("botorch", box(), MAX, seed=0, floor_transform=True)
    assert err.value.field == "floor_transform" and "several objectives" in str(err.value)


def test_floor_transform_with_an_outcome_constraint_reports_in_units():
    cons = [{"metric": "stress", "op": "<=", "bound": 1.5}]

    def f(p):
        return {"y": max(0.0, bump(p) - 0.3), "stress": p["x"] + p["z"]}

    agent = make_agent("botorch", box(), MAX, seed=2, n_init=4, outcome_constraints=cons, floor_transform=True,
                       **FAST)
    agent.tell(observations(seeded_points(box(), 8, seed=2), f))
    s = agent.ask(1)[0]
    assert "y on log(distance above its floor)" in s.provenance.model
    assert -0.1 < s.provenance.predicted_mean["y"] < 1.0 and s.provenance.predicted_sd["y"] >= 0


def test_a_parameter_objective_at_zero_is_not_logged():
    # t spans 0.003 .. 0.9 (heavy-tailed by the log rule) and its range includes 0: modelling it
    # in log space gave log(0) at the bound and a NaN acquisition gradient
    space = SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1),
                                    RangeParameter(name="t", lower=0, upper=1)])
    objs = [Objective(name="y"), Objective(name="t", direction="minimize")]
    agent = make_agent("botorch", space, objs, seed=0, n_init=4, reference_point={"y": -0.05, "t": 1.0}, **FAST)
    agent.tell(observations(agent.random_points(6, np.random.default_rng(0)), dead_below))
    s = agent.ask(1)[0]
    assert 0 <= s.params["t"] <= 1 and "t known exactly" in s.provenance.model


def test_bo_uses_botorch_for_several_objectives_and_ax_stays_reachable():
    bo = make_agent("bo", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0}, **FAST)
    ax = make_agent("ax", box(), TWO, seed=0, n_init=4, reference_point={"y": 0.0, "cost": 2.0}, **FAST)
    single = make_agent("bo", box(), MAX, seed=0, n_init=4, **FAST)
    assert type(bo).__name__ == "BoTorchAgent" and bo.name == "bo"
    assert type(ax).__name__ == "AxAgent" and ax.name == "ax"
    assert type(single).__name__ == "AxAgent" and single.name == "bo"
    bo.tell(observations(seeded_points(box(), 6), two_values))
    prov = bo.ask(1)[0].provenance
    assert prov.agent == "bo" and "SingleTaskGPs" in prov.model and prov.acquisition == "qLogNEHVI"
