"""The plug-in interface: what an instrument is, for sdl and for anyone who writes one.

An instrument is devices + named bluesky plans (one run per point) + a reduction
(documents -> objective values, named in the start document so a run can be reduced
again from its documents alone) + a default search space and objectives. A parameter
of the space either is an argument of the plan, or is bound to a movable device (a
DOF, as blop calls it) that is moved before the plan runs.

A plan's other arguments are its options (exposure, repeats, ...). Their JSON schema,
the one the service shows and checks requests against, comes from the signature and
annotations, in the spirit of bluesky-queueserver's parameter annotations::

    from typing import Annotated
    from sdl.plugin import Arg, Instrument

    def measure(pitch: float, *, exposure: Annotated[float, Arg(0.001, 10, units="s", open_lower=True)] = 0.1,
                md: dict | None = None):
        yield from bp.count([det], md=md)          # the plan opens one run and passes md on

Types allowed for an option: float, int, bool, str, ``Literal[...]``, each optionally
``Annotated[..., Arg(...)]``; an option needs a default. ``md`` is required (the start
document carries sdl's metadata); ``slot`` and ``sample_id`` are filled in by sdl for
instruments whose plans ask for them (samples in a rack), never by a user.

An entry point in the group ``sdl.instruments`` names a factory
``build(ctx: BuildContext) -> Instrument`` (see :mod:`sdl.registry`).
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, get_args, get_origin

from sdl.errors import InvalidInput, SdlError
from sdl.space import ChoiceParameter, FixedParameter, Objective, RangeParameter, SearchSpace

#: plan arguments sdl fills in itself (never part of a request)
INJECTED = ("md", "slot", "sample_id")


class PluginError(SdlError):
    """A plug-in that cannot be used: names the plug-in, the field and what is allowed."""

    def __init__(self, plugin: str, field: str, message: str):
        self.plugin, self.field, self.message = plugin, field, message
        super().__init__(f"plug-in {plugin!r}: {field}: {message}")


@dataclass(frozen=True)
class Arg:
    """Limits, units and a description of a plan argument (use inside ``Annotated``)."""

    lower: float | None = None
    upper: float | None = None
    units: str = ""
    description: str = ""
    open_lower: bool = False


@dataclass
class BuildContext:
    """What a factory gets: the seed of simulated doubles, their speed, rack size, options."""

    seed: int = 0
    time_scale: float = 0.0
    n_slots: int = 24
    options: dict[str, Any] = field(default_factory=dict)
    #: the name asked for (a family's factory, registered as e.g. ``"table:*.csv"``, reads it here)
    name: str = ""


@dataclass
class Option:
    """One typed plan option (not a search-space parameter)."""

    name: str
    type: str  # number | integer | boolean | string | enum
    default: Any
    arg: Arg = field(default_factory=Arg)
    choices: tuple = ()

    def schema(self) -> dict[str, Any]:
        a = self.arg
        if self.type == "enum":
            prop: dict[str, Any] = {"enum": list(self.choices)}
        else:
            prop = {"type": self.type}
        if a.lower is not None:
            prop["exclusiveMinimum" if a.open_lower else "minimum"] = a.lower
        if a.upper is not None:
            prop["maximum"] = a.upper
        prop["default"] = self.default
        prop["x-units"] = a.units
        prop["description"] = a.description or self.name + (f" ({a.units})" if a.units else "")
        return prop

    def check(self, value: Any) -> Any:
        a = self.arg
        lo = "-inf" if a.lower is None else f"{a.lower:g}"
        hi = "inf" if a.upper is None else f"{a.upper:g}"
        rng = f"{'(' if a.open_lower or a.lower is None else '['}{lo}, {hi}{')' if a.upper is None else ']'}"
        if self.type == "enum":
            if value not in self.choices:
                raise InvalidInput(self.name, f"must be one of {list(self.choices)}", value)
            return value
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise InvalidInput(self.name, "must be true or false", value)
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise InvalidInput(self.name, "must be a string", value)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInput(self.name, f"must be {'an integer' if self.type == 'integer' else 'a number'} in "
                               f"{rng}{' ' + a.units if a.units else ''}", value)
        if self.type == "integer" and int(value) != value:
            raise InvalidInput(self.name, f"must be an integer in {rng}", value)
        low_bad = a.lower is not None and (value <= a.lower if a.open_lower else value < a.lower)
        if low_bad or (a.upper is not None and value > a.upper):
            raise InvalidInput(self.name, f"out of range: allowed {rng}{' ' + a.units if a.units else ''}", value)
        return int(value) if self.type == "integer" else float(value)


def _option_from(plugin: str, plan: str, name: str, annotation: Any, default: Any) -> Option:
    where = f"plans.{plan}.{name}"
    allowed = "float, int, bool, str or Literal[...], optionally Annotated[..., sdl.plugin.Arg(...)]"
    arg = Arg()
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        arg = next((e for e in extra if isinstance(e, Arg)), Arg())
        annotation = base
    if default is inspect.Parameter.empty:
        raise PluginError(plugin, where, "an option (not a search-space parameter) needs a default value")
    if annotation is inspect.Parameter.empty:
        raise PluginError(plugin, where, f"cannot type it: no annotation; allowed: {allowed}")
    for bound in ("lower", "upper"):
        v = getattr(arg, bound)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise PluginError(plugin, where, f"Arg {bound} must be a finite number (got {v!r})")
    if arg.lower is not None and arg.upper is not None and arg.lower > arg.upper:
        raise PluginError(plugin, where, f"Arg lower ({arg.lower:g}) is above upper ({arg.upper:g})")
    if get_origin(annotation) is Literal:
        opt = Option(name, "enum", default, arg, tuple(get_args(annotation)))
        if default not in opt.choices:
            raise PluginError(plugin, where, f"the default {default!r} is not one of {list(opt.choices)}")
        return opt
    kinds = {float: "number", int: "integer", bool: "boolean", str: "string"}
    if annotation not in kinds:
        raise PluginError(plugin, where, f"cannot type {annotation!r}; allowed: {allowed}")
    if (arg.lower is not None or arg.upper is not None) and annotation not in (float, int):
        raise PluginError(plugin, where, f"Arg limits apply to numbers, not {annotation.__name__}")
    opt = Option(name, kinds[annotation], default, arg)
    try:
        opt.check(default)
    except InvalidInput as exc:
        raise PluginError(plugin, where, f"the default {default!r} is not allowed: {exc.message}") from None
    return opt


def parameter_schema(space: SearchSpace) -> tuple[dict[str, Any], list[str]]:
    """JSON-schema properties for a search space's parameters, and the required names."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in space.parameters:
        if isinstance(p, RangeParameter):
            prop: dict[str, Any] = {"type": "integer" if p.value_type == "int" else "number",
                                    "minimum": p.lower, "maximum": p.upper}
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


@dataclass
class Plan:
    """A plan function of an instrument with what sdl read from its signature."""

    name: str
    func: Callable[..., Any]
    description: str
    #: search-space parameters the plan takes as arguments (the others are DOFs)
    point_args: list[str]
    options: dict[str, Option]
    #: injected arguments it accepts (slot, sample_id)
    injected: list[str]


def inspect_plan(plugin: str, name: str, func: Callable[..., Any], space: SearchSpace,
                 dofs: dict[str, Any]) -> Plan:
    """Read a plan's signature; :class:`PluginError` if it cannot be used."""
    if not callable(func):
        raise PluginError(plugin, f"plans.{name}", f"must be a bluesky plan function, got {type(func).__name__}")
    try:
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError, ValueError) as exc:
        raise PluginError(plugin, f"plans.{name}", f"cannot read its signature: {exc} (annotations are resolved "
                          "in the plan's module: the names they use must be defined at module level)") from None
    params = sig.parameters
    if "md" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise PluginError(plugin, f"plans.{name}", "must accept `md` (sdl's metadata for the start document)")
    names = space.names
    point_args, options, injected = [], {}, []
    for pname, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if pname in names:
            if pname in dofs:
                raise PluginError(plugin, f"plans.{name}.{pname}",
                                  "is bound to a device (dofs) and is also a plan argument; choose one")
            point_args.append(pname)
        elif pname == "md":
            continue
        elif pname in INJECTED:
            injected.append(pname)
        else:
            options[pname] = _option_from(plugin, name, pname, hints.get(pname, p.annotation), p.default)
    missing = [n for n in names if n not in point_args and n not in dofs
               and not isinstance(space.parameter(n), FixedParameter)]
    if missing and any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # a plan taking **point gets the parameters its signature does not name (also those
        # whose names are no Python identifiers, such as a table's column 'yield' or 'd1 (mM)')
        point_args += missing
        missing = []
    if missing:
        raise PluginError(plugin, f"plans.{name}", f"search-space parameters {missing} are neither plan arguments "
                          f"nor bound to a device; plan arguments: {list(params)}, dofs: {list(dofs)}")
    doc = inspect.getdoc(func) or ""
    return Plan(name, func, doc.split("\n\n")[0].replace("\n", " "), point_args, options, injected)


@dataclass
class Instrument:
    """One instrument: devices, plans, reduction, default space and objectives.

    ``reduction``: ``{"name": ..., "params": {...}}`` (see :func:`sdl.reduction.reduction_spec`).
    ``dofs``: search-space parameter -> movable device, set before the plan runs (then
    ``settle_s`` of waiting). ``truth``/``optimum``: the hidden answer of a simulated
    instrument, for reports. ``simulator``: ``(ctx) -> caproto PVGroup factory`` that
    ``sdl ioc`` serves (see :mod:`sdl.sim_serve`).
    """

    name: str
    description: str
    space: SearchSpace
    objectives: list[Objective]
    reduction: dict
    plans: dict[str, Callable[..., Any]]
    default_plan: str | None = None
    dofs: dict[str, Any] = field(default_factory=dict)
    devices: Any = None
    settle_s: float = 0.0
    truth: Callable[[dict], float] | None = None
    optimum: dict | None = None
    lab: Any = None
    options: dict = field(default_factory=dict)
    simulator: Callable[..., Any] | None = None
    source: str = ""
    _plans: dict[str, Plan] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.check()

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Every field usable, or :class:`PluginError` naming it."""
        from sdl.reduction import known_reductions

        n = self.name or "?"
        if not isinstance(self.name, str) or not self.name:
            raise PluginError(n, "name", "must be a non-empty string")
        if not isinstance(self.space, SearchSpace):
            raise PluginError(n, "space", f"must be an sdl.space.SearchSpace, got {type(self.space).__name__}")
        if not self.objectives or not all(isinstance(o, Objective) for o in self.objectives):
            raise PluginError(n, "objectives", "give at least one sdl.space.Objective")
        red = self.reduction
        if not isinstance(red, dict) or not isinstance(red.get("name"), str):
            raise PluginError(n, "reduction", "missing: give {'name': REDUCTION, 'params': {...}}; allowed "
                              f"reductions: {known_reductions()}")
        if red["name"] not in known_reductions():
            raise PluginError(n, "reduction.name", f"unknown reduction {red['name']!r}; allowed: "
                              f"{known_reductions()}")
        if red["name"] == "readings":  # the stock reduction says what it produces: each objective must be one
            produced = [o.get("name") for o in (red.get("params") or {}).get("objectives") or []
                        if isinstance(o, dict)]
            for i, o in enumerate(self.objectives):
                if o.name not in produced:
                    raise PluginError(n, f"objectives.{i}.name", f"{o.name!r} is not produced by reduction "
                                      f"'readings'; it produces {produced}")
        if not self.plans:
            raise PluginError(n, "plans", "give at least one named bluesky plan function")
        for p in self.dofs:
            if p not in self.space.names:
                raise PluginError(n, f"dofs.{p}", f"not a search-space parameter; allowed: {self.space.names}")
            if not hasattr(self.dofs[p], "set"):
                raise PluginError(n, f"dofs.{p}", "must be a movable device (with .set)")
        self._plans = {k: inspect_plan(n, k, f, self.space, self.dofs) for k, f in self.plans.items()}
        if self.default_plan is None:
            self.default_plan = next(iter(self.plans))
        if self.default_plan not in self.plans:
            raise PluginError(n, "default_plan", f"unknown plan; allowed: {list(self.plans)}")

    # ----------------------------------------------------------------- plans
    @property
    def plan_names(self) -> list[str]:
        return list(self._plans)

    def plan(self, name: str | None = None) -> Plan:
        name = name or self.default_plan
        p = self._plans.get(name)
        if p is None:
            raise InvalidInput("plan", f"unknown plan for {self.name}; allowed: {self.plan_names}", name)
        return p

    def plan_schema(self, name: str | None = None, base_url: str = "/api") -> dict[str, Any]:
        """The JSON schema of a request for plan ``name``: the point and the plan's options."""
        p = self.plan(name)
        props, required = parameter_schema(self.space)
        props.update({k: o.schema() for k, o in p.options.items()})
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{p.name} on {self.name}",
            "description": p.description,
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
            "x-constraints": [
                {"kind": "sum", "name": c.name, "components": c.components, "total": c.total,
                 "description": f"{' + '.join(c.components)} = {c.total:g}"}
                for c in self.space.compositions
            ],
            "x-dofs": sorted(self.dofs),
        }
        if self.space.pool is not None:
            schema["x-pool"] = {"size": len(self.space.pool), "url": f"{base_url}/instruments/{self.name}/pool",
                                "description": "only these samples can be made: the point must be one of them"}
        return schema

    def validate_request(self, name: str | None, params: Any) -> dict[str, Any]:
        """The checked point and options of a request, or :class:`InvalidInput` naming the field."""
        p = self.plan(name)
        if not isinstance(params, dict):
            raise InvalidInput("parameters", "must be an object of parameter name to value", params)
        point = {k: v for k, v in params.items() if k not in p.options}
        unknown = [k for k in point if k not in self.space.names]
        if unknown:
            raise InvalidInput(unknown[0], f"unknown parameter; allowed: {self.space.names + list(p.options)}")
        checked = dict(self.space.validate_point(point))
        for k, o in p.options.items():
            checked[k] = o.check(params[k]) if k in params else o.default
        return checked

    def split(self, name: str | None, params: dict) -> tuple[dict, dict]:
        """(point, options) of a checked request."""
        p = self.plan(name)
        return ({k: v for k, v in params.items() if k not in p.options},
                {k: v for k, v in params.items() if k in p.options})

    def step_plan(self, suggestion: Any, *, md: dict, plan: str | None = None, options: dict | None = None,
                  **context: Any):
        """The bluesky plan for one point: DOFs moved, then the plan (one run).

        ``context``: what the caller knows (slot, sample_id, exposure); each goes to the
        plan only if it takes it. ``options``: checked plan options (a request's)."""
        import bluesky.plan_stubs as bps

        p = self.plan(plan)
        point = self.space.validate_point(suggestion.params)
        md = {**md, "reduction": self.reduction, "instrument": self.name, "params": point,
              "suggestion_id": suggestion.id, "sdl_plan": p.name}
        kwargs: dict[str, Any] = {k: point[k] for k in p.point_args}
        for k, v in context.items():
            if k in p.injected or k in p.options:
                kwargs[k] = v
        for k, o in p.options.items():
            if k in kwargs and k not in (options or {}):
                kwargs[k] = o.check(kwargs[k])
        kwargs.update(options or {})
        moves = [(dev, point[name]) for name, dev in self.dofs.items()]
        settle = self.settle_s

        def run():
            if moves:
                args = [a for dev, v in moves for a in (dev, v)]
                yield from bps.mv(*args)
                if settle > 0:
                    yield from bps.sleep(settle)
            plan = p.func(**kwargs, md=md)
            if not hasattr(plan, "__next__"):  # said once per run, not as bluesky's "not iterable"
                raise PluginError(self.name, f"plans.{p.name}", "must be a bluesky plan: a generator function, or "
                                  f"a function returning a generator; it returned {type(plan).__name__}")
            return (yield from plan)

        return run()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "space": self.space.model_dump(exclude={"pool"}),
            "pool_size": None if self.space.pool is None else len(self.space.pool),
            "objectives": [o.model_dump() for o in self.objectives],
            "reduction": self.reduction.get("name"),
            "dofs": sorted(self.dofs),
            "plans": {k: {"description": p.description, "options": sorted(p.options)} for k, p in self._plans.items()},
            "simulated_double": self.simulator is not None,
            "optimum": self.optimum,
        }


__all__ = ["Arg", "BuildContext", "INJECTED", "Instrument", "Option", "Plan", "PluginError", "inspect_plan",
           "parameter_schema"]
