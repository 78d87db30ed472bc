"""Agents x problems x seeds, in parallel processes: the metrics of Liang et al. (2021).

For pool problems (real datasets) every campaign starts from the same ``n_start``
random points for a given seed, whatever the agent; the metric after n experiments is
the fraction of the pool's top 5 % that was measured. Random search runs in the same
benchmark, and the acceleration factor (experiments random needs / experiments the
agent needs to reach a fraction) and enhancement factor (agent's fraction / random's
at the same n) are computed against it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sdl.errors import InvalidInput

POOL_PROBLEMS = {"p3ht": "pool:p3ht", "agnp": "pool:agnp"}


@dataclass
class CurveResult:
    agent: str
    problem: str
    seed: int
    curve: list[float]  # top-5 % fraction after 1..budget experiments
    seconds: float


def _one_pool_run(agent: str, problem: str, seed: int, budget: int, n_start: int, options: dict) -> CurveResult:
    import torch

    torch.set_num_threads(1)  # one process per core; threads would only fight
    from sdl.agents.benchmarking import run_pool_campaign
    from sdl.sim_devices.pool import PoolModel

    pool = PoolModel.bundled(problem)
    t0 = time.perf_counter()
    run = run_pool_campaign(agent, pool, seed, budget=budget, n_start=n_start, **options)
    return CurveResult(agent, problem, seed, [f / run.n_top for f in run.found], time.perf_counter() - t0)


def run_pool_benchmark(
    agents: Sequence[str], problems: Sequence[str], seeds: Sequence[int], *, budget: int = 50, n_start: int = 5,
    workers: int | None = None, agent_options: dict[str, dict] | None = None,
    on_result: Callable[[CurveResult], None] | None = None,
) -> list[CurveResult]:
    """Run every (agent, problem, seed) in a process pool; results in completion order."""
    from sdl.agents import check_agent_name

    for a in agents:
        check_agent_name(a)
    for p in problems:
        if p not in POOL_PROBLEMS:
            raise InvalidInput("problem", f"unknown problem; allowed: {sorted(POOL_PROBLEMS)}", p)
    jobs = [(a, p, s) for p in problems for s in seeds for a in agents]
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    out: list[CurveResult] = []
    opts = agent_options or {}
    if workers == 1:
        for a, p, s in jobs:
            r = _one_pool_run(a, p, s, budget, n_start, opts.get(a, {}))
            out.append(r)
            if on_result:
                on_result(r)
        return out
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = [ex.submit(_one_pool_run, a, p, s, budget, n_start, opts.get(a, {})) for a, p, s in jobs]
        for f in as_completed(futs):
            r = f.result()
            out.append(r)
            if on_result:
                on_result(r)
    return out


def mean_curves(results: Sequence[CurveResult]) -> dict[tuple[str, str], np.ndarray]:
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for r in results:
        groups.setdefault((r.problem, r.agent), []).append(r.curve)
    return {k: np.mean(np.array(v), axis=0) for k, v in groups.items()}


def first_reach(curve: np.ndarray, level: float) -> int | None:
    hit = np.nonzero(curve >= level - 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


def summary_table(results: Sequence[CurveResult], at: Sequence[int] = (30, 50), level: float = 0.5) -> list[dict]:
    """One row per (problem, agent): mean top-5 % fraction at each n, EF and AF against random."""
    curves = mean_curves(results)
    seeds: dict[tuple[str, str], int] = {}
    secs: dict[tuple[str, str], float] = {}
    for r in results:
        seeds[(r.problem, r.agent)] = seeds.get((r.problem, r.agent), 0) + 1
        secs[(r.problem, r.agent)] = secs.get((r.problem, r.agent), 0.0) + r.seconds
    rows = []
    for (problem, agent), c in sorted(curves.items()):
        row: dict = {"problem": problem, "agent": agent, "seeds": seeds[(problem, agent)]}
        rnd = curves.get((problem, "random"))
        for n in at:
            if n <= len(c):
                row[f"top5@{n}"] = float(c[n - 1])
                if rnd is not None and n <= len(rnd) and rnd[n - 1] > 0:
                    row[f"EF@{n}"] = float(c[n - 1] / rnd[n - 1])
        if rnd is not None:
            a, r = first_reach(c, level), first_reach(rnd, level)
            row[f"AF@{level:g}"] = (r / a) if (a and r) else None
            row[f"n_to_{level:g}"] = a
        row["s_per_campaign"] = secs[(problem, agent)] / seeds[(problem, agent)]
        rows.append(row)
    return rows


def plot_curves(results: Sequence[CurveResult], path: str | Path) -> Path:
    """Mean top-5 % fraction against experiments, one panel per problem (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = mean_curves(results)
    problems = sorted({p for p, _ in curves})
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 3.8), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        for (p, agent), c in sorted(curves.items()):
            if p == problem:
                ax.plot(np.arange(1, len(c) + 1), c, label=agent, lw=2 if agent == "bo" else 1.2)
        ax.set_title(f"{problem}: top 5 % found")
        ax.set_xlabel("experiments")
        ax.set_ylabel("fraction of top 5 % measured")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(results: Sequence[CurveResult], rows: list[dict], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(
        {"summary": rows, "runs": [r.__dict__ for r in results]}, indent=1))
    return {"json": out / "bench.json", "plot": plot_curves(results, out / "top5_curves.png")}
