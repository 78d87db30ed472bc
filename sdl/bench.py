"""Agents x problems x seeds, in parallel processes: ``sdl bench``.

Problems
--------
- pools (real datasets, Liang et al. 2021): ``p3ht``, ``agnp``. Every campaign starts
  from the same ``n_start`` random pool rows for a given seed, whatever the agent; the
  metric after n experiments is the fraction of the pool's top 5 % that was measured
  (higher is better). The acceleration factor (experiments random needs / experiments
  the agent needs to reach a quarter of the top 5 %, ``AF_LEVEL``) and the enhancement factor (agent's
  fraction / random's at the same n) are computed against random search run in the
  same benchmark.
- functions: ``sim-xrd`` (the simulated materials model, seed 0, its noise-free figure
  of merit evaluated directly; metric: best FoM found / the optimum, higher is better),
  ``branin`` (noise sd 1.0) and ``hartmann6`` (noise sd 0.05) from
  ``botorch.test_functions`` (metric: simple regret, |optimum - best noise-free value
  among the measured points|, lower is better). The same random starting points for
  every agent, and the measurement noise is seeded by the seed.

For function problems the table gives the metric at each n, the ratio to random at
the same n (``vs_random@n``, > 1 means better than random whichever the direction) and
``n_to_target`` (mean experiments to reach the problem's target: 95 % of the optimum
for sim-xrd, regret 0.5 for Branin, 0.3 for Hartmann-6; None when a seed never did).

Every campaign runs in its own process (spawn context, one torch thread each).
``quick_settings()`` gives the CI size (``sdl bench --quick``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sdl.errors import InvalidInput

log = logging.getLogger(__name__)

POOL_PROBLEMS = {"p3ht": "pool:p3ht", "agnp": "pool:agnp"}
FUNCTION_PROBLEMS = ("sim-xrd", "branin", "hartmann6")
PROBLEMS = (*POOL_PROBLEMS, *FUNCTION_PROBLEMS)
#: Every bundled pool (12 Olympus datasets + P3HT + AgNP): ``sdl bench --suite``.
from sdl.pools import SUITE, PoolSpec  # noqa: E402
from sdl.sim_devices.pool import table_header  # noqa: E402

#: The metric of a pool with several objectives (:class:`sdl.agents.benchmarking.PoolHypervolume`).
HV = "hypervolume fraction"

#: The metric of each problem's curve.
TOP5 = "top-5 % fraction"
METRICS = {"p3ht": TOP5, "agnp": TOP5, "sim-xrd": "fraction of optimum", "branin": "simple regret",
           "hartmann6": "simple regret"}
#: Level counted by ``n_to_target`` for function problems (see the module docstring).
TARGETS = {"sim-xrd": 0.95, "branin": 0.5, "hartmann6": 0.3}

#: ``sdl bench --quick``: 2 seeds, pools to 30 experiments, functions to 20.
QUICK = {"seeds": 2, "budget": {"p3ht": 30, "agnp": 30, "sim-xrd": 20, "branin": 20, "hartmann6": 20}}


@dataclass
class CurveResult:
    agent: str
    problem: str
    seed: int
    curve: list[float]  # the metric after 1..budget experiments
    seconds: float
    metric: str = TOP5
    rounds: list[int] = field(default_factory=list)  # the round of each experiment (0: the random start)
    batch_size: int = 1


def higher_is_better(metric: str) -> bool:
    return metric != "simple regret"


def quick_settings(problems: Sequence) -> dict:
    """Seeds and per-problem budgets of ``--quick`` (CI: a few minutes on 2 cores)."""
    return {"seeds": QUICK["seeds"], "budget": {
        problem_key(p): QUICK["budget"].get(problem_key(p), 30 if is_pool_problem(p) else 20) for p in problems}}


def check_problems(problems: Sequence) -> list:
    """Problem names (``PROBLEMS`` and every bundled pool of ``SUITE``) or :class:`PoolSpec` tables."""
    for p in problems:
        if not isinstance(p, PoolSpec) and p not in PROBLEMS and p not in SUITE:
            raise InvalidInput("problem", f"unknown problem; allowed: {list(dict.fromkeys([*PROBLEMS, *SUITE]))} "
                               "or a CSV table (--pool FILE --objective COLUMN[:min|max])", p)
    return list(problems)


def table_pools(paths: Sequence, objectives: Sequence[str], categorical: Sequence[str] = (),
                inputs: Sequence[str] = (), ignore: Sequence[str] = ()) -> list[PoolSpec]:
    """``--pool FILE`` (each) with ``--objective COLUMN[:min|max]`` (every one) as :class:`PoolSpec`;
    ``--input`` / ``--ignore`` / ``--categorical`` name columns (with several tables, of those
    that have them). Each table is read here once, so a bad column is reported before any
    campaign runs."""
    for given, flag in ((objectives, "objective"), (categorical, "categorical"), (inputs, "input"),
                        (ignore, "ignore")):
        if given and not paths:
            raise InvalidInput(flag, f"--{flag} names a column of a --pool table; give --pool FILE.csv")
    if paths and not objectives:
        raise InvalidInput("objective", "--pool needs --objective COLUMN[:min|max] (one per objective)")
    specs = []
    for p in paths:
        path = Path(p)
        header = table_header(path)  # None: spec.load() below says what is wrong with the file
        def own(names):
            return tuple(c for c in names if len(paths) == 1 or header is None or c in header)

        spec = PoolSpec(path=str(path.resolve()), objectives=tuple(objectives), categorical=own(categorical),
                        input_columns=own(inputs) or None, ignore_columns=own(ignore))
        spec.load()  # every error now, naming the column
        specs.append(spec)
    return specs


def problem_key(problem) -> str:
    """The name a problem goes by in tables: its own, or a table's ``PoolSpec.key``."""
    return problem.key if isinstance(problem, PoolSpec) else str(problem)


def is_pool_problem(problem) -> bool:
    return isinstance(problem, PoolSpec) or problem in SUITE


def check_pool_budgets(problems: Sequence, budget: int | dict[str, int], n_start: int) -> None:
    """A budget a pool cannot hold (more than its distinct points), refused before any
    campaign starts, in the words each campaign would use."""
    from sdl.agents.benchmarking import check_pool_budget
    from sdl.pools import load_pool

    for p in problems:
        if is_pool_problem(p):
            check_pool_budget(load_pool(p), budget.get(problem_key(p), 30) if isinstance(budget, dict) else budget,
                              n_start)


def run_one(agent: str, problem: str, seed: int, budget: int, n_start: int, options: dict,
            batch_size: int = 1) -> CurveResult:
    """One campaign of ``agent`` (with ``options``) on ``problem`` (a pool or a function),
    its score curve and time: the unit :func:`run_benchmark` spreads over processes, public
    for studies that add their own bookkeeping (``benchmarks/heldout_defaults.py``)."""
    import torch

    torch.set_num_threads(1)  # one process per core; threads would only fight
    t0 = time.perf_counter()
    if is_pool_problem(problem):
        from sdl.agents.benchmarking import run_pool_campaign
        from sdl.pools import load_pool

        pool = load_pool(problem)
        run = run_pool_campaign(agent, pool, seed, budget=budget, n_start=n_start, batch_size=batch_size, **options)
        rounds = [0] * n_start + [1 + (i // batch_size) for i in range(len(run.scores) - n_start)]
        return CurveResult(agent, problem_key(problem), seed, list(run.scores), time.perf_counter() - t0,
                           HV if len(pool.objectives) > 1 else TOP5, rounds, batch_size)
    from sdl.agents.benchmarking import function_problem, run_function_campaign

    prob = function_problem(problem)
    run = run_function_campaign(agent, prob, seed, budget=budget, n_start=n_start, batch_size=batch_size, **options)
    return CurveResult(agent, problem, seed, run.scores, time.perf_counter() - t0, prob.metric, run.rounds,
                       batch_size)


def run_benchmark(
    agents: Sequence[str], problems: Sequence[str], seeds: Sequence[int], *, budget: int | dict[str, int] = 50,
    n_start: int = 5, workers: int | None = None, agent_options: dict[str, dict] | None = None,
    on_result: Callable[[CurveResult], None] | None = None, batch_size: int = 1,
    done: Sequence[CurveResult] = (),
) -> list[CurveResult]:
    """Run every (agent, problem, seed) in a process pool; results in completion order.

    ``budget``: experiments per campaign, one number or one per problem. ``done``: results
    of an earlier run (``runs.jsonl``): campaigns they hold with at least the budget are not
    run again, and are returned with the others.
    """
    from sdl.agents import check_agent_name

    for a in agents:
        check_agent_name(a)
    check_problems(problems)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput("batch_size", "must be a positive integer", batch_size)

    def budget_of(p) -> int:
        b = budget.get(problem_key(p), 50) if isinstance(budget, dict) else budget
        if b <= n_start:
            raise InvalidInput("budget", f"must exceed n_start ({n_start})", b)
        return int(b)

    jobs = [(a, p, s, budget_of(p)) for p in problems for s in seeds for a in agents]
    have = {(r.agent, r.problem, r.seed): r for r in done if r.batch_size == batch_size}
    out: list[CurveResult] = []
    for a, p, s, b in list(jobs):
        r = have.get((a, problem_key(p), s))
        if r is not None and len(r.curve) >= b:
            out.append(CurveResult(**{**r.__dict__, "curve": r.curve[:b], "rounds": r.rounds[:b]}))
            jobs.remove((a, p, s, b))
    if not jobs:
        return out
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    opts = agent_options or {}
    if workers == 1:
        for a, p, s, b in jobs:
            r = run_one(a, p, s, b, n_start, opts.get(a, {}), batch_size)
            out.append(r)
            if on_result:
                on_result(r)
        return out
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = [ex.submit(run_one, a, p, s, b, n_start, opts.get(a, {}), batch_size) for a, p, s, b in jobs]
        for f in as_completed(futs):
            r = f.result()
            out.append(r)
            if on_result:
                on_result(r)
    return out


def run_pool_benchmark(
    agents: Sequence[str], problems: Sequence[str], seeds: Sequence[int], *, budget: int | dict[str, int] = 50,
    n_start: int = 5, workers: int | None = None, agent_options: dict[str, dict] | None = None,
    on_result: Callable[[CurveResult], None] | None = None, batch_size: int = 1,
) -> list[CurveResult]:
    """The first name of :func:`run_benchmark` (it now takes function problems too)."""
    return run_benchmark(agents, problems, seeds, budget=budget, n_start=n_start, workers=workers,
                         agent_options=agent_options, on_result=on_result, batch_size=batch_size)


def mean_curves(results: Sequence[CurveResult]) -> dict[tuple[str, str], np.ndarray]:
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for r in results:
        groups.setdefault((r.problem, r.agent), []).append(r.curve)
    out = {}
    for k, v in groups.items():
        n = min(len(c) for c in v)
        out[k] = np.mean(np.array([c[:n] for c in v]), axis=0)
    return out


def first_reach(curve: np.ndarray, level: float, higher: bool = True) -> int | None:
    hit = np.nonzero(curve >= level - 1e-12)[0] if higher else np.nonzero(curve <= level + 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


#: Top-5 % fraction at which the acceleration factor is measured: random search reaches a
#: quarter of the top 5 % within 50 experiments on both pools (half it does not: on P3HT
#: random needs about 89 experiments for that on average), so AF is defined there.
AF_LEVEL = 0.25


def summary_table(results: Sequence[CurveResult], at: Sequence[int] = (30, 50), level: float = AF_LEVEL) -> list[dict]:
    """One row per (problem, agent).

    Pools: mean top-5 % fraction at each n (``top5@n``), EF and AF against random.
    Functions: mean metric at each n (``best@n`` for sim-xrd, ``regret@n`` for the
    others), ``vs_random@n`` and ``n_to_target`` (mean over seeds; None if a seed never
    reached the target).
    """
    curves = mean_curves(results)
    seeds: dict[tuple[str, str], int] = {}
    secs: dict[tuple[str, str], float] = {}
    metric: dict[str, str] = {}
    per_seed: dict[tuple[str, str], list[list[float]]] = {}
    for r in results:
        key = (r.problem, r.agent)
        seeds[key] = seeds.get(key, 0) + 1
        secs[key] = secs.get(key, 0.0) + r.seconds
        metric[r.problem] = r.metric
        per_seed.setdefault(key, []).append(r.curve)
    rows = []
    for (problem, agent), c in sorted(curves.items()):
        row: dict = {"problem": problem, "agent": agent, "seeds": seeds[(problem, agent)],
                     "metric": metric[problem]}
        rnd = curves.get((problem, "random"))
        if metric[problem] == TOP5:
            for n in at:
                if n <= len(c):
                    row[f"top5@{n}"] = float(c[n - 1])
                    if rnd is not None and n <= len(rnd) and rnd[n - 1] > 0:
                        row[f"EF@{n}"] = float(c[n - 1] / rnd[n - 1])
            if rnd is not None:
                a, r = first_reach(c, level), first_reach(rnd, level)
                row[f"AF@{level:g}"] = (r / a) if (a and r) else None
                row[f"n_to_{level:g}"] = a
        else:
            higher = higher_is_better(metric[problem])
            key = "best" if higher else "regret"
            for n in at:
                if n <= len(c):
                    row[f"{key}@{n}"] = float(c[n - 1])
                    if rnd is not None and n <= len(rnd) and c[n - 1] > 0 and rnd[n - 1] > 0:
                        row[f"vs_random@{n}"] = float(c[n - 1] / rnd[n - 1] if higher else rnd[n - 1] / c[n - 1])
            target = TARGETS.get(problem)
            if target is not None:
                reach = [first_reach(np.asarray(s), target, higher) for s in per_seed[(problem, agent)]]
                row["n_to_target"] = float(np.mean(reach)) if all(v is not None for v in reach) else None
                row["target"] = target
        row["s_per_campaign"] = secs[(problem, agent)] / seeds[(problem, agent)]
        rows.append(row)
    return rows


def table_columns(rows: Sequence[dict], at: Sequence[int]) -> list[str]:
    """The columns worth printing for ``rows`` (pool and function problems mixed)."""
    cols = ["problem", "agent"]
    af = (f"AF@{AF_LEVEL:g}", f"n_to_{AF_LEVEL:g}")
    keys = {k for r in rows for k, v in r.items() if v is not None or k in (*af, "n_to_target")}
    for prefix in ("top5", "best", "regret"):
        cols += [f"{prefix}@{n}" for n in at if f"{prefix}@{n}" in keys]
    for prefix in ("EF", "vs_random"):
        cols += [f"{prefix}@{n}" for n in at if f"{prefix}@{n}" in keys]
    cols += [k for k in (*af, "n_to_target") if k in keys]
    return cols + ["s_per_campaign"]


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def plot_curves(results: Sequence[CurveResult], path: str | Path) -> Path:
    """Mean metric against experiments, one panel per problem (PNG); regret on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = mean_curves(results)
    metric = {r.problem: r.metric for r in results}
    problems = sorted({p for p, _ in curves})
    ncol = min(len(problems), 5)
    nrow = -(-len(problems) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.8 * nrow), squeeze=False)
    for ax in axes.flat[len(problems):]:
        ax.set_visible(False)
    for ax, problem in zip(axes.flat, problems):
        for (p, agent), c in sorted(curves.items()):
            if p == problem:
                ax.plot(np.arange(1, len(c) + 1), c, label=agent, lw=2 if agent == "bo" else 1.2)
        m = metric[problem]
        ax.set_title(f"{problem}: {m}")
        ax.set_xlabel("experiments")
        ax.set_ylabel({TOP5: "fraction of top 5 % measured", HV: "hypervolume / pool's"}.get(m, m))
        if m == "simple regret":
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(results: Sequence[CurveResult], rows: list[dict], out_dir: str | Path,
                  aggregate: dict | None = None) -> dict[str, Path]:
    """``bench.json`` (summary and every run) and the curves (``top5_curves.png`` when only
    pools were run, ``curves.png`` otherwise)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(
        {"summary": rows, **({"aggregate": aggregate} if aggregate else {}),
         "runs": [r.__dict__ for r in results]}, indent=1))
    only_pools = all(r.metric in (TOP5, HV) for r in results)
    return {"json": out / "bench.json", "plot": plot_curves(results, out / ("top5_curves.png" if only_pools
                                                                              else "curves.png"))}


def read_runs(log_path: Path) -> list[CurveResult]:
    """The campaigns a ``runs.jsonl`` holds. A last line cut short (the run was killed while
    writing it) is dropped, so the campaign runs again; any other unreadable line is an error."""
    lines = [(i, line) for i, line in enumerate(log_path.read_text().splitlines(), start=1) if line.strip()]
    out = []
    for k, (i, line) in enumerate(lines):
        try:
            out.append(CurveResult(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            if k == len(lines) - 1 and isinstance(exc, ValueError):
                log.warning("%s line %d is cut short (a run killed while writing it): run again", log_path, i)
                break
            raise InvalidInput("resume", f"{log_path} line {i} is not a campaign this command wrote: {exc}") from None
    return out


def bench_command(
    agents: Sequence[str], problems: Sequence, seeds: Sequence[int], *, budget: int = 50, n_start: int = 5,
    workers: int | None = None, quick: bool = False, batch_size: int = 1, out: str | Path = "sdl-bench",
    console=None, progress=None, pools: Sequence[PoolSpec] = (), suite: bool = False,
    at: Sequence[int] | None = None, resume: bool = False,
) -> tuple[list[dict], dict[str, Path]]:
    """Everything ``sdl bench`` does: run (with a rich progress bar when ``progress`` is a
    ``rich.progress.Progress``), print the table on ``console``, write JSON and PNG.

    ``pools``: CSV tables (:class:`PoolSpec`) run as extra problems; ``suite``: every bundled
    pool (``SUITE``). With more than one problem the aggregate (mean rank of each agent,
    wins/ties/losses against each other agent by a Wilcoxon signed-rank test over seeds,
    :mod:`sdl.bench_stats`) is printed and written to ``bench.json`` too."""
    if not agents:
        from sdl.agents import AGENTS

        raise InvalidInput("agents", f"name at least one agent; allowed: {sorted(AGENTS)}", list(agents))
    if Path(out).exists() and not Path(out).is_dir():
        raise InvalidInput("out", "a folder for bench.json and the plots; this is a file", str(out))
    problems = list(problems) + [p for p in SUITE if suite and p not in problems] + list(pools)
    if not problems:
        problems = ["p3ht"]
    check_problems(problems)
    if console is not None:
        for p in problems:
            if isinstance(p, PoolSpec):
                console.print(p.load().describe(), markup=False)
    keys = [problem_key(p) for p in problems]
    if len(set(keys)) != len(keys):
        raise InvalidInput("problem", "two problems have the same name; give a table a name", keys)
    seeds = list(seeds)
    budgets: int | dict[str, int] = budget
    if quick:
        q = quick_settings(problems)
        seeds = seeds[: q["seeds"]]
        budgets = q["budget"]
    check_pool_budgets(problems, budgets, n_start)
    total = len(agents) * len(problems) * len(seeds)

    # every finished campaign is appended to runs.jsonl at once, so a long run (the suite) that
    # stops keeps what it did; ``resume`` runs only the campaigns that file does not hold
    Path(out).mkdir(parents=True, exist_ok=True)
    log_path = Path(out) / "runs.jsonl"
    done = []
    if resume and log_path.exists():
        done = read_runs(log_path)
    elif log_path.exists():
        log_path.unlink()

    def run(on_result=None):
        def record(r: CurveResult) -> None:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(r.__dict__) + "\n")
            if on_result:
                on_result(r)

        return run_benchmark(agents, problems, seeds, budget=budgets, n_start=n_start, workers=workers,
                             on_result=record, batch_size=batch_size, done=done)

    if progress is not None:
        with progress:
            task = progress.add_task("campaigns", total=total, best="-")
            results = run(lambda r: progress.advance(task))
    else:
        results = run()
    lengths = {len(r.curve) for r in results}
    if at is None:
        at = sorted({n for n in (30, 50) if n <= max(lengths)} | {n for n in lengths if n < 30})
    at = [n for n in at if n <= max(lengths)]
    rows = summary_table(results, at=at)
    aggregate = None
    if len(keys) > 1 and len(agents) > 1:
        from sdl.bench_stats import aggregate as _aggregate, print_aggregate

        aggregate = _aggregate(results, at)
    if console is not None:
        from rich.table import Table

        for kind, title in ((True, "top 5 % of the pool found"), (False, "functions (best found / simple regret) and pools with several objectives (hypervolume fraction)")):
            part = [r for r in rows if (r["metric"] == TOP5) == kind]
            if not part:
                continue
            table = Table(title=f"{title} (mean over {len(seeds)} seeds, {n_start} random starts"
                                + (f", batches of {batch_size})" if batch_size > 1 else ")"))
            cols = table_columns(part, at)
            for c in cols:  # headers and values in full: they are the numbers people quote
                width = max([len(c)] + [len(format_cell(r.get(c))) for r in part])
                table.add_column(c, min_width=width, no_wrap=True)
            for r in part:
                table.add_row(*[format_cell(r.get(c)) for c in cols])
            console.print(table, width=max(console.width, 120), crop=False)  # never crop a number
        if aggregate is not None:
            print_aggregate(aggregate, console)
    paths = write_results(results, rows, out, aggregate)
    if console is not None:
        console.print(f"wrote {paths['json']} and {paths['plot']}")
    return rows, paths
