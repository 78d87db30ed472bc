"""The cascade's gate (issue 14, item 5): its prediction interval carries the
calibration's own uncertainty, and a calibration that is confidently wrong cannot hold
every later sample back forever (the old gate did: seeds 4 and 7 of the benchmark)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sdl.instruments import make_instrument
from sdl.models import Observation
from sdl.workflows.cascade import Cascade
from sdl.workflows.engine import Engine
from sdl.workflows.stations import cascade_workflow
from sdl.workflows.worker import TaskWorker

STATIONS = ("sim-synth", "sim-beamline", "sim-uvvis")


def cascade(engine=None, **kw) -> Cascade:
    spec = {"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 3, "kappa": 1.0, **kw}
    return Cascade(SimpleNamespace(cascade=spec), engine)


def pairs(x, y) -> list[Observation]:
    return [Observation(params={}, values={"uvvis_score": float(a), "fom": float(b)}, ok=True) for a, b in zip(x, y)]


def width(c: Cascade, obs, cheap: float) -> float:
    p = c.prediction(obs, cheap)
    return p.upper - p.mean


def test_interval_is_infinite_below_three_pairs_and_the_sample_goes_on():
    c = cascade(warmup=2)
    two = pairs([0.2, 0.8], [0.9, 0.1])  # two points: a line through them, but nothing says how wrong it is
    assert math.isinf(c.prediction(two, 0.9).upper)
    assert c.promising(two, 0.9)


def test_interval_widens_with_few_pairs_a_poor_fit_and_extrapolation():
    c = cascade()
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.02, 40)
    x = np.linspace(0.2, 0.8, 40)
    many = pairs(x, 0.1 + x + noise)
    poor = pairs(x, 0.1 + x + 5 * noise)
    few = pairs(x[::10], 0.1 + x[::10] + noise[::10])  # 4 of them
    assert width(c, few, 0.5) > 1.5 * width(c, pairs(np.tile(x[::10], 10), np.tile(0.1 + x[::10] + noise[::10], 10)),
                                            0.5)  # the same 4 pairs, measured 10 times over
    assert width(c, poor, 0.5) > 3 * width(c, many, 0.5)
    assert width(c, few, 1.5) > 1.5 * width(c, few, 0.5)  # far outside the calibrated readings
    # kappa sets the level: 0 is the mean itself
    assert cascade(kappa=0.0).prediction(many, 0.5).upper == pytest.approx(c.prediction(many, 0.5).mean)


def test_a_calibration_that_does_not_rank_samples_holds_none_back():
    c = cascade()
    flat = pairs([0.0, 0.1, 0.2, 0.3, 0.4], [0.01, 0.0, 0.02, 0.002, 0.005])  # all equally poor
    p = c.prediction(flat, 0.35)
    assert not p.informative and p.upper < 0.02  # the line alone would hold this sample back
    assert c.promising(flat, 0.35)


def test_a_reading_at_least_the_best_samples_goes_on():
    c = cascade()
    # mostly poor samples and one good one: the straight line underestimates the good end
    hinge = pairs([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.0, 0.01, 0.0, 0.01, 0.0, 0.05, 0.5])
    p = c.prediction(hinge, 0.6)
    assert p.informative and p.upper < 0.5
    assert c.promising(hinge, 0.6) and not c.promising(hinge, 0.55)


def test_the_agent_is_told_a_prediction_marked_as_one_within_the_measured_range():
    c = cascade()
    line = pairs([0.2, 0.4, 0.6, 0.8], [0.0, 0.2, 0.41, 0.6])
    assert c.estimate(line, {"uvvis_score": 0.5, "fom": 0.33}) == (0.33, "measured")
    v, source = c.estimate(line, {"uvvis_score": 0.5})
    assert source == "predicted from uvvis_score" and v == pytest.approx(c.prediction(line, 0.5).mean)
    # the line goes to -0.2 at 0.0: not told, as nothing measured is below 0.0
    assert c.estimate(line, {"uvvis_score": 0.0}) == (0.0, "predicted from uvvis_score")
    assert c.estimate(line, {"uvvis_score": 2.0})[0] == 0.6
    assert c.estimate([], {"uvvis_score": 0.5}) == (None, "none")


def test_spec_max_held_is_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_held"):
        cascade(max_held=0)


def test_a_calibration_misleading_from_the_start_does_not_hold_every_later_sample_back(store):
    """Pairs fitted almost exactly by a line whose best is unbeatable (a cheap reading no sample
    here reaches): the model is sure that no later sample can beat it. The gate still sends one
    in every max_held + 1 on, through the real engine and station workers, one at a time."""
    engine = Engine(store, lease_s=5.0)
    workers = [TaskWorker(store, name, lease_s=5.0, transit_seed=1) for name in STATIONS]
    misleading = pairs([0.0, 0.375, 0.75, 1.125, 1.5], [0.001, 0.374, 0.751, 1.124, 1.501])
    space = make_instrument("sim-synth").space
    point = space.validate_point({"A": 0.5, "B": 0.3, "C": 0.2, "temperature": 600.0})

    def gates(gate, n: int, campaign: str) -> list[bool]:
        """``gate()``: the cascade that decides each sample (the same one, or a new one each time)."""
        store.create_campaign(campaign, campaign, {"kind": "workflow"})
        out = []
        for _ in range(n):
            wid = engine.submit(cascade_workflow(transit={"seconds": 0}), point, campaign_id=campaign)
            for _ in range(50):  # make, then uvvis: the gated xrd waits for the decision
                if not any(w.run_once() for w in workers):
                    break
            gate().decide(None, campaign, misleading)
            for _ in range(50):
                if not any(w.run_once() for w in workers):
                    break
            wf = engine.workflow(wid)
            assert wf["status"] == "done"
            out.append(wf["result"]["gates"]["xrd"])
        return out

    c = cascade(engine)  # max_held 4
    assert gates(lambda: c, 10, "C-explore") == [False] * 4 + [True] + [False] * 4 + [True]
    assert (c.sent, c.held, c.explored) == (2, 8, 2)
    # a runner restarted before every decision: the streak is read from the store
    assert gates(lambda: cascade(engine), 5, "C-restart") == [False] * 4 + [True]
    stalled = cascade(engine, max_held=None)  # the old gate: trusts its model forever
    assert gates(lambda: stalled, 5, "C-stall") == [False] * 5
