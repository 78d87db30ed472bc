"""A simulated motor with the EpicsMotor layout: soft limits, velocity, timed moves.

Component names follow :class:`ophyd.EpicsMotor` (``user_readback``, ``user_setpoint``,
``velocity``, ``motor_egu``, ``motor_is_moving``) so plans see the same keys in the
documents whether they drive this double or a motor record over Channel Access.
A move outside the soft limits raises :class:`ophyd.utils.LimitError` before anything
moves; a move takes ``|distance| / velocity`` nominal seconds (x the clock's scale).
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from typing import Any, Callable

from ophyd import Component as Cpt
from ophyd import Device
from ophyd.positioner import PositionerBase
from ophyd.status import MoveStatus
from ophyd.utils import LimitError

from sdl.sim_devices.signals import Clock, PositiveSignal, ReadOnlySignal, UnitSignal


class SimMotor(Device, PositionerBase):
    """A positioner that bluesky can ``mv``, ``scan``, ``read`` and ``describe``."""

    user_readback = Cpt(ReadOnlySignal, value=0.0, kind="hinted")
    user_setpoint = Cpt(UnitSignal, value=0.0, kind="normal")
    velocity = Cpt(PositiveSignal, value=1.0, kind="config")
    motor_egu = Cpt(ReadOnlySignal, value="mm", kind="config")
    motor_is_moving = Cpt(ReadOnlySignal, value=0, kind="omitted")

    def __init__(
        self,
        *,
        name: str,
        clock: Clock | None = None,
        time_scale: float = 0.0,
        limits: tuple[float, float] = (-10.0, 10.0),
        egu: str = "mm",
        velocity: float = 1.0,
        init_pos: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(name=name, **kwargs)
        lo, hi = (float(v) for v in limits)
        if not lo < hi:
            raise ValueError(f"{name}: limits must be (low, high) with low < high, got {limits}")
        self._limits = (lo, hi)
        self._clock = clock if clock is not None else Clock(time_scale)
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._motion: tuple[float, float, float, float] | None = None  # start, target, t0, duration
        self._move_id = 0  # a timer of a superseded move must not land the motor
        # Like EpicsMotor: the readback carries the motor's own name in documents.
        self.user_readback.name = self.name
        for sig, units in ((self.user_readback, egu), (self.user_setpoint, egu), (self.velocity, f"{egu}/s")):
            sig.units = units
        self.motor_egu._update(egu)
        self.velocity.put(float(velocity))
        self.check_value(init_pos)
        self.user_setpoint.put(float(init_pos))
        self._set_position(float(init_pos))

    # ------------------------------------------------------------------ properties
    @property
    def egu(self) -> str:
        return str(self.motor_egu.get())

    @property
    def limits(self) -> tuple[float, float]:
        return self._limits

    @property
    def position(self) -> float:
        return float(self.user_readback.get())

    @property
    def moving(self) -> bool:
        return bool(self.motor_is_moving.get())

    # ------------------------------------------------------------------ motion
    def check_value(self, pos: Any) -> None:
        """Refuse non-numbers and positions outside the soft limits (before any motion)."""
        if isinstance(pos, bool) or not isinstance(pos, numbers.Real) or not math.isfinite(pos):
            raise ValueError(f"{self.name}: position must be a finite number, got {pos!r}")
        lo, hi = self._limits
        if not lo <= pos <= hi:
            raise LimitError(f"{self.name}: position={pos} not within limits {self._limits} {self.egu}")

    def move(
        self, position: float, wait: bool = True, timeout: float | None = None, moved_cb: Callable | None = None
    ) -> MoveStatus:
        """Start a move (limits checked first); returns a MoveStatus, waits if ``wait``."""
        self.check_value(position)
        # One lock over the whole start, and over _done_moving (see _arrive): ophyd's
        # PositionerBase finishes a move's status and only then clears its request
        # subscriptions; a move started in between (by the thread the status woke) would
        # otherwise lose its own completion (the race of sdl.devices.motor, in-process).
        with self._lock:
            # A move that supersedes one in progress starts from where the motor is now
            # (the superseded move's status fails, as an EpicsMotor's does).
            self._cancel_timer()
            self._move_id += 1
            if self._motion is not None:
                self._end_motion(self._current_position())
            status = super().move(float(position), moved_cb=moved_cb, timeout=timeout)
            # Not a repeat of the lines above: super().move fails the superseded move's
            # status, whose callbacks run in this thread (an ophyd Status without a timeout)
            # and may start a move themselves (the lock is re-entrant). That nested move's
            # timer must not finish this one.
            self._cancel_timer()
            self._move_id += 1
            move_id = self._move_id
            start, target = self.position, float(position)
            duration = abs(target - start) / float(self.velocity.get())
            self.user_setpoint.put(target)
            self._motion = (start, target, time.monotonic(), self._clock.delay(duration))
            self._moving = True
            self.motor_is_moving._update(1)
            self._timer = self._clock.call_later(duration, lambda: self._arrive(target, move_id))
        if wait:
            status.wait()
        return status

    def stop(self, *, success: bool = False) -> None:
        """Stop where the motor is now (interpolated along the move); the move's status
        completes (failed unless ``success``), so nothing waits on it forever."""
        with self._lock:
            self._cancel_timer()
            self._move_id += 1
            was_moving = self._motion is not None
            if was_moving:
                self._end_motion(self._current_position())
            # Device.stop comes first in the MRO and would skip PositionerBase.stop, which
            # is what completes the pending MoveStatus: report the end of motion here.
            Device.stop(self, success=success)
            if was_moving:
                self._done_moving(success=success)

    def _current_position(self) -> float:
        """Where the motor is now: interpolated along a move in progress, else the readback."""
        with self._lock:
            if self._motion is None:
                return self.position
            start, target, t0, duration = self._motion
            frac = 1.0 if duration <= 0 else min(1.0, (time.monotonic() - t0) / duration)
            return start + frac * (target - start)

    def _arrive(self, target: float, move_id: int) -> None:
        with self._lock:
            if move_id != self._move_id or self._motion is None:
                return
            self._timer = None
            self._end_motion(target)
            self._done_moving(success=True)

    def _end_motion(self, position: float) -> None:
        self._motion = None
        self._set_position(position)
        self._moving = False
        self.motor_is_moving._update(0)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set_position(self, value: float, **kwargs: Any) -> None:
        self.user_readback._update(float(value))
        super()._set_position(float(value), **kwargs)
