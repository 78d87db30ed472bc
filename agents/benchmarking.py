"""Pool-based benchmarking as in Liang et al. (npj Comput. Mater. 7, 188, 2021).

A campaign on a pool is simulated directly (no devices): the agent is told the same
``n_start`` random points for a given seed whatever the agent, then asks one point at
a time; the table value is the measurement. The metric is the fraction of the top 5 %
of the pool found after n experiments ("top-5 % fraction"); the acceleration factor
is how many fewer experiments an agent needs than random search to reach a given
fraction, the enhancement factor the ratio of fractions at a given n.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from sdl.agents import make_agent
from sdl.models import Observation
from sdl.sim_devices.pool import PoolModel


@dataclass
class PoolRun:
    """One campaign: which pool rows were measured in order, and the top-k found after each."""

    agent: str
    seed: int
    rows: list[int] = field(default_factory=list)
    found: list[int] = field(default_factory=list)  # cumulative count of top rows after each experiment
    n_top: int = 0

    def fraction_at(self, n: int) -> float:
        return self.found[min(n, len(self.found)) - 1] / self.n_top


def start_rows(pool: PoolModel, seed: int, n_start: int) -> list[int]:
    """The random starting points for ``seed``: the same for every agent."""
    return [int(i) for i in np.random.default_rng([seed, 2021]).choice(len(pool), size=n_start, replace=False)]


def run_pool_campaign(
    agent_name: str, pool: PoolModel, seed: int, budget: int = 30, n_start: int = 5, batch_size: int = 1,
    top_fraction: float = 0.05, **agent_options,
) -> PoolRun:
    """Run ``agent_name`` on ``pool`` for ``budget`` experiments (``n_start`` of them random)."""
    warnings.filterwarnings("ignore")
    logging.getLogger("ax").setLevel(logging.ERROR)
    space = pool.search_space()
    top = set(int(i) for i in pool.top_indices(top_fraction))
    agent = make_agent(agent_name, space, [pool.objective], seed=seed, **agent_options)
    run = PoolRun(agent=agent_name, seed=seed, n_top=len(top))

    def record(rows: list[int]) -> None:
        obs = []
        for r in rows:
            params = pool.as_dict(r)
            obs.append(Observation(params=params, values={pool.objective.name: float(pool.values[r])}))
            run.rows.append(r)
            run.found.append(len(top & set(run.rows)))
        agent.tell(obs)

    record(start_rows(pool, seed, n_start))
    while len(run.rows) < budget:
        n = min(batch_size, budget - len(run.rows))
        sugg = agent.ask(n)
        record([pool.index_of(s.params) for s in sugg])
    return run


def acceleration_factor(agent_curve: np.ndarray, random_curve: np.ndarray, level: float) -> float | None:
    """Experiments random needs to reach ``level`` / experiments the agent needs (None if never)."""
    def first(curve: np.ndarray) -> int | None:
        hit = np.nonzero(curve >= level)[0]
        return int(hit[0]) + 1 if len(hit) else None

    a, r = first(agent_curve), first(random_curve)
    if a is None or r is None:
        return None
    return r / a
