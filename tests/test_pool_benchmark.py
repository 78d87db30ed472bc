"""Acceptance: on the P3HT pool the default agent finds most of the top 5 % within 30.

CI runs 2 seeds against random in the same run; the slow test (and ``sdl bench``)
runs all 10 and checks the issue's 70 % line.
"""

import numpy as np
import pytest

from sdl.bench import run_pool_benchmark, summary_table


def _fractions(seeds, agents=("bo", "random")):
    results = run_pool_benchmark(list(agents), ["p3ht"], list(seeds), budget=30, n_start=5)
    return {r["agent"]: r for r in summary_table(results, at=(30,))}


def test_bo_finds_far_more_of_the_p3ht_top_than_random():
    rows = _fractions(range(2))
    assert rows["bo"]["top5@30"] >= 0.5, rows
    assert rows["bo"]["top5@30"] >= 2 * rows["random"]["top5@30"], rows


def test_same_random_starts_for_every_agent():
    from sdl.agents.benchmarking import run_pool_campaign
    from sdl.sim_devices.pool import PoolModel

    pool = PoolModel.bundled("p3ht")
    a = run_pool_campaign("random", pool, 4, budget=6)
    b = run_pool_campaign("sobol", pool, 4, budget=6)
    assert a.rows[:5] == b.rows[:5] and len(set(a.rows)) == 6
    assert np.all(np.diff(a.found) >= 0)


@pytest.mark.slow
def test_bo_finds_seventy_percent_of_the_p3ht_top_in_thirty_over_ten_seeds():
    rows = _fractions(range(10))
    assert rows["bo"]["top5@30"] >= 0.70, rows
