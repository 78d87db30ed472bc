"""Search spaces and objectives, as a scientist writes them, validated at the boundary.

A search space is what an agent may suggest and what an instrument may be asked to
make. Every point that crosses a boundary (CLI, HTTP, agent output, plan parameters)
goes through :meth:`SearchSpace.validate_point`, which names the offending field and
what is allowed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sdl.errors import InvalidInput

Value = float | int | str

#: Tolerance on composition sums (fractions of 1).
COMPOSITION_TOLERANCE = 1e-6


class RangeParameter(BaseModel):
    """A continuous (or integer) parameter between two bounds."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["range"] = "range"
    name: str
    lower: float
    upper: float
    value_type: Literal["float", "int"] = "float"
    log_scale: bool = False
    units: str = ""

    @model_validator(mode="after")
    def _check_bounds(self) -> "RangeParameter":
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):  # a point could not be drawn
            raise ValueError(f"parameter {self.name!r}: lower and upper must be finite numbers "
                             f"(got {self.lower}, {self.upper})")
        if not self.lower < self.upper:
            raise ValueError(
                f"parameter {self.name!r}: lower ({self.lower}) must be below upper ({self.upper})"
            )
        if self.log_scale and self.lower <= 0:
            raise ValueError(f"parameter {self.name!r}: log_scale needs lower > 0, got {self.lower}")
        return self

    def check(self, value: Any) -> Value:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(self.name, f"must be a number in [{self.lower}, {self.upper}]", value)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float (hundreds of digits)
            finite = False
        if not finite:
            raise InvalidInput(self.name, f"must be a finite number in [{self.lower}, {self.upper}]", value)
        if not self.lower <= value <= self.upper:
            raise InvalidInput(
                self.name,
                f"out of range: allowed [{self.lower}, {self.upper}]{' ' + self.units if self.units else ''}",
                value,
            )
        if self.value_type == "int":
            if int(value) != value:
                raise InvalidInput(self.name, "must be an integer", value)
            return int(value)
        return float(value)


class ChoiceParameter(BaseModel):
    """A categorical parameter: one of a listed set of values."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["choice"] = "choice"
    name: str
    values: list[Value] = Field(min_length=1)
    units: str = ""

    def check(self, value: Any) -> Value:
        if value not in self.values:
            raise InvalidInput(self.name, f"must be one of {self.values}", value)
        return value


class FixedParameter(BaseModel):
    """A parameter held at one value (recorded with every point, never searched)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fixed"] = "fixed"
    name: str
    value: Value
    units: str = ""

    def check(self, value: Any) -> Value:
        if value != self.value:
            raise InvalidInput(self.name, f"is fixed at {self.value!r}", value)
        return value


Parameter = Annotated[Union[RangeParameter, ChoiceParameter, FixedParameter], Field(discriminator="kind")]
PARAMETER_KINDS = ("range", "choice", "fixed")


def validation_message(err: dict) -> str:
    """pydantic's message for one error, with what is allowed where pydantic does not say it
    (a parameter without its "kind")."""
    if err.get("type") == "union_tag_not_found" and "parameters" in err.get("loc", ()):
        return f"a parameter needs \"kind\": one of {list(PARAMETER_KINDS)}"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


class Composition(BaseModel):
    """Fractions of named components that must sum to ``total`` (1, or 100 for %).

    Each component is also a :class:`RangeParameter` of the space (bounds 0..total
    unless given), so agents see ordinary parameters plus one sum constraint.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "composition"
    components: list[str] = Field(min_length=2)
    total: float = 1.0

    def check(self, point: dict[str, Any]) -> None:
        s = sum(float(point[c]) for c in self.components)
        if abs(s - self.total) > COMPOSITION_TOLERANCE * max(1.0, self.total):
            raise InvalidInput(
                self.name,
                f"fractions of {', '.join(self.components)} must sum to {self.total:g} (got {s:.6g})",
                {c: point[c] for c in self.components},
            )


class Objective(BaseModel):
    """One quantity to maximise or minimise, read from the reduced observation."""

    model_config = ConfigDict(extra="forbid")

    name: str
    direction: Literal["maximize", "minimize"] = "maximize"
    units: str = ""

    @property
    def sign(self) -> float:
        """+1 for maximise, -1 for minimise: multiply to turn every goal into a maximum."""
        return 1.0 if self.direction == "maximize" else -1.0


class SearchSpace(BaseModel):
    """Parameters, composition constraints and (optionally) a discrete candidate pool."""

    model_config = ConfigDict(extra="forbid")

    parameters: list[Parameter] = Field(min_length=1)
    compositions: list[Composition] = Field(default_factory=list)
    #: When set, only these points can be made (pool-based campaigns).
    pool: list[dict[str, Value]] | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> "SearchSpace":
        names = [p.name for p in self.parameters]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate parameter names: {sorted(dupes)}")
        for comp in self.compositions:
            missing = [c for c in comp.components if c not in names]
            if missing:
                raise ValueError(f"composition {comp.name!r} names unknown parameters {missing}")
        return self

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise InvalidInput(name, f"unknown parameter; allowed: {self.names}")

    def validate_point(self, point: dict[str, Any]) -> dict[str, Value]:
        """Return the point with checked types, or raise :class:`InvalidInput`."""
        if not isinstance(point, dict):
            raise InvalidInput("parameters", "must be a mapping of parameter name to value", point)
        unknown = [k for k in point if k not in self.names]
        if unknown:
            raise InvalidInput(unknown[0], f"unknown parameter; allowed: {self.names}")
        out: dict[str, Value] = {}
        for p in self.parameters:
            if p.name not in point:
                if isinstance(p, FixedParameter):
                    out[p.name] = p.value
                    continue
                raise InvalidInput(p.name, "missing; every parameter needs a value")
            out[p.name] = p.check(point[p.name])
        for comp in self.compositions:
            comp.check(out)
        if self.pool is not None and self.pool_index(out) is None:
            raise InvalidInput("parameters", "not in the candidate pool: only listed samples can be made", out)
        return out

    def pool_index(self, point: dict[str, Any], tol: float = 1e-6) -> int | None:
        """Index of ``point`` in the pool, or None."""
        if self.pool is None:
            return None
        for i, cand in enumerate(self.pool):
            if all(_close(cand.get(k), point.get(k), tol) for k in self.names):
                return i
        return None


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(a)))
    return a == b
