"""The simulated lab as three stations, each a plug-in instrument registered through
sdl's entry points like any third party's: ``sim-synth`` (a synthesis robot that makes a
sample at the point), ``sim-beamline`` (a sample changer and an XRD detector: the
expensive measurement) and ``sim-uvvis`` (a UV-vis spectrometer: a cheap, noisier
measurement correlated with the beamline's figure of merit).

All three share the hidden materials model (``model_seed``), so a sample made at the
synthesis station has one truth whichever station measures it. A station receives a
sample from transit (the workflow engine moves it and records the move); the plan
takes it from the station's input position, measures it and hands it back.
"""

from __future__ import annotations

from typing import Annotated, Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import Status

from sdl.plugin import Arg, BuildContext, Instrument
from sdl.space import Objective

Exposure = Annotated[float, Arg(0, 600, units="s", description="detector exposure (s)", open_lower=True)]
Integration = Annotated[float, Arg(0, 60, units="s", description="spectrometer integration time (s)",
                                   open_lower=True)]
UVVIS_FIELD = "uvvis_score"


def _model(ctx: BuildContext):
    from sdl.sim_devices.materials import MaterialsModel

    return MaterialsModel(seed=int(ctx.options.get("model_seed", 0)))


def _point_signature(names: list[str]):
    """The point's parameters become keyword arguments of the plan (its schema says so)."""
    import inspect

    def wrap(fn):
        params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=float) for n in names]
        rest = [p for p in inspect.signature(fn).parameters.values() if p.name != "point"]
        fn.__signature__ = inspect.Signature(params + rest)
        return fn

    return wrap


def _hand_off(lab, sample_id: str) -> None:
    """The sample leaves the station (to transit): forget it in the station's own registry."""
    reg = lab.registry
    with reg.lock:
        rec = reg.records.pop(sample_id, None)
        if rec is not None and rec.slot is not None and reg.slots.get(rec.slot) == sample_id:
            del reg.slots[rec.slot]
        if reg.beam == sample_id:
            reg.beam = None


def _receive(lab, sample_id: str, point: dict, slot: int = 1) -> None:
    """A sample arrives from transit at the station's input ``slot``."""
    comp = [float(point[p]) for p in lab.precursors]
    rec = lab.new_record(sample_id, comp, float(point["temperature"]))
    with lab.registry.lock:
        _hand_off(lab, sample_id)  # a retry after an interrupted attempt
        lab.registry.slots.pop(slot, None)
        lab.registry.records[sample_id] = rec
        lab.registry.move(sample_id, "rack", slot)


# ---------------------------------------------------------------- synthesis
def sim_synth(ctx: BuildContext) -> Instrument:
    """Synthesis robot: makes the sample at the point (mix, anneal) and reads back what it made."""
    from sdl.plans.sample_handling import synthesize
    from sdl.reduction import reduction_spec
    from sdl.sim_devices.lab import SimLab

    model = _model(ctx)
    lab = SimLab(model, time_scale=ctx.time_scale, seed=ctx.seed, n_slots=4)
    names = list(model.precursors)

    @_point_signature(names + ["temperature"])
    def make(*, sample_id: str = "", md: dict | None = None, **point):
        """Make one sample at the point; the run records the robot's settings (what made it)."""
        comp = [float(point[n]) for n in names]

        @bpp.run_decorator(md={"plan_name": "make", "sample_id": sample_id, "composition": comp,
                               "temperature": float(point["temperature"]), **(md or {})})
        def run():
            _hand_off(lab, sample_id)
            yield from synthesize(lab.robot, comp, float(point["temperature"]), 1, sample_id)
            yield from bps.trigger_and_read([lab.robot.temperature, lab.robot.composition])
            _hand_off(lab, sample_id)  # the sample goes to the hotel (the engine records where)

        return (yield from run())

    return Instrument(
        name="sim-synth",
        description="Simulated synthesis robot: makes one sample at the point (a station of the split lab)",
        space=model.search_space(),
        objectives=[Objective(name="temperature_set", direction="maximize")],
        reduction=reduction_spec("readings", objectives=[{"name": "temperature_set", "field": "robot_temperature",
                                                          "op": "mean"}]),
        plans={"make": make}, devices=lab.devices(), lab=lab,
        options={**dict(ctx.options), "station": "synthesis"},
    )


# ---------------------------------------------------------------- beamline
def sim_beamline(ctx: BuildContext) -> Instrument:
    """XRD beamline: loads a received sample, exposes it, returns it (the expensive measurement)."""
    from sdl.plans.measure import acquire, close_shutter
    from sdl.plans.sample_handling import load, unload
    from sdl.reduction import reduction_spec
    from sdl.sim_devices.lab import SimLab

    model = _model(ctx)
    lab = SimLab(model, time_scale=ctx.time_scale, seed=ctx.seed, n_slots=4)
    params = {**model.reduction_params(), "two_theta": [float(x) for x in model.two_theta],
              "field": "detector_spectrum"}
    fom = params.get("objective", "fom")
    names = list(model.precursors) + ["temperature"]

    @_point_signature(names)
    def xrd(*, sample_id: str = "", exposure: Exposure = 1.0, md: dict | None = None, **point):
        """Load the sample, one XRD exposure, unload it."""

        def body():
            _receive(lab, sample_id, point)
            yield from load(lab.changer, 1)
            yield from acquire(lab.detector, lab.shutter, [lab.ring_current], exposure=exposure)
            yield from unload(lab.changer, 1)

        def cleanup():
            yield from close_shutter(lab.shutter)
            _hand_off(lab, sample_id)

        @bpp.run_decorator(md={"plan_name": "xrd", "sample_id": sample_id, "exposure": exposure, **(md or {})})
        def run():
            yield from bpp.finalize_wrapper(body(), cleanup())

        return (yield from run())

    def truth(p: dict) -> float:
        return float(model.figure_of_merit([p[n] for n in model.precursors], p["temperature"]))

    del names
    return Instrument(
        name="sim-beamline",
        description="Simulated XRD beamline station: sample changer, shutter, detector (measures a received sample)",
        space=model.search_space(),
        objectives=[Objective(name=fom, direction="maximize")],
        reduction=reduction_spec("xrd_target_phase", **params),
        plans={"xrd": xrd}, devices=lab.devices(), truth=truth, optimum=model.optimum(), lab=lab,
        options={**dict(ctx.options), "station": "beamline"},
    )


# ---------------------------------------------------------------- UV-vis
class SimUVVis(Device):
    """A UV-vis spectrometer over the materials model: its score is the sample's figure of
    merit seen through a different physics (a second phase's absorbance mixes in) plus
    noise: cheap and correlated, not the same."""

    score = Cpt(Signal, value=0.0, kind="hinted")
    integration = Cpt(Signal, value=1.0, kind="config")

    def __init__(self, model, rng: np.random.Generator, *, noise: float = 0.05, name: str = "uvvis", **kw):
        super().__init__(name=name, **kw)
        self._model, self._rng, self._noise = model, rng, noise
        self.sample: tuple[list[float], float] | None = None

    def trigger(self) -> Status:
        st = Status(obj=self)
        if self.sample is None:
            self.score.put(float("nan"))
        else:
            comp, temp = self.sample
            fom = self._model.figure_of_merit(comp, temp)
            frac = self._model.phase_fractions(comp, temp)
            other = frac.get("amorphous", 0.0)
            noise = self._noise / max(float(self.integration.get()), 1e-3) ** 0.5
            self.score.put(float(0.8 * fom + 0.2 * (1.0 - other) + self._rng.normal(0.0, noise)))
        st.set_finished()
        return st


def sim_uvvis(ctx: BuildContext) -> Instrument:
    """UV-vis spectrometer station: a cheap score correlated with the beamline's figure of merit."""
    from sdl.reduction import reduction_spec

    model = _model(ctx)
    rng = np.random.default_rng(ctx.seed + 7)
    spec = SimUVVis(model, rng, noise=float(ctx.options.get("uvvis_noise", 0.05)), name="uvvis")
    names = list(model.precursors)

    @_point_signature(names + ["temperature"])
    def uvvis(*, sample_id: str = "", integration: Integration = 1.0, md: dict | None = None, **point):
        """Put the sample in the cuvette holder, one spectrum, take it out."""

        @bpp.run_decorator(md={"plan_name": "uvvis", "sample_id": sample_id, **(md or {})})
        def run():
            spec.sample = ([float(point[n]) for n in names], float(point["temperature"]))
            try:
                yield from bps.mv(spec.integration, float(integration))
                yield from bps.trigger_and_read([spec])
            finally:
                spec.sample = None

        return (yield from run())

    return Instrument(
        name="sim-uvvis",
        description="Simulated UV-vis spectrometer station: a cheap score correlated with the XRD figure of merit",
        space=model.search_space(),
        objectives=[Objective(name=UVVIS_FIELD, direction="maximize")],
        reduction=reduction_spec("scalar", field="uvvis_score", objective=UVVIS_FIELD),
        plans={"uvvis": uvvis}, devices={"uvvis": spec},
        options={**dict(ctx.options), "station": "uvvis"},
    )


def three_station_workflow(**overrides: Any) -> dict:
    """make (synthesis) -> xrd (beamline) and uvvis (spectrometer) -> reduce: the example workflow."""
    wf = {
        "tasks": [
            {"name": "make", "kind": "make", "instrument": "sim-synth"},
            {"name": "xrd", "kind": "measure", "instrument": "sim-beamline", "after": ["make"]},
            {"name": "uvvis", "kind": "measure", "instrument": "sim-uvvis", "after": ["make"]},
            {"name": "reduce", "kind": "reduce", "after": ["xrd", "uvvis"],
             "objectives": {"fom": "xrd.fom", "uvvis_score": "uvvis.uvvis_score"}},
        ],
    }
    wf.update(overrides)
    return wf


def cascade_workflow(**overrides: Any) -> dict:
    """make -> uvvis (cheap, every sample) -> xrd (beamline, gated: only samples the cascade sends on) -> reduce."""
    wf = {
        "tasks": [
            {"name": "make", "kind": "make", "instrument": "sim-synth"},
            {"name": "uvvis", "kind": "measure", "instrument": "sim-uvvis", "after": ["make"]},
            {"name": "xrd", "kind": "measure", "instrument": "sim-beamline", "after": ["uvvis"], "gate": True},
            {"name": "reduce", "kind": "reduce", "after": ["uvvis", "xrd"],
             "objectives": {"fom": "xrd.fom", "uvvis_score": "uvvis.uvvis_score"}},
        ],
    }
    wf.update(overrides)
    return wf
