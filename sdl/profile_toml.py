"""A declarative profile: stock EPICS hardware as an sdl instrument, no Python.

::

    [instrument.pinhole]
    description = "pinhole scan on the mini beamline"
    settle_s = 0.6                 # wait after the moves, before reading
    repeats = 1                    # readings per point (averaged)

    [instrument.pinhole.devices.ph_mtr]
    class = "ophyd.EpicsSignal"    # or ophyd.EpicsMotor (prefix), ophyd.EpicsSignalRO (pv)
    pv = "mini:ph:mtr"

    [instrument.pinhole.devices.ph_det]
    class = "ophyd.EpicsSignalRO"
    pv = "mini:ph:det"

    [[instrument.pinhole.parameters]]
    name = "x"                     # a search-space parameter, bound to a movable device
    device = "ph_mtr"
    lower = -40.0
    upper = 40.0
    units = "mm"

    [[instrument.pinhole.objectives]]
    name = "intensity"
    reading = "ph_det"             # a device's reading
    reduce = "mean"                # mean | max | min | sum | centroid | fwhm | ratio
    direction = "maximize"

Every table is checked with pydantic (``extra='forbid'``): a key that does not exist
is one clear error naming the instrument, the key and what is allowed.
"""

from __future__ import annotations

import math

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from typing import Annotated

from sdl.errors import shown
from sdl.plugin import Arg, PluginError

Repeats = Annotated[int, Arg(1, 1000, description="readings per point (averaged)")]
Delay = Annotated[float, Arg(0, 3600, units="s", description="between readings")]

DEVICE_CLASSES = ("ophyd.EpicsMotor", "ophyd.EpicsSignal", "ophyd.EpicsSignalRO")


class _Strict(BaseModel):
    # strict: a TOML value has its own type, so `lower = "-40"` is a mistake to say, not to convert
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class DeviceSpec(_Strict):
    """One stock device: by ophyd class and PV (prefix for a motor record)."""

    cls: Literal["ophyd.EpicsMotor", "ophyd.EpicsSignal", "ophyd.EpicsSignalRO"] = Field(alias="class")
    prefix: str | None = Field(None, description="EpicsMotor: the motor record's PV")
    pv: str | None = Field(None, description="EpicsSignal(RO): the readback PV")
    write_pv: str | None = Field(None, description="EpicsSignal: the setpoint PV when it is not `pv`")
    put_complete: bool = Field(True, description="EpicsSignal: a move is done when the IOC says the put is done")
    tolerance: float | None = Field(None, description="EpicsSignal without put completion: readback tolerance")
    shape: list[int] | None = Field(None, description="a waveform/image reading's shape, e.g. [480, 640]")
    trigger_pv: str | None = Field(None, description="EpicsSignalRO of an area-detector-like camera: a PV written 1 "
                                   "(put completion) to take each frame before it is read, e.g. P:cam1:Acquire")

    @model_validator(mode="after")
    def _pvs(self) -> "DeviceSpec":
        if self.cls == "ophyd.EpicsMotor":
            if not self.prefix or self.pv or self.write_pv:
                raise ValueError("ophyd.EpicsMotor takes `prefix` (the motor record), not pv/write_pv")
        elif not self.pv or self.prefix:
            raise ValueError(f"{self.cls} takes `pv` (and for EpicsSignal optionally `write_pv`), not prefix")
        if self.cls == "ophyd.EpicsSignalRO" and self.write_pv:
            raise ValueError("ophyd.EpicsSignalRO is read-only: no write_pv")
        if self.trigger_pv and self.cls != "ophyd.EpicsSignalRO":
            raise ValueError("trigger_pv belongs to a detector (ophyd.EpicsSignalRO)")
        return self

    @property
    def movable(self) -> bool:
        return self.cls in ("ophyd.EpicsMotor", "ophyd.EpicsSignal")

    @property
    def pvs(self) -> list[str]:
        return [p for p in (self.prefix, self.pv, self.write_pv, self.trigger_pv) if p]


class ParameterSpec(_Strict):
    name: str
    device: str = Field(description="a movable device of this instrument")
    lower: float
    upper: float
    units: str = ""
    value_type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _bounds(self) -> "ParameterSpec":  # said when the file is read, not once the devices connect
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"lower and upper must be finite numbers (got {self.lower}, {self.upper})")
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower:g}) must be below upper ({self.upper:g})")
        return self


class ObjectiveSpec(_Strict):
    name: str
    reading: str = Field(description="a device of this instrument whose reading is reduced")
    reduce: Literal["mean", "max", "min", "sum", "centroid", "fwhm", "ratio"] = "mean"
    direction: Literal["maximize", "minimize"] = "maximize"
    units: str = ""
    denominator: str | None = Field(None, description="ratio: the reading divided by")
    axis: int = Field(0, ge=0, le=1, description="centroid/fwhm of an image: 0 profile along rows, 1 along columns")
    step: float = Field(1.0, description="centroid/fwhm: x units per sample")
    origin: float = Field(0.0, description="centroid/fwhm: x of the first sample")

    @model_validator(mode="after")
    def _ratio(self) -> "ObjectiveSpec":
        if (self.reduce == "ratio") != (self.denominator is not None):
            raise ValueError("`denominator` is needed by reduce='ratio' and allowed only there")
        return self


class ShutterSpec(_Strict):
    device: str
    open: float | int | str = 1
    close: float | int | str = 0


class SuspenderSpec(_Strict):
    """Suspend a run while a reading is below ``below``; resume above ``resume_above``."""

    reading: str
    below: float
    resume_above: float | None = None
    sleep_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _thresholds(self) -> "SuspenderSpec":  # bluesky says it only once the devices have connected
        if not math.isfinite(self.below) or (self.resume_above is not None and not math.isfinite(self.resume_above)):
            raise ValueError(f"below and resume_above must be finite numbers (got {self.below}, {self.resume_above})")
        if self.resume_above is not None and self.resume_above < self.below:
            raise ValueError(f"resume_above ({self.resume_above:g}) must be at least below ({self.below:g})")
        return self


class InstrumentSpec(_Strict):
    description: str = ""
    devices: dict[str, DeviceSpec] = Field(min_length=1)
    parameters: list[ParameterSpec] = Field(min_length=1)
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    settle_s: float = Field(0.0, ge=0, le=3600, description="wait after the moves, before reading")
    repeats: int = Field(1, ge=1, le=1000, description="readings per point, averaged")
    delay_s: float = Field(0.0, ge=0, le=3600, description="between repeated readings")
    connect_timeout_s: float = Field(5.0, gt=0, le=600)
    shutter: ShutterSpec | None = None
    suspender: SuspenderSpec | None = None

    @model_validator(mode="after")
    def _references(self) -> "InstrumentSpec":
        names = sorted(self.devices)
        for key, items in (("parameters", self.parameters), ("objectives", self.objectives)):
            seen = [x.name for x in items]
            dup = next((i for i, n in enumerate(seen) if n in seen[:i]), None)
            if dup is not None:
                raise ValueError(f"{key}.{dup}.name: {seen[dup]!r} is named twice")
        moved = [p.device for p in self.parameters]
        dup = next((i for i, d in enumerate(moved) if d in moved[:i]), None)
        if dup is not None:
            raise ValueError(f"parameters.{dup}.device: {moved[dup]!r} already moves parameter "
                             f"{self.parameters[moved.index(moved[dup])].name!r}")
        for i, p in enumerate(self.parameters):
            if p.device not in self.devices:
                raise ValueError(f"parameters.{i}.device: unknown device {p.device!r}; allowed: {names}")
            if not self.devices[p.device].movable:
                raise ValueError(f"parameters.{i}.device: {p.device!r} is {self.devices[p.device].cls}, not "
                                 "movable; allowed: ophyd.EpicsMotor, ophyd.EpicsSignal")
        for i, o in enumerate(self.objectives):
            for key in ("reading", "denominator"):
                dev = getattr(o, key)
                if dev is not None and dev not in self.devices:
                    raise ValueError(f"objectives.{i}.{key}: unknown device {dev!r}; allowed: {names}")
        for key in ("shutter", "suspender"):
            spec = getattr(self, key)
            dev = None if spec is None else getattr(spec, "device", None) or getattr(spec, "reading", None)
            if dev is not None and dev not in self.devices:
                raise ValueError(f"{key}: unknown device {dev!r}; allowed: {names}")
        return self


class ProfileSpec(_Strict):
    instrument: dict[str, InstrumentSpec] = Field(min_length=1)


def _first_error(path: Path, exc: ValidationError) -> PluginError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    plugin = loc[1] if len(loc) > 1 and loc[0] == "instrument" else path.name
    field = ".".join(loc[2:] if plugin != path.name else loc) or "profile"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        allowed = sorted(f.alias or n for n, f in model.model_fields.items()) if model else []
        msg = f"unknown key; allowed: {allowed}"
    elif err["type"] == "literal_error":
        msg = f"not allowed; {msg[:1].lower()}{msg[1:]}"
    elif err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif err["type"].endswith("_type") and "input" in err:  # a value of the wrong TOML type
        got = err["input"]
        msg = f"{msg} (got {shown(got)}" + (": a number is written without quotes)" if isinstance(got, str) and
                                             err["type"] in ("float_type", "int_type") else ")")
    return PluginError(plugin, f"{path.name}: {field}", msg)


def _unwrap(ann: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``dict[str, X]``, ``list[X]``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()):
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc`` (for the list of allowed keys)."""
    model: type[BaseModel] | None = ProfileSpec
    for key in loc[:-1]:
        if model is None:
            return None
        if key in model.model_fields:
            model = _unwrap(model.model_fields[key].annotation)
        # else: a dict key or a list index, the model stays
    return model


def parse_profile(path: Path) -> ProfileSpec:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(path.name, "toml", f"not valid TOML: {exc}") from None
    try:
        return ProfileSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(path, exc) from None


def load_toml_profile(path: Path) -> dict[str, dict[str, Any]]:
    """``{"instruments": {name: factory}}`` for the registry."""
    spec = parse_profile(path)
    return {"instruments": {name: _factory(name, inst, path) for name, inst in spec.instrument.items()}}


def _factory(name: str, spec: InstrumentSpec, path: Path):
    def build(ctx: Any):
        return build_instrument(name, spec, source=str(path), connect=bool(ctx.options.get("connect", True)))

    build.__doc__ = spec.description
    return build


def _make_device(name: str, d: DeviceSpec) -> Any:
    from ophyd import EpicsMotor, EpicsSignal, EpicsSignalRO

    if d.cls == "ophyd.EpicsMotor":
        return EpicsMotor(d.prefix, name=name)
    if d.cls == "ophyd.EpicsSignalRO":
        if d.trigger_pv:
            return _triggered_signal(d.pv, d.trigger_pv, name)
        return EpicsSignalRO(d.pv, name=name)
    kw: dict[str, Any] = {"put_complete": d.put_complete}
    if d.tolerance is not None:
        kw["tolerance"] = d.tolerance
    if d.write_pv:
        kw["write_pv"] = d.write_pv
    return EpicsSignal(d.pv, name=name, **kw)


def _triggered_signal(pv: str, trigger_pv: str, name: str) -> Any:
    """A read-only signal whose ``trigger()`` writes 1 to ``trigger_pv`` and completes when the
    IOC has taken the frame (area-detector style Acquire with put completion)."""
    from ophyd import EpicsSignal, EpicsSignalRO

    class TriggeredSignal(EpicsSignalRO):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.acquire = EpicsSignal(trigger_pv, put_complete=True, name=f"{name}_acquire")

        def wait_for_connection(self, timeout: float = 5.0, **kw: Any) -> None:
            super().wait_for_connection(timeout=timeout, **kw)
            self.acquire.wait_for_connection(timeout=timeout)

        def trigger(self):
            return self.acquire.set(1)

    return TriggeredSignal(pv, name=name)


def build_instrument(name: str, spec: InstrumentSpec, *, source: str = "", connect: bool = True):
    """The :class:`sdl.plugin.Instrument` a TOML table describes (devices connected unless
    ``connect`` is False: a PV that does not connect is a :class:`PluginError` naming it)."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    import bluesky.preprocessors as bpp

    from sdl.plugin import Instrument
    from sdl.reduction import reduction_spec
    from sdl.space import Objective, RangeParameter, SearchSpace

    devices = {n: _make_device(n, d) for n, d in spec.devices.items()}
    if connect:
        for n, dev in devices.items():
            try:
                dev.wait_for_connection(timeout=spec.connect_timeout_s)
            except Exception as exc:  # noqa: BLE001 - named with its PVs
                raise PluginError(name, f"devices.{n}", f"{spec.devices[n].cls} at {spec.devices[n].pvs} did not "
                                  f"connect within {spec.connect_timeout_s:g} s ({type(exc).__name__}); check the "
                                  "PV names and EPICS_CA_ADDR_LIST") from None
    space = SearchSpace(parameters=[RangeParameter(name=p.name, lower=p.lower, upper=p.upper, units=p.units,
                                                   value_type=p.value_type) for p in spec.parameters])
    objectives = [Objective(name=o.name, direction=o.direction, units=o.units) for o in spec.objectives]
    stock = []
    for o in spec.objectives:
        entry = {"name": o.name, "field": o.reading, "op": o.reduce}
        if o.denominator:
            entry["denominator"] = o.denominator
        if o.reduce in ("centroid", "fwhm"):
            entry.update(axis=o.axis, step=o.step, origin=o.origin)
            if spec.devices[o.reading].shape:
                entry["shape"] = spec.devices[o.reading].shape
        stock.append(entry)
    readings = list(dict.fromkeys([o.reading for o in spec.objectives]
                                  + [o.denominator for o in spec.objectives if o.denominator]
                                  + ([spec.suspender.reading] if spec.suspender else [])))
    detectors = [devices[r] for r in readings] + [devices[p.device] for p in spec.parameters
                                                  if devices[p.device] not in [devices[r] for r in readings]]
    shutter = spec.shutter
    suspender = None
    if spec.suspender is not None:
        from bluesky.suspenders import SuspendFloor

        s = spec.suspender
        suspender = SuspendFloor(devices[s.reading], s.below, resume_thresh=s.resume_above, sleep=s.sleep_s)

    def measure(*, repeats: Repeats = spec.repeats, delay: Delay = spec.delay_s, md: dict | None = None):
        """Read the detectors `repeats` times (the DOFs are already at the point)."""
        plan = bp.count(detectors, num=repeats, delay=delay or None, md={"plan_name": "measure", **(md or {})})
        if shutter is not None:
            sh = devices[shutter.device]

            def opened(inner):
                yield from bps.mv(sh, shutter.open)
                return (yield from inner)

            plan = bpp.finalize_wrapper(opened(plan), bps.mv(sh, shutter.close))
        if suspender is not None:
            plan = bpp.suspend_wrapper(plan, suspender)
        return (yield from plan)

    return Instrument(
        name=name,
        description=spec.description or f"TOML profile {source}",
        space=space,
        objectives=objectives,
        reduction=reduction_spec("readings", objectives=stock),
        plans={"measure": measure},
        dofs={p.name: devices[p.device] for p in spec.parameters},
        devices=devices,
        settle_s=spec.settle_s,
        source=source,
    )
