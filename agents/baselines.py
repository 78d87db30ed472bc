"""Baselines every agent is compared against: random, Sobol and grid.

They ignore the measurements (that is what makes them baselines) but respect the
search space: compositions are drawn uniformly on their simplex, pools are sampled
without replacement, and ``parameter_constraints`` are met by rejection (random and
Sobol points outside them are skipped, grid points outside them dropped).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import qmc

from sdl.agents.common import AgentBase
from sdl.models import Provenance


class RandomAgent(AgentBase):
    """Uniform random points (pool: random unmeasured candidates)."""

    name = "random"

    def _suggest(self, n: int):
        rng = self.rng()
        why = Provenance(agent=self.name, reason="uniform random draw (baseline)")
        if self.is_pool:
            picks = rng.choice(self.open_candidates(), size=n, replace=False)
            return [(dict(self.space.pool[int(i)]), why) for i in picks]
        return [(p, why) for p in self.random_points(n, rng)]


class SobolAgent(AgentBase):
    """Scrambled Sobol sequence, the quasi-random space filler (pool: nearest open candidate)."""

    name = "sobol"

    def _sequence(self, count: int) -> np.ndarray:
        """The first ``count`` feasible points of the seeded sequence (unit-cube coordinates
        mapped onto the feasible set); with constraints, infeasible ones are skipped."""
        d = max(self.encoder.dim, 1)
        sobol = qmc.Sobol(d, scramble=True, seed=self.seed)
        if not self.constraints:
            return self.encoder.from_unit_cube(sobol.random(count)) if count else np.zeros((0, d))
        keep = np.zeros((0, self.encoder.dim))
        drawn = 0
        while len(keep) < count:
            if drawn > 200_000:
                from sdl.errors import InvalidInput

                raise InvalidInput("parameter_constraints", "no feasible Sobol point in 200,000: the constraints "
                                   "leave (almost) nothing of the search space", self.constraints.texts)
            m = max(64, 2 * (count - len(keep)))
            X = self.encoder.from_unit_cube(sobol.random(m))
            drawn += m
            keep = np.vstack([keep, X[self.feasible_mask(X)]])
        return keep[:count]

    def _suggest(self, n: int):
        why = Provenance(agent=self.name, reason=f"Sobol point {self.n_seen + 1}.. (space filling, baseline)")
        points = self._sequence(self.n_seen + n)[self.n_seen:]
        if self.is_pool:
            X = self.pool_matrix()
            open_ = list(self.open_candidates())
            out = []
            for x in points:
                j = int(np.argmin(((X[open_] - x) ** 2).sum(axis=1)))
                out.append((dict(self.space.pool[open_.pop(j)]), why))
            return out
        return [(self.encoder.decode(x), why) for x in points]


class GridAgent(AgentBase):
    """A full-factorial grid, visited in a seeded random order (pool: the pool in random order).

    ``points_per_axis`` (default 5) sets the grid; composition grids keep the points on
    the simplex (a simplex-lattice design).
    """

    name = "grid"
    option_names = ("points_per_axis",)

    def _grid(self) -> np.ndarray:
        if getattr(self, "_grid_x", None) is None:
            k = int(self.options.get("points_per_axis", 5))
            axes = np.linspace(0.0, 1.0, k)
            pts = np.array(list(itertools.product(axes, repeat=max(self.encoder.dim, 1))))
            pts = pts[:, : self.encoder.dim]
            feasible = np.ones(len(pts), bool)
            for idx, coef, rhs in self.encoder.composition_constraints():
                feasible &= pts[:, idx] @ np.array(coef) >= rhs - 1e-9
            for s in self.encoder.slots:
                if s.kind == "choice":
                    feasible &= pts[:, s.start : s.start + s.width].sum(axis=1) == 1
            pts = pts[feasible]
            pts = pts[self.feasible_mask(pts)] if len(pts) else pts
            if len(pts) == 0:
                from sdl.errors import InvalidInput

                raise InvalidInput("parameter_constraints", f"no point of the {k}-per-axis grid meets the constraints; "
                                   "raise points_per_axis", self.constraints.texts)
            self._grid_x = pts[np.random.default_rng(self.seed).permutation(len(pts))]
        return self._grid_x

    def _suggest(self, n: int):
        why = Provenance(agent=self.name, reason="next grid point (baseline)")
        if self.is_pool:
            order = np.random.default_rng(self.seed).permutation(len(self.space.pool))
            open_ = set(self.open_candidates())
            picks = [int(i) for i in order if i in open_][:n]
            return [(dict(self.space.pool[i]), why) for i in picks]
        grid = self._grid()
        start = self.n_seen
        return [(self.encoder.decode(grid[(start + i) % len(grid)]), why) for i in range(n)]
