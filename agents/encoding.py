"""Points <-> unit-cube vectors, the common language of the model-based agents.

A search space as scientists write it (ranges, log scales, integers, choices, fixed
values, compositions) becomes a vector in [0, 1]^d that a Gaussian process can model:

- a range parameter maps linearly (or in log10 for ``log_scale``) to [0, 1];
- a choice parameter becomes one coordinate per value (one-hot);
- a fixed parameter takes no coordinate;
- a composition of k components is encoded by its first k - 1 fractions divided by the
  total; the last is implied (``total - sum``), so the feasible set is the corner
  ``sum(u) <= 1`` of the cube. :meth:`SpaceEncoder.composition_constraints` gives that
  as linear inequalities for the optimiser.

Decoding rounds integers, picks the largest one-hot coordinate and projects a
composition back onto its simplex, so every decoded point passes
:meth:`SearchSpace.validate_point`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sdl.space import ChoiceParameter, FixedParameter, RangeParameter, SearchSpace, Value


@dataclass
class _Slot:
    name: str
    kind: str  # "range", "choice", "implied"
    start: int
    width: int


class SpaceEncoder:
    """Bijective-enough map between a :class:`SearchSpace`'s points and [0, 1]^d."""

    def __init__(self, space: SearchSpace):
        self.space = space
        implied = {comp.components[-1]: comp for comp in space.compositions}
        self._implied = implied
        self._comp_of = {c: comp for comp in space.compositions for c in comp.components}
        self.slots: list[_Slot] = []
        d = 0
        for p in space.parameters:
            if isinstance(p, FixedParameter):
                continue
            if p.name in implied:
                self.slots.append(_Slot(p.name, "implied", -1, 0))
            elif isinstance(p, ChoiceParameter):
                self.slots.append(_Slot(p.name, "choice", d, len(p.values)))
                d += len(p.values)
            else:
                self.slots.append(_Slot(p.name, "range", d, 1))
                d += 1
        self.dim = d
        self._index = {s.name: s for s in self.slots}

    # ---------------------------------------------------------------- encode
    def _range_to_unit(self, p: RangeParameter, value: float) -> float:
        if p.log_scale:
            return (math.log10(value) - math.log10(p.lower)) / (math.log10(p.upper) - math.log10(p.lower))
        return (value - p.lower) / (p.upper - p.lower)

    def _unit_to_range(self, p: RangeParameter, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if p.log_scale:
            return 10 ** (math.log10(p.lower) + u * (math.log10(p.upper) - math.log10(p.lower)))
        return p.lower + u * (p.upper - p.lower)

    def encode(self, point: dict[str, Value]) -> np.ndarray:
        x = np.zeros(self.dim)
        for s in self.slots:
            p = self.space.parameter(s.name)
            if s.kind == "implied":
                continue
            if s.kind == "choice":
                x[s.start + list(p.values).index(point[s.name])] = 1.0  # type: ignore[union-attr]
            elif s.name in self._comp_of:
                x[s.start] = float(point[s.name]) / self._comp_of[s.name].total
            else:
                x[s.start] = self._range_to_unit(p, float(point[s.name]))  # type: ignore[arg-type]
        return x

    def encode_many(self, points: list[dict[str, Value]]) -> np.ndarray:
        return np.array([self.encode(p) for p in points]).reshape(len(points), self.dim)

    # ---------------------------------------------------------------- decode
    def decode(self, x: np.ndarray) -> dict[str, Value]:
        x = np.asarray(x, dtype=float)
        out: dict[str, Value] = {}
        for comp in self.space.compositions:
            free = comp.components[:-1]
            u = np.clip([x[self._index[c].start] for c in free], 0.0, None)
            if u.sum() > 1.0:
                u = u / u.sum()
            fractions = [float(v) * comp.total for v in u]
            fractions.append(max(0.0, comp.total - sum(fractions)))
            # Put the rounding remainder on the largest component so the sum is exact.
            err = comp.total - sum(fractions)
            fractions[int(np.argmax(fractions))] += err
            for c, f in zip(comp.components, fractions):
                p = self.space.parameter(c)
                out[c] = float(min(max(f, p.lower), p.upper)) if isinstance(p, RangeParameter) else f
        for p in self.space.parameters:
            if p.name in out:
                continue
            if isinstance(p, FixedParameter):
                out[p.name] = p.value
                continue
            s = self._index[p.name]
            if isinstance(p, ChoiceParameter):
                out[p.name] = p.values[int(np.argmax(x[s.start : s.start + s.width]))]
            else:
                v = self._unit_to_range(p, x[s.start])
                out[p.name] = int(round(v)) if p.value_type == "int" else float(v)
        return out

    # ---------------------------------------------------------------- geometry
    def composition_constraints(self) -> list[tuple[list[int], list[float], float]]:
        """Linear inequalities ``sum(coef * x[idx]) >= rhs`` (BoTorch's convention)."""
        cons = []
        for comp in self.space.compositions:
            idx = [self._index[c].start for c in comp.components[:-1]]
            cons.append((idx, [-1.0] * len(idx), -1.0))
        return cons

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` vectors uniform over the feasible set (compositions uniform on the simplex)."""
        return self.from_unit_cube(rng.random((n, self.dim)))

    def from_unit_cube(self, u: np.ndarray) -> np.ndarray:
        """Map points of [0, 1]^d (e.g. Sobol) onto the feasible set, keeping uniformity.

        A composition's k - 1 coordinates are turned into a uniform point of the simplex
        by the sorted-spacings construction; one-hot blocks get a single 1.
        """
        u = np.atleast_2d(np.asarray(u, dtype=float)).copy()
        x = u.copy()
        for comp in self.space.compositions:
            idx = [self._index[c].start for c in comp.components[:-1]]
            spacings = np.diff(np.concatenate([np.zeros((len(u), 1)), np.sort(u[:, idx], axis=1),
                                               np.ones((len(u), 1))], axis=1), axis=1)
            x[:, idx] = spacings[:, :-1]
        for s in self.slots:
            if s.kind == "choice":
                block = u[:, s.start : s.start + s.width]
                choice = np.minimum((block[:, 0] * s.width).astype(int), s.width - 1)
                x[:, s.start : s.start + s.width] = 0.0
                x[np.arange(len(u)), s.start + choice] = 1.0
        return x
