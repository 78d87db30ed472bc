"""Client of the simulator-only PVs (``SIM:``): fault injection over Channel Access."""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO

from sdl.errors import InvalidInput

#: (device, fault) as in SimLab.inject_fault -> the SIM: component that arms it
FAULT_SIGNALS = {
    ("robot", "jam"): "robot_jam",
    ("changer", "drop"): "changer_drop",
    ("detector", "timeout"): "detector_timeout",
    ("ring", "beam_dump"): "beam_dump",
}


class SimControl(Device):
    """``SIM:`` PVs: arm a fault (fires once), dump and restore the beam, facts of the simulation."""

    robot_jam = Cpt(EpicsSignal, "ROBOT_JAM", kind="omitted", put_complete=True)
    changer_drop = Cpt(EpicsSignal, "CHANGER_DROP", kind="omitted", put_complete=True)
    detector_timeout = Cpt(EpicsSignal, "DETECTOR_TIMEOUT", kind="omitted", put_complete=True)
    beam_dump = Cpt(EpicsSignal, "BEAM_DUMP", kind="omitted", put_complete=True)
    instrument = Cpt(EpicsSignalRO, "INSTRUMENT", string=True, kind="config")
    seed = Cpt(EpicsSignalRO, "SEED", kind="config")
    time_scale = Cpt(EpicsSignalRO, "TIME_SCALE", kind="config")

    def _signal(self, device: str, fault: str) -> Any:
        attr = FAULT_SIGNALS.get((device, fault))
        if attr is None:
            raise InvalidInput("fault", f"allowed: {sorted(FAULT_SIGNALS)}", (device, fault))
        return getattr(self, attr)

    def inject_fault(self, device: str, fault: str, *, timeout: float = 5.0) -> None:
        """Arm ``fault`` on ``device`` (as ``SimLab.inject_fault``; a beam dump is at once)."""
        self._signal(device, fault).set(1).wait(timeout)

    def clear_fault(self, device: str, *, timeout: float = 5.0) -> None:
        """Disarm and reset ``device`` (the ring: beam back)."""
        for (dev, fault), attr in FAULT_SIGNALS.items():
            if dev == device:
                getattr(self, attr).set(0).wait(timeout)
                return
        raise InvalidInput("device", f"allowed: {sorted({d for d, _ in FAULT_SIGNALS})}", device)
