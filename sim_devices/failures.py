"""A failure region for the simulated lab: points where no sample forms.

Real syntheses fail in parts of their space (the film does not form, the phase does not
nucleate, the robot cannot dispense that ratio). ``FailureRegion`` is a union of
half-spaces on single parameters; a point inside any of them fails. The simulated robot
refuses such a point with a :class:`~sdl.errors.DeviceFault` ("no sample formed"), so a
campaign records the experiment as failed (``Observation.ok`` False), and the benchmark
counts it as an experiment spent for nothing.

``DEMO`` (used by ``benchmarks/failures_benchmark.py`` and the instrument option
``{"failure_region": "demo"}``): on the materials model (seed 0) no sample forms with more
than 55 % of precursor B or above 520 degC: 41 % of the space, including points with a
figure of merit up to 0.79 (the optimum, 0.95 at 29/45/26 % and 419 degC, still forms).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sdl.errors import InvalidInput


class FailureRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    param: str
    op: Literal[">", "<"]
    bound: float


class FailureRegion(BaseModel):
    """Points where any rule holds do not form a sample."""

    model_config = ConfigDict(extra="forbid")

    rules: list[FailureRule] = Field(min_length=1)
    reason: str = "no sample formed"

    def fails(self, params: dict[str, Any]) -> bool:
        for r in self.rules:
            if r.param not in params:
                raise InvalidInput("failure_region", f"rule names {r.param!r}, not a parameter of the point",
                                   sorted(params))
            v = float(params[r.param])
            if (v > r.bound) if r.op == ">" else (v < r.bound):
                return True
        return False

    def mask(self, X: np.ndarray, names: list[str]) -> np.ndarray:
        """Which rows of ``X`` (columns in ``names`` order) fail."""
        X = np.atleast_2d(X)
        out = np.zeros(len(X), bool)
        for r in self.rules:
            col = X[:, names.index(r.param)]
            out |= (col > r.bound) if r.op == ">" else (col < r.bound)
        return out


DEMO = FailureRegion(rules=[FailureRule(param="B", op=">", bound=0.55),
                            FailureRule(param="temperature", op=">", bound=520.0)],
                     reason="no film formed (B above 55 % or above 520 degC)")


def failure_region(value: Any) -> FailureRegion | None:
    """``None``, ``"demo"`` or a dict ``{"rules": [{"param", "op", "bound"}], "reason"}``."""
    if value is None or isinstance(value, FailureRegion):
        return value
    if value == "demo":
        return DEMO
    if isinstance(value, dict):
        from pydantic import ValidationError

        try:
            return FailureRegion.model_validate(value)
        except ValidationError as exc:
            raise InvalidInput("failure_region", str(exc.errors()[0]["msg"]), value) from None
    raise InvalidInput("failure_region", "'demo' or {'rules': [{'param': name, 'op': '>' or '<', 'bound': number}]}",
                       value)
