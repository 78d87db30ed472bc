"""A Python profile: the way a beamline keeps its startup profile, plus one dict for sdl.

Run it with ``sdl campaign run --profile examples/profiles/ophyd_sim_profile.py
--instrument gauss-scan`` (or set ``SDL_PROFILE``). The devices are ophyd's own
simulated motor and a detector whose reading is a Gaussian of the motor position;
a beamline's profile builds its EpicsMotor/area detectors here instead.
"""

from typing import Annotated

import bluesky.plans as bp

from sdl.plugin import Arg, BuildContext, Instrument
from sdl.reduction import reduction_spec
from sdl.space import Objective, RangeParameter, SearchSpace


def gauss_scan(ctx: BuildContext) -> Instrument:
    from ophyd.sim import SynAxis, SynGauss

    motor = SynAxis(name="motor")
    det = SynGauss("det", motor, "motor", center=float(ctx.options.get("center", 1.7)), Imax=1000, sigma=1.5)

    def count_at(*, repeats: Annotated[int, Arg(1, 10, description="readings per point")] = 1,
                 md: dict | None = None):
        """Read the detector `repeats` times at the motor position."""
        return (yield from bp.count([det, motor], num=repeats, md=md))

    return Instrument(
        name="gauss-scan",
        description="ophyd.sim motor and Gaussian detector (a Python profile)",
        space=SearchSpace(parameters=[RangeParameter(name="x", lower=-10, upper=10, units="mm")]),
        objectives=[Objective(name="intensity", direction="maximize")],
        # a stock reduction: the mean of the detector's reading over the run's events
        reduction=reduction_spec("readings", objectives=[{"name": "intensity", "field": "det", "op": "mean"}]),
        plans={"count_at": count_at},
        dofs={"x": motor},          # x is a DOF: the motor is moved to it before the plan runs
        devices={"motor": motor, "det": det},
        truth=lambda p: 1000.0 * __import__("math").exp(-((p["x"] - 1.7) ** 2) / (2 * 1.5 ** 2)),
        optimum={"params": {"x": 1.7}, "intensity": 1000.0},
    )


INSTRUMENTS = {"gauss-scan": gauss_scan}
