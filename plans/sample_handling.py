"""Sample handling: make a sample with the synthesis robot, load and unload it."""

from __future__ import annotations

from typing import Any, Sequence

import bluesky.plan_stubs as bps
import numpy as np


def synthesize(robot: Any, composition: Sequence[float], temperature: float, slot: int, sample_id: str):
    """Mix ``composition`` (fractions in the robot's precursor order), anneal, store in ``slot``."""
    yield from bps.mv(
        robot.composition, np.asarray(composition, dtype=float),
        robot.temperature, float(temperature),
        robot.sample_id, str(sample_id),
    )
    # The command completes when the sample is in the rack (put-completion semantics).
    yield from bps.mv(robot.make, int(slot))


def load(changer: Any, slot: int):
    """Move the sample in ``slot`` onto the beamline's sample position."""
    yield from bps.mv(changer.load, int(slot))


def unload(changer: Any, slot: int):
    """Return the sample at the sample position to ``slot``."""
    yield from bps.mv(changer.unload, int(slot))
