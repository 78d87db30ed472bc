"""``ax-default``: Ax's own default generation strategy on pools (nearest open row), the
baseline the issue's acceptance names; through ``sdl bench --pool`` too."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sdl.agents import make_agent
from sdl.agents.ax_pool import nearest_open_rows
from sdl.agents.encoding import SpaceEncoder
from sdl.models import Observation
from sdl.sim_devices.pool import PoolModel
from sdl.space import ChoiceParameter, RangeParameter, SearchSpace


def _mixed_csv(path, n=36):
    """A categorical column (ligand) and a continuous one; yield best for ligand L3 near 80 degC."""
    rng = np.random.default_rng(1)
    lines = ["ligand,temperature,yield"]
    for i in range(n):
        lig, t = ["L1", "L2", "L3"][i % 3], rng.uniform(20, 120)
        lines.append(f"{lig},{t:.2f},{50 - ((t - 80) / 20) ** 2 + 15 * (lig == 'L3'):.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _continuous_csv(path, n=40, costs=False):
    """Two continuous inputs (Ax's fastest case: the tests stay fast); optionally a cost."""
    rng = np.random.default_rng(2)
    lines = ["a,b,yield" + (",cost" if costs else "")]
    for i in range(n):
        a, b = rng.uniform(0, 1, 2)
        lines.append(f"{a:.4f},{b:.4f},{1 - (a - 0.7) ** 2 - (b - 0.3) ** 2:.5f}" + (f",{1 + a + b:.4f}" if costs else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def _told(pool: PoolModel, rows, seed=0, **options):
    agent = make_agent("ax-default", pool.search_space(), list(pool.objectives), seed=seed, **options)
    agent.tell([Observation(params=pool.as_dict(r), values=pool.values_at(r)) for r in rows])
    return agent


def test_nearest_open_row_matches_categories_first_and_never_repeats():
    space = SearchSpace(parameters=[ChoiceParameter(name="c", values=["a", "b"]),
                                    RangeParameter(name="x", lower=0.0, upper=10.0)],
                        pool=[{"c": "a", "x": 0.0}, {"c": "b", "x": 5.0}, {"c": "a", "x": 9.0}, {"c": "b", "x": 10.0}])
    enc = SpaceEncoder(space)
    P = enc.encode_many(space.pool)
    # x = 5 is row 1 exactly, but its category is b: the nearest row with c = a wins
    picks = nearest_open_rows(enc, P, [{"c": "a", "x": 5.0}, {"c": "a", "x": 5.0}, {"c": "a", "x": 5.0}], [0, 1, 2, 3])
    assert [p[0] for p in picks] == [2, 0, 1]  # 9 (0.4 away), then 0 (0.5), then no a left: b
    assert [p[1] for p in picks] == [0, 0, 1] and picks[0][2] == pytest.approx(0.4)
    # only open rows, distances in unit-cube coordinates
    assert nearest_open_rows(enc, P, [{"c": "b", "x": 5.0}], [0, 2, 3])[0][:2] == (3, 0)
    with pytest.raises(ValueError):
        nearest_open_rows(enc, P, [{"c": "a", "x": 0.0}] * 3, [0, 1])


def test_suggests_distinct_unmeasured_rows_of_a_categorical_pool(tmp_path):
    pool = PoolModel.from_csv(_mixed_csv(tmp_path / "m.csv"), objectives=["yield:max"], categorical=["ligand"])
    assert [c.kind for c in pool.columns][0] == "categorical"
    measured = list(range(0, 12, 2))
    agent = _told(pool, measured)
    sugg = agent.ask(2)
    rows = [pool.index_of(s.params) for s in sugg]
    assert len(set(rows)) == 2 and not set(rows) & set(measured)
    prov = sugg[0].provenance.model_extra
    assert sugg[0].provenance.model.startswith("Ax default generation strategy (MBM")  # past Ax's initialisation
    assert prov["pool_row"] == rows[0] and prov["categorical_mismatches"] == 0  # every ligand has open rows
    assert set(prov["ax_candidate"]) == set(pool.inputs)
    assert all(s.params["ligand"] in ("L1", "L2", "L3") for s in sugg)


def test_reproducible_and_restart_safe(tmp_path):
    pool = PoolModel.from_csv(_continuous_csv(tmp_path / "c.csv"), objectives=["yield:max"])
    measured = [1, 4, 7, 10, 13, 16]
    a = _told(pool, measured, seed=3)
    first = a.ask(1)[0].params
    nxt = a.ask(1)[0].params  # with ``first`` pending: neither measured nor pending
    assert pool.index_of(nxt) not in [*measured, pool.index_of(first)]
    # a campaign rebuilt from the store (the same seed, observations and the point handed out)
    # asks the same next point: the seed and the data decide, nothing else
    c = _told(pool, measured, seed=3)
    c.add_pending([first])
    assert c.ask(1)[0].params == nxt


def test_two_objectives_and_few_observations(tmp_path):
    pool = PoolModel.from_csv(_continuous_csv(tmp_path / "c.csv", costs=True), objectives=["yield:max", "cost:min"])
    sugg = _told(pool, [0, 5, 9, 20, 30]).ask(1)
    assert pool.index_of(sugg[0].params) not in (0, 5, 9, 20, 30)
    # before Ax's initialisation is done (2 observations) the point is Ax's Sobol draw, mapped
    early = _told(pool, [0, 5]).ask(2)
    assert "Sobol" in early[0].provenance.model and len({pool.index_of(s.params) for s in early}) == 2


def test_sdl_bench_pool_runs_ax_default(tmp_path):
    from sdl.cli import app

    path = _continuous_csv(tmp_path / "c.csv")
    res = CliRunner().invoke(app, ["bench", "--pool", str(path), "--objective", "yield:max",
                                   "--agents", "ax-default,random", "--seeds", "1", "--budget", "7", "--workers", "1",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    runs = {r["agent"]: r for r in saved["runs"]}
    assert set(runs) == {"ax-default", "random"} and len(runs["ax-default"]["curve"]) == 7


def test_aggregate_checks_bo_against_the_baselines():
    from sdl.bench import CurveResult
    from sdl.bench_stats import aggregate

    scores = {"bo": 0.8, "gp-ei": 0.6, "random": 0.2, "ax-default": 0.7}
    res = [CurveResult(a, p, s, [v + 0.01 * s] * 3, 1.0) for p in ("x", "y") for s in range(8)
           for a, v in scores.items()]
    res += [CurveResult("ax-default", "z", s, [0.9] * 3, 1.0) for s in range(8)]  # only ax-default ran z
    res += [CurveResult("bo", "z2", s, [0.1 + 0.01 * s] * 3, 1.0) for s in range(8)]
    res += [CurveResult("ax-default", "z2", s, [0.5 + 0.01 * s] * 3, 1.0) for s in range(8)]
    check = aggregate(res, [3])["3"]["bo_vs_baselines"]
    assert check["vs"]["ax-default"]["win"] == 2 and check["vs"]["ax-default"]["losses_on"] == ["z2"]
    assert not check["loses_to_none"] and check["missing"] == []
    assert check["common"] == ["x", "y"] and check["mean_rank"]["bo"] == 1.0 and check["best_mean_rank"]


def test_the_tuned_ax_agent_still_refuses_a_pool(tmp_path):
    from sdl.errors import InvalidInput

    pool = PoolModel.from_csv(_continuous_csv(tmp_path / "c.csv"), objectives=["yield:max"])
    with pytest.raises(InvalidInput, match="continuous space"):
        make_agent("ax", pool.search_space(), list(pool.objectives))
    with pytest.raises(InvalidInput, match="unknown option"):
        make_agent("ax-default", pool.search_space(), list(pool.objectives), n_init=3)
