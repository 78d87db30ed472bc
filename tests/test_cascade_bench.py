"""The cascade benchmark (issue 14): what it counts, and a short run of the real thing
(one seed, a small budget, the random agent) whose rows must be consistent. The full
run (10 seeds, budget 40, BO) is in docs/workflows.md."""

from __future__ import annotations

import pytest

from sdl.models import Observation
from sdl.workflows.bench import beamline_runs_to_target, main, markdown, summarise


def obs(*values: dict) -> list[Observation]:
    return [Observation(params={"A": 0.1}, values=v, ok=bool(v)) for v in values]


def test_counts_beamline_experiments_until_a_measured_value_reaches_the_target():
    o = obs({"uvvis_score": 0.9, "fom_est": 0.95}, {"fom": 0.3, "uvvis_score": 0.2}, {"uvvis_score": 0.5},
            {"fom": 0.81}, {"fom": 0.99})
    # a predicted fom_est above the target does not count; the second *measured* value does
    assert beamline_runs_to_target(o, 0.8) == (2, True, 3)
    assert beamline_runs_to_target(o, 0.995) == (4, False, 3)  # censored: all + 1
    assert beamline_runs_to_target(obs({"uvvis_score": 0.4}, {}), 0.5) == (1, False, 0)


def test_summary_and_table():
    rows = [{"seed": 0, "cascade": False, "beamline_to_target": 10, "reached": True, "samples": 10},
            {"seed": 0, "cascade": True, "beamline_to_target": 4, "reached": True, "samples": 9},
            {"seed": 1, "cascade": False, "beamline_to_target": 6, "reached": True, "samples": 6},
            {"seed": 1, "cascade": True, "beamline_to_target": 9, "reached": False, "samples": 20}]
    s = summarise(rows, target=0.8, best=1.0, budget=20, agent="bo")
    assert [p["ratio"] for p in s["per_seed"]] == [0.4, 1.5]
    assert s["without_cascade"] == {"median": 8, "mean": 8, "reached": 2}
    assert s["with_cascade"] == {"median": 6.5, "mean": 6.5, "reached": 1}
    assert s["median_ratio"] == pytest.approx(0.95) and s["beamline_saved_ratio"] == round(6.5 / 8, 3)
    table = markdown(s)
    assert "| 1 | 6 | yes | 9 | **no** | 20 | 1.50 |" in table and "| **median** | **8** | 2/2 | **6.5** | 1/2 |" in table


def test_one_seed_through_the_workflow_engine():
    s = main(["--seeds", "1", "--budget", "6", "--agent", "random", "--target", "0.4"])
    base, casc = s["rows"]
    assert (base["cascade"], casc["cascade"]) == (False, True)
    for r in (base, casc):
        assert r["status"] == "completed" and r["failed"] == 0
        assert r["beamline_total"] <= r["samples"] <= 6
        if r["reached"]:  # it stopped at the first measured value at or above the target
            assert r["beamline_to_target"] == r["beamline_total"] and "measured fom reached" in r["stopped"]
        else:
            assert r["samples"] == 6 and r["beamline_to_target"] == r["beamline_total"] + 1
    assert base["beamline_total"] == base["samples"]  # without the cascade every sample is measured there
    assert base["reached"]  # seed 0 reaches 0.4 x best within 6 samples: the stop at the target is exercised
    p = s["per_seed"][0]
    assert p["ratio"] == pytest.approx(casc["beamline_to_target"] / base["beamline_to_target"], abs=1e-3)
