"""``sdl bench`` beyond pools: function problems, their metrics, the table and the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdl.agents.benchmarking import function_problem, run_function_campaign, start_points
from sdl.bench import (
    QUICK,
    CurveResult,
    bench_command,
    quick_settings,
    run_benchmark,
    summary_table,
    table_columns,
    write_results,
)
from sdl.errors import InvalidInput


def test_function_problems_know_their_optimum():
    br = function_problem("branin")
    assert br.truth(np.array([[np.pi, 2.275]]))[0] == pytest.approx(br.optimum, abs=1e-4)
    h6 = function_problem("hartmann6")
    x = np.array([[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]])
    assert h6.truth(x)[0] == pytest.approx(h6.optimum, abs=1e-4)
    assert h6.metric == "simple regret" and h6.objective.direction == "minimize"
    with pytest.raises(InvalidInput) as err:
        function_problem("rosenbrock")
    assert err.value.field == "problem"


def test_function_campaign_scores_the_best_noise_free_value():
    prob = function_problem("branin")
    run = run_function_campaign("random", prob, seed=3, budget=12, n_start=4, batch_size=3)
    assert len(run.scores) == 12 and run.rounds == [0] * 4 + [1] * 3 + [2] * 3 + [3] * 2
    best = np.minimum.accumulate(run.truth)
    assert run.scores == pytest.approx(list(best - prob.optimum))
    assert np.all(np.diff(run.scores) <= 1e-12)  # best-so-far never gets worse
    assert not np.allclose(run.measured, run.truth)  # the measurements are noisy
    # the same starting points for every agent
    assert [p["x1"] for p in start_points(prob, 3, 4)] == pytest.approx([x[0] for x in run.X[:4]])


def test_benchmark_runs_function_problems_and_summarises_them(tmp_path):
    results = run_benchmark(["random", "sobol"], ["branin"], [0, 1], budget=10, n_start=3, workers=1)
    assert {r.metric for r in results} == {"simple regret"} and len(results) == 4
    rows = summary_table(results, at=[10])
    by_agent = {r["agent"]: r for r in rows}
    assert by_agent["random"]["vs_random@10"] == pytest.approx(1.0)
    assert by_agent["sobol"]["regret@10"] > 0 and "n_to_target" in by_agent["sobol"]
    cols = table_columns(rows, [10])
    assert "regret@10" in cols and "top5@10" not in cols
    paths = write_results(results, rows, tmp_path)
    assert paths["plot"].name == "curves.png" and paths["plot"].stat().st_size > 1000
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"][0]["metric"] == "simple regret"


def test_pool_rows_keep_their_columns():
    curve = list(np.linspace(0, 1, 30))
    results = [CurveResult("bo", "p3ht", 0, curve, 1.0), CurveResult("random", "p3ht", 0, [c / 2 for c in curve], 1.0)]
    row = {r["agent"]: r for r in summary_table(results, at=[30])}["bo"]
    assert row["top5@30"] == pytest.approx(1.0) and row["EF@30"] == pytest.approx(2.0) and row["AF@0.25"] > 1


def test_bad_problem_and_quick_sizes(tmp_path):
    with pytest.raises(InvalidInput) as err:
        run_benchmark(["random"], ["nope"], [0])
    assert err.value.field == "problem"
    q = quick_settings(["p3ht", "hartmann6"])
    assert q["seeds"] == QUICK["seeds"] and q["budget"] == {"p3ht": 30, "hartmann6": 20}
    rows, paths = bench_command(["random"], ["hartmann6"], range(5), quick=True, workers=1, out=tmp_path)
    assert rows[0]["seeds"] == 2 and paths["json"].exists()
