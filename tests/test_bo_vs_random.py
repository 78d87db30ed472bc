"""Acceptance: BO beats random on the materials model (median best FoM, 30 experiments).

CI runs 3 seeds; ``benchmarks/demo_benchmark.py`` runs all 10 (and the slow test below).
"""

import statistics

import pytest

from sdl.compare import compare


def _medians(seeds):
    res = compare(["bo", "random"], seeds, budget=30)
    return {a: statistics.median(r["truth"] for r in rows) for a, rows in res.items()}


def test_bo_beats_random_median_three_seeds():
    med = _medians(range(3))
    assert med["bo"] > med["random"], med


@pytest.mark.slow
def test_bo_beats_random_median_ten_seeds():
    med = _medians(range(10))
    assert med["bo"] > med["random"], med
