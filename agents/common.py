"""What every agent shares: the observations it was told, its pending points, the pool.

The state is only ``observations`` and ``pending``; each ``ask`` draws its random
numbers from ``(seed, number of points seen so far)``, so an agent rebuilt from the
stored observations after a restart makes the same next suggestion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sdl.agents.constraints import ConstraintSet
from sdl.agents.encoding import SpaceEncoder
from sdl.errors import InvalidInput
from sdl.models import Observation, Provenance, Suggestion
from sdl.space import Objective, SearchSpace, Value


#: Options every agent accepts.
COMMON_OPTIONS = ("parameter_constraints",)


def _whole(lo: int, hi: int):
    def ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    return ok, f"a whole number from {lo} to {hi}"


def _one_of(*allowed):
    return (lambda v: v in allowed and not (isinstance(v, (int, float)) and not isinstance(v, bool))), \
        f"one of {list(allowed)}"


#: What the simple options take, checked when an agent is built (before a campaign is
#: stored or started), not when the first model is fitted; options with structure
#: (constraints, exposure, reference points) are checked by their own parsers.
OPTION_VALUES = {
    "n_init": _whole(1, 10_000),
    "num_restarts": _whole(1, 1_000),
    "raw_samples": _whole(1, 100_000),
    "points_per_axis": _whole(2, 1_000),
    "beta": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6,
             "a number above 0 (UCB's exploration weight; 1-3 is usual)"),
    "kernel": _one_of("rbf", "matern"),
    "acquisition": _one_of("ucb", "ei", "nei"),
    "log_transform": _one_of("auto", True, False),
    "input_warping": _one_of(True, False),
    "pessimistic_prior": _one_of(True, False),
}


def check_option_values(options: dict) -> None:
    """Refuse a simple option whose value the agent cannot use, naming it and what it takes."""
    for name, value in options.items():
        ok, allowed = OPTION_VALUES.get(name, (None, ""))
        if ok is not None and not ok(value):
            raise InvalidInput(f"agent_options.{name}", f"must be {allowed}", value)


class AgentBase:
    """Bookkeeping for an agent over ``space`` that maximises/minimises ``objectives``."""

    name = "base"

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], seed: int = 0, **options):
        if not objectives:
            raise InvalidInput("objectives", "at least one objective is needed")
        self.space = space
        self.objectives = list(objectives)
        self.seed = int(seed)
        self.encoder = SpaceEncoder(space)
        self.observations: list[Observation] = []
        self.pending: list[dict[str, Value]] = []
        self.check_option_names(options, repr(self.name))
        check_option_values(options)
        self.options = options
        #: Linear constraints between parameters (option ``parameter_constraints``).
        self.constraints = ConstraintSet(options.get("parameter_constraints"), space)

    option_names: tuple[str, ...] = ()

    @classmethod
    def check_option_names(cls, options: dict, label: str) -> None:
        """Refuse options this agent does not take; ``label`` names the agent in the error."""
        allowed = set(cls.option_names) | set(COMMON_OPTIONS)
        unknown = set(options) - allowed
        if unknown:
            raise InvalidInput("agent_options", f"unknown option(s) {sorted(unknown)} for agent {label}; "
                               f"allowed: {sorted(allowed)}")

    # ---------------------------------------------------------------- protocol
    def tell(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            self.observations.append(obs)
            self._drop_pending(obs.params)

    def add_pending(self, params: Sequence[dict]) -> None:
        self.pending.extend(dict(p) for p in params)

    def ask(self, n: int = 1) -> list[Suggestion]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput("n", "must be a positive integer", n)
        points = self._suggest(n)
        out = []
        for params, prov in points:
            if self.constraints:
                params = self.constraints.repair(params)
            params = self.space.validate_point(params)
            self.constraints.check(params)
            self.pending.append(params)
            out.append(Suggestion(params=params, provenance=prov))
        return out

    def _suggest(self, n: int) -> list[tuple[dict, Provenance]]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    @property
    def n_seen(self) -> int:
        return len(self.observations) + len(self.pending)

    def rng(self) -> np.random.Generator:
        """The generator for the next ask: a function of the seed and how much was seen."""
        return np.random.default_rng([self.seed, self.n_seen])

    def random_points(self, n: int, rng: np.random.Generator) -> list[dict[str, Value]]:
        """``n`` points uniform over the feasible set: the space, its compositions and the
        ``parameter_constraints`` (by rejection)."""
        if not self.constraints:
            return [self.encoder.decode(x) for x in self.encoder.random(n, rng)]
        out: list[dict[str, Value]] = []
        drawn = 0
        while len(out) < n:
            if drawn > 200_000:
                raise InvalidInput(
                    "parameter_constraints", "no feasible point in 200,000 random draws: the constraints "
                    "leave (almost) nothing of the search space", self.constraints.texts)
            batch = max(256, 8 * n)
            X = self.encoder.random(batch, rng)
            drawn += batch
            for x in X[self.constraints.unit_mask(self.encoder, X)]:
                p = self.constraints.repair(self.encoder.decode(x))
                if self.constraints.satisfied(p):
                    out.append(p)
                    if len(out) == n:
                        break
        return out

    def feasible_mask(self, X: np.ndarray) -> np.ndarray:
        """Which encoded rows satisfy the ``parameter_constraints``."""
        if not self.constraints:
            return np.ones(len(np.atleast_2d(X)), bool)
        return self.constraints.unit_mask(self.encoder, X)

    # ---------------------------------------------------------------- several objectives
    def pareto_front(self) -> list[Observation]:
        """The non-dominated observations (every objective counted in its direction)."""
        from sdl.agents.multiobjective import pareto_front

        return pareto_front(self.observations, self.objectives)

    def hypervolume(self, reference) -> float:
        """Hypervolume dominated by the observations, bounded by ``reference`` (one value
        per objective, a dict or a sequence, in the objectives' own units)."""
        from sdl.agents.multiobjective import hypervolume

        return hypervolume(self.observations, self.objectives, reference)

    def _drop_pending(self, params: dict) -> None:
        for i, p in enumerate(self.pending):
            if _same(p, params):
                del self.pending[i]
                return

    def good_observations(self) -> list[Observation]:
        """Observations with a finite value of every objective."""
        names = [o.name for o in self.objectives]
        return [
            o for o in self.observations
            if o.ok and all(k in o.values and np.isfinite(o.values[k]) for k in names)
        ]

    def signed_values(self, observations: Sequence[Observation]) -> np.ndarray:
        """(n, m) objective values, each multiplied by its sign so that larger is better."""
        return np.array(
            [[o.sign * float(obs.values[o.name]) for o in self.objectives] for obs in observations]
        ).reshape(len(observations), len(self.objectives))

    # ---------------------------------------------------------------- pools
    @property
    def is_pool(self) -> bool:
        return self.space.pool is not None

    def open_candidates(self) -> list[int]:
        """Indices of pool points neither measured nor pending (all of them if none is left)."""
        assert self.space.pool is not None
        used = {self._pool_row(o.params) for o in self.observations}
        used |= {self._pool_row(p) for p in self.pending}
        open_ = [i for i in range(len(self.space.pool)) if i not in used]
        if self.constraints:
            open_ = [i for i in open_ if self.constraints.satisfied(self.space.pool[i])]
        if not open_:
            raise InvalidInput("budget", f"every one of the {len(self.space.pool)} pool points "
                               + ("that meets the parameter constraints " if self.constraints else "") + "has been used")
        return open_

    def _pool_row(self, point: dict) -> int | None:
        """The pool index of ``point``: a dict lookup of its exact values, else the space's
        tolerant search (a linear scan, slow on pools of thousands)."""
        assert self.space.pool is not None
        names = self.space.names
        if not hasattr(self, "_pool_keys"):
            self._pool_keys = {tuple(p.get(n) for n in names): i for i, p in enumerate(self.space.pool)}
        try:
            hit = self._pool_keys.get(tuple(point.get(n) for n in names))
        except TypeError:  # an unhashable value: let the space decide
            hit = None
        return hit if hit is not None else self.space.pool_index(point)

    def pool_matrix(self) -> np.ndarray:
        assert self.space.pool is not None
        if not hasattr(self, "_pool_x"):
            self._pool_x = self.encoder.encode_many(self.space.pool)
        return self._pool_x


def _same(a: dict, b: dict, tol: float = 1e-9) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if abs(float(x) - float(y)) > tol * max(1.0, abs(float(x))):
                return False
        elif x != y:
            return False
    return True
