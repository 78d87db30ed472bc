"""The in-process simulated lab: a synthesis robot, a sample changer, a sample stage,
a shutter, the storage-ring current and a detector, all ophyd devices over one shared
sample registry and one seeded random generator.

Every device has the component names of its EPICS double (``sdl.devices``), so the
same plans drive either. Commands are signals whose ``set(value)`` returns a Status
that completes when the action is done, or fails with :class:`sdl.errors.DeviceFault`
(EPICS put-completion). Durations are nominal seconds x ``time_scale`` (0 = instant).

The lab runs either a :class:`~sdl.sim_devices.materials.MaterialsModel` (the detector
is an XRD :class:`SimDetector`) or a :class:`~sdl.sim_devices.pool.PoolModel` (the
detector is a :class:`SimPoolProbe` that reads the table's value of the mounted sample).

Faults for testing recovery (``lab.inject_fault(device, fault)``; each fires once):

==========  ==========  ============================================================
device      fault       effect
==========  ==========  ============================================================
changer     drop        the next load drops the sample: DeviceFault, sample lost
detector    timeout     the next trigger fails with DeviceFault("detector", "timeout ...")
robot       jam         the next make fails with DeviceFault, no sample made
ring        beam_dump   ring current 0 mA until ``lab.clear_fault("ring")``
==========  ==========  ============================================================
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import Status

from sdl.errors import DeviceFault, InvalidInput
from sdl.sim_devices.materials import MaterialsModel
from sdl.sim_devices.motor import SimMotor
from sdl.sim_devices.pool import PoolModel
from sdl.sim_devices.signals import (
    Clock,
    CommandSignal,
    CommandStatus,
    PositiveSignal,
    ReadOnlySignal,
    UnitSignal,
    as_fault,
    finish,
)
from sdl.space import SearchSpace

#: Ring current at which the model's count rates are given (mA).
NOMINAL_RING_CURRENT = 400.0
#: Nominal durations (s) before scaling by ``time_scale``.
MAKE_S, LOAD_S, UNLOAD_S, SHUTTER_S = 60.0, 20.0, 20.0, 0.5
#: Detector dark counts per bin per second (present even with the shutter closed).
DARK_RATE = 2.0

FAULTS: dict[str, tuple[str, ...]] = {
    "changer": ("drop",),
    "detector": ("timeout",),
    "robot": ("jam",),
    "ring": ("beam_dump",),
}

Location = Literal["rack", "gripper", "beam", "lost"]


@dataclass
class SampleRecord:
    """What the lab knows about one sample: how it was made and where it is."""

    sample_id: str
    composition: list[float]
    temperature: float | None  # None for pool samples (the table has no anneal)
    params: dict[str, float]  # the point by search-space parameter name
    slot: int | None  # rack slot while in the rack, else None
    location: Location = "rack"
    lost: bool = False
    made_at: float = field(default_factory=time.time)
    history: list[str] = field(default_factory=list)


class SampleRegistry:
    """Rack slots 1..n_slots, the gripper and the beam position; one lock for all devices."""

    def __init__(self, n_slots: int):
        if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 1:
            raise InvalidInput("n_slots", "must be an integer >= 1", n_slots)
        self.n_slots = n_slots
        self.lock = threading.RLock()
        self.records: dict[str, SampleRecord] = {}
        self.slots: dict[int, str] = {}
        self.reserved: set[int] = set()
        self.beam: str | None = None

    def slot_number(self, device: str, slot: Any) -> int:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 1 <= slot <= self.n_slots:
            raise DeviceFault(device, f"slot must be an integer in 1..{self.n_slots} (got {slot!r})")
        return int(slot)

    def free_slot(self, device: str, slot: Any) -> int:
        """``slot`` as an int if it is in range and free (not holding or awaiting a sample)."""
        n = self.slot_number(device, slot)
        if n in self.slots:
            raise DeviceFault(device, f"slot {n} is occupied by sample {self.slots[n]!r}")
        if n in self.reserved:
            raise DeviceFault(device, f"slot {n} is reserved by a command in progress")
        return n

    def occupied_slot(self, device: str, slot: Any) -> tuple[int, str]:
        n = self.slot_number(device, slot)
        if n not in self.slots:
            raise DeviceFault(device, f"slot {n} is empty")
        return n, self.slots[n]

    def move(self, sample_id: str, location: Location, slot: int | None = None) -> None:
        """Move a sample in the registry (slot bookkeeping included) and note it in its history."""
        rec = self.records[sample_id]
        if rec.slot is not None and self.slots.get(rec.slot) == sample_id:
            del self.slots[rec.slot]
        if self.beam == sample_id:
            self.beam = None
        rec.location, rec.slot = location, slot
        if location == "rack":
            assert slot is not None
            self.slots[slot] = sample_id
        elif location == "beam":
            self.beam = sample_id
        elif location == "lost":
            rec.lost = True
        rec.history.append(f"{time.time():.3f} {location}" + (f" {slot}" if slot is not None else ""))


# ---------------------------------------------------------------------- base
class _LabDevice(Device):
    """A device with a busy/idle/error state that runs commands as timed actions."""

    state = Cpt(ReadOnlySignal, value="idle", kind="config")
    error_message = Cpt(ReadOnlySignal, value="", kind="config")

    def __init__(self, lab: "SimLab", *, name: str, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self._lab = lab

    def _execute(self, nominal_s: float, start: Callable[[], Callable[[], None]]) -> Status:
        """Run an action: ``start`` checks preconditions and returns the completion step.

        A DeviceFault from ``start`` fails the Status at once (nothing moved); one from
        the completion step fails it at the end of the action. Either sets ``state`` to
        'error' and ``error_message``.
        """
        status = CommandStatus(obj=self)
        with self._lab.registry.lock:
            if self.state.get() == "busy":
                finish(status, DeviceFault(self.name, "busy: the previous command has not finished"))
                return status
            try:
                complete = start()
            except Exception as exc:  # noqa: BLE001 - every failure must reach the Status
                self._fail(status, exc)
                return status
            self.state._update("busy")
            self.error_message._update("")
        self._lab.clock.call_later(nominal_s, lambda: self._complete(status, complete))
        return status

    def _complete(self, status: Status, complete: Callable[[], None]) -> None:
        try:
            with self._lab.registry.lock:
                complete()
        except Exception as exc:  # noqa: BLE001
            self._fail(status, exc)
            return
        self.state._update("idle")
        finish(status)

    def _fail(self, status: Status, exc: BaseException) -> None:
        fault = as_fault(self.name, exc)
        self.state._update("error")
        self.error_message._update(fault.message)
        finish(status, fault)

    def reset(self) -> None:
        """Operator reset: clear an error state."""
        if self.state.get() == "error":
            self.state._update("idle")
            self.error_message._update("")


# ---------------------------------------------------------------------- robot
class SimSynthesisRobot(_LabDevice):
    """Makes a sample from ``composition``, ``temperature`` and ``sample_id`` into a rack slot."""

    composition = Cpt(UnitSignal, value=np.zeros(0), kind="normal", units="fraction")
    temperature = Cpt(UnitSignal, value=0.0, kind="normal", units="°C")
    sample_id = Cpt(Signal, value="", kind="normal")
    make = Cpt(CommandSignal, value=0, handler="_make", kind="omitted")

    def __init__(self, lab: "SimLab", *, name: str = "robot", **kwargs: Any):
        super().__init__(lab, name=name, **kwargs)
        self.precursors: list[str] = list(lab.precursors)
        n = len(self.precursors)
        if lab.is_pool:
            self.composition.units = ""
            self.composition.put(np.array(lab.pool.points[0], dtype=float))
        else:
            self.composition.put(np.full(n, 1.0 / n))
            self.temperature.put(float(lab.materials.temperature_range[0]))

    def _make(self, slot: Any) -> Status:
        def start() -> Callable[[], None]:
            registry = self._lab.registry
            n = registry.free_slot(self.name, slot)
            sid = str(self.sample_id.get()).strip()
            if not sid:
                raise DeviceFault(self.name, "sample_id is empty: set robot.sample_id before make")
            if sid in registry.records:
                raise DeviceFault(self.name, f"sample_id {sid!r} is already used")
            record = self._lab.new_record(sid, self.composition.get(), self.temperature.get())
            jam = self._lab.consume_fault("robot", "jam")
            registry.reserved.add(n)

            def complete() -> None:
                registry.reserved.discard(n)
                if jam:
                    raise DeviceFault(self.name, f"gripper jammed while making {sid!r}; no sample was made")
                registry.records[sid] = record
                registry.move(sid, "rack", n)

            return complete

        return self._execute(MAKE_S, start)


# ---------------------------------------------------------------------- changer
class SimSampleChanger(_LabDevice):
    """Moves samples between rack slots and the beam position."""

    load = Cpt(CommandSignal, value=0, handler="_load", kind="omitted")
    unload = Cpt(CommandSignal, value=0, handler="_unload", kind="omitted")
    mounted_sample = Cpt(ReadOnlySignal, value="", kind="normal")

    def _load(self, slot: Any) -> Status:
        def start() -> Callable[[], None]:
            registry = self._lab.registry
            n, sid = registry.occupied_slot(self.name, slot)
            if registry.beam is not None:
                raise DeviceFault(self.name, f"beam position holds sample {registry.beam!r}; unload it first")
            drop = self._lab.consume_fault("changer", "drop")
            registry.move(sid, "gripper")

            def complete() -> None:
                if drop:
                    registry.move(sid, "lost")
                    raise DeviceFault(self.name, f"gripper dropped sample {sid!r} from slot {n}; sample lost")
                registry.move(sid, "beam")
                self.mounted_sample._update(sid)

            return complete

        return self._execute(LOAD_S, start)

    def _unload(self, slot: Any) -> Status:
        def start() -> Callable[[], None]:
            registry = self._lab.registry
            n = registry.free_slot(self.name, slot)
            sid = registry.beam
            if sid is None:
                raise DeviceFault(self.name, "no sample at the beam position")
            registry.move(sid, "gripper")
            registry.reserved.add(n)
            self.mounted_sample._update("")

            def complete() -> None:
                registry.reserved.discard(n)
                registry.move(sid, "rack", n)

            return complete

        return self._execute(UNLOAD_S, start)


# ---------------------------------------------------------------------- shutter
class SimShutter(Device):
    """The beam shutter: ``set('open' | 'close')``; ``state`` reads 'open' or 'closed'."""

    state = Cpt(ReadOnlySignal, value="closed", kind="normal")

    def __init__(self, *, name: str = "shutter", clock: Clock | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self._clock = clock if clock is not None else Clock()

    def set(self, value: Any) -> Status:
        if value not in ("open", "close"):
            raise InvalidInput(self.name, "allowed values: 'open', 'close'", value)
        status = CommandStatus(obj=self)
        target = "open" if value == "open" else "closed"

        def complete() -> None:
            self.state._update(target)
            finish(status)

        self._clock.call_later(SHUTTER_S, complete)
        return status

    @property
    def is_open(self) -> bool:
        return self.state.get() == "open"


# ---------------------------------------------------------------------- detectors
class SimDetector(_LabDevice):
    """XRD area detector integrated to a 1-D pattern: Poisson counts of the mounted sample."""

    exposure_time = Cpt(PositiveSignal, value=1.0, kind="config", units="s")
    two_theta = Cpt(ReadOnlySignal, value=np.zeros(0), kind="config", units="deg")
    spectrum = Cpt(ReadOnlySignal, value=np.zeros(0), kind="normal", units="counts")
    total_counts = Cpt(ReadOnlySignal, value=0.0, kind="hinted", units="counts")

    def __init__(self, lab: "SimLab", *, name: str = "detector", **kwargs: Any):
        super().__init__(lab, name=name, **kwargs)
        grid = np.asarray(lab.materials.two_theta, dtype=float)
        self.two_theta._update(grid.copy())
        self.spectrum._update(np.zeros_like(grid))

    def trigger(self) -> Status:
        exposure = float(self.exposure_time.get())

        def start() -> Callable[[], None]:
            counts = self._lab.acquire(exposure)
            timeout = self._lab.consume_fault("detector", "timeout")

            def complete() -> None:
                if timeout:
                    raise DeviceFault(self.name, f"timeout: no frame within {exposure:g} s exposure + readout")
                self.spectrum._update(counts)
                self.total_counts._update(float(counts.sum()))

            return complete

        return self._execute(exposure, start)


class SimPoolProbe(_LabDevice):
    """The pool's "measurement": the table value of the mounted sample (NaN if none), no noise."""

    exposure_time = Cpt(PositiveSignal, value=1.0, kind="config", units="s")
    value = Cpt(ReadOnlySignal, value=math.nan, kind="hinted")

    def __init__(self, lab: "SimLab", *, name: str = "detector", **kwargs: Any):
        super().__init__(lab, name=name, **kwargs)
        pool = lab.pool
        units = pool.units.get(pool.objective.name) or pool.objective.units
        column = pool.objective_column.strip()
        if not units and "(" in column and column.endswith(")"):  # 'Conductivity (S/cm)' -> 'S/cm'
            units = column[column.rindex("(") + 1 : -1]
        self.value.units = units

    def trigger(self) -> Status:
        exposure = float(self.exposure_time.get())

        def start() -> Callable[[], None]:
            reading = self._lab.pool_value()
            timeout = self._lab.consume_fault("detector", "timeout")

            def complete() -> None:
                if timeout:
                    raise DeviceFault(self.name, f"timeout: no reading within {exposure:g} s")
                self.value._update(reading)

            return complete

        return self._execute(exposure, start)


# ---------------------------------------------------------------------- the lab
class SimLab:
    """The simulated lab: devices over a shared registry, a seeded generator and a clock."""

    def __init__(
        self,
        model: MaterialsModel | PoolModel,
        *,
        time_scale: float = 0.0,
        seed: int = 0,
        n_slots: int = 24,
        failure_region: Any = None,
    ):
        if not isinstance(model, (MaterialsModel, PoolModel)):
            raise InvalidInput("model", "must be a MaterialsModel or a PoolModel", type(model).__name__)
        from sdl.sim_devices.failures import failure_region as _region

        self.model = model
        #: Points where no sample forms (:mod:`sdl.sim_devices.failures`); None: every point forms.
        self.failure_region = _region(failure_region)
        self.clock = Clock(time_scale)
        self.rng = np.random.default_rng(seed)
        self.registry = SampleRegistry(n_slots)
        self._armed: dict[str, set[str]] = {d: set() for d in FAULTS}

        self.ring_current = UnitSignal(name="ring_current", value=NOMINAL_RING_CURRENT, units="mA", kind="hinted")
        self.shutter = SimShutter(name="shutter", clock=self.clock)
        self.stage_x = SimMotor(name="stage_x", clock=self.clock, limits=(-10.0, 10.0), velocity=2.0)
        self.stage_y = SimMotor(name="stage_y", clock=self.clock, limits=(-10.0, 10.0), velocity=2.0)
        self.robot = SimSynthesisRobot(self, name="robot")
        self.changer = SimSampleChanger(self, name="changer")
        self.detector: SimDetector | SimPoolProbe = (
            SimPoolProbe(self, name="detector") if self.is_pool else SimDetector(self, name="detector")
        )

    # ------------------------------------------------------------------ model
    @property
    def is_pool(self) -> bool:
        return isinstance(self.model, PoolModel)

    @property
    def materials(self) -> MaterialsModel:
        assert isinstance(self.model, MaterialsModel), "not a MaterialsModel lab"
        return self.model

    @property
    def pool(self) -> PoolModel:
        assert isinstance(self.model, PoolModel), "not a PoolModel lab"
        return self.model

    @property
    def precursors(self) -> list[str]:
        return list(self.pool.inputs) if self.is_pool else list(self.materials.precursors)

    @property
    def time_scale(self) -> float:
        return self.clock.time_scale

    def search_space(self) -> SearchSpace:
        return self.model.search_space()

    def devices(self) -> dict[str, Any]:
        names = ("robot", "changer", "stage_x", "stage_y", "shutter", "ring_current", "detector")
        return {n: getattr(self, n) for n in names}

    # ------------------------------------------------------------------ faults
    def inject_fault(self, device: str, fault: str) -> None:
        """Arm ``fault`` on ``device`` (fires once); a beam dump takes effect at once."""
        if device not in FAULTS:
            raise InvalidInput("device", f"no faults for this device; allowed: {sorted(FAULTS)}", device)
        if fault not in FAULTS[device]:
            raise InvalidInput("fault", f"allowed for {device!r}: {list(FAULTS[device])}", fault)
        with self.registry.lock:
            self._armed[device].add(fault)
        if device == "ring":
            self.ring_current.put(0.0)

    def clear_fault(self, device: str) -> None:
        """Disarm the device's faults, reset its error state; the ring returns to 400 mA."""
        if device not in FAULTS:
            raise InvalidInput("device", f"allowed: {sorted(FAULTS)}", device)
        with self.registry.lock:
            self._armed[device].clear()
        if device == "ring":
            self.ring_current.put(NOMINAL_RING_CURRENT)
        else:
            getattr(self, device).reset()

    def armed_faults(self) -> dict[str, list[str]]:
        with self.registry.lock:
            return {d: sorted(f) for d, f in self._armed.items() if f}

    def consume_fault(self, device: str, fault: str) -> bool:
        """True (once) if ``fault`` is armed on ``device``."""
        with self.registry.lock:
            if fault in self._armed[device]:
                self._armed[device].discard(fault)
                return True
            return False

    # ------------------------------------------------------------------ samples
    def new_record(self, sample_id: str, composition: Any, temperature: Any) -> SampleRecord:
        """A record for a sample to make, after checking the point is makeable."""
        if self.is_pool:
            inputs = self.pool.inputs
            try:
                values = np.atleast_1d(np.asarray(composition, dtype=float))
            except (TypeError, ValueError):
                raise DeviceFault("robot", f"composition must be {len(inputs)} numbers: {inputs}") from None
            # zip() would silently drop extra values; NaN would match no row yet pass the
            # pool's tolerance test (NaN > tol is False), so check both here.
            if values.shape != (len(inputs),):
                raise DeviceFault(
                    "robot", f"composition needs {len(inputs)} values, one per {inputs} (got {values.size})"
                )
            if not np.all(np.isfinite(values)):
                raise DeviceFault("robot", f"composition values must be finite numbers (got {values.tolist()})")
            point = dict(zip(inputs, values.tolist()))
            try:
                row = self.pool.index_of(point)
            except InvalidInput as exc:
                raise DeviceFault("robot", f"invalid point: {exc.message}") from exc
            params = self.pool.as_dict(row)
            return SampleRecord(sample_id, list(params.values()), None, params, slot=None)
        try:
            x, temp = self.materials.check_point(composition, float(temperature))
        except InvalidInput as exc:
            raise DeviceFault("robot", f"invalid input: {exc}") from exc
        params = {p: float(v) for p, v in zip(self.materials.precursors, x)}
        params["temperature"] = temp
        if self.failure_region is not None and self.failure_region.fails(params):
            raise DeviceFault("robot", f"{self.failure_region.reason}: {params}")
        return SampleRecord(sample_id, x.tolist(), temp, params, slot=None)

    def sample(self, sample_id: str) -> SampleRecord:
        """A copy of the record of ``sample_id``."""
        with self.registry.lock:
            if sample_id not in self.registry.records:
                raise InvalidInput("sample_id", "unknown sample", sample_id)
            return copy.deepcopy(self.registry.records[sample_id])

    def samples(self) -> list[SampleRecord]:
        with self.registry.lock:
            return [copy.deepcopy(r) for r in self.registry.records.values()]

    def samples_at_beam(self) -> list[SampleRecord]:
        with self.registry.lock:
            return [self.sample(self.registry.beam)] if self.registry.beam else []

    # ------------------------------------------------------------------ measurement
    def flux_factor(self) -> float:
        """Beam on the sample relative to nominal: 0 with the shutter closed or no beam."""
        if not self.shutter.is_open:
            return 0.0
        return max(0.0, float(self.ring_current.get())) / NOMINAL_RING_CURRENT

    def acquire(self, exposure: float) -> np.ndarray:
        """One noisy XRD pattern (counts) of whatever is at the beam, with dark counts."""
        model = self.materials
        with self.registry.lock:
            sid = self.registry.beam
            rec = self.registry.records[sid] if sid else None
        rate = model.expected_spectrum(rec.composition, rec.temperature) if rec else model.background_spectrum()
        signal = self.rng.poisson(rate * exposure * self.flux_factor())
        dark = self.rng.poisson(DARK_RATE * exposure, size=rate.shape)
        return (signal + dark).astype(float)

    def pool_value(self) -> float:
        with self.registry.lock:
            sid = self.registry.beam
            rec = self.registry.records[sid] if sid else None
        return self.pool.value(rec.params) if rec else math.nan
