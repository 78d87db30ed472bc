"""The autonomous step: synthesize -> load -> measure -> unload, as one run.

The start document carries the sample, proposal, campaign and suggestion ids and the
reduction to apply, so the observation can be recomputed from the documents alone.
On any failure the shutter is closed and a mounted sample is returned to its slot;
if that fails too, the error says the sample is flagged for the operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from sdl.errors import DeviceFault
from sdl.plans.measure import acquire, close_shutter
from sdl.plans.sample_handling import load, synthesize, unload


@dataclass
class LabDevices:
    """The devices one autonomous step uses; any objects with these components."""

    robot: Any
    changer: Any
    shutter: Any
    detector: Any
    ring_current: Any
    stage_x: Any = None
    stage_y: Any = None

    @classmethod
    def from_lab(cls, lab: Any) -> "LabDevices":
        return cls(**{k: getattr(lab, k, None) for k in cls.__dataclass_fields__})


def _return_sample(lab: LabDevices, slot: int, sample_id: str):
    """Cleanup after a failure: shutter closed first, then the sample back to its slot (or
    flagged). A step that succeeded has closed the shutter (``acquire``) and unloaded the
    sample itself, so it skips these two round trips."""
    yield from close_shutter(lab.shutter)
    mounted = yield from bps.rd(lab.changer.mounted_sample)
    if mounted:
        try:
            yield from unload(lab.changer, slot)
        except Exception as exc:  # the step has already failed; say what the operator must do
            raise DeviceFault(
                "changer", f"sample {mounted!r} could not be returned to slot {slot} and is flagged "
                f"for the operator: {exc}"
            ) from exc


def autonomous_step(
    lab: LabDevices,
    composition: Sequence[float],
    temperature: float,
    *,
    slot: int,
    sample_id: str,
    exposure: float = 1.0,
    repeats: int = 1,
    md: dict | None = None,
):
    """Make one sample and measure it: one bluesky run with ``repeats`` 'primary' measurement
    events of the same sample (the reduction averages them)."""
    metadata = {
        "plan_name": "autonomous_step",
        "sample_id": sample_id,
        "slot": int(slot),
        "composition": [float(c) for c in composition],
        "temperature": float(temperature),
        "exposure": float(exposure),
        **(md or {}),
    }

    def body():
        yield from synthesize(lab.robot, composition, temperature, slot, sample_id)
        yield from load(lab.changer, slot)
        monitors = [m for m in (lab.ring_current,) if m is not None]
        # Checkpoints around the exposure: a suspension (beam dump) rewinds only to the
        # start of the exposure, never into the synthesis or the load, and an event
        # already saved is never taken again.
        for _ in range(int(repeats)):
            yield from bps.checkpoint()
            yield from acquire(lab.detector, lab.shutter, monitors, exposure=exposure)
        yield from bps.checkpoint()
        yield from unload(lab.changer, slot)

    @bpp.run_decorator(md=metadata)
    def run():
        yield from bpp.contingency_wrapper(body(), except_plan=lambda exc: _return_sample(lab, slot, sample_id))

    return (yield from run())
