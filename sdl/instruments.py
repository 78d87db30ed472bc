"""Instruments: a lab's devices + what a point means to them + how a run is reduced.

An instrument turns a suggestion (parameter values) into the autonomous-step plan
for its devices and names the reduction that turns the run back into objective
values. The registry holds the simulated ones; EPICS-backed ones use the same
plans over Channel Access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sdl.errors import InvalidInput
from sdl.models import Suggestion
from sdl.plans.autonomous import LabDevices, autonomous_step
from sdl.reduction import reduction_spec
from sdl.space import Objective, SearchSpace


@dataclass
class Instrument:
    """One instrument's devices, search space, objectives and reduction."""

    name: str
    description: str
    devices: LabDevices
    space: SearchSpace
    objectives: list[Objective]
    reduction: dict
    #: parameter names, in the order of the robot's precursors
    composition_names: list[str]
    temperature_name: str | None = "temperature"
    #: the hidden truth, for simulated instruments: params -> noise-free objective value
    truth: Callable[[dict], float] | None = None
    optimum: dict | None = None
    lab: Any = None
    options: dict = field(default_factory=dict)

    def step_plan(self, suggestion: Suggestion, *, slot: int, sample_id: str, exposure: float, md: dict):
        params = self.space.validate_point(suggestion.params)
        composition = [float(params[n]) for n in self.composition_names]
        temperature = float(params[self.temperature_name]) if self.temperature_name else 0.0
        md = {**md, "reduction": self.reduction, "instrument": self.name, "params": params,
              "suggestion_id": suggestion.id}
        return autonomous_step(
            self.devices, composition, temperature, slot=slot, sample_id=sample_id, exposure=exposure, md=md
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "space": self.space.model_dump(exclude={"pool"}),
            "pool_size": None if self.space.pool is None else len(self.space.pool),
            "objectives": [o.model_dump() for o in self.objectives],
            "optimum": self.optimum,
        }


def _sim_xrd(seed: int, time_scale: float, n_slots: int, options: dict) -> Instrument:
    from sdl.sim_devices.lab import SimLab
    from sdl.sim_devices.materials import MaterialsModel

    model_kwargs = {}
    if "precursors" in options:
        model_kwargs["precursors"] = tuple(options["precursors"])
    model = MaterialsModel(seed=int(options.get("model_seed", 0)), **model_kwargs)
    lab = SimLab(model, time_scale=time_scale, seed=seed, n_slots=n_slots,
                 failure_region=options.get("failure_region"))  # sdl.sim_devices.failures
    precursors = list(model.precursors)
    params = {**model.reduction_params(), "two_theta": [float(x) for x in model.two_theta],
              "field": "detector_spectrum"}
    fom = params.get("objective", "fom")

    def truth(p: dict) -> float:
        return float(model.figure_of_merit([p[n] for n in precursors], p["temperature"]))

    return Instrument(
        name="sim-xrd",
        description="Simulated synthesis robot, sample changer and XRD beamline over a hidden materials model",
        devices=LabDevices.from_lab(lab),
        space=model.search_space(),
        objectives=[Objective(name=fom, direction="maximize")],
        reduction=reduction_spec("xrd_target_phase", **params),
        composition_names=precursors,
        truth=truth,
        optimum=model.optimum(),
        lab=lab,
        options=dict(options),
    )


def _sim_pool(dataset: str) -> Callable[..., Instrument]:
    def build(seed: int, time_scale: float, n_slots: int, options: dict) -> Instrument:
        from sdl.sim_devices.lab import SimLab
        from sdl.sim_devices.pool import PoolModel

        pool = PoolModel.bundled(dataset)
        lab = SimLab(pool, time_scale=time_scale, seed=seed, n_slots=n_slots)
        best_params, best_value = pool.best()
        return Instrument(
            name=f"pool:{dataset}",
            description=f"Pool of {len(pool)} real measurements ({pool.source}); only listed samples can be made",
            devices=LabDevices.from_lab(lab),
            space=pool.search_space(),
            objectives=[pool.objective],
            reduction=reduction_spec("scalar", field="detector_value", objective=pool.objective.name),
            composition_names=list(pool.inputs),
            temperature_name=None,
            truth=pool.value,
            optimum={"params": best_params, pool.objective.name: best_value},
            lab=lab,
            options=dict(options),
        )

    return build


INSTRUMENTS: dict[str, Callable[..., Instrument]] = {
    "sim-xrd": _sim_xrd,
    "pool:p3ht": _sim_pool("p3ht"),
    "pool:agnp": _sim_pool("agnp"),
}


def check_instrument_name(name: str) -> str:
    from sdl.table_instrument import is_table_instrument  # "pool:<file.csv>": any table

    if is_table_instrument(name):
        return name
    if name not in INSTRUMENTS:
        raise InvalidInput("instrument", f"unknown instrument; allowed: {sorted(INSTRUMENTS)}", name)
    return name


def make_instrument(
    name: str, *, seed: int = 0, time_scale: float = 0.0, n_slots: int = 24, options: dict | None = None
) -> Instrument:
    check_instrument_name(name)
    if name not in INSTRUMENTS:
        from sdl.table_instrument import make_table_instrument

        return make_table_instrument(name, seed, time_scale, n_slots, dict(options or {}))
    return INSTRUMENTS[name](seed, time_scale, n_slots, dict(options or {}))
