"""How a validated request becomes a bluesky plan.

An instrument's plans, their JSON schemas and request checks come from the
instrument itself (:class:`sdl.plugin.Instrument`); this module adds the internal
``ring_check`` plan a worker runs for operators and benchmarks.
"""

from __future__ import annotations

from typing import Any

from sdl.plugin import parameter_schema  # noqa: F401 - kept where it was


#: Plans a worker runs that are not offered over HTTP (queued by operators and benchmarks).
INTERNAL_PLANS = ("ring_check",)


def _ring_check(instrument: Any, md: dict):
    """One reading of the storage-ring current in a run of its own: the cheapest complete
    run (start, descriptor, event, stop) that reduces to a value; used to measure dispatch."""
    from bluesky.plans import count

    from sdl.reduction import reduction_spec

    ring = instrument.devices.ring_current
    return count([ring], num=1, md={**md, "plan_name": "ring_check", "instrument": instrument.name,
                                   "reduction": reduction_spec("scalar", field=ring.name,
                                                               objective="ring_current")})


def build_plan(plan: str, instrument: Any, params: dict, *, slot: int, sample_id: str, md: dict):
    """The bluesky plan for a validated request (``instrument.validate_request``)."""
    from sdl.models import Provenance, Suggestion

    if plan == "ring_check":
        return _ring_check(instrument, md)
    point, options = instrument.split(plan, params)
    suggestion = Suggestion(id=md.get("queue_item_id", "item"), params=point,
                            provenance=Provenance(agent="user", reason=md.get("note", "")))
    return instrument.step_plan(suggestion, md=md, plan=plan, options=options, slot=slot, sample_id=sample_id)
