"""The simulated mirror and camera as a caproto IOC (served by ``sdl ioc --instrument
mirror-alignment``): PITCH/BEND setpoints with readbacks and control limits, and an
area-detector-style camera (CAM:Acquire with put completion, CAM:ArrayData)."""

from __future__ import annotations

import numpy as np
from caproto.server import PVGroup, pvproperty

from sdl_alignment import model


class AlignmentIOC(PVGroup):
    pitch = pvproperty(name="PITCH", value=3.0, dtype=float, units="mrad", lower_ctrl_limit=model.PITCH[0],
                       upper_ctrl_limit=model.PITCH[1], doc="mirror pitch setpoint")
    pitch_rbv = pvproperty(name="PITCH_RBV", value=3.0, dtype=float, read_only=True, units="mrad")
    bend = pvproperty(name="BEND", value=0.0, dtype=float, lower_ctrl_limit=model.BEND[0],
                      upper_ctrl_limit=model.BEND[1], doc="mirror bender setpoint")
    bend_rbv = pvproperty(name="BEND_RBV", value=0.0, dtype=float, read_only=True)
    acquire = pvproperty(name="CAM:Acquire", value=0, dtype=int, doc="1: take a frame (put completes when done)")
    image = pvproperty(name="CAM:ArrayData", value=[0.0] * (model.N * model.N), dtype=float, read_only=True,
                       max_length=model.N * model.N, doc=f"detector frame, {model.N}x{model.N}, row-major")
    size_x = pvproperty(name="CAM:ArraySize0_RBV", value=model.N, dtype=int, read_only=True)
    size_y = pvproperty(name="CAM:ArraySize1_RBV", value=model.N, dtype=int, read_only=True)

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(seed)

    @pitch.putter
    async def pitch(self, instance, value):
        value = float(np.clip(value, *model.PITCH))
        await self.pitch_rbv.write(value)
        return value

    @bend.putter
    async def bend(self, instance, value):
        value = float(np.clip(value, *model.BEND))
        await self.bend_rbv.write(value)
        return value

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            frame = model.image(self.pitch_rbv.value, self.bend_rbv.value, self._rng)
            await self.image.write(frame.ravel().tolist())
        return 0
