"""The simulated synthesis + XRD lab (``sim-xrd``) and its reduction, as a plug-in."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from sdl.plugin import Arg, BuildContext, Instrument
from sdl.space import Objective

MAX_EXPOSURE_S = 3600.0
Exposure = Annotated[float, Arg(0, MAX_EXPOSURE_S, units="s", description="detector exposure (s)", open_lower=True)]
Repeats = Annotated[int, Arg(1, 20, description="number of exposures of the one sample")]


def reduce_target_phase(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    """XRD pattern -> target-phase figure of merit, averaged over the run's exposures."""
    from sdl.xrd import FOM_NAME, target_phase_fom

    two_theta = np.asarray(params["two_theta"], dtype=float)
    key = params.get("field", "detector_spectrum")
    vals = [target_phase_fom(two_theta, np.asarray(ev["data"][key], dtype=float), params) for ev in events]
    return {params.get("objective", FOM_NAME): float(np.mean(vals))}


def lab_devices(ctx: BuildContext, lab, detector: str):
    """The devices of a make-load-measure lab: the in-process doubles of ``lab``, or over
    EPICS when ``ctx.options['epics_prefix']`` is given (a served double or the real lab)."""
    from sdl.plans.autonomous import LabDevices

    prefix = ctx.options.get("epics_prefix")
    if not prefix:
        return LabDevices.from_lab(lab), lab
    from sdl.epics_lab import epics_lab_devices

    return epics_lab_devices(prefix, detector=detector, connect=bool(ctx.options.get("epics_connect", True)),
                             timeout=float(ctx.options.get("epics_timeout", 5.0))), None


def make_lab_plans(devices, composition_names: list[str], temperature_name: str | None):
    """``autonomous_step`` and ``exposure_series`` for a make-load-measure lab (robot,
    changer, detector): the point's composition and temperature are plan arguments."""
    from sdl.plans.autonomous import autonomous_step

    def _args(point: dict) -> tuple[list[float], float]:
        return ([float(point[n]) for n in composition_names],
                float(point[temperature_name]) if temperature_name else 0.0)

    def _signature(fn):
        # the point's parameters are keyword arguments of the plan (its signature says so)
        import inspect
        import keyword

        names = composition_names + ([temperature_name] if temperature_name else [])
        named = [n for n in names if n.isidentifier() and not keyword.iskeyword(n)]
        params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=float) for n in named]
        # names that cannot be Python arguments ('yield', 'd1 (mM)') come through **point
        rest = [p for p in inspect.signature(fn).parameters.values() if p.name != "point" or len(named) < len(names)]
        fn.__signature__ = inspect.Signature(params + rest)
        return fn

    @_signature
    def step(*, slot: int = 1, sample_id: str = "", exposure: Exposure = 1.0, md: dict | None = None, **point):
        """Make a sample at the point (synthesis robot), load it, take one exposure, put it back."""
        comp, temp = _args(point)
        return (yield from autonomous_step(devices, comp, temp, slot=slot, sample_id=sample_id,
                                           exposure=exposure, md=md))

    @_signature
    def series(*, slot: int = 1, sample_id: str = "", exposure: Exposure = 1.0, repeats: Repeats = 3,
               md: dict | None = None, **point):
        """Make a sample at the point, load it, take `repeats` exposures, put it back (values averaged)."""
        comp, temp = _args(point)
        return (yield from autonomous_step(devices, comp, temp, slot=slot, sample_id=sample_id, exposure=exposure,
                                           repeats=repeats, md={"plan_name": "exposure_series", "repeats": repeats,
                                                                **(md or {})}))

    return {"autonomous_step": step, "exposure_series": series}


def sim_xrd(ctx: BuildContext) -> Instrument:
    """Simulated synthesis robot, sample changer and XRD beamline over a hidden materials model."""
    from sdl.reduction import reduction_spec
    from sdl.sim_devices.lab import SimLab
    from sdl.sim_devices.materials import MaterialsModel

    options = ctx.options
    model_kwargs = {}
    if "precursors" in options:
        model_kwargs["precursors"] = tuple(options["precursors"])
    model = MaterialsModel(seed=int(options.get("model_seed", 0)), **model_kwargs)
    lab = SimLab(model, time_scale=ctx.time_scale, seed=ctx.seed, n_slots=ctx.n_slots,
                 failure_region=options.get("failure_region"))  # sdl.sim_devices.failures
    precursors = list(model.precursors)
    params = {**model.reduction_params(), "two_theta": [float(x) for x in model.two_theta],
              "field": "detector_spectrum"}
    fom = params.get("objective", "fom")

    def truth(p: dict) -> float:
        return float(model.figure_of_merit([p[n] for n in precursors], p["temperature"]))

    devices, lab = lab_devices(ctx, lab, "xrd")
    return Instrument(
        name="sim-xrd",
        description="Simulated synthesis robot, sample changer and XRD beamline over a hidden materials model",
        space=model.search_space(),
        objectives=[Objective(name=fom, direction="maximize")],
        reduction=reduction_spec("xrd_target_phase", **params),
        plans=make_lab_plans(devices, precursors, "temperature"),
        devices=devices,
        truth=truth,
        optimum=model.optimum(),
        lab=lab,
        options={**dict(options), "composition_names": precursors, "temperature_name": "temperature"},
    )
