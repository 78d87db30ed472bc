"""Linear constraints between parameters, written as scientists write them: ``"x + y <= 1"``.

An agent option ``parameter_constraints: list[str]`` (the same strings Ax accepts)
restricts where an agent may suggest points, on top of the search space's bounds and
compositions. Each string is one linear inequality::

    "a + b <= 0.8"            "2*T - 100*rate >= 50"          "x <= y"

terms are ``[number][*]name`` joined by ``+`` / ``-``, on either side of ``<=`` or ``>=``.
Constraints may involve range parameters (float or integer, linear scale) and
composition components (also the implied last one); not log-scale, choice or fixed
parameters (those are not linear in what the optimiser moves).

How each agent honours them:

- Ax ("bo"): passed on as Ax parameter constraints (in Ax's parameter names);
- BoTorch ("botorch", "gp-ei"): linear inequalities of the acquisition optimiser, in
  the encoder's unit-cube coordinates (:meth:`LinearConstraint.to_unit`);
- baselines and every initial design: rejection (uniform over the feasible set);
- pools: infeasible pool rows are never suggested.

Every suggestion is checked before it leaves the agent (:meth:`AgentBase.ask`).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from sdl.errors import InvalidInput
from sdl.space import RangeParameter, SearchSpace

#: Absolute slack, relative to the scale of a constraint, when checking a point.
TOLERANCE = 1e-7

_TERM = re.compile(
    r"\s*([+-])?\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*\*?\s*)?([A-Za-z_][A-Za-z0-9_.]*)?\s*"
)


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficients[name] * point[name]) <op> bound`` with ``op`` "<=" or ">="."""

    coefficients: dict[str, float]
    op: str
    bound: float
    text: str = ""

    # ------------------------------------------------------------------ as "<="
    def as_le(self) -> tuple[dict[str, float], float]:
        """The same constraint as ``sum(w * x) <= b``."""
        if self.op == "<=":
            return dict(self.coefficients), self.bound
        return {k: -v for k, v in self.coefficients.items()}, -self.bound

    def slack(self, point: dict) -> float:
        """``b - w.x`` in the "<=" form: >= 0 when satisfied."""
        w, b = self.as_le()
        return b - sum(c * float(point[k]) for k, c in w.items())

    def scale(self) -> float:
        return max(1.0, abs(self.bound), *(abs(c) for c in self.coefficients.values()))

    def satisfied(self, point: dict, tol: float = TOLERANCE) -> bool:
        return self.slack(point) >= -tol * self.scale()

    # ------------------------------------------------------------------ Ax
    def to_ax(self, ax_name: dict[str, str], space: SearchSpace) -> str:
        """An Ax constraint string over Ax's names; an implied composition component is
        replaced by ``total - sum(other components)``."""
        w, b = _substitute_implied(*self.as_le(), space)
        terms = [f"{c!r}*{ax_name[k]}" for k, c in w.items() if c != 0.0]
        if not terms:
            raise InvalidInput("parameter_constraints", "constraint has no free parameter left", self.text)
        return " + ".join(terms).replace("+ -", "- ") + f" <= {b!r}"

    # ------------------------------------------------------------------ unit cube
    def to_unit(self, encoder) -> tuple[list[int], list[float], float]:
        """The constraint in the encoder's coordinates, as BoTorch wants it:
        ``sum(coef * u[idx]) >= rhs``."""
        space = encoder.space
        w, b = _substitute_implied(*self.as_le(), space)
        comp_of = {c: comp for comp in space.compositions for c in comp.components}
        idx: list[int] = []
        coef: list[float] = []
        for name, c in w.items():
            p = space.parameter(name)
            start = encoder._index[name].start
            if name in comp_of:  # x = total * u
                idx.append(start)
                coef.append(c * comp_of[name].total)
            else:  # x = lower + (upper - lower) * u
                assert isinstance(p, RangeParameter)
                b -= c * p.lower
                idx.append(start)
                coef.append(c * (p.upper - p.lower))
        # w.u <= b  <=>  -w.u >= -b
        return idx, [-v for v in coef], -b


def _substitute_implied(w: dict[str, float], b: float, space: SearchSpace) -> tuple[dict[str, float], float]:
    """Replace an implied (last) composition component by ``total - sum(others)``."""
    w = dict(w)
    for comp in space.compositions:
        last = comp.components[-1]
        if last in w:
            c = w.pop(last)
            b -= c * comp.total
            for other in comp.components[:-1]:
                w[other] = w.get(other, 0.0) - c
    return w, b


def _parse_side(text: str, whole: str) -> tuple[dict[str, float], float]:
    """A sum of terms -> (coefficients, constant)."""
    coefs: dict[str, float] = {}
    const = 0.0
    pos = 0
    text = text.strip()
    if not text:
        raise InvalidInput("parameter_constraints", "an empty side; write e.g. 'x + y <= 1'", whole)
    first = True
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInput("parameter_constraints", f"cannot read {text[pos:]!r}; write e.g. '2*x - y <= 1'", whole)
        sign, number, name = m.groups()
        if sign is None and not first:
            raise InvalidInput("parameter_constraints", f"expected + or - before {text[pos:]!r}", whole)
        if number is None and name is None:
            raise InvalidInput("parameter_constraints", f"a sign without a term in {text!r}", whole)
        value = (-1.0 if sign == "-" else 1.0) * (float(number) if number is not None else 1.0)
        if name is None:
            const += value
        else:
            coefs[name] = coefs.get(name, 0.0) + value
        pos = m.end()
        first = False
    return coefs, const


def parse_constraint(text: str, space: SearchSpace) -> LinearConstraint:
    """Parse ``text`` ("x + 2*y <= 1") against ``space``; :class:`InvalidInput` names what is wrong."""
    if not isinstance(text, str):
        raise InvalidInput("parameter_constraints", "each constraint must be a string like 'x + y <= 1'", text)
    ops = [op for op in ("<=", ">=") if op in text]
    if len(ops) != 1 or text.count(ops[0]) != 1 or "==" in text or re.search(r"(?<![<>])[<>](?!=)", text):
        raise InvalidInput("parameter_constraints", "needs exactly one '<=' or '>=' (e.g. 'x + y <= 1')", text)
    op = ops[0]
    left, right = text.split(op)
    lc, lk = _parse_side(left, text)
    rc, rk = _parse_side(right, text)
    coefs = dict(lc)
    for k, v in rc.items():
        coefs[k] = coefs.get(k, 0.0) - v
    coefs = {k: v for k, v in coefs.items() if v != 0.0}
    bound = rk - lk
    if not coefs:
        raise InvalidInput("parameter_constraints", "names no parameter", text)
    for name in coefs:
        if name not in space.names:
            raise InvalidInput("parameter_constraints", f"unknown parameter {name!r}; allowed: {space.names}", text)
        p = space.parameter(name)
        if not isinstance(p, RangeParameter):
            raise InvalidInput(
                "parameter_constraints", f"{name!r} is a {p.kind} parameter; constraints take range parameters", text)
        if p.log_scale:
            raise InvalidInput("parameter_constraints", f"{name!r} is on a log scale; constraints must be linear", text)
    return LinearConstraint(coefficients=coefs, op=op, bound=float(bound), text=text)


class ConstraintSet:
    """The parsed ``parameter_constraints`` of an agent, with the checks agents need."""

    def __init__(self, texts, space: SearchSpace):
        if texts is None:
            texts = []
        if isinstance(texts, str):
            texts = [texts]
        self.space = space
        self.constraints = [parse_constraint(t, space) for t in texts]
        self._int = {p.name for p in space.parameters if isinstance(p, RangeParameter) and p.value_type == "int"}

    def __bool__(self) -> bool:
        return bool(self.constraints)

    def __len__(self) -> int:
        return len(self.constraints)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.constraints]

    def satisfied(self, point: dict) -> bool:
        return all(c.satisfied(point) for c in self.constraints)

    def check(self, point: dict) -> None:
        for c in self.constraints:
            if not c.satisfied(point):
                raise InvalidInput("parameter_constraints", f"point violates {c.text!r}", point)

    def unit_constraints(self, encoder) -> list[tuple[list[int], list[float], float]]:
        return [c.to_unit(encoder) for c in self.constraints]

    def unit_mask(self, encoder, X: np.ndarray) -> np.ndarray:
        """Which rows of the encoded ``X`` satisfy every constraint (before integer rounding)."""
        X = np.atleast_2d(X)
        ok = np.ones(len(X), bool)
        for idx, coef, rhs in self.unit_constraints(encoder):
            scale = max(1.0, abs(rhs), *(abs(v) for v in coef))
            ok &= X[:, idx] @ np.asarray(coef) >= rhs - TOLERANCE * scale
        return ok

    def repair(self, point: dict) -> dict:
        """Make an integer-rounded point feasible: the nearest choice of its integer
        parameters (within one step of their value) that satisfies every constraint."""
        if self.satisfied(point):
            return point
        names = sorted({k for c in self.constraints for k in c.coefficients if k in self._int})
        options = []
        for name in names:
            p = self.space.parameter(name)
            v = float(point[name])
            options.append([c for c in range(math.floor(v) - 1, math.ceil(v) + 2) if p.lower <= c <= p.upper])
        best, best_d = point, math.inf
        for combo in itertools.product(*options):
            trial = {**point, **dict(zip(names, combo))}
            d = sum(abs(c - float(point[n])) for n, c in zip(names, combo))
            if d < best_d and self.satisfied(trial):
                best, best_d = trial, d
        return best
