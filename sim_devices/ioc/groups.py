"""PV groups of the simulated lab's soft IOCs; each one forwards to an in-process device.

One physics, two transports: a group holds a reference to the in-process device of a
:class:`~sdl.sim_devices.lab.SimLab` and
- forwards every write (setpoints, commands) to it,
- mirrors the device's signals onto read-only PVs (:class:`~._util.Bridge`).

Command PVs (``ROBOT:MAKE``, ``CHANGER:LOAD``, ``DET:ACQUIRE`` ...) have EPICS
put-completion semantics: the put completes when the action has finished. While it
runs ``BUSY`` is 1; when it ends ``ERR_CODE`` is 0 (done) or 1 (failed, the reason
in ``ERR_MSG``), and ``STATE`` mirrors the device (idle / busy / error). All of these
are written before the put completes, so a client that reads them after completion
sees the command's outcome. The PV layout is in ``docs/pv-layout.md``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import numpy as np
from caproto.server import PVGroup, pvproperty

from sdl.errors import DeviceFault
from sdl.sim_devices.ioc._util import LONG_STRING, Bridge, enum, long_string, wait_status
from sdl.sim_devices.signals import Clock, as_fault

STATES = ("idle", "busy", "error")
#: Ring current (mA) below which RING:BEAM reads 'no beam'.
BEAM_THRESHOLD_MA = 10.0


class CommandGroup(PVGroup):
    """STATE / BUSY / ERR_CODE / ERR_MSG and the command runner shared by the robots and the detector."""

    state = enum("STATE", STATES, "idle, busy (an action in progress) or error (see ERR_MSG)")
    busy = pvproperty(name="BUSY", value=0, read_only=True, doc="1 while a command is in progress")
    error_code = pvproperty(name="ERR_CODE", value=0, read_only=True,
                            doc="result of the last command: 0 done, 1 failed (reason in ERR_MSG)")
    error_message = long_string("ERR_MSG", "why the last command failed ('' when it did not)", read_only=True)

    def __init__(self, *args: Any, device: Any, bridge: Bridge, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.device = device
        self.bridge = bridge
        bridge.link(device.state, self.state)

    async def run_command(self, start: Callable[[], Any]) -> None:
        """Run ``start()`` (returns an ophyd Status or None) as one command; see the module doc."""
        if self.busy.value:
            # Refuse the put (clients check BUSY first); the error PVs belong to the
            # command in progress and are left alone.
            raise DeviceFault(self.device.name, "busy: the previous command has not finished")
        await self.busy.write(1)
        await self._clear_error_pvs()
        try:
            status = start()
            exc = None if status is None else await wait_status(status)
        except Exception as err:  # noqa: BLE001 - every failure must reach ERR_MSG
            exc = err
        await self.bridge.sync()
        await self.after_command(exc)
        if exc is not None:
            await self._report(as_fault(self.device.name, exc))
        await self.busy.write(0)

    async def after_command(self, exc: BaseException | None) -> None:
        """Hook: update group-specific PVs once the action has ended."""

    async def _report(self, fault: DeviceFault) -> None:
        await self.error_message.write(fault.message[: LONG_STRING - 1])
        await self.error_code.write(1)

    async def _clear_error_pvs(self) -> None:
        if self.error_code.value != 0:
            await self.error_code.write(0)
        if self.error_message.value != "":
            await self.error_message.write("")

    async def clear_error(self) -> None:
        await self.bridge.sync()
        await self._clear_error_pvs()


# ---------------------------------------------------------------------- robot
def synthesis_robot_group(n_precursors: int) -> type[CommandGroup]:
    """The synthesis robot's PVs for ``n_precursors`` precursors (the waveform lengths)."""

    size = int(n_precursors)

    class SynthesisRobotIOC(CommandGroup):
        precursors = long_string("PRECURSORS", "precursor names, comma-separated, in COMPOSITION order",
                                 read_only=True)
        n_precursors = pvproperty(name="N_PRECURSORS", value=size, read_only=True,
                                  doc="number of precursors (length of COMPOSITION)")
        composition = pvproperty(name="COMPOSITION", value=[0.0] * size, max_length=size,
                                 doc="fraction of each precursor (sums to 1)")
        total_volume = pvproperty(name="TOTAL_VOLUME", value=100.0, units="uL", precision=2,
                                  doc="volume dispensed per sample")
        volumes = pvproperty(name="VOLUMES", value=[0.0] * size, max_length=size, units="uL",
                             read_only=True, doc="volume of each precursor to dispense (COMPOSITION x TOTAL_VOLUME)")
        temperature = pvproperty(name="TEMPERATURE", value=0.0, units="degC", precision=1,
                                 doc="anneal temperature")
        sample_id = long_string("SAMPLE_ID", "id of the next sample to make")
        make = pvproperty(name="MAKE", value=0, doc="write a rack slot: make the sample into it (put-completion)")

        def __init__(self, *args: Any, lab: Any, **kwargs: Any):
            super().__init__(*args, device=lab.robot, **kwargs)
            self.lab = lab
            robot = lab.robot
            self.bridge.link(robot.composition, self.composition,
                             lambda v: np.asarray(v, dtype=float).ravel()[:size])
            self.bridge.link(robot.temperature, self.temperature, float)
            self.bridge.link(robot.sample_id, self.sample_id, lambda v: str(v)[: LONG_STRING - 1])

        @precursors.startup
        async def precursors(self, instance, async_lib):
            await instance.write(",".join(self.lab.precursors))
            if not self.lab.is_pool:
                lo, hi = self.lab.materials.temperature_range
                await self.temperature.write_metadata(lower_disp_limit=float(lo), upper_disp_limit=float(hi))
            await self._update_volumes()

        async def _update_volumes(self) -> None:
            comp = np.asarray(self.device.composition.get(), dtype=float).ravel()[:size]
            await self.volumes.write(comp * float(self.total_volume.value), verify_value=False)

        @composition.putter
        async def composition(self, instance, value):
            arr = np.atleast_1d(np.asarray(value, dtype=float))
            self.device.composition.put(arr)
            await self._update_volumes()
            return arr

        @total_volume.putter
        async def total_volume(self, instance, value):
            if not value > 0:
                raise ValueError("TOTAL_VOLUME must be > 0")
            comp = np.asarray(self.device.composition.get(), dtype=float).ravel()[:size]
            await self.volumes.write(comp * float(value), verify_value=False)
            return value

        @temperature.putter
        async def temperature(self, instance, value):
            self.device.temperature.put(float(value))
            return value

        @sample_id.putter
        async def sample_id(self, instance, value):
            self.device.sample_id.put(str(value).strip())
            return value

        @make.putter
        async def make(self, instance, value):
            await self.run_command(lambda: self.device.make.set(int(value)))
            return value

    return SynthesisRobotIOC


# ---------------------------------------------------------------------- changer
class SampleChangerIOC(CommandGroup):
    load = pvproperty(name="LOAD", value=0, doc="write a rack slot: load its sample onto the beam (put-completion)")
    unload = pvproperty(name="UNLOAD", value=0,
                        doc="write a rack slot: return the mounted sample into it (put-completion)")
    home = pvproperty(name="HOME", value=0, doc="write 1: home the gripper and clear an error (put-completion)")
    slot = pvproperty(name="SLOT_RBV", value=0, read_only=True, doc="rack slot the mounted sample came from (0: none)")
    mounted_sample = long_string("MOUNTED", "id of the sample at the beam position ('' when none)", read_only=True)
    n_slots = pvproperty(name="N_SLOTS", value=24, read_only=True, doc="number of rack slots (1..N_SLOTS)")
    door = enum("DOOR", ("closed", "open"), "door interlock: loads and unloads are refused while open "
                "(writable in the simulator)", read_only=False)

    def __init__(self, *args: Any, lab: Any, **kwargs: Any):
        super().__init__(*args, device=lab.changer, **kwargs)
        self.lab = lab
        self.bridge.link(lab.changer.mounted_sample, self.mounted_sample, lambda v: str(v)[: LONG_STRING - 1])

    @n_slots.startup
    async def n_slots(self, instance, async_lib):
        await instance.write(int(self.lab.registry.n_slots))

    def _door_closed(self) -> None:
        if self.door.value != "closed":
            raise DeviceFault(self.device.name, "door interlock: the changer door is open; close it first")

    @load.putter
    async def load(self, instance, value):
        def start():
            self._door_closed()
            return self.device.load.set(int(value))

        await self.run_command(start)
        if not self.error_code.value:
            await self.slot.write(int(value))
        return value

    @unload.putter
    async def unload(self, instance, value):
        def start():
            self._door_closed()
            return self.device.unload.set(int(value))

        await self.run_command(start)
        if not self.error_code.value:
            await self.slot.write(0)
        return value

    @home.putter
    async def home(self, instance, value):
        if value:
            await self.run_command(lambda: self.device.reset())
        return 0

    async def after_command(self, exc: BaseException | None) -> None:
        if not self.device.mounted_sample.get():
            await self.slot.write(0)


# ---------------------------------------------------------------------- shutter
class ShutterIOC(PVGroup):
    open_cmd = pvproperty(name="OPEN", value=0, doc="write 1: open the shutter (completion: STATE reads open)")
    close_cmd = pvproperty(name="CLOSE", value=0, doc="write 1: close the shutter (completion: STATE reads closed)")
    state = enum("STATE", ("closed", "open"), "shutter position readback")

    def __init__(self, *args: Any, lab: Any, bridge: Bridge, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shutter = lab.shutter
        self._pending: list[Any] = []
        bridge.link(lab.shutter.state, self.state)

    def _command(self, what: str) -> None:
        status = self.shutter.set(what)
        self._pending = [s for s in self._pending if not s.done] + [status]

    @open_cmd.putter
    async def open_cmd(self, instance, value):
        if value:
            self._command("open")
        return 0

    @close_cmd.putter
    async def close_cmd(self, instance, value):
        if value:
            self._command("close")
        return 0


# ---------------------------------------------------------------------- ring
class RingIOC(PVGroup):
    current = pvproperty(name="CURRENT", value=0.0, units="mA", precision=2, read_only=True,
                         doc="storage-ring current")
    beam = enum("BEAM", ("no beam", "beam"), f"'beam' while CURRENT > {BEAM_THRESHOLD_MA:g} mA")

    def __init__(self, *args: Any, lab: Any, bridge: Bridge, **kwargs: Any):
        super().__init__(*args, **kwargs)
        bridge.link(lab.ring_current, self.current, float)
        bridge.link(lab.ring_current, self.beam, lambda v: "beam" if float(v) > BEAM_THRESHOLD_MA else "no beam")


# ---------------------------------------------------------------------- detectors
class _DetectorBase(CommandGroup):
    acquire = pvproperty(name="ACQUIRE", value=0, doc="write 1: take one exposure (put-completion)")
    exposure_time = pvproperty(name="EXPOSURE", value=1.0, units="s", precision=3,
                               lower_ctrl_limit=1e-3, upper_ctrl_limit=3600.0, doc="exposure time")

    def __init__(self, *args: Any, lab: Any, **kwargs: Any):
        super().__init__(*args, device=lab.detector, **kwargs)
        self.lab = lab
        self.bridge.link(lab.detector.exposure_time, self.exposure_time, float)

    @exposure_time.putter
    async def exposure_time(self, instance, value):
        self.device.exposure_time.put(float(value))
        return value

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            await self.run_command(self.device.trigger)
        return 0


def xrd_detector_group(n_bins: int) -> type[CommandGroup]:
    """The XRD detector's PVs for a pattern of ``n_bins`` points."""

    class XrdDetectorIOC(_DetectorBase):
        spectrum = pvproperty(name="SPECTRUM", value=[0.0] * n_bins, max_length=n_bins, units="counts",
                              read_only=True, doc="last integrated pattern (counts per bin)")
        two_theta = pvproperty(name="TWO_THETA", value=[0.0] * n_bins, max_length=n_bins, units="deg",
                               read_only=True, doc="2-theta of each bin")
        total_counts = pvproperty(name="TOTAL_COUNTS", value=0.0, units="counts", read_only=True,
                                  doc="sum of SPECTRUM")
        n_bins_pv = pvproperty(name="N_BINS", value=n_bins, read_only=True, doc="number of bins")

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            det = self.device
            self.bridge.link(det.spectrum, self.spectrum, lambda v: np.asarray(v, dtype=float))
            self.bridge.link(det.two_theta, self.two_theta, lambda v: np.asarray(v, dtype=float))
            self.bridge.link(det.total_counts, self.total_counts, float)

    return XrdDetectorIOC


class PoolProbeIOC(_DetectorBase):
    """The pool instruments' probe: the table value of the mounted sample."""

    value = pvproperty(name="VALUE", value=float("nan"), read_only=True, doc="measured value (NaN: nothing mounted)")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bridge.link(self.device.value, self.value, float)


# ---------------------------------------------------------------------- temperature stage
class TemperatureStageIOC(PVGroup):
    """A sample heater: RBV ramps to SP at RAMP degC/min (nominal; x the lab's time scale)."""

    setpoint = pvproperty(name="SP", value=25.0, units="degC", precision=1, lower_ctrl_limit=-50.0,
                          upper_ctrl_limit=1000.0, doc="temperature setpoint")
    readback = pvproperty(name="RBV", value=25.0, units="degC", precision=1, read_only=True,
                          doc="measured temperature")
    ramp_rate = pvproperty(name="RAMP", value=600.0, units="degC/min", precision=1, lower_ctrl_limit=1e-3,
                           upper_ctrl_limit=1e4, doc="ramp rate")
    done = pvproperty(name="DONE", value=1, read_only=True, doc="1 when RBV has reached SP")

    def __init__(self, *args: Any, clock: Clock, tick_s: float = 0.05, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.tick_s = tick_s
        self._task: asyncio.Task | None = None

    @setpoint.putter
    async def setpoint(self, instance, value):
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.ensure_future(self._ramp(float(value)))
        return value

    async def _ramp(self, target: float) -> None:
        await self.done.write(0)
        start = float(self.readback.value)
        rate = float(self.ramp_rate.value) / 60.0  # degC per nominal second
        duration = self.clock.delay(abs(target - start) / rate)
        t0 = time.monotonic()
        try:
            while duration > 0 and time.monotonic() - t0 < duration:
                frac = (time.monotonic() - t0) / duration
                await self.readback.write(start + frac * (target - start))
                await asyncio.sleep(self.tick_s)
            await self.readback.write(target)
        finally:
            await self.done.write(1)


# ---------------------------------------------------------------------- simulator control
class SimControlIOC(PVGroup):
    """Fault injection and facts about the simulation (no real IOC has these PVs)."""

    robot_jam = pvproperty(name="ROBOT_JAM", value=0,
                           doc="write 1: the next MAKE fails (gripper jam); 0 disarms and resets the robot")
    changer_drop = pvproperty(name="CHANGER_DROP", value=0,
                              doc="write 1: the next LOAD drops the sample; 0 disarms and resets the changer")
    detector_timeout = pvproperty(name="DETECTOR_TIMEOUT", value=0,
                                  doc="write 1: the next ACQUIRE times out; 0 disarms and resets the detector")
    beam_dump = pvproperty(name="BEAM_DUMP", value=0, doc="write 1: the beam dumps (0 mA); 0: beam back at 400 mA")
    instrument = long_string("INSTRUMENT", "simulated instrument", read_only=True)
    seed = pvproperty(name="SEED", value=0, read_only=True, doc="seed of the lab's random generator")
    time_scale = pvproperty(name="TIME_SCALE", value=0.0, read_only=True,
                            doc="durations are nominal x TIME_SCALE (0: instant)")

    _FAULTS = {"robot_jam": ("robot", "jam"), "changer_drop": ("changer", "drop"),
               "detector_timeout": ("detector", "timeout"), "beam_dump": ("ring", "beam_dump")}

    def __init__(self, *args: Any, lab: Any, instrument_name: str, seed: int,
                 on_reset: Callable[[str], Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lab = lab
        self.instrument_name = instrument_name
        self.seed_value = int(seed)
        self.on_reset = on_reset

    @instrument.startup
    async def instrument(self, instance, async_lib):
        await instance.write(self.instrument_name)
        await self.seed.write(self.seed_value)
        await self.time_scale.write(float(self.lab.time_scale))

    async def _arm(self, attr: str, value: Any) -> int:
        device, fault = self._FAULTS[attr]
        if value:
            self.lab.inject_fault(device, fault)
        else:
            self.lab.clear_fault(device)
            if self.on_reset is not None:
                await self.on_reset(device)
        return 1 if value else 0

    @robot_jam.putter
    async def robot_jam(self, instance, value):
        return await self._arm("robot_jam", value)

    @changer_drop.putter
    async def changer_drop(self, instance, value):
        return await self._arm("changer_drop", value)

    @detector_timeout.putter
    async def detector_timeout(self, instance, value):
        return await self._arm("detector_timeout", value)

    @beam_dump.putter
    async def beam_dump(self, instance, value):
        return await self._arm("beam_dump", value)

    @seed.scan(period=0.2)
    async def seed(self, instance, async_lib):
        """Armed faults fire once: show when they have been used."""
        armed = self.lab.armed_faults()
        for attr, (device, fault) in self._FAULTS.items():
            if device == "ring":
                continue
            now = 1 if fault in armed.get(device, []) else 0
            prop = getattr(self, attr)
            if prop.value != now:
                await prop.write(now, verify_value=False)


__all__ = [
    "BEAM_THRESHOLD_MA", "CommandGroup", "PoolProbeIOC", "RingIOC", "SampleChangerIOC", "ShutterIOC",
    "SimControlIOC", "TemperatureStageIOC", "synthesis_robot_group", "xrd_detector_group",
]
