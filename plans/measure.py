"""Measurement: open the shutter, expose, read, close the shutter."""

from __future__ import annotations

from typing import Any, Sequence

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import short_uid


def close_shutter(shutter: Any):
    yield from bps.abs_set(shutter, "close", wait=True)


def acquire(detector: Any, shutter: Any, monitors: Sequence[Any] = (), *, exposure: float = 1.0,
            stream: str = "primary"):
    """One exposure inside an open run; the shutter is closed afterwards whatever happens."""

    def inner():
        # exposure time and shutter in one round trip: both must hold before the trigger
        group = short_uid("acquire-setup")
        yield from bps.abs_set(detector.exposure_time, float(exposure), group=group)
        yield from bps.abs_set(shutter, "open", group=group)
        yield from bps.wait(group)
        yield from bps.trigger_and_read([detector, *monitors], name=stream)

    return (yield from bpp.finalize_wrapper(inner(), close_shutter(shutter)))


def measure(detector: Any, shutter: Any, monitors: Sequence[Any] = (), *, exposure: float = 1.0,
            md: dict | None = None):
    """A standalone run of one exposure of whatever is on the sample position."""

    @bpp.run_decorator(md={"plan_name": "measure", "exposure": exposure, **(md or {})})
    def inner():
        yield from acquire(detector, shutter, monitors, exposure=exposure)

    return (yield from inner())
