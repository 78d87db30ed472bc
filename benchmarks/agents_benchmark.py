"""Agents that find the best material in fewer experiments (issue 5): the measured numbers.

    python benchmarks/agents_benchmark.py [--parts pools,batch,mo,timing] [--seeds 10] [--first-seed 0]
                                          [--batch-seeds 16] [--batch-agent bo] [--mo-seeds 10]
                                          [--mo-agents bo,ax,random] [--workers 2] [--json out.json]

Parts (each prints its own table; ratios are measured within this one run):

pools   P3HT and AgNP pools (Liang et al. 2021): fraction of the top 5 % found after 30 and
        50 experiments for bo, gp-ei and random, the same 5 random starts per seed for all.
batch   Hartmann-6 (noise sd 0.05) with --batch-agent: sequential (one point per round)
        against batches of 4 (jointly chosen, pending points taken into account). Reports
        the experiments and rounds each needs to reach the median regret the sequential
        agent has after 30 experiments (median over seeds of per-seed first hits).
mo      Two objectives on the simulated materials model (seed 0): maximise the noise-free
        figure of merit, minimise the anneal temperature. Hypervolume (reference: fom 0,
        650 degC) after 40 experiments as a fraction of the true front's, the true front
        estimated by dense sampling (a temperature grid, compositions sampled and polished
        at each temperature) joined with every point any campaign measured.
timing  Seconds per ask(1) for a 6-parameter box with 100, 500 and 1000 observations
        (Hartmann-6 values), for "bo" (Ax) and "botorch" (one warm-up ask first).

Campaigns run in parallel processes (spawn, one torch thread each). Timings depend on
the machine and its load; the script prints the load average next to them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

REFERENCE = {"fom": 0.0, "temperature": 650.0}
EXTRA: dict = {}  # agent options for the two-objective part (experiments)


# ---------------------------------------------------------------------------- pools
def part_pools(seeds, workers) -> dict:
    from sdl.bench import run_benchmark, summary_table

    t0 = time.perf_counter()
    results = run_benchmark(["bo", "gp-ei", "random"], ["p3ht", "agnp"], seeds, budget=50, n_start=5,
                            workers=workers)
    rows = summary_table(results, at=[30, 50])
    per_seed = {}
    for r in results:
        per_seed.setdefault(f"{r.problem}/{r.agent}", {})[r.seed] = [round(r.curve[29], 3), round(r.curve[49], 3)]
    print(f"\n== pools: top 5 % found, mean over seeds {seeds[0]}..{seeds[-1]} ({time.perf_counter() - t0:.0f} s)")
    print(f"{'problem':8s} {'agent':7s} {'top5@30':>8s} {'top5@50':>8s} {'EF@30':>6s} {'EF@50':>6s} {'AF@.25':>7s}"
          f" {'s/campaign':>10s}")
    def cell(v, width):
        return f"{v:{width}.2f}" if v is not None else f"{'-':>{width}s}"

    for r in rows:
        print(f"{r['problem']:8s} {r['agent']:7s} {r['top5@30']:8.3f} {r['top5@50']:8.3f} {cell(r.get('EF@30'), 6)}"
              f" {cell(r.get('EF@50'), 6)} {cell(r.get('AF@0.25'), 7)} {r['s_per_campaign']:10.1f}")
    print("(AF@.25: experiments random needs / the agent needs to find a quarter of the top 5 %)")
    return {"summary": rows, "per_seed": per_seed}


# ---------------------------------------------------------------------------- batch
def part_batch(seeds, workers, budget: int = 48, ref_at: int = 30, agent: str = "bo") -> dict:
    from sdl.bench import run_benchmark

    t0 = time.perf_counter()
    seq = run_benchmark([agent], ["hartmann6"], seeds, budget=budget, n_start=8, workers=workers, batch_size=1)
    bat = run_benchmark([agent], ["hartmann6"], seeds, budget=budget, n_start=8, workers=workers, batch_size=4)
    seq_c = np.array([r.curve for r in sorted(seq, key=lambda r: r.seed)])
    bat_c = np.array([r.curve for r in sorted(bat, key=lambda r: r.seed)])
    level = float(np.median(seq_c[:, ref_at - 1]))

    def first(curves, rounds_of):
        exps, rounds = [], []
        for c, rr in zip(curves, rounds_of):
            hit = np.nonzero(np.asarray(c) <= level + 1e-12)[0]
            exps.append(int(hit[0]) + 1 if len(hit) else np.inf)
            rounds.append(rr[int(hit[0])] if len(hit) else np.inf)
        return exps, rounds

    s_exp, s_rounds = first(seq_c, [r.rounds for r in sorted(seq, key=lambda r: r.seed)])
    b_exp, b_rounds = first(bat_c, [r.rounds for r in sorted(bat, key=lambda r: r.seed)])
    out = {
        "level_regret": level,
        "sequential": {"median_experiments": float(np.median(s_exp)), "median_rounds": float(np.median(s_rounds)),
                       "reached": int(np.isfinite(s_exp).sum()), "regret_at": {n: float(np.median(seq_c[:, n - 1]))
                                                                             for n in (16, 24, 32, 40, budget)}},
        "batch4": {"median_experiments": float(np.median(b_exp)), "median_rounds": float(np.median(b_rounds)),
                   "reached": int(np.isfinite(b_exp).sum()), "regret_at": {n: float(np.median(bat_c[:, n - 1]))
                                                                         for n in (16, 24, 32, 40, budget)}},
        "seconds": {"sequential": float(np.mean([r.seconds for r in seq])),
                    "batch4": float(np.mean([r.seconds for r in bat]))},
        "per_seed": {"sequential": [[e, r] for e, r in zip(s_exp, s_rounds)],
                     "batch4": [[e, r] for e, r in zip(b_exp, b_rounds)]},
    }
    s, b = out["sequential"], out["batch4"]
    print(f"\n== batch: Hartmann-6 (noise 0.05), {agent}, 8 random starts, {len(seeds)} seeds ({time.perf_counter() - t0:.0f} s)")
    print(f"target regret = median sequential regret after {ref_at} experiments = {level:.3f}")
    print(f"{'':12s} {'experiments':>11s} {'rounds':>7s} {'reached':>8s}   median regret at 16/24/32/40/{budget}")
    for name, d in (("sequential", s), ("batch of 4", b)):
        print(f"{name:12s} {d['median_experiments']:11.1f} {d['median_rounds']:7.1f} {d['reached']:5d}/{len(seeds)}   "
              + " ".join(f"{v:.3f}" for v in d["regret_at"].values()))
    print(f"batch/sequential: experiments x{b['median_experiments'] / s['median_experiments']:.2f}, "
          f"rounds x{b['median_rounds'] / s['median_rounds']:.2f}")
    return out


# ---------------------------------------------------------------------------- two objectives
def _mo_campaign(agent: str, seed: int, budget: int, n_start: int) -> dict:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("ax").setLevel(logging.ERROR)
    from sdl.agents import make_agent
    from sdl.agents.common import AgentBase
    from sdl.models import Observation
    from sdl.sim_devices.materials import MaterialsModel
    from sdl.space import Objective

    model = MaterialsModel(seed=0)
    space = model.search_space()
    objs = [Objective(name="fom"), Objective(name="temperature", direction="minimize")]
    opts = ({"reference_point": REFERENCE, **(EXTRA if agent != "ax" else {})}
            if agent in ("bo", "ax", "botorch") else {})
    ag = make_agent(agent, space, objs, seed=seed, **opts)
    pts = AgentBase(space, objs, seed).random_points(n_start, np.random.default_rng([seed, 2021]))
    rows, hv = [], []
    t0 = time.perf_counter()

    def tell(points):
        X = np.array([[p[c] for c in model.precursors] for p in points])
        T = np.array([p["temperature"] for p in points])
        f = model.figure_of_merit_batch(X, T)
        obs = [Observation(params=p, values={"fom": float(fi), "temperature": float(p["temperature"])})
               for p, fi in zip(points, f)]
        ag.tell(obs)
        for p, fi in zip(points, f):
            rows.append([float(fi), float(p["temperature"])])
            hv.append(ag.hypervolume(REFERENCE))

    tell(pts)
    while len(rows) < budget:
        tell([s.params for s in ag.ask(1)])
    return {"agent": agent, "seed": seed, "rows": rows, "hv": hv, "seconds": time.perf_counter() - t0}


def true_front(model, n_temps: int = 41, n_comp: int = 300) -> np.ndarray:
    """(fom, temperature) points of a dense estimate of the front: at each temperature of a
    grid, the best composition (sampled, then polished with SLSQP on the simplex)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(12345)
    lo, hi = model.temperature_range
    out = []
    centres = np.asarray(model.landscape.centres)
    for T in np.linspace(lo, hi, n_temps):
        X = np.vstack([rng.dirichlet(np.ones(model.n), size=n_comp), centres])
        f = model.figure_of_merit_batch(X, np.full(len(X), T))
        best = []
        for i in np.argsort(-f)[:2]:
            def neg(z, T=T):
                x = np.clip(z, 0, None)
                x = x / x.sum()
                return -float(model.figure_of_merit_batch(x[None], np.array([T]))[0])

            res = minimize(neg, X[i], method="SLSQP", bounds=[(0, 1)] * model.n,
                           constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1}], options={"maxiter": 60})
            best.append(max(-res.fun, f[i]))
        out.append([max(best), T])
    return np.array(out)


def part_mo(seeds, workers, budget: int = 40, agents=("bo", "ax", "random")) -> dict:
    from sdl.agents.multiobjective import hypervolume_of
    from sdl.sim_devices.materials import MaterialsModel

    t0 = time.perf_counter()
    jobs = [(a, s) for s in seeds for a in agents]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = [ex.submit(_mo_campaign, a, s, budget, 5) for a, s in jobs]
        runs = [f.result() for f in futs]
    model = MaterialsModel(seed=0)
    front = true_front(model)
    every = np.vstack([front] + [np.array(r["rows"]) for r in runs])
    signs = [1.0, -1.0]
    ref = [REFERENCE["fom"], REFERENCE["temperature"]]
    hv_true = hypervolume_of(every, signs, ref)
    hv_grid = hypervolume_of(front, signs, ref)
    out = {"hv_true": hv_true, "hv_dense_grid_only": hv_grid, "agents": {}}
    print(f"\n== two objectives on sim-xrd (max fom, min temperature), {budget} experiments, "
          f"{len(seeds)} seeds ({time.perf_counter() - t0:.0f} s)")
    print(f"true-front hypervolume (reference fom 0, 650 degC): {hv_true:.2f} "
          f"(dense grid alone {hv_grid:.2f})")
    print(f"{'agent':8s} {'HV/true@20':>10s} {'HV/true@30':>10s} {'HV/true@40':>10s} {'min@40':>7s} {'s/campaign':>10s}")
    for a in agents:
        rs = [r for r in runs if r["agent"] == a]
        frac = {n: [r["hv"][n - 1] / hv_true for r in rs] for n in (20, 30, budget)}
        out["agents"][a] = {"mean": {n: float(np.mean(v)) for n, v in frac.items()},
                            "per_seed": {n: [round(x, 4) for x in v] for n, v in frac.items()},
                            "seconds": float(np.mean([r["seconds"] for r in rs]))}
        m = out["agents"][a]["mean"]
        print(f"{a:8s} {m[20]:10.3f} {m[30]:10.3f} {m[budget]:10.3f} {min(frac[budget]):7.3f} "
              f"{out['agents'][a]['seconds']:10.1f}")
    return out


# ---------------------------------------------------------------------------- timing
def part_timing(sizes=(100, 500, 1000), agents=("bo", "botorch"), repeats: int = 3) -> dict:
    """Median wall and CPU seconds of ``repeats`` asks. The CPU time of this one-threaded
    process is what the ask costs on an idle core; the wall time includes waiting for a
    core on a loaded machine."""
    import torch
    from botorch.test_functions import Hartmann

    from sdl.agents import make_agent
    from sdl.models import Observation
    from sdl.space import Objective, RangeParameter, SearchSpace

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    h = Hartmann(dim=6)
    space = SearchSpace(parameters=[RangeParameter(name=f"x{i}", lower=0, upper=1) for i in range(6)])
    out: dict = {}
    print(f"\n== ask(1) seconds, 6 parameters, median of {repeats} (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    print(f"{'agent':8s} " + " ".join(f"{n:>7d}" for n in sizes) + "   cpu: " + " ".join(f"{n:>6d}" for n in sizes))
    for name in agents:
        row = {}
        for n in sizes:
            rng = np.random.default_rng(n)
            X = rng.random((n, 6))
            y = (-h(torch.as_tensor(X))).numpy() + 0.05 * rng.standard_normal(n)
            agent = make_agent(name, space, [Objective(name="y")], seed=0)
            agent.tell([Observation(params={f"x{i}": float(v) for i, v in enumerate(x)}, values={"y": float(v)})
                        for x, v in zip(X, y)])
            agent.ask(1)  # warm-up: imports and caches
            walls, cpus = [], []
            for _ in range(repeats):
                agent.pending.clear()
                t0, c0 = time.perf_counter(), time.process_time()
                agent.ask(1)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            row[n] = {"wall": float(np.median(walls)), "cpu": float(np.median(cpus))}
        out[name] = row
        print(f"{name:8s} " + " ".join(f"{row[n]['wall']:7.2f}" for n in sizes)
              + "   cpu: " + " ".join(f"{row[n]['cpu']:6.2f}" for n in sizes))
    out["loadavg"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="pools,batch,mo,timing")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--mo-seeds", type=int, default=10)
    ap.add_argument("--batch-seeds", type=int, default=16)
    ap.add_argument("--batch-agent", default="bo", help="agent of the batch part")
    ap.add_argument("--mo-agents", default="bo,ax,random", help="agents of the two-objective part")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="", help="also write the numbers to this file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    results = {}
    t0 = time.perf_counter()
    if "pools" in parts:
        results["pools"] = part_pools(seeds, args.workers)
    if "batch" in parts:
        results["batch"] = part_batch(list(range(args.first_seed, args.first_seed + args.batch_seeds)), args.workers,
                                      agent=args.batch_agent)
    if "mo" in parts:
        results["mo"] = part_mo(list(range(args.first_seed, args.first_seed + args.mo_seeds)), args.workers,
                                agents=tuple(a.strip() for a in args.mo_agents.split(",") if a.strip()))
    if "timing" in parts:
        results["timing"] = part_timing()
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
