"""``EpicsMotor`` with the completion race of stock ophyd (1.11) closed.

Stock :class:`ophyd.EpicsMotor` finishes a move in the CA monitor thread
(``_move_changed`` -> ``PositionerBase._done_moving``): it runs the ``_req_done``
subscriptions (the MoveStatus finishes, so the RunEngine wakes) and *then* clears
them. When the RunEngine starts the next move before that thread reaches the clearing,
``PositionerBase.move`` first "fails" the old, already finished status (``InvalidState``
in ``_req_done``) and subscribes the new one, and the late clearing then removes the
new status's subscription: that move never completes and the scan hangs. Nothing an
IOC sends can prevent it (it is all after the last ``DMOV`` 1 has arrived); a fast
detector (``ophyd.sim.det``) and a busy machine make it frequent.

:class:`EpicsMotor` here is the stock class with one lock held while the request
subscriptions are run-and-cleared (``_done_moving``, also on ``stop``) and while a move
replaces them, so the clearing can no longer overtake a new move. Same PVs, same
components, same documents. ``tests/test_motor_race.py`` forces the interleaving.
Scripts that build ``ophyd.EpicsMotor`` themselves can call :func:`close_stock_race`
once (it gives the stock class the same lock).

One read less per move: stock ``_move_changed`` reads ``.LLS``/``.HLS`` with a CA get
when ``DMOV`` goes to 1 (a round trip, in the monitor thread, on every move). Both are
monitored already, and the record posts them before ``DMOV`` in the same processing
(motorRecord.cc ``monitor()`` posts LLS and HLS, then MOVN, then DMOV last); CA delivers
one server's monitors in order, so when ``DMOV`` 1 arrives the monitored switches are
the ones of that motion. Here they are read from the monitors.
"""

from __future__ import annotations

import threading
from typing import Any

import ophyd
from ophyd import Component as Cpt
from ophyd import EpicsSignalRO
from ophyd.positioner import PositionerBase
from ophyd.status import wait as status_wait
from ophyd.utils.epics_pvs import raise_if_disconnected

from sdl.devices.common import put_flushed


class PostedBeforeDone(EpicsSignalRO):
    """A monitored motor-record field that the record posts before ``DMOV``: a get while
    handling ``DMOV`` is answered from the monitor (see module doc), even when asked
    ``use_monitor=False``."""

    def get(self, *, use_monitor: bool | None = None, **kwargs: Any) -> Any:
        return super().get(use_monitor=True, **kwargs)


class EpicsMotor(ophyd.EpicsMotor):
    """Stock :class:`ophyd.EpicsMotor`, with the move/done race closed and the limit
    switches read from their monitors (see module doc)."""

    high_limit_switch = Cpt(PostedBeforeDone, ".HLS", kind="omitted", auto_monitor=True)
    low_limit_switch = Cpt(PostedBeforeDone, ".LLS", kind="omitted", auto_monitor=True)

    def __repr__(self) -> str:
        """The stock repr, remembered until a component's kind changes: ophyd's MoveStatus
        puts ``repr(positioner)`` in its trace attributes on every move, and the stock
        repr lists read/configuration attrs by walking all ~30 components (about 0.5 ms)."""
        key = tuple(int(getattr(self, name).kind) for name in self.component_names)
        cached = self.__dict__.get("_sdl_repr")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_sdl_repr"] = (key, super().__repr__())
        return cached[1]

    def __init__(self, *args: Any, **kwargs: Any):
        self._request_lock = threading.RLock()
        super().__init__(*args, **kwargs)
        # The motor record's soft limits are .LLM/.HLM (VAL's control limits follow them).
        # Stock ophyd re-reads VAL's control limits with a CA get when an .HLM/.LLM monitor
        # arrives, and that get can return the limits from before the change (1 in ~6
        # runs of test_epics_motor here); take them from the monitors themselves.
        self.low_limit_travel.subscribe(self._soft_limits_from_monitors, run=False)
        self.high_limit_travel.subscribe(self._soft_limits_from_monitors, run=False)

    def _soft_limits_from_monitors(self, **kwargs: Any) -> None:
        lo, hi = self.low_limit_travel.get(), self.high_limit_travel.get()
        if lo is not None and hi is not None:
            self.user_setpoint._metadata.update(lower_ctrl_limit=float(lo), upper_ctrl_limit=float(hi))

    @raise_if_disconnected
    def move(self, position: float, wait: bool = True, **kwargs: Any):
        return _move_under(self._request_lock, self, position, wait, **kwargs)

    def _done_moving(self, *args: Any, **kwargs: Any) -> None:
        with self._request_lock:
            super()._done_moving(*args, **kwargs)


def _move_under(lock: Any, motor: Any, position: float, wait: bool, **kwargs: Any):
    """ophyd.EpicsMotor.move, with PositionerBase.move (which subscribes to the move's end)
    under ``lock``, the lock ``_done_moving`` also takes."""
    motor._started_moving = False
    with lock:
        status = PositionerBase.move(motor, position, **kwargs)
    if not put_flushed(motor.user_setpoint, position):  # no pend_event sleep (sdl.devices.common)
        motor.user_setpoint.put(position, wait=False)
    try:
        if wait:
            status_wait(status)
    except KeyboardInterrupt:
        motor.stop()
        raise
    return status


def close_stock_race() -> None:
    """Opt-in: give stock :class:`ophyd.EpicsMotor` (and its subclasses) the same lock, for
    scripts that construct ``ophyd.EpicsMotor`` themselves. Idempotent; process-wide."""
    cls = ophyd.EpicsMotor
    if getattr(cls, "_sdl_race_closed", False):
        return
    lock_of = _lock_of

    def move(self: Any, position: float, wait: bool = True, **kwargs: Any):
        return _move_under(lock_of(self), self, position, wait, **kwargs)

    done_moving = cls._done_moving

    def _done_moving(self: Any, *args: Any, **kwargs: Any) -> None:
        with lock_of(self):
            done_moving(self, *args, **kwargs)

    cls.move = raise_if_disconnected(move)
    cls._done_moving = _done_moving
    cls._sdl_race_closed = True


_LOCKS_GUARD = threading.Lock()


def _lock_of(motor: Any) -> threading.RLock:
    lock = getattr(motor, "_request_lock", None)
    if lock is None:
        with _LOCKS_GUARD:
            lock = getattr(motor, "_request_lock", None)
            if lock is None:
                lock = motor._request_lock = threading.RLock()
    return lock


__all__ = ["EpicsMotor", "close_stock_race"]
