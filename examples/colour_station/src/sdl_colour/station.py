"""The ``colour-station`` instrument: a liquid handler and a spectrometer.

The dye volumes are arguments of the plan (the handler pipettes them; there is no
motor to move), the well comes from sdl's sample slot, the integration time is an
option of the plan. With ``options={"epics_prefix": P}`` the devices are EPICS
devices on the PVs the double serves (``sdl ioc --instrument colour-station``).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Signal
from ophyd.status import Status

from sdl.errors import DeviceFault
from sdl.plugin import Arg, BuildContext, Instrument, PluginError
from sdl.reduction import reduction_spec
from sdl.space import Objective, RangeParameter, SearchSpace
from sdl_colour import optics

Volume = Annotated[float, Arg(0, optics.MAX_UL, units="uL")]
Integration = Annotated[float, Arg(1, 1000, units="ms", description="spectrometer integration time (ms)")]
N_WELLS = 96


class SimHandler(Device):
    """In-process liquid handler: set the three volumes, then `dispense` into a well."""

    red = Cpt(Signal, value=0.0)
    yellow = Cpt(Signal, value=0.0)
    blue = Cpt(Signal, value=0.0)
    dispense = Cpt(Signal, value=0, kind="omitted")
    well = Cpt(Signal, value=0)

    def __init__(self, *args: Any, wells: dict, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.wells = wells
        self.dispense.subscribe(self._dispense, run=False)

    def _dispense(self, value, **kw):
        if value:
            w = int(value)
            if not 1 <= w <= N_WELLS:
                raise DeviceFault(self.name, f"no well {w}; wells 1..{N_WELLS}")
            self.wells[w] = {c: float(getattr(self, c).get()) for c in ("red", "yellow", "blue")}
            self.well.put(w)


class SimSpectrometer(Device):
    """In-process UV-vis spectrometer: reads the transmission of the handler's last well."""

    spectrum = Cpt(Signal, value=np.ones(len(optics.WAVELENGTHS)), kind="hinted")
    integration_ms = Cpt(Signal, value=100.0, kind="config")

    def __init__(self, *args: Any, handler: SimHandler, seed: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._handler = handler
        self._rng = np.random.default_rng(seed)

    def trigger(self):
        mix = self._handler.wells.get(int(self._handler.well.get()), {})
        scale = np.sqrt(100.0 / float(self.integration_ms.get()))  # longer integration, less noise
        t = optics.transmission(mix) + self._rng.normal(0.0, optics.NOISE * scale, len(optics.WAVELENGTHS))
        self.spectrum.put(t)
        st = Status(self)
        st.set_finished()
        return st


class EpicsHandler(Device):
    red = Cpt(EpicsSignal, "RED_VOL")
    yellow = Cpt(EpicsSignal, "YELLOW_VOL")
    blue = Cpt(EpicsSignal, "BLUE_VOL")
    dispense = Cpt(EpicsSignal, "DISPENSE", put_complete=True, kind="omitted")
    well = Cpt(EpicsSignalRO, "WELL_RBV")


class EpicsSpectrometer(Device):
    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind="omitted")
    spectrum = Cpt(EpicsSignalRO, "Spectrum", kind="hinted")
    integration_ms = Cpt(EpicsSignal, "IntegrationTime", kind="config")

    def trigger(self):
        return self.acquire.set(1)


def build(ctx: BuildContext) -> Instrument:
    """Liquid handler (three dyes) + UV-vis spectrometer: match a target colour."""
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    prefix = ctx.options.get("epics_prefix")
    if prefix:
        handler = EpicsHandler(prefix + "HANDLER:", name="handler")
        spectrometer = EpicsSpectrometer(prefix + "SPEC:", name="spectrometer")
        for dev in (handler, spectrometer):
            try:
                dev.wait_for_connection(timeout=float(ctx.options.get("epics_timeout", 5.0)))
            except Exception as exc:  # noqa: BLE001 - named
                raise PluginError("colour-station", "options.epics_prefix",
                                  f"{dev.name} at {prefix!r} did not connect ({type(exc).__name__})") from None
    else:
        handler = SimHandler(name="handler", wells={})
        spectrometer = SimSpectrometer(name="spectrometer", handler=handler, seed=ctx.seed)

    def mix_and_measure(red: Volume, yellow: Volume, blue: Volume, *, slot: int = 1,
                        integration_ms: Integration = 100.0, md: dict | None = None):
        """Pipette the three dyes into a well (topped up with water) and measure its transmission."""
        well = (int(slot) - 1) % N_WELLS + 1

        @bpp.run_decorator(md={"plan_name": "mix_and_measure", "well": well, **(md or {})})
        def run():
            yield from bps.mv(handler.red, red, handler.yellow, yellow, handler.blue, blue)
            yield from bps.mv(handler.dispense, well)
            yield from bps.mv(spectrometer.integration_ms, integration_ms)
            yield from bps.trigger_and_read([spectrometer])

        return (yield from run())

    def simulator(pv_prefix: str, sctx: BuildContext):
        from sdl_colour.ioc import ColourStationIOC

        return ColourStationIOC(prefix=pv_prefix, seed=sctx.seed)

    return Instrument(
        name="colour-station",
        description="Liquid handler (red, yellow, blue dyes) + UV-vis spectrometer: match a target colour",
        space=SearchSpace(parameters=[RangeParameter(name=c, lower=0.0, upper=optics.MAX_UL, units="uL")
                                      for c in ("red", "yellow", "blue")]),
        objectives=[Objective(name="colour_distance", direction="minimize")],
        reduction=reduction_spec("spectrum_match", target=optics.target_spectrum(), field="spectrometer_spectrum",
                                 objective="colour_distance"),
        plans={"mix_and_measure": mix_and_measure},
        devices={"handler": handler, "spectrometer": spectrometer},
        truth=optics.distance,
        optimum={"params": dict(optics.TARGET), "colour_distance": 0.0},
        simulator=simulator,
    )
