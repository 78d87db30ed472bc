"""``pool:<path.csv>``: any CSV table as a simulated pool instrument for campaigns.

Registered as the instrument family ``pool:*.csv`` (an entry point in sdl's pyproject.toml,
the way a third party registers one): the registry hands the factory the name asked for.
The campaign spec names the file and the objective column::

    {"instrument": "pool:/data/screen.csv",
     "instrument_options": {"objective": "yield:max", "categorical": ["equiv"]}}

The simulated lab (robot, changer, a probe that reads the table) measures one value per
sample, so a campaign on a table has one objective; several objectives of a table run
through ``sdl bench --pool`` or :func:`sdl.agents.benchmarking.run_pool_campaign`.
Categorical inputs travel to the robot as their codes (the index of the label) and come
back as labels in every stored point. A service that lets remote users name tables
should set ``SDL_POOL_DIRS`` (the folders tables may come from).
"""

from __future__ import annotations

from pathlib import Path

import functools
import inspect

from sdl.errors import InvalidInput
from sdl.plugin import BuildContext, Instrument
from sdl.reduction import reduction_spec

PREFIX = "pool:"
OPTIONS = ("objective", "categorical", "input_columns", "ignore_columns")


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


def _coded(plan, pool, inputs: list[str]):
    """``plan`` with the point's labels replaced by the pool's codes (what the robot takes)."""

    @functools.wraps(plan)
    def wrapped(**kwargs):
        point = {n: kwargs[n] for n in inputs}
        codes = pool.points[pool.index_of(point)]
        kwargs.update({n: float(c) for n, c in zip(inputs, codes)})
        return (yield from plan(**kwargs))

    wrapped.__signature__ = inspect.signature(plan)
    return wrapped


def table_pool(ctx: BuildContext) -> Instrument:
    """Any CSV table (``pool:<path.csv>``) as a pool of samples that can be made and measured."""
    from sdl.builtins.xrd import lab_devices, make_lab_plans
    from sdl.pools import PoolSpec
    from sdl.sim_devices.lab import SimLab

    name = ctx.name
    if not is_table_instrument(name):
        raise InvalidInput("instrument", "a table pool is named 'pool:<path.csv>'", name)
    path = check_table_path(name[len(PREFIX):])  # inside SDL_POOL_DIRS before anything is said of the file
    if not Path(path).is_file():
        raise InvalidInput("instrument", "no such table file", path)
    options = dict(ctx.options)
    unknown = set(options) - set(OPTIONS) - {"epics_prefix", "epics_connect", "epics_timeout"}
    if unknown:
        raise InvalidInput("instrument_options", f"unknown option(s) {sorted(unknown)} for a table pool; allowed: "
                           f"{', '.join(OPTIONS)}")
    objective = options.get("objective")
    if isinstance(objective, list):
        if len(objective) != 1:
            raise InvalidInput("instrument_options.objective", "a campaign on a table measures one objective "
                               "(several: sdl bench --pool, or run_pool_campaign)", objective)
        objective = objective[0]
    if not isinstance(objective, str):
        raise InvalidInput("instrument_options.objective", "name the objective column: 'COLUMN[:min|max]' "
                           "(--objective on the command line; the instrument's options in service settings)", objective)
    for key in ("categorical", "input_columns", "ignore_columns"):
        value = options.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(c, str) for c in value)):
            raise InvalidInput(f"instrument_options.{key}", "a list of column names", value)
    spec = PoolSpec(path=path, objectives=(objective,),
                    categorical=tuple(options.get("categorical") or ()),
                    input_columns=tuple(options["input_columns"]) if options.get("input_columns") else None,
                    ignore_columns=tuple(options.get("ignore_columns") or ()))
    pool = spec.load()
    lab = SimLab(pool, time_scale=ctx.time_scale, seed=ctx.seed, n_slots=ctx.n_slots)
    best_params, best_value = pool.best()
    devices, lab = lab_devices(ctx, lab, "pool")
    inputs = list(pool.inputs)
    plans = {k: _coded(plan, pool, inputs) for k, plan in make_lab_plans(devices, inputs, None).items()}
    return Instrument(
        name=name,
        description=f"Pool of {len(pool)} measured points ({pool.source}); only listed samples can be made",
        space=pool.search_space(),
        objectives=[pool.objective],
        reduction=reduction_spec("scalar", field="detector_value", objective=pool.objective.name),
        plans=plans,
        devices=devices,
        truth=pool.value,
        optimum={"params": best_params, pool.objective.name: best_value},
        lab=lab,
        options={**options, "composition_names": inputs, "temperature_name": None},
    )
