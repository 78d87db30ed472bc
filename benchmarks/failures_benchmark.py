"""Failures are data: experiments wasted in a failure region, and the result, with and without
a feasibility model (``failure_model``), over seeds.

Problem ``sim-xrd-fail``: the materials model (seed 0, noise-free figure of merit) where no
sample forms with more than 55 % of precursor B or above 520 degC (41 % of the space;
:data:`sdl.sim_devices.failures.DEMO`). A failed experiment is told to the agent as
``Observation(ok=False)`` and counts as an experiment spent. The same 5 random starts per
seed for every variant.

    python benchmarks/failures_benchmark.py --seeds 10 --budget 30

Prints, per variant: failed experiments after the random starts (mean, and the total),
best figure of merit / optimum at the budget (mean, worst seed), experiments to 95 % of the
optimum (median; campaigns that never reach it count as budget + 1).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

VARIANTS = {
    "bo+failure_model": ("bo", {"failure_model": "auto"}),
    "botorch-failures-ignored": ("botorch", {"failure_model": "ignore"}),
    "bo-ax-failed-trials": ("bo", {}),
}


def one(variant: str, seed: int, budget: int, n_start: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from sdl.agents.benchmarking import function_problem, run_function_campaign

    agent, opts = VARIANTS[variant]
    t0 = time.perf_counter()
    run = run_function_campaign(agent, function_problem("sim-xrd-fail"), seed, budget=budget, n_start=n_start, **opts)
    return {"variant": variant, "seed": seed, "failed_after_start": int(sum(run.failed[n_start:])),
            "failed_start": int(sum(run.failed[:n_start])), "scores": run.scores,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--n-start", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    jobs = [(v, s, a.budget, a.n_start) for s in range(a.first_seed, a.first_seed + a.seeds) for v in variants]
    if a.workers == 1:
        rows = []
        for j in jobs:
            rows.append(one(*j))
            r = rows[-1]
            print(f"  {r['variant']:28s} seed {r['seed']}: failed {r['failed_after_start']}, "
                  f"best/opt {r['scores'][-1]:.3f}, {r['seconds']:.0f} s", flush=True)
    else:
        with ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            rows = list(ex.map(one, *zip(*jobs)))
    print(f"sim-xrd-fail, {a.seeds} seeds from {a.first_seed}, {a.budget} experiments ({a.n_start} random starts)")
    print(f"{'variant':28s} {'failed/campaign':>15s} {'total':>6s} {'best/opt':>9s} {'worst':>6s} "
          f"{'n to 0.95 (median)':>18s} {'s/campaign':>10s}")
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        failed = [r["failed_after_start"] for r in rs]
        final = [r["scores"][-1] for r in rs]
        reach = [next((i + 1 for i, x in enumerate(r["scores"]) if x >= 0.95), a.budget + 1) for r in rs]
        print(f"{v:28s} {np.mean(failed):15.2f} {sum(failed):6d} {np.mean(final):9.3f} {min(final):6.3f} "
              f"{np.median(reach):18.1f} {np.mean([r['seconds'] for r in rs]):10.1f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh)


if __name__ == "__main__":
    main()
