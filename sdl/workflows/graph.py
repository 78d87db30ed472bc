"""A workflow: a small graph of tasks over one sample, each task a plan on one plug-in
instrument, checked as a whole before anything runs.

- ``make`` (exactly one, a root): a plan that makes the sample at the point;
- ``measure``: a plan on the made sample (after the make, directly or not); tasks whose
  dependencies are met run in parallel, each on its own instrument's fair queue (the
  sample itself is a resource of capacity 1, so it is at one station at a time);
- ``reduce`` (at most one): no instrument; objective values picked from the reductions
  of the measurement runs (``{"fom": "xrd.fom"}``: objective ``fom`` is the ``fom``
  value of task ``xrd``'s run).

``gate`` on a measure task makes it conditional (a cascade): it runs only if the
campaign's gate says so after the tasks it is ``after`` are done.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdl.errors import InvalidInput

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,59}$")


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="unique in the workflow: letters, digits, _ and -")
    kind: Literal["make", "measure", "reduce"]
    instrument: str = Field("", description="a registered instrument (sdl instruments list); none for reduce")
    plan: str = Field("", description="the instrument's plan; default: its default plan")
    after: list[str] = Field(default_factory=list, description="tasks that must finish first")
    options: dict[str, Any] = Field(default_factory=dict, description="the plan's options (exposure, ...)")
    objectives: dict[str, str] = Field(default_factory=dict,
                                       description="reduce only: objective -> 'task.value'")
    gate: bool = Field(False, description="measure only: run only if the campaign's gate says so (cascade)")


class TransitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(30.0, ge=0, le=3600, description="nominal time between stations (x time_scale)")
    drop_probability: float = Field(0.0, ge=0, le=1, description="chance a transit drops the sample (lost)")


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSpec] = Field(..., min_length=1, max_length=32)
    on_failure: Literal["retry", "skip", "fail"] = Field(
        "retry", description="a failed task: retry it (up to max_attempts, then fail the step), skip that "
        "measurement, or fail the step")
    max_attempts: int = Field(3, ge=1, le=20, description="attempts per task (failures and interruptions)")
    transit: TransitSpec = Field(default_factory=TransitSpec)
    hotel_capacity: int = Field(8, ge=1, le=10_000, description="positions where made samples wait; a make "
                                "waits for a free one")
    dispose: Literal["discard", "consume", "keep"] = Field("discard", description="what happens to the sample "
                                                          "when its workflow ends")

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    @property
    def instruments(self) -> list[str]:
        return sorted({t.instrument for t in self.tasks if t.instrument})


def _err(where: str, message: str, value: Any = ...) -> InvalidInput:
    return InvalidInput(where, message, value)


def validate_workflow(data: dict | WorkflowSpec, *, check_instruments: bool = True) -> WorkflowSpec:
    """Parse and check a workflow; :class:`InvalidInput` names the task and field."""
    if isinstance(data, WorkflowSpec):
        spec = data
    else:
        try:
            spec = WorkflowSpec.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = list(e["loc"])
            if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
                tasks = (data or {}).get("tasks") or []
                name = tasks[loc[1]].get("name") if loc[1] < len(tasks) and isinstance(tasks[loc[1]], dict) else None
                loc[1] = name or loc[1]
            raise _err("workflow." + ".".join(str(p) for p in loc), e["msg"], e.get("input", ...)) from None
    names = [t.name for t in spec.tasks]
    for t in spec.tasks:
        if not NAME.match(t.name):
            raise _err(f"workflow.tasks.{t.name}.name", "letters, digits, _ and -, starting with a letter", t.name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _err(f"workflow.tasks.{dup[0]}.name", "task names must be unique", dup[0])
    for t in spec.tasks:
        w = f"workflow.tasks.{t.name}"
        for a in t.after:
            if a not in names:
                raise _err(f"{w}.after", f"unknown task; allowed: {[n for n in names if n != t.name]}", a)
            if a == t.name:
                raise _err(f"{w}.after", "a task cannot wait for itself", a)
        if t.kind == "reduce":
            if t.instrument or t.plan or t.options:
                raise _err(f"{w}.instrument", "a reduce task runs no plan: leave instrument, plan, options out")
            if not t.objectives:
                raise _err(f"{w}.objectives", "give at least one objective: {'fom': 'xrd.fom'}")
        else:
            if not t.instrument:
                raise _err(f"{w}.instrument", f"a {t.kind} task needs an instrument (sdl instruments list)")
            if t.objectives:
                raise _err(f"{w}.objectives", "only a reduce task names objectives")
        if t.gate and t.kind != "measure":
            raise _err(f"{w}.gate", "only a measure task can be gated")
    makes = [t for t in spec.tasks if t.kind == "make"]
    if len(makes) != 1:
        raise _err("workflow.tasks", f"exactly one make task (it makes the sample); found {len(makes)}")
    if makes[0].after:
        raise _err(f"workflow.tasks.{makes[0].name}.after", "the make task comes first: no dependencies",
                   makes[0].after)
    if sum(t.kind == "reduce" for t in spec.tasks) > 1:
        raise _err("workflow.tasks", "at most one reduce task")
    order = topological(spec)  # raises on a cycle
    ancestors = _ancestors(spec)
    for t in spec.tasks:
        if t.kind in ("measure", "reduce") and makes[0].name not in ancestors[t.name]:
            raise _err(f"workflow.tasks.{t.name}.after", f"must come after the make task {makes[0].name!r} "
                       "(directly or through other tasks)", t.after)
        for obj, ref in t.objectives.items():
            task, _, value = ref.partition(".")
            if not value or task not in names:
                raise _err(f"workflow.tasks.{t.name}.objectives.{obj}", "write 'TASK.VALUE', TASK one of "
                           f"{[n for n in names if spec.task(n).kind == 'measure']}", ref)
            if spec.task(task).kind != "measure" or task not in ancestors[t.name]:
                raise _err(f"workflow.tasks.{t.name}.objectives.{obj}",
                           "must name a measure task this reduce comes after", ref)
    if check_instruments:
        _check_instruments(spec)
    del order
    return spec


def topological(spec: WorkflowSpec) -> list[str]:
    deps = {t.name: set(t.after) for t in spec.tasks}
    out: list[str] = []
    while deps:
        free = sorted(n for n, d in deps.items() if not d)
        if not free:
            raise _err(f"workflow.tasks.{sorted(deps)[0]}.after", f"the tasks {sorted(deps)} form a cycle")
        for n in free:
            out.append(n)
            del deps[n]
        for d in deps.values():
            d.difference_update(free)
    return out


def _ancestors(spec: WorkflowSpec) -> dict[str, set[str]]:
    by = {t.name: t for t in spec.tasks}
    memo: dict[str, set[str]] = {}

    def up(n: str) -> set[str]:
        if n not in memo:
            memo[n] = set()
            for a in by[n].after:
                memo[n] |= {a} | up(a)
        return memo[n]

    return {n: up(n) for n in by}


_BUILT: dict[tuple[int, str], Any] = {}


def schema_instrument(name: str) -> Any:
    """The instrument ``name`` built with its defaults, to read its schemas (cached per registry)."""
    from sdl.instruments import make_instrument
    from sdl.registry import registry

    key = (id(registry()), name)
    if key not in _BUILT:
        _BUILT[key] = make_instrument(name)
    return _BUILT[key]


def _check_instruments(spec: WorkflowSpec) -> None:
    """Each task's instrument registered, its plan known, its options allowed."""
    from sdl.registry import registry

    reg = registry()
    built: dict[str, Any] = {}
    for t in spec.tasks:
        if not t.instrument:
            continue
        w = f"workflow.tasks.{t.name}"
        if t.instrument not in reg.entries["instruments"]:
            raise _err(f"{w}.instrument", f"unknown instrument; allowed: {reg.names()}", t.instrument)
        if t.instrument not in built:
            try:
                built[t.instrument] = schema_instrument(t.instrument)
            except InvalidInput as exc:
                raise _err(f"{w}.instrument", exc.message, t.instrument) from None
        inst = built[t.instrument]
        if t.plan and t.plan not in inst.plan_names:
            raise _err(f"{w}.plan", f"unknown plan for {t.instrument}; allowed: {inst.plan_names}", t.plan)
        plan = inst.plan(t.plan or None)
        for k, v in t.options.items():
            if k not in plan.options:
                raise _err(f"{w}.options.{k}", f"not an option of {t.instrument}/{plan.name}; allowed: "
                           f"{sorted(plan.options)}", v)
            try:
                plan.options[k].check(v)
            except InvalidInput as exc:
                raise _err(f"{w}.options.{k}", exc.message, v) from None
        if t.kind == "measure" and "sample_id" not in plan.injected:
            raise _err(f"{w}.plan", f"{t.instrument}/{plan.name} takes no sample_id: it cannot measure a sample")
