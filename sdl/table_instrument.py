"""``pool:<path.csv>``: any CSV table as a simulated pool instrument for campaigns.

The campaign spec names the file and the objective column::

    {"instrument": "pool:/data/screen.csv",
     "instrument_options": {"objective": "yield:max", "categorical": ["equiv"]}}

The simulated lab (robot, changer, a probe that reads the table) measures one value per
sample, so a campaign on a table has one objective; several objectives of a table run
through ``sdl bench --pool`` or :func:`sdl.agents.benchmarking.run_pool_campaign`.
A service that lets remote users name tables should set ``SDL_POOL_DIRS`` (the folders
tables may come from). Categorical inputs travel to the robot as their codes (the index of the label) and come
back as labels in every stored point.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdl.errors import InvalidInput
from sdl.instruments import Instrument
from sdl.models import Suggestion
from sdl.plans.autonomous import LabDevices, autonomous_step
from sdl.reduction import reduction_spec

PREFIX = "pool:"


def is_table_instrument(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX) and name[len(PREFIX):].lower().endswith(".csv")


def check_table_path(path: str) -> str:
    """With ``SDL_POOL_DIRS`` set (folders, ``os.pathsep``-separated), a table must lie in one
    of them: a service must not let remote users read any CSV of the server by its path."""
    import os
    from pathlib import Path

    allowed = [Path(d).resolve() for d in os.environ.get("SDL_POOL_DIRS", "").split(os.pathsep) if d.strip()]
    if allowed:
        p = Path(path).resolve()
        if not any(p.is_relative_to(d) for d in allowed):
            raise InvalidInput("instrument", "a table pool must lie in one of the folders of SDL_POOL_DIRS", path)
    return path


@dataclass
class TableInstrument(Instrument):
    """A pool instrument whose points may hold category labels (sent to the robot as codes)."""

    pool: object = None

    def step_plan(self, suggestion: Suggestion, *, slot: int, sample_id: str, exposure: float, md: dict):
        params = self.space.validate_point(suggestion.params)
        row = self.pool.index_of(params)  # type: ignore[attr-defined]
        composition = [float(v) for v in self.pool.points[row]]  # type: ignore[attr-defined]
        md = {**md, "reduction": self.reduction, "instrument": self.name, "params": params,
              "suggestion_id": suggestion.id}
        return autonomous_step(self.devices, composition, 0.0, slot=slot, sample_id=sample_id, exposure=exposure,
                               md=md)


def make_table_instrument(name: str, seed: int, time_scale: float, n_slots: int, options: dict) -> Instrument:
    from sdl.pools import PoolSpec
    from sdl.sim_devices.lab import SimLab

    path = check_table_path(name[len(PREFIX):])
    unknown = set(options) - {"objective", "categorical", "input_columns"}
    if unknown:
        raise InvalidInput("instrument_options", f"unknown option(s) {sorted(unknown)} for a table pool; allowed: "
                           "objective, categorical, input_columns")
    objective = options.get("objective")
    if isinstance(objective, list):
        if len(objective) != 1:
            raise InvalidInput("instrument_options.objective", "a campaign on a table measures one objective "
                               "(several: sdl bench --pool, or run_pool_campaign)", objective)
        objective = objective[0]
    if not isinstance(objective, str):
        raise InvalidInput("instrument_options.objective", "name the objective column: 'COLUMN[:min|max]'", objective)
    spec = PoolSpec(path=path, objectives=(objective,), categorical=tuple(options.get("categorical", ())),
                    input_columns=tuple(options["input_columns"]) if options.get("input_columns") else None)
    pool = spec.load()
    lab = SimLab(pool, time_scale=time_scale, seed=seed, n_slots=n_slots)
    best_params, best_value = pool.best()
    return TableInstrument(
        name=name,
        description=f"Pool of {len(pool)} measured points ({pool.source}); only listed samples can be made",
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
        pool=pool,
    )
