"""Agents written for bluesky-adaptive, driven by sdl, reading their data from Tiled.

bluesky-adaptive (1.x) splits an agent into an *optimizer* (``suggest(n)`` -> points with
an ``"_id"``; ``ingest(points)``: parameters + outcomes + ``"_id"``) and an *evaluation
function* (``(uid, suggestions) -> outcomes``) that reads the measured run by its uid,
typically from Tiled. :class:`AdaptiveAgent` makes such a pair an sdl agent (the
``ask``/``tell`` protocol of :mod:`sdl.agents.base`): sdl's campaign loop runs the
plans, the feed puts each run into Tiled, and the agent learns from what Tiled holds,
never from sdl's store (the observation sdl passes to ``tell`` only says which run
to read). :class:`TiledEvaluation` is that evaluation function for sdl's runs: it
rebuilds the run's documents from Tiled (start metadata, the primary stream's data)
and reduces them with the reduction the start document names, as the store would.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sdl.models import Observation, Provenance, Suggestion, new_id
from sdl.space import FixedParameter, Objective, SearchSpace

ID = "_id"  # bluesky_adaptive.protocols.ID_KEY


class TiledEvaluation:
    """A bluesky-adaptive ``EvaluationFunction``: a run uid -> the objective values, read from Tiled."""

    def __init__(self, client: Any, *, reduce: Callable[[list], dict] | None = None, timeout_s: float = 60.0):
        from sdl.reduction import reduce_run

        self.client = client
        self.reduce = reduce or reduce_run
        self.timeout_s = timeout_s
        self.reads: list[str] = []

    def _run(self, uid: str) -> Any:
        """The run, once the feed has written it whole (it may lag the lab a little)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                run = self.client[uid]
                if (run.metadata.get("sdl") or {}).get("complete"):
                    return run
            except KeyError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {uid} is not in Tiled after {self.timeout_s:g} s")
            time.sleep(0.1)

    def documents(self, uid: str) -> list[tuple[str, dict]]:
        """start, descriptor and events of the primary stream, rebuilt from Tiled."""
        run = self._run(uid)
        start = dict(run.metadata["start"])
        docs: list[tuple[str, dict]] = [("start", start)]
        if "primary" not in run:
            return docs
        stream = run["primary"]
        desc_uid = f"{uid}-primary"
        keys = dict(stream.metadata.get("data_keys") or {})
        docs.append(("descriptor", {"uid": desc_uid, "name": "primary", "run_start": uid, "data_keys": keys}))
        columns = {k: np.asarray(stream[k].read()) for k in keys if k in stream}
        seq = np.asarray(stream["seq_num"].read()) if "seq_num" in stream else np.arange(1, 1 + len(
            next(iter(columns.values()), [])))
        for i, s in enumerate(seq):
            data = {k: (v[i].tolist() if v.ndim > 1 else v[i].item()) for k, v in columns.items()}
            docs.append(("event", {"descriptor": desc_uid, "seq_num": int(s), "data": data}))
        self.reads.append(uid)
        return docs

    def __call__(self, uid: str, suggestions: Sequence[Mapping]) -> list[dict]:
        values = self.reduce(self.documents(uid))
        return [{**values, ID: s[ID]} for s in suggestions]


def ax_optimizer(space: SearchSpace, objectives: Sequence[Objective], seed: int = 0) -> Any:
    """bluesky-adaptive's own Ax optimizer for an sdl search space (compositions: the last
    component is implied, the others sum to at most the total)."""
    from ax import RangeParameterConfig
    from bluesky_adaptive.ax.optimizer import AxOptimizer

    if space.pool is not None:
        raise ValueError("space: a discrete pool is not supported by this adapter")
    implied = {c.components[-1] for c in space.compositions}
    params = [RangeParameterConfig(name=p.name, bounds=(float(p.lower), float(p.upper)), parameter_type="float")
              for p in space.parameters if not isinstance(p, FixedParameter) and p.name not in implied]
    cons = [" + ".join(c.components[:-1]) + f" <= {c.total!r}" for c in space.compositions]
    objective = ", ".join(("" if o.direction == "maximize" else "-") + o.name for o in objectives)
    return AxOptimizer(params, objective, parameter_constraints=cons or None,
                       client_kwargs={"random_seed": seed})


class AdaptiveAgent:
    """sdl's agent protocol over a bluesky-adaptive optimizer and evaluation function."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], optimizer: Any,
                 evaluation: Callable[[str, Sequence[Mapping]], Sequence[Mapping]], name: str = "adaptive"):
        self.space = space
        self.objectives = list(objectives)
        self.optimizer = optimizer
        self.evaluation = evaluation
        self.name = name
        self._ids: dict[str, Any] = {}  # sdl suggestion id -> the optimizer's "_id"
        self._told: set[str] = set()
        self.ingested: list[dict] = []

    def _complete(self, point: Mapping) -> dict:
        out = {k: v for k, v in point.items() if k != ID}
        for c in self.space.compositions:
            out[c.components[-1]] = max(0.0, c.total - sum(float(out[k]) for k in c.components[:-1]))
        for p in self.space.parameters:
            if isinstance(p, FixedParameter):
                out[p.name] = p.value
        return out

    def ask(self, n: int = 1) -> list[Suggestion]:
        out = []
        for point in self.optimizer.suggest(n):
            sug = Suggestion(id=new_id(), params=self._complete(point), provenance=Provenance(
                agent=self.name, model=type(self.optimizer).__name__,
                reason=f"bluesky-adaptive {type(self.optimizer).__name__} suggestion {point.get(ID)!r}"))
            self._ids[sug.id] = point.get(ID)
            out.append(sug)
        return out

    def tell(self, observations: Sequence[Observation]) -> None:
        implied = {c.components[-1] for c in self.space.compositions}
        for o in observations:
            key = o.suggestion_id or o.run_uid or ""
            if key in self._told or o.run_uid is None:
                continue
            self._told.add(key)
            _id = self._ids.get(o.suggestion_id or "")
            if not o.ok:
                if _id is not None and hasattr(self.optimizer, "register_failures"):
                    self.optimizer.register_failures([{ID: _id}])
                continue
            params = {k: v for k, v in o.params.items() if k not in implied
                      and not isinstance(self.space.parameter(k), FixedParameter)}
            suggestion = {**params, ID: _id}
            outcomes = self.evaluation(o.run_uid, [suggestion])[0]  # read from Tiled, not from o.values
            point = {**params, **{obj.name: float(outcomes[obj.name]) for obj in self.objectives}}
            if _id is not None:
                point[ID] = _id
            self.optimizer.ingest([point])
            self.ingested.append({**point, "run_uid": o.run_uid})

    def add_pending(self, params: Sequence[dict]) -> None:
        """Points handed out before a restart: the optimizer forgot them; they are measured
        and told like any other (bluesky-adaptive optimizers keep no pending list)."""
