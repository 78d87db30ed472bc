"""The store: atomic run ends, interrupted runs recovered, documents kept."""

import numpy as np
import pytest

from sdl.errors import InvalidInput
from sdl.models import Observation, Provenance, Suggestion
from sdl.store import jsonable


def _sug(x):
    return Suggestion(params={"x": x}, provenance=Provenance(agent="test"))


def test_run_end_stores_observation_and_closes_suggestion(store):
    store.create_campaign("c1", "t", {"budget": 3})
    s = _sug(0.5)
    store.add_suggestions("c1", [s])
    store.start_run("r1", "c1", s.id)
    assert store.suggestions("c1")[0].status == "running"
    store.add_document("r1", "start", {"uid": "r1", "data": np.arange(3)})
    store.finish_run("r1", "success", observation=Observation(suggestion_id=s.id, params={"x": 0.5},
                                                               values={"y": 1.5}, run_uid="r1"))
    assert store.suggestions("c1")[0].status == "done"
    [obs] = store.observations("c1")
    assert obs.values == {"y": 1.5} and obs.run_uid == "r1"
    assert store.documents("r1") == [("start", {"uid": "r1", "data": [0, 1, 2]})]


def test_one_observation_per_suggestion(store):
    store.create_campaign("c1", "t", {})
    s = _sug(0.1)
    store.add_suggestions("c1", [s])
    obs = Observation(suggestion_id=s.id, params={"x": 0.1}, values={"y": 1.0})
    store.start_run("r1", "c1", s.id)
    store.finish_run("r1", "success", observation=obs)
    store.start_run("r2", "c1", s.id)
    with pytest.raises(Exception):
        store.finish_run("r2", "success", observation=obs)
    # the failed transaction left r2 open and nothing duplicated
    assert len(store.observations("c1")) == 1


def test_recover_interrupted_requeues_and_keeps_documents(store):
    store.create_campaign("c1", "t", {})
    a, b = _sug(0.1), _sug(0.2)
    store.add_suggestions("c1", [a, b])
    assert [r.seq for r in store.suggestions("c1")] == [0, 1]
    store.start_run("r1", "c1", a.id)
    store.add_document("r1", "start", {"uid": "r1"})
    assert store.recover_interrupted("c1") == ["r1"]
    [run] = store.runs("c1")
    assert run.status == "interrupted"
    assert store.documents("r1") == [("start", {"uid": "r1"})]
    rows = store.suggestions("c1", status="pending")
    assert [r.id for r in rows] == [a.id, b.id] and rows[0].attempts == 1


def test_unknown_campaign_is_named(store):
    with pytest.raises(InvalidInput, match="campaign_id: no such campaign"):
        store.campaign("nope")


def test_jsonable_handles_numpy_and_nan():
    assert jsonable({"a": np.float32(1.5), "b": [np.nan, np.inf], "c": (1, 2)}) == {
        "a": 1.5, "b": [None, 1e308], "c": [1, 2]}
