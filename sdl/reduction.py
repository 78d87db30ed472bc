"""Reduction: a run's documents -> the observation's values. Pure functions only.

The start document says which reduction applies and with what parameters
(``start["reduction"] = {"name": ..., "params": {...}}``), so any stored run can be
reduced again from its documents alone (``sdl campaign replay``) and give the same
numbers as when it was measured.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np

from sdl.errors import InvalidInput

Documents = Iterable[tuple[str, dict]]
Reducer = Callable[[dict, list[dict], dict], dict[str, float]]

REDUCERS: dict[str, Reducer] = {}


def reducer(name: str) -> Callable[[Reducer], Reducer]:
    def register(fn: Reducer) -> Reducer:
        REDUCERS[name] = fn
        return fn

    return register


def primary_events(documents: Documents) -> tuple[dict, list[dict]]:
    """The start document and the events of the 'primary' stream, in order."""
    start: dict | None = None
    primary: set[str] = set()
    events: list[dict] = []
    for name, doc in documents:
        if name == "start":
            start = doc
        elif name == "descriptor" and doc.get("name") == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc.get("descriptor") in primary:
            events.append(doc)
        elif name == "event_page" and doc.get("descriptor") in primary:
            n = len(doc["seq_num"])
            for i in range(n):
                events.append({"data": {k: v[i] for k, v in doc["data"].items()}, "seq_num": doc["seq_num"][i]})
    if start is None:
        raise InvalidInput("documents", "no start document: cannot reduce a run without it")
    return start, events


def reduce_run(documents: Documents) -> dict[str, float]:
    """Values of the objectives for one run (averaged over its primary events)."""
    start, events = primary_events(list(documents))
    spec = start.get("reduction")
    if not spec or "name" not in spec:
        raise InvalidInput("start.reduction", f"missing; allowed reductions: {sorted(REDUCERS)}")
    fn = REDUCERS.get(spec["name"])
    if fn is None:
        raise InvalidInput("start.reduction.name", f"unknown reduction; allowed: {sorted(REDUCERS)}", spec["name"])
    if not events:
        raise InvalidInput("documents", "the run has no primary events to reduce")
    return fn(start, events, spec.get("params", {}))


@reducer("xrd_target_phase")
def _xrd_target_phase(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    from sdl.xrd import FOM_NAME, target_phase_fom

    two_theta = np.asarray(params["two_theta"], dtype=float)
    key = params.get("field", "detector_spectrum")
    vals = [target_phase_fom(two_theta, np.asarray(ev["data"][key], dtype=float), params) for ev in events]
    return {params.get("objective", FOM_NAME): float(np.mean(vals))}


@reducer("scalar")
def _scalar(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    """A scalar reading is the value (e.g. a pool's table value, a probe's number)."""
    key = params["field"]
    vals = [float("nan") if ev["data"].get(key) is None else float(ev["data"][key]) for ev in events]
    mean = float(np.mean(vals))
    if not math.isfinite(mean):
        raise InvalidInput(key, "no finite reading in the run (was a sample mounted?)")
    return {params["objective"]: mean}


def reduction_spec(name: str, **params: Any) -> dict:
    if name not in REDUCERS:
        raise InvalidInput("reduction", f"unknown reduction; allowed: {sorted(REDUCERS)}", name)
    return {"name": name, "params": params}
