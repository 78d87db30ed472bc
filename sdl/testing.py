"""Testing helpers: Channel Access on loopback, and the device conformance kit.

Channel Access
--------------
pyepics (ophyd's control layer) reads the EPICS environment once, when libca starts
(importing ophyd starts it). :func:`configure_loopback_ca` must therefore run before
ophyd is imported: it keeps CA on 127.0.0.1 and picks a free port for this process
(``EPICS_CA_SERVER_PORT``, for both the soft IOCs and the clients), so test processes
running side by side never answer each other's searches. If libca already started,
it changes nothing and returns the port libca uses.

This module imports nothing heavy at import time, so ``conftest.py`` can call
``configure_loopback_ca()`` first thing.

Conformance kit
---------------
:class:`DeviceCase` describes one device (a factory, what it is) and the checks in
:data:`CHECKS` (connects, reads, describes, stages, triggers, respects limits,
reports failure) run on it; :func:`run_conformance` runs them all, and
:func:`conformance_params` makes ``pytest.mark.parametrize`` arguments. See
``docs/adding-an-instrument.md``.

Waiting
-------
:func:`wait_until` polls a condition with a deadline and says what never happened.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

# the instrument-level kit (a plug-in instrument run end to end)
from sdl.instrument_check import assert_instrument_conforms, check_instrument  # noqa: F401,E402

# Channel Access on loopback lives in sdl.ca_env (production code uses it too); kept importable from here
from sdl.ca_env import LOOPBACK, configure_loopback_ca, free_port, libca_started, unique_prefix  # noqa: F401


# ====================================================================== waiting
def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, *, interval: float = 0.02,
               what: str | Callable[[], str] | None = None, proc: Any = None) -> Any:
    """Poll ``predicate()`` until it returns something truthy, and return that value.

    Tests wait for what another thread or process does (a CA monitor, a worker, a server):
    a bounded poll is neither flaky (a bare ``sleep``) nor a hang (an unbounded loop), and
    on timeout the ``AssertionError`` names ``what`` was awaited (else the predicate's
    name; a callable ``what`` is asked then, for live detail), for how long, and the last
    value seen. ``proc`` (a ``subprocess.Popen``) fails the wait at once, with its exit code
    and output, if it exits first."""
    def label() -> str:
        return (what() if callable(what) else what) or getattr(predicate, "__qualname__", None) or repr(predicate)

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waiting for {label()}: {proc.args!r} exited early ({proc.returncode}): "
                                 f"{_process_output(proc)}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {label()}; last value: {value!r}")
        time.sleep(interval)


def _process_output(proc: Any) -> str:
    """What an exited process wrote to its pipes (text or bytes), or why that cannot be shown."""
    import subprocess

    try:
        out, err = proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):  # a grandchild holds the pipe; or it was read and closed
        return "(output not available)"
    if proc.stdout is None and proc.stderr is None:
        return "(output not piped)"
    parts = [p.decode(errors="replace") if isinstance(p, bytes) else p for p in (out, err) if p]
    return "\n".join(parts)


# ====================================================================== conformance kit
#: what a device may be: each adds checks
ROLES = ("readable", "movable", "triggerable", "commandable")
#: dtypes event-model allows in a data key
DTYPES = {"number", "array", "string", "integer", "boolean"}


@dataclass
class DeviceCase:
    """One device under test and how to exercise it.

    - ``make()`` returns the device (for EPICS classes: constructed, not necessarily connected).
    - ``roles``: 'readable' (all), 'movable' (``set``), 'triggerable', 'commandable'.
    - movable: ``bad_setpoint`` must be refused by ``set`` before anything moves (soft
      limits, or a value outside the allowed ones); ``good_setpoint`` must complete, after
      which ``position_of(device)`` reads ``good_setpoint`` (``expected_position`` if given).
    - commandable/triggerable failure: ``provoke_failure(device)`` returns a Status that
      must fail with :class:`sdl.errors.DeviceFault` whose message contains
      ``failure_message``; ``recover(device)`` is called afterwards.
    """

    name: str
    make: Callable[[], Any]
    roles: tuple[str, ...] = ("readable",)
    bad_setpoint: Any = None
    good_setpoint: Any = None
    expected_position: Any = None
    position_of: Callable[[Any], Any] | None = None
    provoke_failure: Callable[[Any], Any] | None = None
    failure_message: str = ""
    recover: Callable[[Any], Any] | None = None
    timeout: float = 5.0
    _device: Any = field(default=None, repr=False)

    def device(self) -> Any:
        """The device, connected: every check may run alone (pytest-xdist can send ``reads``
        to a worker on which ``connects`` never ran), so each one waits for the connection."""
        if self._device is None:
            self._device = self.make()
        waiter = getattr(self._device, "wait_for_connection", None)
        if waiter is not None and not getattr(self._device, "connected", True):
            waiter(timeout=self.timeout)
        return self._device


def check_connects(case: DeviceCase) -> None:
    """The device connects within the case's timeout (soft devices are always connected)."""
    dev = case.device()
    waiter = getattr(dev, "wait_for_connection", None)
    if waiter is not None:
        waiter(timeout=case.timeout)
    assert getattr(dev, "connected", True), f"{case.name}: not connected"


def check_reads(case: DeviceCase) -> None:
    """``read()``: {key: {'value', 'timestamp'}}, keys as in ``describe()``; configuration too."""
    from bluesky.protocols import Readable

    dev = case.device()
    assert isinstance(dev, Readable), f"{case.name}: not a bluesky Readable"
    for read, describe in ((dev.read, dev.describe), (dev.read_configuration, dev.describe_configuration)):
        reading = read()
        assert isinstance(reading, dict), f"{case.name}: {read.__name__}() must return a dict"
        for key, entry in reading.items():
            assert set(entry) >= {"value", "timestamp"}, f"{case.name}: {key} lacks value/timestamp"
            ts = entry["timestamp"]
            assert isinstance(ts, (int, float)) and math.isfinite(ts) and ts > 0, f"{case.name}: {key} timestamp {ts!r}"
        assert set(reading) == set(describe()), (
            f"{case.name}: {read.__name__}() keys {sorted(reading)} != {describe.__name__}() keys {sorted(describe())}")


def check_describes(case: DeviceCase) -> None:
    """``describe()`` entries have source, dtype (event-model) and shape matching the reading."""
    import numpy as np

    dev = case.device()
    for read, describe in ((dev.read, dev.describe), (dev.read_configuration, dev.describe_configuration)):
        desc, reading = describe(), read()
        for key, entry in desc.items():
            for required in ("source", "dtype", "shape"):
                assert required in entry, f"{case.name}: {key} description lacks {required!r}"
            assert entry["dtype"] in DTYPES, f"{case.name}: {key} dtype {entry['dtype']!r} not in {sorted(DTYPES)}"
            value = reading[key]["value"]
            if entry["dtype"] == "array":
                shape = list(np.shape(value))
                assert entry["shape"] in (shape, [None] * len(shape)) or not entry["shape"], (
                    f"{case.name}: {key} shape {entry['shape']} but value has {shape}")
            else:
                assert entry["shape"] == [], f"{case.name}: {key} scalar with shape {entry['shape']}"


def check_stages(case: DeviceCase) -> None:
    """``stage()``/``unstage()`` return the staged devices and can be repeated."""
    dev = case.device()
    staged = dev.stage() if hasattr(dev, "stage") else [dev]
    try:
        assert isinstance(staged, list) and dev in staged, f"{case.name}: stage() must return a list with the device"
    finally:
        unstaged = dev.unstage() if hasattr(dev, "unstage") else [dev]
    assert isinstance(unstaged, list), f"{case.name}: unstage() must return a list"
    if hasattr(dev, "stage"):
        dev.stage()
        dev.unstage()


def check_triggers(case: DeviceCase) -> None:
    """``trigger()`` returns a Status that completes successfully; the device then reads."""
    dev = case.device()
    status = dev.trigger()
    status.wait(case.timeout)
    assert status.done and status.success, f"{case.name}: trigger status {status}"
    dev.read()


def check_respects_limits(case: DeviceCase) -> None:
    """A setpoint outside the limits is refused before motion; a good one completes."""
    dev = case.device()
    position_of = case.position_of or (lambda d: d.position)
    before = position_of(dev)
    refused = False
    try:
        status = dev.set(case.bad_setpoint)
    except (ValueError, TypeError) as exc:  # LimitError and InvalidInput are ValueErrors
        refused = True
        assert str(exc), f"{case.name}: refusal without a message"
    else:
        with contextlib.suppress(Exception):
            status.wait(case.timeout)
        raise AssertionError(f"{case.name}: set({case.bad_setpoint!r}) was not refused (status {status})")
    assert refused
    time.sleep(0.05)
    assert _same_position(position_of(dev), before), f"{case.name}: moved after a refused set"
    status = dev.set(case.good_setpoint)
    status.wait(case.timeout)
    assert status.success, f"{case.name}: set({case.good_setpoint!r}) failed"
    expected = case.good_setpoint if case.expected_position is None else case.expected_position
    assert _same_position(position_of(dev), expected), f"{case.name}: at {position_of(dev)!r}, expected {expected!r}"


def check_reports_failure(case: DeviceCase) -> None:
    """A failing action fails its Status with DeviceFault(device name, message)."""
    from sdl.errors import DeviceFault

    dev = case.device()
    try:
        status = case.provoke_failure(dev)  # type: ignore[misc]
        try:
            status.wait(case.timeout)
        except DeviceFault as exc:
            fault = exc
        except Exception as exc:  # noqa: BLE001 - ophyd may wrap it
            fault = exc.__cause__ if isinstance(exc.__cause__, DeviceFault) else exc
        else:
            raise AssertionError(f"{case.name}: the provoked failure succeeded")
        assert status.done and not status.success, f"{case.name}: status not failed: {status}"
        assert isinstance(fault, DeviceFault), f"{case.name}: failed with {type(fault).__name__}: {fault}"
        assert fault.device == dev.name, f"{case.name}: fault names {fault.device!r}, not {dev.name!r}"
        assert case.failure_message in fault.message, (
            f"{case.name}: message {fault.message!r} lacks {case.failure_message!r}")
    finally:
        if case.recover is not None:
            case.recover(dev)


def _same_position(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-3)
    return a == b


#: check name -> (function, the role that calls for it)
CHECKS: dict[str, tuple[Callable[[DeviceCase], None], str]] = {
    "connects": (check_connects, "readable"),
    "reads": (check_reads, "readable"),
    "describes": (check_describes, "readable"),
    "stages": (check_stages, "readable"),
    "triggers": (check_triggers, "triggerable"),
    "respects_limits": (check_respects_limits, "movable"),
    "reports_failure": (check_reports_failure, "commandable"),
}


def checks_for(case: DeviceCase) -> list[str]:
    """The checks that apply to ``case`` (by its roles)."""
    for role in case.roles:
        if role not in ROLES:
            raise ValueError(f"{case.name}: unknown role {role!r}; allowed: {ROLES}")
    return [name for name, (_, role) in CHECKS.items() if role in case.roles]


def run_check(case: DeviceCase, check: str) -> None:
    CHECKS[check][0](case)


def run_conformance(case: DeviceCase) -> dict[str, str]:
    """Run every applicable check: ``{check: 'ok' | 'FAIL: why'}``."""
    results: dict[str, str] = {}
    for name in checks_for(case):
        try:
            run_check(case, name)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported
            results[name] = f"FAIL: {type(exc).__name__}: {exc}"
    return results


def assert_conforms(case: DeviceCase) -> None:
    failed = {k: v for k, v in run_conformance(case).items() if v != "ok"}
    assert not failed, f"{case.name} does not conform: {failed}"


def conformance_params(cases: Iterable[DeviceCase]) -> list[Any]:
    """``pytest.param(case, check)`` for every case and applicable check (ids 'case-check')."""
    import pytest

    return [pytest.param(case, check, id=f"{case.name}-{check}") for case in cases for check in checks_for(case)]


# ---------------------------------------------------------------------- the project's devices
def sim_lab_cases(instrument: Any) -> list[DeviceCase]:
    """Cases for the in-process doubles of a simulated instrument (``make_instrument(...)``)."""
    lab = instrument.lab

    def fault(device: str, what: str, action: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def provoke(dev: Any) -> Any:
            lab.inject_fault(device, what)
            return action(dev)

        return provoke

    return [
        DeviceCase("sim.stage_x", lambda: lab.stage_x, ("readable", "movable"), bad_setpoint=10.5, good_setpoint=2.0),
        DeviceCase("sim.stage_y", lambda: lab.stage_y, ("readable", "movable"), bad_setpoint=-11.0,
                   good_setpoint=-3.0),
        DeviceCase("sim.shutter", lambda: lab.shutter, ("readable", "movable"), bad_setpoint="ajar",
                   good_setpoint="open", expected_position="open", position_of=lambda d: d.state.get(),
                   recover=None),
        DeviceCase("sim.ring_current", lambda: lab.ring_current, ("readable",)),
        DeviceCase("sim.detector", lambda: lab.detector, ("readable", "triggerable", "commandable"),
                   provoke_failure=fault("detector", "timeout", lambda d: d.trigger()), failure_message="timeout",
                   recover=lambda d: lab.clear_fault("detector")),
        DeviceCase("sim.changer", lambda: lab.changer, ("readable", "commandable"),
                   provoke_failure=lambda d: d.load.set(lab.registry.n_slots), failure_message="is empty",
                   recover=lambda d: lab.clear_fault("changer")),
        DeviceCase("sim.robot", lambda: lab.robot, ("readable", "commandable"),
                   provoke_failure=fault("robot", "jam", lambda d: _make(d, lab.registry.n_slots)),
                   failure_message="gripper jammed", recover=lambda d: lab.clear_fault("robot")),
    ]


def _make(robot: Any, slot: int) -> Any:
    robot.sample_id.set(f"conformance-{time.monotonic_ns()}").wait(5)
    return robot.make.set(slot)


def epics_lab_cases(prefix: str, sim_control: Any = None, *, timeout: float = 5.0) -> list[DeviceCase]:
    """Cases for the EPICS device classes at ``prefix`` (a served simulated lab; the
    failure cases use its ``SIM:`` fault PVs via ``sim_control``)."""
    from sdl.epics_lab import DEVICE_PREFIXES
    from sdl.devices import (
        Detector,
        MonoEnergy,
        RingCurrent,
        SampleChanger,
        Shutter,
        StageAxis,
        SynthesisRobot,
        TemperatureStage,
    )

    def make(cls: Any, name: str) -> Callable[[], Any]:
        return lambda: cls(prefix + DEVICE_PREFIXES[name], name=name)

    def fault(device: str, what: str, action: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def provoke(dev: Any) -> Any:
            sim_control.inject_fault(device, what)
            return action(dev)

        return provoke

    def clear(device: str) -> Callable[[Any], Any]:
        return lambda dev: sim_control.clear_fault(device)

    cases = [
        DeviceCase("epics.stage_x", make(StageAxis, "stage_x"), ("readable", "movable"), bad_setpoint=10.5,
                   good_setpoint=2.0, timeout=timeout),
        DeviceCase("epics.stage_y", make(StageAxis, "stage_y"), ("readable", "movable"), bad_setpoint=-11.0,
                   good_setpoint=-3.0, timeout=timeout),
        DeviceCase("epics.mono_energy", make(MonoEnergy, "mono_energy"), ("readable", "movable"), bad_setpoint=40.0,
                   good_setpoint=9.0, timeout=timeout),
        DeviceCase("epics.temperature_stage", make(TemperatureStage, "temperature_stage"), ("readable", "movable"),
                   bad_setpoint=5000.0, good_setpoint=300.0, timeout=timeout),
        DeviceCase("epics.shutter", make(Shutter, "shutter"), ("readable", "movable"), bad_setpoint="ajar",
                   good_setpoint="open", expected_position="open", position_of=lambda d: d.state.get(),
                   timeout=timeout),
        DeviceCase("epics.ring_current", make(RingCurrent, "ring_current"), ("readable",), timeout=timeout),
        DeviceCase("epics.changer", make(SampleChanger, "changer"), ("readable", "commandable"),
                   provoke_failure=lambda d: d.load.set(int(d.n_slots.get())), failure_message="is empty",
                   recover=lambda d: d.home.set(1).wait(timeout), timeout=timeout),
    ]
    if sim_control is not None:
        cases += [
            DeviceCase("epics.detector", make(Detector, "detector"), ("readable", "triggerable", "commandable"),
                       provoke_failure=fault("detector", "timeout", lambda d: d.trigger()),
                       failure_message="timeout", recover=clear("detector"), timeout=timeout),
            DeviceCase("epics.robot", make(SynthesisRobot, "robot"), ("readable", "commandable"),
                       provoke_failure=fault("robot", "jam", lambda d: _make(d, 24)),
                       failure_message="gripper jammed", recover=clear("robot"), timeout=timeout),
        ]
    return cases


@contextlib.contextmanager
def served_double(instrument: str, prefix: str, timeout: float = 60.0):
    """``sdl ioc --instrument NAME`` in a subprocess on a free loopback port, until it says
    READY; yields ``(port, env)``: the environment a client process (``sdl campaign run``)
    needs to reach it over Channel Access. The IOC is stopped on exit."""
    import os
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "SDL_TEST_CA"))}
    env.update(EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST=LOOPBACK)
    ioc = subprocess.Popen([sys.executable, "-m", "sdl.cli", "ioc", "--instrument", instrument, "--prefix", prefix,
                            "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        deadline = time.monotonic() + timeout
        line = ""
        for line in ioc.stdout:
            if line.startswith("READY") or time.monotonic() > deadline:
                break
        assert line.startswith("READY"), f"sdl ioc --instrument {instrument} did not start: {line}"
        yield port, {**env, "EPICS_CA_SERVER_PORT": str(port)}
    finally:
        ioc.terminate()
        ioc.wait(10)


@contextlib.contextmanager
def late_request_clearing(delay_s: float = 0.3):
    """Widen ophyd's move/done gap on purpose: while inside, ``PositionerBase`` clears a
    finished move's request subscriptions ``delay_s`` late when that happens off the main
    thread (in a CA monitor or timer thread), which is where the stock race bites. A
    motor whose move survives this has the race closed (see :mod:`sdl.devices.motor`)."""
    import threading

    from ophyd.positioner import PositionerBase

    original = PositionerBase._reset_sub

    def slow_reset(self: Any, event_type: str) -> None:
        if event_type == self._SUB_REQ_DONE and threading.current_thread() is not threading.main_thread():
            time.sleep(delay_s)
        return original(self, event_type)

    PositionerBase._reset_sub = slow_reset
    try:
        yield
    finally:
        PositionerBase._reset_sub = original


def back_to_back_moves(motor: Any, timeout: float = 3.0) -> None:
    """Move, then start the next move as soon as the previous one's status is done (as a
    RunEngine does); raises if the second move's completion is lost."""
    motor.move(1.0, wait=True)
    first = motor.move(2.0, wait=False)
    first.wait(5)  # returns while the other thread may still be in _done_moving
    second = motor.move(3.0, wait=False)
    second.wait(timeout)
    if not (second.success and abs(motor.position - 3.0) < 1e-3):
        raise AssertionError(f"second move: success={second.success}, position={motor.position}")
