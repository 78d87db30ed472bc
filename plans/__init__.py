"""Bluesky plans: sample handling, measurement, and the autonomous step.

Plans only yield messages; the RunEngine is the only thing that touches hardware.
They work on any devices with the lab's component names (the in-process doubles in
``sdl.sim_devices`` and the EPICS classes in ``sdl.devices`` alike).
"""

from sdl.plans.autonomous import LabDevices, autonomous_step
from sdl.plans.measure import acquire, measure
from sdl.plans.sample_handling import load, synthesize, unload

__all__ = ["LabDevices", "acquire", "autonomous_step", "load", "measure", "synthesize", "unload"]
