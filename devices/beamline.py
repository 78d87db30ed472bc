"""Beamline devices over EPICS: shutter, ring current, detector, temperature stage, motors.

Each class is configured by its PV prefix only; component names are those of the
in-process doubles in :mod:`sdl.sim_devices.lab`, so the plans in :mod:`sdl.plans`
drive either without change. PV layout: ``docs/pv-layout.md``.
"""

from __future__ import annotations

import threading
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.pv_positioner import PVPositionerIsClose
from ophyd.status import DeviceStatus

from sdl.devices.common import (
    ArraySignalRO, CommandDevice, CommandSignal, _watchdog, finish_status, put_completing_on_monitor_thread,
)
from sdl.devices.motor import EpicsMotor
from sdl.errors import DeviceFault, InvalidInput

#: Sample stage axes and the monochromator energy are stock motor records (ophyd's
#: EpicsMotor with its move/done race closed: :mod:`sdl.devices.motor`).
StageAxis = EpicsMotor
MonoEnergy = EpicsMotor


class Shutter(Device):
    """``set('open' | 'close')``: the Status completes when ``state`` reads 'open'/'closed'.

    PVs: ``OPEN`` (write 1), ``CLOSE`` (write 1), ``STATE`` (closed/open readback).
    The Status fails with :class:`DeviceFault` when the readback does not follow within
    :attr:`timeout` seconds.
    """

    state = Cpt(EpicsSignalRO, "STATE", string=True, kind="normal", auto_monitor=True)
    open_cmd = Cpt(EpicsSignal, "OPEN", kind="omitted")
    close_cmd = Cpt(EpicsSignal, "CLOSE", kind="omitted")

    #: seconds for the readback to follow a command
    timeout: float = 10.0

    def set(self, value: Any, *, timeout: float | None = None) -> DeviceStatus:
        if value not in ("open", "close"):
            raise InvalidInput(self.name, "allowed values: 'open', 'close'", value)
        target = "open" if value == "open" else "closed"
        timeout = self.timeout if timeout is None else float(timeout)
        status = DeviceStatus(self)
        lock = threading.Lock()
        cid: list[Any] = []

        def on_state(value: Any = None, **kwargs: Any) -> None:
            if value == target:
                finish_status(status)

        def cleanup(st: Any) -> None:
            with lock:
                if cid:
                    self.state.clear_sub(on_state)
            watchdog.cancel()

        def expired() -> None:
            finish_status(status, DeviceFault(
                self.name, f"did not report {target!r} within {timeout:g} s (reads {self.state.get()!r})"))

        def put_done(**kwargs: Any) -> None:
            # On ophyd's monitor thread, behind the STATE updates that arrived before the
            # put completed (CA keeps a server's messages in order): the readback may
            # already be there (a repeated command, or a fast shutter), with no get.
            if self.state.get() == target:
                finish_status(status)

        try:
            cmd = self.open_cmd if value == "open" else self.close_cmd
            with lock:
                cid.append(self.state.subscribe(on_state, run=False))
            put_completing_on_monitor_thread(cmd, 1, put_done)
        except Exception as exc:  # noqa: BLE001 - disconnected
            finish_status(status, DeviceFault(self.name, f"channel access error: {exc}"))
        watchdog = _watchdog().after(timeout, expired)  # one shared thread, not a Timer per command
        status.add_callback(cleanup)
        return status

    @property
    def is_open(self) -> bool:
        return self.state.get() == "open"


class RingCurrent(Device):
    """Storage-ring current (``CURRENT``, mA) and beam status (``BEAM``: 'beam' / 'no beam').

    The current is read under the device's own name (like a motor's readback), so the
    documents carry ``ring_current`` as with the in-process double. Use ``.current``
    for a bluesky ``SuspendFloor``.
    """

    current = Cpt(EpicsSignalRO, "CURRENT", kind="hinted", auto_monitor=True)
    beam = Cpt(EpicsSignalRO, "BEAM", string=True, kind="config", auto_monitor=True)

    def __init__(self, prefix: str = "", *, name: str, **kwargs: Any):
        super().__init__(prefix, name=name, **kwargs)
        self.current.name = self.name


class Detector(CommandDevice):
    """XRD detector: ``trigger()`` writes ``ACQUIRE`` (put-completion / busy handshake).

    Components as :class:`sdl.sim_devices.lab.SimDetector`: ``exposure_time``,
    ``two_theta``, ``spectrum``, ``total_counts``, ``state``, ``error_message``.
    """

    acquire = Cpt(CommandSignal, "ACQUIRE", kind="omitted")
    exposure_time = Cpt(EpicsSignal, "EXPOSURE", kind="config", put_complete=True, limits=True,
                        auto_monitor=True)
    two_theta = Cpt(EpicsSignalRO, "TWO_THETA", kind="config")
    # Monitored: the IOC posts them before ACQUIRE's put completes (see CommandSignal),
    # so a read after trigger() is the new frame without a get. (ArraySignalRO: a
    # monitored waveform without pyepics' repr() of every update.)
    spectrum = Cpt(ArraySignalRO, "SPECTRUM", kind="normal", auto_monitor=True)
    total_counts = Cpt(EpicsSignalRO, "TOTAL_COUNTS", kind="hinted", auto_monitor=True)

    #: seconds allowed for readout on top of the exposure
    readout_timeout: float = 60.0

    def trigger(self) -> DeviceStatus:
        exposure = float(self.exposure_time.get())
        return self.acquire.set(1, timeout=2 * exposure + self.readout_timeout)


class PoolProbe(CommandDevice):
    """The pool instruments' probe (``VALUE``): as :class:`sdl.sim_devices.lab.SimPoolProbe`."""

    acquire = Cpt(CommandSignal, "ACQUIRE", kind="omitted")
    exposure_time = Cpt(EpicsSignal, "EXPOSURE", kind="config", put_complete=True, limits=True,
                        auto_monitor=True)
    value = Cpt(EpicsSignalRO, "VALUE", kind="hinted", auto_monitor=True)

    readout_timeout: float = 60.0

    def trigger(self) -> DeviceStatus:
        exposure = float(self.exposure_time.get())
        return self.acquire.set(1, timeout=2 * exposure + self.readout_timeout)


class TemperatureStage(PVPositionerIsClose):
    """Sample temperature stage: ``SP`` setpoint, ``RBV`` readback, ``RAMP`` (degC/min).

    A move is done when the readback is within :attr:`atol` of the setpoint.
    """

    setpoint = Cpt(EpicsSignal, "SP", kind="normal", put_complete=True, limits=True)
    readback = Cpt(EpicsSignalRO, "RBV", kind="hinted", auto_monitor=True)
    ramp_rate = Cpt(EpicsSignal, "RAMP", kind="config", put_complete=True)

    atol = 0.5
    rtol = 0.0

    @property
    def limits(self) -> tuple[float, float]:
        """The setpoint's control limits (a move outside them is refused before it starts)."""
        return tuple(self.setpoint.limits)

    @property
    def egu(self) -> str:
        return str(self.readback.metadata.get("units") or "degC")
