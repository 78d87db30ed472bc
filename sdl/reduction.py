"""Reduction: a run's documents -> the observation's values. Pure functions only.

The start document says which reduction applies and with what parameters
(``start["reduction"] = {"name": ..., "params": {...}}``), so any stored run can be
reduced again from its documents alone (``sdl campaign replay``) and give the same
numbers as when it was measured.
"""

from __future__ import annotations

import math
import numbers
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
    fn = find_reducer(spec["name"])
    if fn is None:
        raise InvalidInput("start.reduction.name", f"unknown reduction; allowed: {known_reductions()}", spec["name"])
    if not events:
        raise InvalidInput("documents", "the run has no primary events to reduce")
    if not callable(fn):
        raise InvalidInput("start.reduction.name", f"reduction {spec['name']!r} is not a function", type(fn).__name__)
    try:
        values = fn(start, events, spec.get("params", {}))
    except InvalidInput:
        raise
    except Exception as exc:  # a plug-in's reduction: named, with what it raised
        raise InvalidInput("reduction", f"{spec['name']!r} raised {type(exc).__name__}: {exc}") from exc
    bad = values if not isinstance(values, dict) else next(
        (v for k, v in values.items() if not isinstance(k, str) or isinstance(v, bool)
         or not isinstance(v, numbers.Real)), None)  # Real: numpy's scalars too
    if bad is not None or not isinstance(values, dict):
        raise InvalidInput("reduction", f"{spec['name']!r} must return a dict of objective name -> number; "
                           f"it returned {type(values).__name__}" + ("" if not isinstance(values, dict) else
                                                                    f" holding {bad!r}"))
    return {k: float(v) for k, v in values.items()}


@reducer("scalar")
def _scalar(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    """A scalar reading is the value (e.g. a pool's table value, a probe's number)."""
    key = params["field"]
    vals = [float("nan") if ev["data"].get(key) is None else float(ev["data"][key]) for ev in events]
    mean = float(np.mean(vals))
    if not math.isfinite(mean):
        raise InvalidInput(key, "no finite reading in the run (was a sample mounted?)")
    return {params["objective"]: mean}


def find_reducer(name: str) -> Reducer | None:
    """A reduction by name: the stock ones here, then the ``sdl.reductions`` entry points."""
    if name in REDUCERS:
        return REDUCERS[name]
    from sdl.registry import registry

    return registry().reduction(name)


def known_reductions() -> list[str]:
    from sdl.registry import registry

    return sorted(set(REDUCERS) | set(registry().reduction_names()))


def reduction_spec(name: str, **params: Any) -> dict:
    if find_reducer(name) is None:
        raise InvalidInput("reduction", f"unknown reduction; allowed: {known_reductions()}", name)
    return {"name": name, "params": params}


# ------------------------------------------------------------ stock reductions
#: what a reading is turned into per event (then averaged over the run's events)
STOCK_OPS = ("mean", "max", "min", "sum", "centroid", "fwhm", "ratio")


def _array(value: Any, key: str) -> np.ndarray:
    if value is None:
        raise InvalidInput(key, "no reading in the event")
    return np.asarray(value, dtype=float)


def _centroid(y: np.ndarray, x: np.ndarray) -> float:
    w = np.clip(y - y.min(), 0, None)
    return float((w * x).sum() / w.sum()) if w.sum() > 0 else float("nan")


def _fwhm(y: np.ndarray, x: np.ndarray) -> float:
    """Full width at half maximum of the highest peak (above the minimum), linearly interpolated."""
    base = y.min()
    h = y - base
    i = int(np.argmax(h))
    half = h[i] / 2.0
    if half <= 0:
        return float("nan")
    lo = i
    while lo > 0 and h[lo - 1] > half:
        lo -= 1
    hi = i
    while hi < len(h) - 1 and h[hi + 1] > half:
        hi += 1
    left = x[lo] if lo == 0 else np.interp(half, [h[lo - 1], h[lo]], [x[lo - 1], x[lo]])
    right = x[hi] if hi == len(h) - 1 else np.interp(half, [h[hi + 1], h[hi]], [x[hi + 1], x[hi]])
    return float(abs(right - left))


def stock_value(op: str, event: dict, field: str, params: dict) -> float:
    """One objective from one event: ``op`` applied to the reading ``field``.

    A waveform (1-D) or image (2-D, projected on ``axis``: 0 rows, 1 columns) for
    centroid/fwhm; x in units of ``step`` (default 1 per sample) from ``origin``."""
    data = event["data"]
    if op == "ratio":
        num, den = float(_array(data.get(field), field).mean()), float(
            _array(data.get(params["denominator"]), params["denominator"]).mean())
        return num / den if den != 0 else float("nan")
    y = _array(data.get(field), field)
    if op == "mean":
        return float(y.mean())
    if op == "max":
        return float(y.max())
    if op == "min":
        return float(y.min())
    if op == "sum":
        return float(y.sum())
    if y.ndim == 2:
        y = y.sum(axis=int(params.get("axis", 0)))
    elif y.ndim == 1 and params.get("shape"):
        y = y.reshape(params["shape"]).sum(axis=int(params.get("axis", 0)))
    x = float(params.get("origin", 0.0)) + float(params.get("step", 1.0)) * np.arange(len(y))
    return _centroid(y, x) if op == "centroid" else _fwhm(y, x)


@reducer("readings")
def _readings(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    """Stock reduction: ``params['objectives'] = [{name, field, op, ...}]`` (op in
    :data:`STOCK_OPS`; ratio takes ``denominator``), each averaged over the events."""
    out: dict[str, float] = {}
    for obj in params["objectives"]:
        vals = [stock_value(obj["op"], ev, obj["field"], obj) for ev in events]
        v = float(np.mean(vals))
        if not math.isfinite(v):
            raise InvalidInput(obj["field"], f"{obj['op']} of the reading is not finite ({obj['name']})")
        out[obj["name"]] = v
    return out
