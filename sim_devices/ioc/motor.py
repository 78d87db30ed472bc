"""A motor record served over Channel Access, driving an in-process :class:`SimMotor`.

The PV is a caproto ``record='motor'`` pvproperty, so every field stock
:class:`ophyd.EpicsMotor` uses exists (``.VAL .RBV .DMOV .MOVN .HLM .LLM .VELO .STOP
.EGU .DIR .HLS .LLS .OFF .SET .FOFF .ACCL .HOMF .HOMR .TDIR .SPMG .LVIO .MSTA`` ...).
What the simulator does with them:

- ``.VAL`` starts a move of the SimMotor (``|distance| / VELO`` nominal seconds x the
  lab's time scale). ``.VAL``'s control limits are ``.LLM``/``.HLM`` (ophyd refuses a
  move outside them before anything moves); a write outside them is refused by the IOC
  too and sets ``.LVIO``.
- A put to ``.VAL`` with completion completes when the move is over.
- During a move ``.DMOV`` is 0 and ``.MOVN`` 1, ``.RBV`` follows the motion at
  :attr:`MotorAxisIOC.tick_s`; ``.DMOV`` always goes 0 then 1, even for an instant move.
- ``.STOP`` (or ``.SPMG`` = Stop/Pause) stops the SimMotor where it is; ``.VAL`` is
  then set to the stopped position, as the motor record does.
- ``.VELO`` writes go to the SimMotor's velocity; ``.HLM``/``.LLM`` narrow the limits.
- ``.HOMF``/``.HOMR`` move to 0 (the simulated home); ``.SET`` (redefine position) is
  not simulated and a move in SET mode is refused.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from caproto._data import CannotExceedLimits
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble

from sdl.sim_devices.ioc._util import wait_status
from sdl.sim_devices.motor import SimMotor
from sdl.sim_devices.signals import Clock

#: .MSTA bits (motor record): DONE and HOME-switch-independent "homed".
MSTA_DONE = 1 << 1
MSTA_MOVING = 1 << 10
MSTA_HOMED = 1 << 14


class _MotorValue(PvpropertyDouble):
    """.VAL: a write outside the control limits (= LLM/HLM) is refused and sets .LVIO."""

    async def verify_value(self, value):
        try:
            return await super().verify_value(value)
        except CannotExceedLimits:
            await self.field_inst.limit_violation.write(1)
            raise


class MotorAxisIOC(PVGroup):
    """One motor record at ``prefix`` (e.g. ``SDL:STAGE:X``) over one SimMotor."""

    motor = pvproperty(value=0.0, name="", record="motor", precision=4, dtype=_MotorValue,
                       doc="simulated motor axis")

    def __init__(self, *args: Any, sim_motor: SimMotor, clock: Clock, tick_s: float = 0.02,
                 description: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sim = sim_motor
        self.clock = clock
        self.tick_s = float(tick_s)
        self.description = description or sim_motor.name
        self._move: asyncio.Task | None = None
        self._stop_requested = False

    # ------------------------------------------------------------------ startup
    @motor.startup
    async def motor(self, instance, async_lib):
        f = instance.field_inst
        lo, hi = self.sim.limits
        pos = float(self.sim.position)
        await f.description.write(self.description[:40])
        await f.engineering_units.write(self.sim.egu)
        await f.velocity.write(float(self.sim.velocity.get()))
        await f.max_velocity.write(0.0)
        await f.base_velocity.write(0.0)
        await f.seconds_to_velocity.write(0.2)
        await f.motor_step_size.write(1e-4)
        await f.user_high_limit.write(hi)
        await f.user_low_limit.write(lo)
        await f.dial_high_limit.write(hi)
        await f.dial_low_limit.write(lo)
        await f.enable_control.write(1)
        await f.limit_violation.write(0)
        await self._set_limits(lo, hi)
        await instance.write(pos, verify_value=False)
        await self._publish_position(pos)
        await f.done_moving_to_value.write(1)
        await f.motor_is_moving.write(0)
        await f.motor_status.write(MSTA_DONE | MSTA_HOMED)

    async def _set_limits(self, lo: float, hi: float) -> None:
        """.VAL control/display limits follow .LLM/.HLM (ophyd reads them as the soft limits)."""
        await self.motor.write_metadata(lower_ctrl_limit=lo, upper_ctrl_limit=hi,
                                        lower_disp_limit=lo, upper_disp_limit=hi)

    async def _publish_position(self, pos: float) -> None:
        f = self.motor.field_inst
        await f.user_readback_value.write(pos)
        await f.dial_readback_value.write(pos)
        await f.raw_readback_value.write(int(round(pos / 1e-4)))

    # ------------------------------------------------------------------ motion
    @motor.putter
    async def motor(self, instance, value):
        f = instance.field_inst
        target = float(value)
        lo, hi = f.user_low_limit.value, f.user_high_limit.value
        if f.set_use_switch.value in (1, "Set"):
            raise ValueError(f"{self.prefix}: SET mode (redefining the position) is not simulated")
        if lo != hi and not lo <= target <= hi:
            await f.limit_violation.write(1)
            raise ValueError(f"{self.prefix}: {target} outside soft limits [{lo}, {hi}]")
        try:
            self.sim.check_value(target)
        except Exception as exc:
            await f.limit_violation.write(1)
            raise ValueError(f"{self.prefix}: {exc}") from exc
        await f.limit_violation.write(0)
        await self._stop_motion()
        # As the motor record: VAL holds the target during the move, and a put with
        # completion (caput -w, pyepics wait=True) completes when the motion is done.
        await instance.write(target, verify_value=False)
        task = self._move = asyncio.ensure_future(self._run_move(target))
        await asyncio.wait([task])
        return instance.value

    async def _run_move(self, target: float) -> None:
        f = self.motor.field_inst
        start = float(self.sim.position)
        self._stop_requested = False
        await f.done_moving_to_value.write(0)
        await f.motor_is_moving.write(1)
        await f.motion_in_progress.write(1)
        await f.motor_status.write(MSTA_MOVING | MSTA_HOMED)
        await f.direction_of_travel.write(1 if target >= start else 0)
        duration = self.clock.delay(abs(target - start) / float(self.sim.velocity.get()))
        t0 = time.monotonic()
        status = self.sim.move(target, wait=False)
        try:
            while not status.done:
                frac = 1.0 if duration <= 0 else min(1.0, (time.monotonic() - t0) / duration)
                await self._publish_position(start + frac * (target - start))
                await asyncio.sleep(self.tick_s)
        finally:
            pos = float(self.sim.position)
            await self._publish_position(pos)
            if self._stop_requested:
                await self.motor.write(pos, verify_value=False)
            await f.motor_is_moving.write(0)
            await f.motion_in_progress.write(0)
            await f.motor_status.write(MSTA_DONE | MSTA_HOMED)
            await f.done_moving_to_value.write(1)

    async def _stop_motion(self) -> None:
        """Stop a move in progress (the SimMotor lands where it is) and wait for DMOV."""
        task = self._move
        if task is None or task.done():
            return
        self._stop_requested = True
        self.sim.stop()
        await asyncio.wait([task])

    @motor.fields.stop.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value:
            await ioc._stop_motion()
        return 0

    @motor.fields.stop_pause_move_go.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value in ("Stop", "Pause", 0, 1):
            await ioc._stop_motion()
        return value

    @motor.fields.velocity.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        ioc.sim.velocity.put(float(value))  # refuses <= 0 (InvalidInput -> put fails)
        return value

    @motor.fields.user_high_limit.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        await ioc._set_limits(fields.user_low_limit.value, float(value))
        await fields.dial_high_limit.write(float(value))
        return value

    @motor.fields.user_low_limit.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        await ioc._set_limits(float(value), fields.user_high_limit.value)
        await fields.dial_low_limit.write(float(value))
        return value

    @motor.fields.home_forward.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value:
            await ioc.motor.write(0.0)
        return 0

    @motor.fields.home_reverse.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value:
            await ioc.motor.write(0.0)
        return 0

    async def shutdown(self) -> None:
        await self._stop_motion()


__all__ = ["MotorAxisIOC", "wait_status"]
