"""sdl's EPICS devices written with ophyd-async (CA through aioca, PVA through p4p, or
ophyd-async's soft/mock backends), beside the classic ophyd classes in :mod:`sdl.devices`.

Same PVs (``docs/pv-layout.md``) and the same document keys as the classic classes
(children are named with ``_``, as ophyd does), so sdl's plans and reductions use either:

    from sdl.devices.async_devices import AsyncDetector, connect_async
    detector = AsyncDetector("SDL:DET:", name="detector")          # CA (``protocol="pva"``: PVA)
    connect_async(detector)                                         # in bluesky's event loop
    lab = dataclasses.replace(epics_lab_devices("SDL:"), detector=detector)

- :class:`AsyncDetector`: ``trigger()`` runs the ``ACQUIRE`` command with put-completion
  and the BUSY / ERR_CODE / ERR_MSG handshake; a failed command fails the status with
  :class:`sdl.errors.DeviceFault` ``(name, ERR_MSG)``, as the classic class does.
- :func:`motor`: ophyd-async's own ``Motor`` on a motor record.
- :class:`Blocking`: a synchronous view of an ophyd-async device (``read()``, ``set(...).wait()``),
  so the conformance kit (:mod:`sdl.testing`) runs unchanged on both kinds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
from ophyd_async.core import Array1D, AsyncStatus, Device, StandardReadable, StandardReadableFormat
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw

from sdl.errors import DeviceFault

PROTOCOLS = ("ca", "pva")
Float1D = Array1D[np.float64]


def _pv(protocol: str, name: str) -> str:
    if protocol not in PROTOCOLS:
        from sdl.errors import InvalidInput

        raise InvalidInput("protocol", f"allowed: {PROTOCOLS}", protocol)
    return f"{protocol}://{name}"


class _Handshake(StandardReadable):
    """STATE / BUSY / ERR_CODE / ERR_MSG and the command handshake (as :class:`sdl.devices.CommandDevice`)."""

    def _handshake_signals(self, pv: Any) -> None:
        self.busy = epics_signal_r(int, pv("BUSY"))
        self.error_code = epics_signal_r(int, pv("ERR_CODE"))
        self.error_message = epics_signal_r(str, pv("ERR_MSG"))
        self.state = epics_signal_r(str, pv("STATE"))

    def set_name(self, name: str, *, child_name_separator: str | None = None) -> None:
        # "detector_spectrum", as the classic device: reductions read those keys
        super().set_name(name, child_name_separator=child_name_separator or "_")

    async def run_command(self, command: Any, value: Any, timeout: float | None) -> None:
        """Write ``command`` with put-completion, then check BUSY / ERR_CODE / STATE; a failure
        raises :class:`DeviceFault` ``(name, ERR_MSG)``."""
        if await self.busy.get_value():
            raise DeviceFault(self.name, "busy: the previous command has not finished")
        await command.set(value, timeout=timeout)
        while await self.busy.get_value():  # hardware that completes the put early
            await asyncio.sleep(0.02)
        code, state = await asyncio.gather(self.error_code.get_value(), self.state.get_value())
        if code or state == "error":
            message = (await self.error_message.get_value()).strip()
            raise DeviceFault(self.name, message or f"{command.name} failed (state {state})")


class AsyncCommand(Device):
    """A command PV as a movable child (``bps.mv(robot.make, slot)``): the handshake of its parent."""

    def __init__(self, pv: str, name: str = "", timeout: float | None = 3600.0):
        self.command = epics_signal_rw(int, pv, wait=True)
        self.timeout = timeout
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def set(self, value: int) -> None:
        await self.parent.run_command(self.command, int(value), self.timeout)


class AsyncDetector(_Handshake):
    """The XRD detector at ``prefix`` (``SDL:DET:``), as :class:`sdl.devices.Detector`."""

    #: seconds allowed for readout on top of the exposure
    readout_timeout: float = 60.0

    def __init__(self, prefix: str, name: str = "", *, protocol: str = "ca"):
        def pv(suffix: str) -> str:
            return _pv(protocol, prefix + suffix)

        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.exposure_time = epics_signal_rw(float, pv("EXPOSURE"))
            self.two_theta = epics_signal_r(Float1D, pv("TWO_THETA"))
        with self.add_children_as_readables():
            self.spectrum = epics_signal_r(Float1D, pv("SPECTRUM"))
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.total_counts = epics_signal_r(float, pv("TOTAL_COUNTS"))
        self.acquire = epics_signal_rw(int, pv("ACQUIRE"), wait=True)
        self._handshake_signals(pv)
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        exposure = await self.exposure_time.get_value()
        await self.run_command(self.acquire, 1, 2 * exposure + self.readout_timeout)


class AsyncSynthesisRobot(_Handshake):
    """The synthesis robot at ``prefix`` (``SDL:ROBOT:``), as :class:`sdl.devices.SynthesisRobot`."""

    def __init__(self, prefix: str, name: str = "", *, protocol: str = "ca"):
        def pv(suffix: str) -> str:
            return _pv(protocol, prefix + suffix)

        with self.add_children_as_readables():
            self.composition = epics_signal_rw(Float1D, pv("COMPOSITION"))
            self.temperature = epics_signal_rw(float, pv("TEMPERATURE"))
            self.sample_id = epics_signal_rw(str, pv("SAMPLE_ID"))
        self.make = AsyncCommand(pv("MAKE"))
        self.total_volume = epics_signal_rw(float, pv("TOTAL_VOLUME"))
        self.precursor_names = epics_signal_r(str, pv("PRECURSORS"))
        self._handshake_signals(pv)
        super().__init__(name=name)


class AsyncSampleChanger(_Handshake):
    """The sample changer at ``prefix`` (``SDL:CHANGER:``), as :class:`sdl.devices.SampleChanger`."""

    def __init__(self, prefix: str, name: str = "", *, protocol: str = "ca"):
        def pv(suffix: str) -> str:
            return _pv(protocol, prefix + suffix)

        with self.add_children_as_readables():
            self.mounted_sample = epics_signal_r(str, pv("MOUNTED"))
        self.load = AsyncCommand(pv("LOAD"))
        self.unload = AsyncCommand(pv("UNLOAD"))
        self.home = AsyncCommand(pv("HOME"))
        self.slot = epics_signal_r(int, pv("SLOT_RBV"))
        self.n_slots = epics_signal_r(int, pv("N_SLOTS"))
        self.door = epics_signal_r(str, pv("DOOR"))
        self._handshake_signals(pv)
        super().__init__(name=name)


class AsyncShutter(StandardReadable):
    """The shutter at ``prefix``: ``set('open' | 'close')`` completes when STATE follows."""

    timeout: float = 10.0

    def __init__(self, prefix: str, name: str = "", *, protocol: str = "ca"):
        def pv(suffix: str) -> str:
            return _pv(protocol, prefix + suffix)

        with self.add_children_as_readables():
            self.state = epics_signal_r(str, pv("STATE"))
        self.open_cmd = epics_signal_rw(int, pv("OPEN"), wait=False)
        self.close_cmd = epics_signal_rw(int, pv("CLOSE"), wait=False)
        super().__init__(name=name)

    def set_name(self, name: str, *, child_name_separator: str | None = None) -> None:
        super().set_name(name, child_name_separator=child_name_separator or "_")

    @AsyncStatus.wrap
    async def set(self, value: str) -> None:
        from ophyd_async.core import wait_for_value

        if value not in ("open", "close"):
            from sdl.errors import InvalidInput

            raise InvalidInput(self.name, "allowed values: 'open', 'close'", value)
        target = "open" if value == "open" else "closed"
        await (self.open_cmd if value == "open" else self.close_cmd).set(1)
        try:
            await wait_for_value(self.state, target, timeout=self.timeout)
        except asyncio.TimeoutError as exc:
            raise DeviceFault(self.name, f"did not report {target!r} within {self.timeout:g} s") from exc


class AsyncRingCurrent(StandardReadable):
    """Storage-ring current (``CURRENT``, read under the device's own name) and ``BEAM``."""

    def __init__(self, prefix: str, name: str = "", *, protocol: str = "ca"):
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.current = epics_signal_r(float, _pv(protocol, prefix + "CURRENT"))
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.beam = epics_signal_r(str, _pv(protocol, prefix + "BEAM"))
        super().__init__(name=name)

    def set_name(self, name: str, *, child_name_separator: str | None = None) -> None:
        super().set_name(name, child_name_separator=child_name_separator or "_")
        self.current.set_name(name)  # "ring_current", as the classic device


def async_lab_devices(prefix: str, *, protocol: str = "ca", connect: bool = True, timeout: float = 10.0):
    """:class:`sdl.plans.LabDevices` of ophyd-async devices over ``protocol`` ('ca' or 'pva')."""
    from sdl.epics_lab import DEVICE_PREFIXES
    from sdl.plans import LabDevices

    devices = {
        "robot": AsyncSynthesisRobot(prefix + DEVICE_PREFIXES["robot"], name="robot", protocol=protocol),
        "changer": AsyncSampleChanger(prefix + DEVICE_PREFIXES["changer"], name="changer", protocol=protocol),
        "shutter": AsyncShutter(prefix + DEVICE_PREFIXES["shutter"], name="shutter", protocol=protocol),
        "detector": AsyncDetector(prefix + DEVICE_PREFIXES["detector"], name="detector", protocol=protocol),
        "ring_current": AsyncRingCurrent(prefix + DEVICE_PREFIXES["ring_current"], name="ring_current",
                                         protocol=protocol),
        "stage_x": motor(prefix + DEVICE_PREFIXES["stage_x"], name="stage_x", protocol=protocol),
        "stage_y": motor(prefix + DEVICE_PREFIXES["stage_y"], name="stage_y", protocol=protocol),
    }
    if connect:
        connect_async(*devices.values(), timeout=timeout)
    fields = {f.name for f in dataclasses.fields(LabDevices)}
    return LabDevices(**{k: v for k, v in devices.items() if k in fields})


def motor(prefix: str, name: str = "", *, protocol: str = "ca"):
    """ophyd-async's ``Motor`` on the motor record ``prefix`` (e.g. ``SDL:STAGE:X``)."""
    from ophyd_async.epics.motor import Motor

    return Motor(_pv(protocol, prefix), name=name)


def in_bluesky_loop(coro: Any, timeout: float | None = None) -> Any:
    """Run ``coro`` in bluesky's event loop (started as a RunEngine starts it, if need be)."""
    import bluesky.run_engine as bre

    loop = bre.get_bluesky_event_loop()
    if loop is None:
        loop = asyncio.new_event_loop()
        bre.set_bluesky_event_loop(loop)
    bre._ensure_event_loop_running(loop)
    return bre.call_in_bluesky_event_loop(coro, timeout=timeout)


def connect_async(*devices: Any, timeout: float = 10.0, mock: bool = False) -> None:
    """Connect ophyd-async devices in bluesky's event loop (where the RunEngine runs them)."""

    async def connect() -> None:
        await asyncio.gather(*(d.connect(timeout=timeout, mock=mock) for d in devices))

    in_bluesky_loop(connect())


class _Status:
    """A blocking view of an ophyd-async AsyncStatus: ``wait(timeout)``, ``done``, ``success``."""

    def __init__(self, status: AsyncStatus):
        self._status = status

    def wait(self, timeout: float | None = None) -> None:
        async def wait() -> None:
            await asyncio.wait_for(asyncio.shield(self._status.task), timeout)

        in_bluesky_loop(wait())

    @property
    def done(self) -> bool:
        return self._status.done

    @property
    def success(self) -> bool:
        return self._status.success

    def __repr__(self) -> str:
        return f"Blocking({self._status!r})"


class Blocking:
    """Synchronous view of an ophyd-async device: each method runs the device's own coroutine
    in bluesky's event loop and waits (for the conformance kit and for scripts)."""

    def __init__(self, device: Any, timeout: float = 10.0):
        self.device = device
        self.timeout = timeout

    def _run(self, coro: Any) -> Any:
        return in_bluesky_loop(coro, timeout=self.timeout)

    @property
    def name(self) -> str:
        return self.device.name

    @property
    def connected(self) -> bool:
        return True  # connect_async raised otherwise

    def wait_for_connection(self, timeout: float = 10.0) -> None:
        connect_async(self.device, timeout=timeout)

    def read(self) -> dict:
        return self._run(self.device.read())

    def describe(self) -> dict:
        return self._run(self.device.describe())

    def read_configuration(self) -> dict:
        return self._run(self.device.read_configuration())

    def describe_configuration(self) -> dict:
        return self._run(self.device.describe_configuration())

    def stage(self) -> list:
        self._run(_call(self.device.stage))
        return [self]

    def unstage(self) -> list:
        self._run(_call(self.device.unstage))
        return [self]

    #: a set whose status fails this fast, before any motion, is a refusal (ophyd-async checks
    #: limits inside the status: ``MotorLimitsError``), raised here as a ValueError
    refusal_s: float = 0.05

    def set(self, value: Any) -> _Status:
        async def start() -> AsyncStatus:
            status = self.device.set(value)
            await asyncio.wait([status.task], timeout=self.refusal_s)
            if status.done and status.exception() is not None:
                exc = status.exception()
                raise exc if isinstance(exc, (ValueError, TypeError)) else ValueError(str(exc)) from exc
            return status

        return _Status(self._run(start()))

    def trigger(self) -> _Status:
        async def start() -> AsyncStatus:
            return self.device.trigger()

        return _Status(self._run(start()))

    @property
    def position(self) -> Any:
        readback = getattr(self.device, "user_readback", None)
        return self._run(readback.get_value()) if readback is not None else None


async def _call(method: Any) -> Any:
    """Call ``method`` in the loop (an AsyncStatus needs one) and await what it returns."""
    result = method()
    return await result if asyncio.iscoroutine(result) or isinstance(result, (asyncio.Future, AsyncStatus)) else result


__all__ = ["AsyncCommand", "AsyncDetector", "AsyncRingCurrent", "AsyncSampleChanger", "AsyncShutter",
           "AsyncSynthesisRobot", "Blocking", "async_lab_devices", "connect_async", "in_bluesky_loop", "motor"]
