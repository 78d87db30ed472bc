"""The lab over EPICS: build the :mod:`sdl.devices` classes for a PV prefix, serve the
simulated lab with soft IOCs, and the safety pieces a beamline run needs.

For the CLI (``sdl ioc``, ``sdl demo --epics``)::

    from sdl.epics_lab import serve_sim_lab, run_ioc, list_pvs, epics_lab_devices, use_loopback_ca

    port = use_loopback_ca(5064)        # before anything imports ophyd (demo process)

    run_ioc(names=None, prefix="SDL:", instrument_name="sim-xrd", seed=0, port=5064)   # blocks (sdl ioc)
    with serve_sim_lab("sim-xrd", seed=0, prefix="SDL:") as ioc:                       # sdl demo --epics
        instrument = ioc.epics_instrument()     # same space/reduction, devices over CA
        CampaignRunner(store, campaign_id, instrument=instrument, ...).run()
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from sdl.errors import InvalidInput
from sdl.plans.autonomous import LabDevices

DEFAULT_PREFIX = "SDL:"
#: suffix of each device's PVs after the lab prefix (as served by sdl.sim_devices.ioc)
DEVICE_PREFIXES: dict[str, str] = {
    "stage_x": "STAGE:X",
    "stage_y": "STAGE:Y",
    "mono_energy": "MONO:ENERGY",
    "shutter": "SHUTTER:",
    "ring_current": "RING:",
    "detector": "DET:",
    "changer": "CHANGER:",
    "robot": "ROBOT:",
    "temperature_stage": "TEMP:",
}
#: ring current (mA) below which a run is suspended, and above which it resumes
SUSPEND_BELOW_MA, RESUME_ABOVE_MA = 50.0, 350.0


def epics_devices(prefix: str = DEFAULT_PREFIX, *, detector: str = "xrd", connect: bool = True,
                  timeout: float = 5.0, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Every EPICS device of the lab by name (``names`` picks some), optionally connected.

    ``detector``: 'xrd' (:class:`~sdl.devices.Detector`) or 'pool'
    (:class:`~sdl.devices.PoolProbe`). With ``connect`` it waits up to ``timeout`` s
    and raises :class:`sdl.errors.DeviceFault` naming every PV that did not connect.
    """
    from sdl.devices import (
        Detector,
        MonoEnergy,
        PoolProbe,
        RingCurrent,
        SampleChanger,
        Shutter,
        StageAxis,
        SynthesisRobot,
        TemperatureStage,
        wait_for_connection,
    )

    if detector not in ("xrd", "pool"):
        raise InvalidInput("detector", "allowed: 'xrd', 'pool'", detector)
    classes = {
        "stage_x": StageAxis, "stage_y": StageAxis, "mono_energy": MonoEnergy, "shutter": Shutter,
        "ring_current": RingCurrent, "detector": Detector if detector == "xrd" else PoolProbe,
        "changer": SampleChanger, "robot": SynthesisRobot, "temperature_stage": TemperatureStage,
    }
    wanted = list(DEVICE_PREFIXES) if names is None else list(names)
    for n in wanted:
        if n not in classes:
            raise InvalidInput("names", f"unknown device; allowed: {list(DEVICE_PREFIXES)}", n)
    devices = {n: classes[n](prefix + DEVICE_PREFIXES[n], name=n) for n in wanted}
    if connect:
        wait_for_connection(devices.values(), timeout)
    return devices


def epics_lab_devices(prefix: str = DEFAULT_PREFIX, *, detector: str = "xrd", connect: bool = True,
                      timeout: float = 5.0) -> LabDevices:
    """The devices of one autonomous step over EPICS (robot, changer, shutter, detector,
    ring current, stage axes), as :class:`sdl.plans.LabDevices`."""
    fields = [f.name for f in dataclasses.fields(LabDevices)]
    devices = epics_devices(prefix, detector=detector, connect=connect, timeout=timeout, names=fields)
    return LabDevices(**devices)


def epics_instrument(instrument_name: str = "sim-xrd", prefix: str = DEFAULT_PREFIX, *, seed: int = 0,
                     connect: bool = True, timeout: float = 5.0, options: dict | None = None):
    """The named instrument (space, objectives, reduction, truth) with its devices over EPICS.

    The served lab must be that instrument (``serve_sim_lab(instrument_name, seed)`` or a
    real lab with the same PV layout).
    """
    from sdl.instruments import make_instrument

    # the instrument's factory builds its own devices over EPICS when given a prefix
    return make_instrument(instrument_name, seed=seed, options={**(options or {}), "epics_prefix": prefix,
                                                                "epics_connect": connect, "epics_timeout": timeout})


def beam_suspender(ring: Any, *, suspend_below: float = SUSPEND_BELOW_MA, resume_above: float = RESUME_ABOVE_MA,
                   sleep: float = 0.0, pre_plan: Any = None, post_plan: Any = None):
    """A bluesky ``SuspendFloor`` on the ring current: a run pauses below ``suspend_below``
    mA and resumes (from its last checkpoint) once the current is back above
    ``resume_above`` for ``sleep`` seconds. ``ring``: a RingCurrent device or a signal."""
    from bluesky.suspenders import SuspendFloor

    signal = getattr(ring, "current", ring)
    return SuspendFloor(signal, suspend_below, resume_thresh=resume_above, sleep=sleep,
                        pre_plan=pre_plan, post_plan=post_plan,
                        tripped_message=f"ring current below {suspend_below:g} mA (beam lost)")


def checkpoint_after_save(plan):
    """A checkpoint after every saved event, so a suspension never retakes (and repeats) a
    saved event: bluesky rewinds to the last checkpoint, and plans such as ``count`` with
    a delay have none between an event and the next shot."""
    from bluesky.preprocessors import plan_mutator
    from bluesky.utils import Msg

    def mutate(msg):
        if msg.command == "save":
            def tail():
                yield Msg("checkpoint")

            return None, tail()
        return None, None

    return (yield from plan_mutator(plan, mutate))


def beam_guard(plan, shutter: Any, suspender: Any):
    """Run ``plan`` with ``suspender`` active only while ``shutter`` is open.

    Only the exposure needs beam: a beam dump while the robots work does not pause
    anything; one during the exposure suspends the run, and on resume bluesky rewinds
    to a checkpoint placed just before the shutter opens, so the exposure is retaken
    (the synthesis and the load are not repeated). A checkpoint after each saved event
    keeps saved events from being retaken. Use it around :func:`sdl.plans.autonomous_step`.
    """
    from bluesky.preprocessors import plan_mutator
    from bluesky.utils import Msg

    def mutate(msg):
        if msg.command == "set" and msg.obj is shutter and msg.args:
            if msg.args[0] == "open":
                def head():
                    yield Msg("install_suspender", None, suspender)
                    yield Msg("checkpoint")
                    return (yield msg)

                return head(), None
            if msg.args[0] == "close":
                def head():
                    yield Msg("remove_suspender", None, suspender)
                    return (yield msg)

                return head(), None
        return None, None

    return (yield from checkpoint_after_save(plan_mutator(plan, mutate)))


# -------------------------------------------------------------------- soft IOCs
def use_loopback_ca(port: int | None = None) -> int:
    """Keep Channel Access on 127.0.0.1 with ``port`` (or a free one) for servers and
    clients of this process; call before ophyd is imported (importing this module does
    not import it). Returns the port. See :func:`sdl.ca_env.configure_loopback_ca`."""
    from sdl.ca_env import configure_loopback_ca

    return configure_loopback_ca(port)


def serve_sim_lab(instrument_name: str = "sim-xrd", seed: int = 0, prefix: str = DEFAULT_PREFIX, **kwargs: Any):
    """Context manager: serve the simulated instrument's lab over CA (see
    :func:`sdl.sim_devices.ioc.serve_sim_lab`; kwargs: port, host, names, time_scale,
    n_slots, options, mode='thread'|'process'). Yields a :class:`RunningIOC`."""
    from sdl.sim_devices.ioc import serve_sim_lab as _serve

    return _serve(instrument_name, seed, prefix, **kwargs)


def run_ioc(names: Iterable[str] | str | None = None, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> None:
    """Serve the simulated lab's IOCs until interrupted (the body of ``sdl ioc``).

    kwargs: instrument_name='sim-xrd', seed=0, port=5064, host='127.0.0.1',
    time_scale=0.0, n_slots=24, options=None. ``names``: IOC names or aliases
    (see :data:`sdl.sim_devices.ioc.IOC_NAMES`; None = all).
    """
    from sdl.sim_devices.ioc import run_ioc as _run

    _run(names, prefix, **kwargs)


def list_pvs(names: Iterable[str] | str | None = None, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> list[dict]:
    """The PVs served: ``[{name, ioc, type, count, access, units, doc}]`` (``sdl ioc --list``)."""
    from sdl.sim_devices.ioc import list_pvs as _list

    return _list(names, prefix, **kwargs)


__all__ = [
    "DEFAULT_PREFIX", "DEVICE_PREFIXES", "RESUME_ABOVE_MA", "SUSPEND_BELOW_MA", "beam_guard", "beam_suspender",
    "checkpoint_after_save", "epics_devices", "use_loopback_ca", "epics_instrument", "epics_lab_devices", "list_pvs", "run_ioc", "serve_sim_lab",
]
