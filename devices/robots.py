"""Robot devices over EPICS: the synthesis robot and the sample changer.

Component names are those of :class:`sdl.sim_devices.lab.SimSynthesisRobot` and
:class:`sdl.sim_devices.lab.SimSampleChanger`: the commands ``make``, ``load`` and
``unload`` are set with a slot number and return a Status that completes when the
robot is done (``BUSY`` drops) or fails with ``DeviceFault(name, ERR_MSG)`` when the
robot ends in error.
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import EpicsSignal, EpicsSignalRO

from sdl.devices.common import CommandDevice, CommandSignal


class SynthesisRobot(CommandDevice):
    """Mixes precursors (``COMPOSITION`` fractions x ``TOTAL_VOLUME``), anneals at
    ``TEMPERATURE`` and stores the sample ``SAMPLE_ID`` in the slot written to ``MAKE``."""

    composition = Cpt(EpicsSignal, "COMPOSITION", kind="normal", put_complete=True)
    temperature = Cpt(EpicsSignal, "TEMPERATURE", kind="normal", put_complete=True)
    sample_id = Cpt(EpicsSignal, "SAMPLE_ID", string=True, kind="normal", put_complete=True)
    make = Cpt(CommandSignal, "MAKE", kind="omitted")
    total_volume = Cpt(EpicsSignal, "TOTAL_VOLUME", kind="omitted", put_complete=True)
    volumes = Cpt(EpicsSignalRO, "VOLUMES", kind="omitted")
    precursor_names = Cpt(EpicsSignalRO, "PRECURSORS", string=True, kind="omitted")

    @property
    def precursors(self) -> list[str]:
        """Precursor names in ``composition`` order."""
        return [p for p in str(self.precursor_names.get()).split(",") if p]


class SampleChanger(CommandDevice):
    """Moves samples between rack slots and the beam: ``load``/``unload`` (slot number),
    ``home`` (write 1; clears an error), ``mounted_sample``, ``door`` interlock."""

    load = Cpt(CommandSignal, "LOAD", kind="omitted")
    unload = Cpt(CommandSignal, "UNLOAD", kind="omitted")
    home = Cpt(CommandSignal, "HOME", kind="omitted")
    mounted_sample = Cpt(EpicsSignalRO, "MOUNTED", string=True, kind="normal")
    slot = Cpt(EpicsSignalRO, "SLOT_RBV", kind="omitted")
    n_slots = Cpt(EpicsSignalRO, "N_SLOTS", kind="omitted")
    door = Cpt(EpicsSignalRO, "DOOR", string=True, kind="omitted")
