"""The bundled real-data pools (``pool:p3ht``, ``pool:agnp``) as plug-ins: a simulated
lab whose probe reads the table value of the sample made."""

from __future__ import annotations

from sdl.plugin import BuildContext, Instrument


def pool_instrument(dataset: str, ctx: BuildContext) -> Instrument:
    from sdl.builtins.xrd import lab_devices, make_lab_plans
    from sdl.reduction import reduction_spec
    from sdl.sim_devices.lab import SimLab
    from sdl.sim_devices.pool import PoolModel

    pool = PoolModel.bundled(dataset)
    lab = SimLab(pool, time_scale=ctx.time_scale, seed=ctx.seed, n_slots=ctx.n_slots)
    best_params, best_value = pool.best()
    devices, lab = lab_devices(ctx, lab, "pool")
    inputs = list(pool.inputs)
    return Instrument(
        name=f"pool:{dataset}",
        description=f"Pool of {len(pool)} real measurements ({pool.source}); only listed samples can be made",
        space=pool.search_space(),
        objectives=[pool.objective],
        reduction=reduction_spec("scalar", field="detector_value", objective=pool.objective.name),
        plans=make_lab_plans(devices, inputs, None),
        devices=devices,
        truth=pool.value,
        optimum={"params": best_params, pool.objective.name: best_value},
        lab=lab,
        options={**dict(ctx.options), "composition_names": inputs, "temperature_name": None},
    )


def p3ht(ctx: BuildContext) -> Instrument:
    """P3HT/CNT conductivity pool (real measurements)."""
    return pool_instrument("p3ht", ctx)


def agnp(ctx: BuildContext) -> Instrument:
    """Silver-nanoparticle spectrum-loss pool (real measurements)."""
    return pool_instrument("agnp", ctx)
