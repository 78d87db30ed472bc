"""sdl.devices: ophyd device classes for real EPICS hardware (beamline and robots).

Every class is configured by its PV prefix only and has the component names of its
in-process double in :mod:`sdl.sim_devices.lab`, so the plans in :mod:`sdl.plans`
run on either. The soft IOCs in :mod:`sdl.sim_devices.ioc` serve the same PVs.
PV layout: ``docs/pv-layout.md``; building a whole lab: :func:`sdl.epics_lab.epics_lab_devices`.
"""

from sdl.devices.beamline import (
    Detector,
    MonoEnergy,
    PoolProbe,
    RingCurrent,
    Shutter,
    StageAxis,
    TemperatureStage,
)
from sdl.devices.common import (
    CommandDevice,
    CommandSignal,
    DeviceFault,
    unconnected_pvs,
    wait_for_connection,
)
from sdl.devices.robots import SampleChanger, SynthesisRobot

__all__ = [
    "CommandDevice", "CommandSignal", "Detector", "DeviceFault", "MonoEnergy", "PoolProbe", "RingCurrent",
    "SampleChanger", "Shutter", "StageAxis", "SynthesisRobot", "TemperatureStage", "unconnected_pvs",
    "wait_for_connection",
]
