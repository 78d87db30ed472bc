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
from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.sim_devices.pool import PoolModel


@dataclass
class PoolRun:
    """One campaign: which pool rows were measured in order, and the top-k found after each.

    With several objectives ``found`` stays empty and ``scores`` holds the hypervolume
    fraction after each experiment (:func:`pool_hypervolume_fraction`)."""

    agent: str
    seed: int
    rows: list[int] = field(default_factory=list)
    found: list[int] = field(default_factory=list)  # cumulative count of top rows after each experiment
    n_top: int = 0
    scores: list[float] = field(default_factory=list)  # the metric after each experiment

    def fraction_at(self, n: int) -> float:
        return self.scores[min(n, len(self.scores)) - 1]


def start_rows(pool: PoolModel, seed: int, n_start: int) -> list[int]:
    """The random starting points for ``seed``: the same for every agent."""
    return [int(i) for i in np.random.default_rng([seed, 2021]).choice(len(pool), size=n_start, replace=False)]


class PoolHypervolume:
    """Hypervolume of measured pool rows as a fraction of the whole pool's.

    Every objective is scaled to [0, 1] over the pool (best = 1) and the reference point is
    the pool's worst value of each, so the fraction is 1 once the pool's Pareto front has
    been measured and does not depend on the objectives' units."""

    def __init__(self, pool: PoolModel):
        Y = np.asarray(pool.all_values, dtype=float) * np.array([o.sign for o in pool.objectives])
        lo, hi = Y.min(axis=0), Y.max(axis=0)
        self.U = (Y - lo) / np.where(hi > lo, hi - lo, 1.0)
        self.total = self._hv(self.U)

    @staticmethod
    def _hv(U: np.ndarray) -> float:
        import torch
        from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

        if len(U) == 0:
            return 0.0
        part = DominatedPartitioning(ref_point=torch.zeros(U.shape[1], dtype=torch.float64),
                                     Y=torch.as_tensor(U, dtype=torch.float64))
        return float(part.compute_hypervolume())

    def fraction(self, rows: list[int]) -> float:
        return self._hv(self.U[rows]) / self.total if self.total > 0 else 1.0


def check_pool_budget(pool, budget: int, n_start: int = 5) -> None:
    """A campaign of ``budget`` experiments, ``n_start`` of them random, fits in ``pool``."""
    if len(pool) <= n_start:
        raise InvalidInput("pool", f"{pool.name!r} has {len(pool)} distinct points: too few for {n_start} random "
                           "starts and an experiment the agent chooses", len(pool))
    if not n_start < budget <= len(pool):
        raise InvalidInput("budget", f"on pool {pool.name!r}: more than its {n_start} random starts and at most its "
                           f"{len(pool)} distinct points", budget)


def run_pool_campaign(
    agent_name: str, pool: PoolModel, seed: int, budget: int = 30, n_start: int = 5, batch_size: int = 1,
    top_fraction: float = 0.05, **agent_options,
) -> PoolRun:
    """Run ``agent_name`` on ``pool`` for ``budget`` experiments (``n_start`` of them random).

    One objective: the score is the share of the best ``top_fraction`` of the pool (``k``
    points) measured, points tied with the k-th best counting as equally good (an ordinal
    score), capped at 1. Several objectives: the hypervolume fraction."""
    check_pool_budget(pool, budget, n_start)
    warnings.filterwarnings("ignore")
    logging.getLogger("ax").setLevel(logging.ERROR)
    space = pool.search_space()
    multi = len(pool.objectives) > 1
    top, k = pool.top_tied(top_fraction)
    hv = PoolHypervolume(pool) if multi else None
    agent = make_agent(agent_name, space, list(pool.objectives), seed=seed, **agent_options)
    run = PoolRun(agent=agent_name, seed=seed, n_top=0 if multi else k)

    def record(rows: list[int]) -> None:
        obs = []
        for r in rows:
            obs.append(Observation(params=pool.as_dict(r), values=pool.values_at(r)))
            run.rows.append(r)
            if hv is not None:
                run.scores.append(hv.fraction(run.rows))
            else:
                run.found.append(min(k, len(top & set(run.rows))))
                run.scores.append(run.found[-1] / k)
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


# ---------------------------------------------------------------------- function problems
@dataclass
class FunctionProblem:
    """A continuous benchmark: a search space, one objective and a vectorised function.

    ``truth(X)`` gives the noise-free values of the points ``X`` (rows of parameter
    values in ``names`` order); measurements add Gaussian noise of ``noise_std``. The
    benchmark curve is the best noise-free value among the measured points, reported
    as ``metric``: "fraction of optimum" (best / optimum, maximised problems with a
    positive optimum) or "simple regret" (|optimum - best|).
    """

    name: str
    space: object
    objective: object
    names: list[str]
    truth: object  # Callable[[np.ndarray], np.ndarray]
    optimum: float
    noise_std: float = 0.0
    metric: str = "simple regret"
    target: float = 0.0  # the level counted by "experiments to target"
    failure: object = None  # a FailureRegion: points inside fail (no value, ok=False)

    def measure(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = self.truth(np.atleast_2d(X))
        return y + self.noise_std * rng.standard_normal(len(y)) if self.noise_std else y

    def score(self, best_truth: float) -> float:
        if self.metric == "fraction of optimum":
            return best_truth / self.optimum
        return abs(self.optimum - best_truth)

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "fraction of optimum"


def _box_problem(name: str, fn, noise_std: float, target: float) -> FunctionProblem:
    import torch

    from sdl.space import Objective, RangeParameter, SearchSpace

    bounds = fn.bounds.numpy()
    names = [f"x{i + 1}" for i in range(bounds.shape[1])]
    space = SearchSpace(parameters=[RangeParameter(name=n, lower=float(lo), upper=float(hi))
                                    for n, lo, hi in zip(names, bounds[0], bounds[1])])

    def truth(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return fn.evaluate_true(torch.as_tensor(X, dtype=torch.float64)).numpy()

    return FunctionProblem(name=name, space=space, objective=Objective(name="y", direction="minimize"), names=names,
                           truth=truth, optimum=float(fn.optimal_value), noise_std=noise_std, target=target)


def function_problem(name: str) -> FunctionProblem:
    """'sim-xrd' (the materials model, seed 0, noise-free FoM), 'branin' (noise sd 1.0) or
    'hartmann6' (noise sd 0.05); the last two minimised, scored by simple regret."""
    if name in ("sim-xrd", "sim-xrd-fail"):
        from sdl.sim_devices.failures import DEMO
        from sdl.sim_devices.materials import MaterialsModel
        from sdl.space import Objective

        model = MaterialsModel(seed=0)
        k = model.n

        def truth(X: np.ndarray) -> np.ndarray:
            X = np.atleast_2d(X)
            return model.figure_of_merit_batch(X[:, :k], X[:, k])

        return FunctionProblem(
            name=name, space=model.search_space(), objective=Objective(name="fom"),
            names=[*model.precursors, "temperature"], truth=truth, optimum=float(model.optimum()["fom"]),
            metric="fraction of optimum", target=0.95, failure=DEMO if name == "sim-xrd-fail" else None,
        )
    from botorch.test_functions import Branin, Hartmann

    if name == "branin":
        return _box_problem(name, Branin(), noise_std=1.0, target=0.5)
    if name == "hartmann6":
        return _box_problem(name, Hartmann(dim=6), noise_std=0.05, target=0.3)
    from sdl.errors import InvalidInput

    raise InvalidInput("problem", "unknown function problem; allowed: ['branin', 'hartmann6', 'sim-xrd', "
                       "'sim-xrd-fail']", name)


@dataclass
class FunctionRun:
    """One campaign on a function problem: the measured rows and the score after each."""

    agent: str
    seed: int
    X: list[list[float]] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)
    truth: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # after each experiment
    rounds: list[int] = field(default_factory=list)  # the round (ask) of each experiment, 0 = the start
    ask_seconds: list[float] = field(default_factory=list)
    failed: list[bool] = field(default_factory=list)  # the experiment fell in the problem's failure region


def start_points(problem: FunctionProblem, seed: int, n_start: int) -> list[dict]:
    """The random starting points for ``seed``: the same for every agent."""
    from sdl.agents.common import AgentBase

    base = AgentBase(problem.space, [problem.objective], seed)
    return base.random_points(n_start, np.random.default_rng([seed, 2021]))


def run_function_campaign(
    agent_name: str, problem: FunctionProblem, seed: int, budget: int = 30, n_start: int = 5, batch_size: int = 1,
    **agent_options,
) -> FunctionRun:
    """Run ``agent_name`` on ``problem`` for ``budget`` experiments (``n_start`` random), in
    rounds of ``batch_size``; measurement noise is seeded by ``seed``."""
    import time

    warnings.filterwarnings("ignore")
    logging.getLogger("ax").setLevel(logging.ERROR)
    agent = make_agent(agent_name, problem.space, [problem.objective], seed=seed, **agent_options)
    noise = np.random.default_rng([seed, 7])
    run = FunctionRun(agent=agent_name, seed=seed)
    sign = problem.objective.sign
    best = -np.inf

    def record(points: list[dict], round_: int) -> None:
        nonlocal best
        X = np.array([[float(p[n]) for n in problem.names] for p in points])
        y = problem.measure(X, noise)
        t = problem.truth(X)
        fail = problem.failure.mask(X, problem.names) if problem.failure is not None else np.zeros(len(X), bool)
        obs = []
        for p, x, yi, ti, fi in zip(points, X, y, t, fail):
            if fi:  # no sample: no value, the experiment is spent
                obs.append(Observation(params=p, ok=False, extra={"error": "no sample formed"}))
            else:
                obs.append(Observation(params=p, values={problem.objective.name: float(yi)}))
                best = max(best, sign * float(ti))
            run.X.append(x.tolist())
            run.measured.append(float("nan") if fi else float(yi))
            run.truth.append(float(ti))
            run.failed.append(bool(fi))
            run.scores.append(problem.score(sign * best) if np.isfinite(best) else (0.0 if problem.higher_is_better
                                                                                  else float("inf")))
            run.rounds.append(round_)
        agent.tell(obs)

    record(start_points(problem, seed, n_start), 0)
    round_ = 0
    while len(run.X) < budget:
        round_ += 1
        n = min(batch_size, budget - len(run.X))
        t0 = time.perf_counter()
        sugg = agent.ask(n)
        run.ask_seconds.append(time.perf_counter() - t0)
        record([s.params for s in sugg], round_)
    return run
