"""Instrument conformance: what every plug-in instrument must do, checked by running it.

``check_instrument(name)`` (or ``sdl instruments check NAME``) builds the instrument,
checks each plan's schema against its own defaults, runs the default plan at a few
points of its space through a RunEngine and checks: one run per point that ends in
success, a start document carrying the reduction, the instrument, the point and the
suggestion id, a reduction that gives every objective a finite value, the same values
again from the documents alone after a JSON round trip (replay), and a point outside
the limits refused before any document. The device-level kit is :mod:`sdl.testing`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable


def _run(inst: Any, params: dict, md: dict, slot: int = 1) -> list[tuple[str, dict]]:
    from bluesky import RunEngine

    from sdl.models import Provenance, Suggestion

    docs: list[tuple[str, dict]] = []
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    sug = Suggestion(params=params, provenance=Provenance(agent="conformance"))
    RE(inst.step_plan(sug, md=md, slot=slot, sample_id=f"conformance-{slot}-{sug.id[:8]}"))
    return docs


def check_instrument(instrument: Any, *, points: int = 2, seed: int = 0,
                     options: dict | None = None) -> dict[str, str]:
    """``{check: 'ok' | 'FAIL: why'}`` for an instrument (or a registered name)."""
    from sdl.agents import make_agent
    from sdl.errors import InvalidInput
    from sdl.reduction import reduce_run
    from sdl.store import jsonable

    results: dict[str, str] = {}

    def check(name: str, fn: Callable[[], Any], needs: str | None = None) -> Any:
        if needs is not None and results.get(needs) != "ok":
            results[name] = f"skipped: {needs} failed"
            return None
        try:
            out = fn()
            results[name] = "ok"
            return out
        except Exception as exc:  # noqa: BLE001 - reported
            results[name] = f"FAIL: {type(exc).__name__}: {exc}"
            return None

    if isinstance(instrument, str):
        from sdl.instruments import make_instrument

        inst = check("builds", lambda: make_instrument(instrument, seed=seed, options=options))
        if inst is None:
            return results
    else:
        inst = instrument
    agent = make_agent("random", inst.space, inst.objectives, seed=seed)
    pts = [s.params for s in agent.ask(points)]

    def schemas() -> None:
        for plan in inst.plan_names:
            schema = json.loads(json.dumps(inst.plan_schema(plan)))
            assert schema["type"] == "object" and set(inst.space.names) <= set(schema["properties"]), plan
            inst.validate_request(plan, dict(pts[0]))  # a point of the space with the options' defaults

    check("schemas", schemas)
    runs: list[list[tuple[str, dict]]] = []

    def run_points() -> None:
        for i, p in enumerate(pts):
            docs = _run(inst, p, {"conformance": i}, slot=i + 1)
            names = [n for n, _ in docs]
            assert names.count("start") == 1 and names.count("stop") == 1, f"point {i}: {names.count('start')} runs"
            stop = docs[[n for n, _ in docs].index("stop")][1]
            assert stop["exit_status"] == "success", f"point {i}: run ended {stop['exit_status']}: {stop.get('reason')}"
            runs.append(docs)

    check("runs", run_points)

    def start_document() -> None:
        for docs in runs:
            start = docs[0][1]
            for key in ("reduction", "instrument", "params", "suggestion_id"):
                assert key in start, f"the start document lacks {key!r}: does the plan pass md on to its run?"
            assert start["instrument"] == inst.name and start["reduction"] == inst.reduction

    check("start_document", start_document, needs="runs")
    values: list[dict] = []

    def reduces() -> None:
        for docs in runs:
            v = reduce_run(docs)
            for o in inst.objectives:
                assert o.name in v and math.isfinite(v[o.name]), f"objective {o.name!r}: {v.get(o.name)!r}"
            values.append(v)

    check("reduces", reduces, needs="runs")

    def replays() -> None:
        for docs, v in zip(runs, values):
            again = reduce_run(json.loads(json.dumps(jsonable(docs))))
            assert all(math.isclose(again[k], v[k], rel_tol=1e-9, abs_tol=1e-12) for k in v), (v, again)

    check("replays", replays, needs="reduces")

    def refuses_bad_points() -> None:
        from sdl.space import RangeParameter

        p = next((q for q in inst.space.parameters if isinstance(q, RangeParameter)), None)
        if p is None:
            return
        bad = {**pts[0], p.name: p.upper + (p.upper - p.lower)}
        try:
            _run(inst, bad, {}, slot=points + 1)
        except InvalidInput as exc:
            assert exc.field == p.name, exc
            return
        raise AssertionError(f"{p.name}={bad[p.name]} (beyond {p.upper}) was not refused")

    check("refuses_bad_points", refuses_bad_points)
    return results


def assert_instrument_conforms(instrument: Any, **kw: Any) -> None:
    failed = {k: v for k, v in check_instrument(instrument, **kw).items() if v != "ok"}
    assert not failed, f"{getattr(instrument, 'name', instrument)} does not conform: {failed}"
