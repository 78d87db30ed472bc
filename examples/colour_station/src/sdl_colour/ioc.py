"""The simulated liquid handler and spectrometer as a caproto IOC."""

from __future__ import annotations

import numpy as np
from caproto.server import PVGroup, SubGroup, pvproperty

from sdl_colour import optics

N = len(optics.WAVELENGTHS)


class _Handler(PVGroup):
    red = pvproperty(name="RED_VOL", value=0.0, units="uL", lower_ctrl_limit=0.0, upper_ctrl_limit=optics.MAX_UL)
    yellow = pvproperty(name="YELLOW_VOL", value=0.0, units="uL", lower_ctrl_limit=0.0,
                        upper_ctrl_limit=optics.MAX_UL)
    blue = pvproperty(name="BLUE_VOL", value=0.0, units="uL", lower_ctrl_limit=0.0, upper_ctrl_limit=optics.MAX_UL)
    dispense = pvproperty(name="DISPENSE", value=0, dtype=int, doc="well number: pipette the volumes into it")
    well = pvproperty(name="WELL_RBV", value=0, dtype=int, read_only=True)

    @dispense.putter
    async def dispense(self, instance, value):
        if value:
            self.parent.wells[int(value)] = {"red": self.red.value, "yellow": self.yellow.value,
                                             "blue": self.blue.value}
            await self.well.write(int(value))
        return value


class _Spectrometer(PVGroup):
    acquire = pvproperty(name="Acquire", value=0, dtype=int, doc="1: measure the current well")
    spectrum = pvproperty(name="Spectrum", value=[1.0] * N, dtype=float, read_only=True, max_length=N,
                          doc=f"transmission at {N} wavelengths, 400..700 nm")
    integration = pvproperty(name="IntegrationTime", value=100.0, units="ms")

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            parent = self.parent
            mix = parent.wells.get(int(parent.handler.well.value), {})
            scale = np.sqrt(100.0 / max(1.0, float(self.integration.value)))
            t = optics.transmission(mix) + parent.rng.normal(0.0, optics.NOISE * scale, N)
            await self.spectrum.write(t.tolist())
        return 0


class ColourStationIOC(PVGroup):
    handler = SubGroup(_Handler, prefix="HANDLER:")
    spectrometer = SubGroup(_Spectrometer, prefix="SPEC:")

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.wells: dict[int, dict] = {}
        self.rng = np.random.default_rng(seed)
