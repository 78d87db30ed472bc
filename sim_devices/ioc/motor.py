"""A motor record served over Channel Access, driving an in-process :class:`SimMotor`.

The PV is a caproto ``record='motor'`` pvproperty, so every field of the motor record
exists; the fields below follow the record's documented sequences (motor module R7-3,
``motorRecord.html``; field by field in ``docs/motor-record.md``):

- ``.VAL`` write: ``.VAL .DVAL .RVAL`` posted, then ``.DMOV`` 0, then (if the motor
  has to go anywhere) ``.MOVN`` 1, ``.MSTA`` MOVING, ``.TDIR``; ``.RBV`` follows the
  motion every :attr:`MotorAxisIOC.tick_s`; at the end ``.RBV`` final, ``.MOVN`` 0,
  ``.MSTA`` DONE, ``.RCNT``/``.MISS``/``.DIFF``, and ``.DMOV`` 1 last. A put with
  completion (pyepics ``wait=True``, ophyd-async) completes after that ``.DMOV`` 1.
- A move of zero length (to where the motor is, within ``.MRES``): ``.DMOV`` still
  pulses 1/0/1 ("guaranteed ... even if no motion actually occurs"); ``.MOVN`` stays 0.
- A new ``.VAL`` while moving (``.NTM`` YES): the motor stops and goes to the new target;
  ``.DMOV`` stays 0 until the last target is reached (one 0 -> 1 per complete motion).
- ``.STOP`` 1: reset to 0 at once; the motor stops, ``.VAL`` = ``.RBV``, ``.DMOV`` 1.
- ``.SPMG``: Stop stops as ``.STOP`` and keeps the motor still (a ``.VAL`` write then
  resets ``.VAL`` to ``.RBV`` with a ``.DMOV`` pulse); Pause stops but keeps the target,
  which is reached after Go/Move (``.DMOV`` stays 0 meanwhile); Move goes back to Pause
  when a motion completes.
- Retries (``.RTRY .RDBD .RCNT .MISS``): the simulated axis lands exactly, so no retry
  is needed: ``.RCNT`` 0 and ``.MISS`` 0 after every motion.
- ``.VELO`` writes go to the SimMotor's velocity; ``.HLM``/``.LLM`` narrow the limits
  (``.VAL``'s control limits follow them, a write outside is refused and sets ``.LVIO``).
- ``.HOMF``/``.HOMR`` move to 0 (the simulated home, ``.MSTA`` HOMED, ``.ATHM``) and
  reset to 0 at the end. ``.SET`` (redefine position) is not simulated: a move in SET
  mode is refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from caproto import SkipWrite
from caproto._data import CannotExceedLimits
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble

from sdl.sim_devices.ioc._util import same, wait_status
from sdl.sim_devices.motor import SimMotor
from sdl.sim_devices.signals import Clock

#: .MSTA bits (motor record, bit 0 first): DIRECTION, DONE, MOVING, HOMED.
MSTA_DIRECTION = 1 << 0
MSTA_DONE = 1 << 1
MSTA_MOVING = 1 << 10
MSTA_HOMED = 1 << 14
#: .SPMG choices
SPMG_STRINGS = ("Stop", "Pause", "Move", "Go")
#: .MRES of the simulated axes (EGU per step): moves shorter than a step are null moves.
STEP_SIZE = 1e-4


def spmg_name(value: Any) -> str:
    """The .SPMG choice as its name, whether caproto holds the index or the string."""
    if isinstance(value, str):
        return value
    return SPMG_STRINGS[int(value)]


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
        #: the complete motion in progress (DMOV 0 ... DMOV 1), retargets included
        self._motion: asyncio.Task | None = None
        self._target = float(sim_motor.position)
        self._stop_requested = False
        self._homing = False
        self._wake: asyncio.Event | None = None
        self._leg: object | None = None
        #: complete motions (DMOV 0 -> 1), for tests: one per motion, never two
        self.motions_completed = 0

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
        await f.motor_step_size.write(STEP_SIZE)
        await f.retry_deadband.write(STEP_SIZE)
        await f.user_high_limit.write(hi)
        await f.user_low_limit.write(lo)
        await f.dial_high_limit.write(hi)
        await f.dial_low_limit.write(lo)
        await f.enable_control.write(1)
        await f.limit_violation.write(0)
        await self._set_limits(lo, hi)
        await instance.write(pos, verify_value=False)
        await self._post_drive(pos)
        await self._publish_position(pos)
        await f.done_moving_to_value.write(1)
        await f.motor_is_moving.write(0)
        await f.motor_status.write(MSTA_DONE | MSTA_HOMED)

    async def _set_limits(self, lo: float, hi: float) -> None:
        """.VAL control/display limits follow .LLM/.HLM (ophyd reads them as the soft limits)."""
        await self.motor.write_metadata(lower_ctrl_limit=lo, upper_ctrl_limit=hi,
                                        lower_disp_limit=lo, upper_disp_limit=hi)

    # ------------------------------------------------------------------ posting
    @staticmethod
    async def _set(field: Any, value: Any) -> None:
        """Write a field only when its value changes (a real record posts on change)."""
        if not same(field.value, value):
            await field.write(value)

    async def _publish_position(self, pos: float) -> None:
        f = self.motor.field_inst
        await self._set(f.user_readback_value, pos)
        await self._set(f.dial_readback_value, pos)
        await self._set(f.raw_readback_value, int(round(pos / STEP_SIZE)))

    async def _post_drive(self, target: float) -> None:
        f = self.motor.field_inst
        await self._set(f.dial_desired_value, target)
        await self._set(f.raw_desired_value, int(round(target / STEP_SIZE)))

    def _spmg(self) -> str:
        return spmg_name(self.motor.field_inst.stop_pause_move_go.value)

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ motion
    @motor.putter
    async def motor(self, instance, value):
        f = instance.field_inst
        target = float(value)
        lo, hi = f.user_low_limit.value, f.user_high_limit.value
        if f.set_use_switch.value in (1, "Set"):
            raise ValueError(f"{self.prefix}: SET mode (redefining the position) is not simulated")
        if not math.isfinite(target) or (lo != hi and not lo <= target <= hi):
            await f.limit_violation.write(1)
            raise ValueError(f"{self.prefix}: {target} outside soft limits [{lo}, {hi}]")
        try:
            self.sim.check_value(target)
        except Exception as exc:
            await f.limit_violation.write(1)
            raise ValueError(f"{self.prefix}: {exc}") from exc
        await self._set(f.limit_violation, 0)
        if self._spmg() == "Stop":
            # The record keeps the motor still and VAL = RBV; DMOV still pulses (a move was asked).
            pos = float(self.sim.position)
            await instance.write(pos, verify_value=False)
            await self._post_drive(pos)
            await f.done_moving_to_value.write(0)
            await f.done_moving_to_value.write(1)
            return SkipWrite
        await instance.write(target, verify_value=False)
        await self._post_drive(target)
        if self._instant(target):
            # Nothing moves and the move takes no time: the whole motion (DMOV 0 ... DMOV 1)
            # runs here, without a task and a loop round trip between DMOV 0 and DMOV 1 (the
            # same sequence of posts; it leaves in one burst). Nothing can interleave: an
            # instant motion never awaits anything that suspends.
            self._target = target
            self._stop_requested = False
            await f.done_moving_to_value.write(0)
            await self._run_motion()
            return SkipWrite
        motion = await self._command(target)
        # Put-completion (caput -c, pyepics wait=True, ophyd-async): when the motion is over.
        await asyncio.wait([motion])
        return SkipWrite

    def _instant(self, target: float) -> bool:
        """No motion in progress, not paused, and the move to ``target`` takes no time."""
        if self._motion is not None and not self._motion.done():
            return False
        if self.sim.moving or self._spmg() == "Pause":
            return False
        distance = abs(target - float(self.sim.position))
        return self.clock.delay(distance / float(self.sim.velocity.get())) <= 0

    async def _command(self, target: float) -> asyncio.Task:
        """Start a motion to ``target``, or retarget the one in progress (NTM: DMOV stays 0)."""
        motion = self._motion
        if motion is not None and not motion.done():
            if not self._stop_requested:
                self._target = target
                self._kick()
                return motion
            # a STOP is ending this motion (VAL = RBV): the new target is a new motion after it
            await asyncio.wait([motion])
            await self.motor.write(target, verify_value=False)
            await self._post_drive(target)
        self._target = target
        self._stop_requested = False
        await self.motor.field_inst.done_moving_to_value.write(0)
        motion = self._motion = asyncio.ensure_future(self._run_motion())
        return motion

    async def _run_motion(self) -> None:
        f = self.motor.field_inst
        if self._wake is None:
            self._wake = asyncio.Event()
        try:
            while not self._stop_requested:
                self._wake.clear()
                if self._spmg() == "Pause":  # the target waits for Go/Move
                    await self._wake.wait()
                    continue
                target, start = self._target, float(self.sim.position)
                if abs(target - start) < STEP_SIZE:
                    break  # null move: DMOV pulses, nothing moves
                await self._travel(start, target)
                if self._target == target and not self._wake.is_set():
                    break  # arrived
                # retargeted, stopped or paused: loop (a stop ends it)
        finally:
            pos = float(self.sim.position)
            await self._publish_position(pos)
            if self._stop_requested:
                self._target = pos
                await self.motor.write(pos, verify_value=False)
                await self._post_drive(pos)
            self._stop_requested = False
            await self._set(f.motor_is_moving, 0)
            await self._set(f.motion_in_progress, 0)
            msta = MSTA_DONE | MSTA_HOMED | (f.motor_status.value & MSTA_DIRECTION)
            await self._set(f.motor_status, msta)
            await self._set(f.retry_count, 0)
            await self._set(f.ran_out_of_retries, 0)
            await self._set(f.difference_dval_drbv, float(self.motor.value) - pos)
            await self._set(f.at_home, int(abs(pos) < STEP_SIZE))
            if self._homing:
                self._homing = False
                await self._set(f.home_forward, 0)
                await self._set(f.home_reverse, 0)
            if self._spmg() == "Move":
                await f.stop_pause_move_go.write("Pause")
            self.motions_completed += 1
            await f.done_moving_to_value.write(1)

    async def _travel(self, start: float, target: float) -> None:
        """One leg: move the SimMotor, publish RBV; return on arrival or when kicked."""
        f = self.motor.field_inst
        assert self._wake is not None
        positive = target >= start
        duration = self.clock.delay(abs(target - start) / float(self.sim.velocity.get()))
        await self._set(f.direction_of_travel, int(positive))
        if duration > 0:  # an instant move ends before a polling record could see it move
            await self._set(f.motor_is_moving, 1)
            await self._set(f.motion_in_progress, 1)
            await self._set(f.motor_status, MSTA_MOVING | MSTA_HOMED | (MSTA_DIRECTION if positive else 0))
        t0 = time.monotonic()
        status = self.sim.move(target, wait=False)
        # The SimMotor lands (moving -> False) in the caller at time scale 0, or on its timer
        # thread; its Status reports that later, from a callback thread.
        if self.sim.moving:
            loop = asyncio.get_running_loop()
            wake = self._wake
            leg = self._leg = object()
            status.add_callback(lambda st: loop.call_soon_threadsafe(self._arrived, leg))
            while self.sim.moving:
                frac = 1.0 if duration <= 0 else min(1.0, (time.monotonic() - t0) / duration)
                await self._publish_position(start + frac * (target - start))
                try:
                    await asyncio.wait_for(wake.wait(), self.tick_s)
                except asyncio.TimeoutError:
                    continue
                if not self.sim.moving:
                    if self._target == target and not self._stop_requested and self._spmg() != "Pause":
                        wake.clear()  # the arrival woke us, nothing else
                    break
                self.sim.stop()  # kicked: stop, retarget or pause lands the axis where it is
                break
        self._leg = None
        await self._publish_position(float(self.sim.position))
        await self._set(f.motor_is_moving, 0)

    def _arrived(self, leg: object) -> None:
        """The SimMotor's Status of ``leg`` finished: wake the motion if that leg still runs."""
        if leg is self._leg and self._wake is not None:
            self._wake.set()

    async def _stop(self) -> None:
        """STOP / SPMG Stop: end the motion where the motor is (VAL = RBV), then DMOV 1."""
        motion = self._motion
        if motion is None or motion.done():
            pos = float(self.sim.position)
            if not same(self.motor.value, pos):
                await self.motor.write(pos, verify_value=False)
                await self._post_drive(pos)
            return
        self._stop_requested = True
        self._kick()
        await asyncio.wait([motion])

    @motor.fields.stop.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value:
            await ioc._stop()
        return 0

    @motor.fields.stop_pause_move_go.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        name = spmg_name(value) if not isinstance(value, str) else value
        if name == "Stop":
            await ioc._stop()
        else:
            ioc._kick()  # Pause: the motion loop stops and waits; Go/Move: it goes on
            if name in ("Go", "Move") and (ioc._motion is None or ioc._motion.done()):
                pos = float(ioc.sim.position)
                if abs(float(ioc.motor.value) - pos) >= STEP_SIZE:  # a target left by Pause
                    asyncio.get_running_loop().call_soon(
                        lambda: asyncio.ensure_future(ioc._command(float(ioc.motor.value))))
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

    async def _home(self) -> None:
        self._homing = True
        await self.motor.write(0.0, verify_value=False)
        await self._post_drive(0.0)
        motion = await self._command(0.0)
        await asyncio.wait([motion])

    @motor.fields.home_forward.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(ioc._home()))
        return value

    @motor.fields.home_reverse.putter
    async def motor(fields, instance, value):
        ioc: MotorAxisIOC = fields.parent.group
        if value:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(ioc._home()))
        return value

    async def shutdown(self) -> None:
        await self._stop()


__all__ = ["MotorAxisIOC", "wait_status"]
