"""Cost-aware measurement: the agent's exposure choice per point."""

from __future__ import annotations

import numpy as np
import pytest

from sdl.agents.exposure import ExposureOption, best_exposure, check_exposure_option
from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.space import Objective, RangeParameter, SearchSpace


def test_short_exposure_where_the_model_knows_little_long_where_it_knows_much():
    opt = ExposureOption(choices=[0.01, 0.1, 1.0], noise_sd_at_1s=0.01, overhead_s=0.1)
    assert best_exposure(0.3**2, opt) == 0.01  # unsure: even a noisy value removes most of it
    assert best_exposure(0.003**2, opt) == 1.0  # sure: only a precise value adds anything
    # no overhead: counting information adds up, so the shortest exposure is never worse per second
    assert best_exposure(0.003**2, ExposureOption(choices=[0.01, 0.1, 1.0], noise_sd_at_1s=0.01)) == 0.01


def test_option_errors_name_the_field():
    for bad in ({"choices": [-1.0]}, {"noise_sd_at_1s": 0}, {"colour": 1}, "long"):
        with pytest.raises(InvalidInput) as err:
            check_exposure_option(bad)
        assert err.value.field == "exposure"


def test_agent_suggests_an_exposure_and_models_each_values_noise():
    from sdl.agents import make_agent

    space = SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1)])
    agent = make_agent("bo", space, [Objective(name="f")], seed=0,
                       exposure={"choices": [0.01, 0.1, 1.0], "noise_sd_at_1s": 0.05}, raw_samples=64, num_restarts=2)
    first = agent.ask(1)[0]
    assert first.provenance.exposure == 0.1  # the random start: the middle choice
    rng = np.random.default_rng(0)
    obs = [Observation(params={"x": float(x)}, values={"f": float(np.sin(6 * x) + 0.05 / np.sqrt(t) * rng.normal())},
                       extra={"exposure": t}) for x, t in zip(np.linspace(0, 1, 8), [0.01, 1.0] * 4)]
    agent.tell(obs)
    s = agent.ask(1)[0]
    assert s.provenance.exposure in (0.01, 0.1, 1.0) and "exposure" in s.provenance.reason
    with pytest.raises(InvalidInput) as err:
        make_agent("bo", space, [Objective(name="f"), Objective(name="g")], exposure=True)
    assert err.value.field == "exposure"


def test_campaign_measures_each_point_at_the_exposure_the_agent_chose(store):
    from sdl.campaign import CampaignRunner, create_campaign

    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "bo", "budget": 7, "exposure": 2.0,
                                  "agent_options": {"exposure": {"choices": [0.05, 0.5]}, "n_init": 5,
                                                    "raw_samples": 64, "num_restarts": 2}})
    assert CampaignRunner(store, cid).run() == "completed"
    obs = store.observations(cid)
    assert [o.extra["exposure"] for o in obs[:5]] == [0.5] * 5  # the starts: the middle choice, not the spec's 2 s
    assert all(o.extra["exposure"] in (0.05, 0.5) for o in obs)
    for o in obs:
        assert store.documents(o.run_uid)[0][1]["exposure"] == o.extra["exposure"]
    # the report gives the model's pick beside the best measured value
    from sdl.report import summarize

    rec = summarize(store, cid)["recommended"]
    assert rec["params"] in [o.params for o in obs] and np.isfinite(rec["estimate"])
    assert rec["truth"] == next(o.extra["truth"] for o in obs if o.params == rec["params"])
    plain = create_campaign(store, {"instrument": "sim-xrd", "agent": "random", "budget": 2})
    CampaignRunner(store, plain).run()
    assert summarize(store, plain)["recommended"] is None


def test_the_recommendation_is_not_fooled_by_a_lucky_short_exposure():
    from sdl.agents.exposure import recommended_index

    x = np.linspace(0, 1, 11)
    y = -((x - 0.7) ** 2)
    yvar = np.full(11, 1e-4)  # long exposures: precise values
    y[1], yvar[1] = 0.5, 0.25  # one short exposure read far above everything (sd 0.5)
    assert int(np.argmax(y)) == 1  # the best measured value is the lucky one
    assert recommended_index(x.reshape(-1, 1), y, yvar) == 7  # the model's pick is the true best, x = 0.7
    assert recommended_index(x[:1].reshape(-1, 1), y[:1], yvar[:1]) == 0  # one point: itself


def test_a_lucky_short_exposure_does_not_stop_a_campaign_at_its_target(store):
    """stopping.target with an agent that chooses exposures: one short exposure read above
    the target, contradicted by two long ones at the same point, is not the model's estimate;
    the campaign stops once the estimate at the recommended point reaches the target."""
    from sdl.agents import make_agent
    from sdl.campaign import CampaignRunner, create_campaign

    options = {"exposure": {"choices": [0.01, 1.0], "noise_sd_at_1s": 0.011}}
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "bo", "budget": 30,
                                  "stopping": {"target": 0.8}, "agent_options": options})
    runner = CampaignRunner(store, cid)
    name = runner.objectives[0].name
    points = [s.params for s in make_agent("random", runner.space, runner.objectives, seed=3).ask(7)]

    def measured(i: int, value: float, exposure: float) -> Observation:
        o = Observation(params=points[i], values={name: value}, extra={"exposure": exposure})
        uid = f"run-{len(store.observations(cid))}"
        store.start_run(uid, cid, None)
        store.finish_run(uid, "success", observation=o, campaign_id=cid)
        return o

    obs = [measured(i, 0.2 + 0.02 * i, 1.0) for i in range(1, 6)]
    obs += [measured(0, 0.9, 0.01), measured(0, 0.3, 1.0), measured(0, 0.31, 1.0)]  # sd 0.11, then 0.011 twice
    agent = make_agent("bo", runner.space, runner.objectives, seed=0, **options)
    agent.tell(obs)
    point, estimate = agent.recommend()
    assert point == points[0] and estimate < 0.5  # the lucky point, judged by its long exposures
    assert runner._stop_reason(None).startswith("target 0.8 reached (best 0.9)")  # the raw best would stop it
    assert runner._stop_reason(agent) == ""  # the model's estimate does not

    late = [measured(6, 0.86, 1.0), measured(6, 0.85, 1.0)]  # a new point, measured well
    agent.tell(late)
    point, estimate = agent.recommend()
    assert point == points[6] and estimate >= 0.8
    assert "the model's estimate" in runner._stop_reason(agent)
    plain = make_agent("botorch", runner.space, runner.objectives, seed=0)  # no model of the noise:
    plain.tell(obs + late)
    assert plain.recommend() is None  # the best measured value is the answer
