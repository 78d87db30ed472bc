"""Plans an instrument accepts over HTTP: their parameters (a JSON schema with units and
limits, from the instrument's search space) and how a validated request becomes a
bluesky plan.

``autonomous_step`` is the campaign's step (make the sample, load, one exposure,
unload); ``exposure_series`` makes one sample and takes several exposures of it
(the reduction averages them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sdl.errors import InvalidInput
from sdl.space import ChoiceParameter, FixedParameter, RangeParameter, SearchSpace

MAX_EXPOSURE_S = 3600.0


def parameter_schema(space: SearchSpace) -> tuple[dict[str, Any], list[str]]:
    """JSON-schema properties for a search space's parameters, and the required names."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in space.parameters:
        if isinstance(p, RangeParameter):
            prop: dict[str, Any] = {
                "type": "integer" if p.value_type == "int" else "number",
                "minimum": p.lower, "maximum": p.upper,
            }
            required.append(p.name)
        elif isinstance(p, ChoiceParameter):
            prop = {"enum": list(p.values)}
            required.append(p.name)
        elif isinstance(p, FixedParameter):
            prop = {"const": p.value, "default": p.value}
        else:  # pragma: no cover - the union is closed
            continue
        units = getattr(p, "units", "")
        prop["x-units"] = units
        prop["description"] = f"{p.name}" + (f" ({units})" if units else "")
        props[p.name] = prop
    return props, required


def _exposure(params: dict, field: str = "exposure") -> float:
    v = params.get(field, 1.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_EXPOSURE_S:
        raise InvalidInput(field, f"must be a number in (0, {MAX_EXPOSURE_S:g}] s", v)
    return float(v)


@dataclass
class PlanSpec:
    name: str
    description: str
    extra_properties: Callable[[], dict[str, Any]]
    check_extra: Callable[[dict], dict]

    def schema(self, instrument: Any, base_url: str = "/api") -> dict[str, Any]:
        space: SearchSpace = instrument.space
        props, required = parameter_schema(space)
        props.update(self.extra_properties())
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{self.name} on {instrument.name}",
            "description": self.description,
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
            "x-constraints": [
                {"kind": "sum", "name": c.name, "components": c.components, "total": c.total,
                 "description": f"{' + '.join(c.components)} = {c.total:g}"}
                for c in space.compositions
            ],
        }
        if space.pool is not None:
            schema["x-pool"] = {
                "size": len(space.pool),
                "url": f"{base_url}/instruments/{instrument.name}/pool",
                "description": "only these samples can be made: the point must be one of them",
            }
        return schema

    def validate(self, instrument: Any, params: Any) -> dict[str, Any]:
        """The checked parameters, or :class:`InvalidInput` naming the field."""
        if not isinstance(params, dict):
            raise InvalidInput("parameters", "must be an object of parameter name to value", params)
        extra_names = set(self.extra_properties())
        point = {k: v for k, v in params.items() if k not in extra_names}
        checked = dict(instrument.space.validate_point(point))
        checked.update(self.check_extra(params))
        return checked

    def point(self, params: dict) -> dict:
        extra_names = set(self.extra_properties())
        return {k: v for k, v in params.items() if k not in extra_names}


def _exposure_props() -> dict[str, Any]:
    return {"exposure": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_EXPOSURE_S, "default": 1.0,
                         "x-units": "s", "description": "detector exposure (s)"}}


def _series_props() -> dict[str, Any]:
    return {
        **_exposure_props(),
        "repeats": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3, "x-units": "",
                    "description": "number of exposures of the one sample"},
    }


def _check_series(params: dict) -> dict:
    n = params.get("repeats", 3)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 20:
        raise InvalidInput("repeats", "must be an integer in [1, 20]", n)
    return {"exposure": _exposure(params), "repeats": n}


PLANS: dict[str, PlanSpec] = {
    "autonomous_step": PlanSpec(
        "autonomous_step",
        "Make a sample at the point (synthesis robot), load it, take one exposure, put it back.",
        _exposure_props, lambda p: {"exposure": _exposure(p)},
    ),
    "exposure_series": PlanSpec(
        "exposure_series",
        "Make a sample at the point, load it, take `repeats` exposures, put it back (values averaged).",
        _series_props, _check_series,
    ),
}


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
    """The bluesky plan for a validated request."""
    from sdl.models import Provenance, Suggestion

    if plan == "ring_check":
        return _ring_check(instrument, md)
    spec = PLANS[plan]
    point = spec.point(params)
    suggestion = Suggestion(id=md.get("queue_item_id", "item"), params=point,
                            provenance=Provenance(agent="user", reason=md.get("note", "")))
    if plan == "autonomous_step":
        return instrument.step_plan(suggestion, slot=slot, sample_id=sample_id, exposure=params["exposure"], md=md)
    return _exposure_series(instrument, point, slot=slot, sample_id=sample_id, exposure=params["exposure"],
                            repeats=params["repeats"], md=md)


def _exposure_series(instrument: Any, point: dict, *, slot: int, sample_id: str, exposure: float, repeats: int,
                     md: dict):
    """The autonomous step with ``repeats`` exposures of the one sample."""
    from sdl.plans.autonomous import autonomous_step

    params = instrument.space.validate_point(point)
    composition = [float(params[n]) for n in instrument.composition_names]
    temperature = float(params[instrument.temperature_name]) if instrument.temperature_name else 0.0
    md = {"plan_name": "exposure_series", "repeats": repeats, **md, "reduction": instrument.reduction,
          "instrument": instrument.name, "params": params}
    return (yield from autonomous_step(instrument.devices, composition, temperature, slot=slot, sample_id=sample_id,
                                       exposure=exposure, repeats=repeats, md=md))
