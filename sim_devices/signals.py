"""Building blocks of the simulated devices: signals with units, read-only and command
signals, and a clock that scales every nominal duration by ``time_scale``.

The simulated devices mimic EPICS put-completion: writing a command PV starts an action
and the put "completes" when the action is done. Here that is a
:class:`CommandSignal` whose ``set(value)`` returns an ophyd Status that finishes when
the action is done, or fails with :class:`sdl.errors.DeviceFault`.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

from ophyd import Signal
from ophyd.signal import SignalRO
from ophyd.status import Status

from sdl.errors import DeviceFault, InvalidInput


class Clock:
    """Runs actions after ``nominal seconds x time_scale``; at 0 they run at once, in the caller.

    With a scale of 0 the caller gets an already-finished Status back, which keeps
    tests instant and deterministic; with a positive scale a daemon timer thread runs
    the action, so the RunEngine really waits as it would on hardware.
    """

    def __init__(self, time_scale: float = 0.0):
        if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or not (
            math.isfinite(time_scale) and time_scale >= 0
        ):
            raise InvalidInput("time_scale", "must be a finite number >= 0 (0 = instant, 1 = real time)", time_scale)
        self.time_scale = float(time_scale)

    def delay(self, nominal_s: float) -> float:
        return max(0.0, float(nominal_s)) * self.time_scale

    def call_later(self, nominal_s: float, fn: Callable[[], None]) -> threading.Timer | None:
        """Run ``fn`` after the scaled delay; returns the timer (None when run at once)."""
        delay = self.delay(nominal_s)
        if delay <= 0.0:
            fn()
            return None
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()
        return timer


class _UnitsMixin:
    """Adds ``units`` to ``describe()`` (event-model data keys carry units)."""

    def __init__(self, *args: Any, units: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.units = units

    def describe(self) -> dict[str, dict[str, Any]]:
        desc = super().describe()  # type: ignore[misc]
        if self.units:
            desc[self.name]["units"] = self.units  # type: ignore[attr-defined]
        return desc


class UnitSignal(_UnitsMixin, Signal):
    """A soft read-write Signal with units."""


class PositiveSignal(UnitSignal):
    """A soft Signal that only takes finite numbers > 0 (exposure times, velocities)."""

    def check_value(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0
        ):
            raise InvalidInput(self.name, "must be a finite number > 0" + (f" {self.units}" if self.units else ""), value)


class ReadOnlySignal(_UnitsMixin, SignalRO):
    """Read-only to users (put/set raise ReadOnlyError); the owning device calls :meth:`_update`."""

    def _update(self, value: Any) -> None:
        Signal.put(self, value, force=True)


class CommandSignal(Signal):
    """A command: ``set(value)`` records the value and starts the parent's action.

    ``handler`` names the parent method that takes the value and returns the Status of
    the action (EPICS put-completion semantics). ``put`` starts the action without
    returning its Status, as a put without completion would.
    """

    def __init__(self, *args: Any, handler: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._handler = handler

    def set(self, value: Any, **kwargs: Any) -> Status:  # type: ignore[override]
        Signal.put(self, value, force=True)
        return getattr(self.parent, self._handler)(value)

    def put(self, value: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.set(value)


class CommandStatus(Status):
    """The Status of a simulated device's action; when it failed, its text says why.

    Bluesky reports a failed Status as ``FailedStatus(status)`` and writes ``str()`` of
    that into the stop document's ``reason``; a plain Status only says
    ``success=False``. This one adds the device's fault message, so the record of a
    failed run names the fault (e.g. the dropped sample).
    """

    def __str__(self) -> str:
        obj = getattr(self.obj, "name", self.obj)
        text = f"{type(self).__name__}(obj={obj}, done={self.done}, success={self.success})"
        if self.done and not self.success:
            exc = self.exception(timeout=0)
            if exc is not None:
                text += f": {exc}"
        return text

    __repr__ = __str__


def finish(status: Status, exc: BaseException | None = None) -> None:
    """Complete ``status``: finished, or failed with ``exc``."""
    if exc is None:
        status.set_finished()
    else:
        status.set_exception(exc)


def as_fault(device: str, exc: BaseException) -> DeviceFault:
    """A :class:`DeviceFault` for ``exc`` (kept as is when it already is one)."""
    if isinstance(exc, DeviceFault):
        return exc
    if isinstance(exc, InvalidInput):
        return DeviceFault(device, f"invalid input: {exc}")
    return DeviceFault(device, f"internal error: {exc!r}")
