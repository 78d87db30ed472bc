"""Run the same campaign with several agents and seeds; collect what each found.

Used by ``benchmarks/demo_benchmark.py`` (10 seeds) and by the test that checks BO
beats random on the materials model (fewer seeds).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

from sdl.campaign import CampaignRunner, create_campaign
from sdl.store import Store, sqlite_url


def best_found(agent: str, seed: int, *, budget: int = 30, instrument: str = "sim-xrd",
               folder: Path | None = None) -> dict:
    """One campaign; returns the best measured value and the noise-free value at that point."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        store = Store(sqlite_url(Path(tmp) / "bench.sqlite"))
        try:
            cid = create_campaign(store, {"instrument": instrument, "agent": agent, "budget": budget, "seed": seed})
            runner = CampaignRunner(store, cid)
            runner.run()
            objective = runner.objectives[0]
            obs = [o for o in store.observations(cid) if o.ok]
            best = max(obs, key=lambda o: objective.sign * o.values[objective.name])
            return {"agent": agent, "seed": seed, "measured": best.values[objective.name],
                    "truth": best.extra.get("truth"), "n": len(obs)}
        finally:
            store.close()


def _best_found_single_thread(agent: str, seed: int, budget: int, instrument: str) -> dict:
    import torch

    torch.set_num_threads(1)  # one campaign per core; threads would only fight
    return best_found(agent, seed, budget=budget, instrument=instrument)


def compare(agents: Sequence[str], seeds: Sequence[int], *, budget: int = 30, instrument: str = "sim-xrd",
            on_result: Callable[[dict], None] | None = None, workers: int | None = None) -> dict[str, list[dict]]:
    """Every (agent, seed) campaign, in parallel processes (one per core by default)."""
    jobs = [(agent, seed) for seed in seeds for agent in agents]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results: dict[str, list[dict]] = {a: [] for a in agents}
    if workers <= 1:
        done = (best_found(a, s, budget=budget, instrument=instrument) for a, s in jobs)
        for r in done:
            results[r["agent"]].append(r)
            if on_result:
                on_result(r)
        return results
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        futures = [ex.submit(_best_found_single_thread, a, s, budget, instrument) for a, s in jobs]
        for f in as_completed(futures):
            r = f.result()
            results[r["agent"]].append(r)
            if on_result:
                on_result(r)
    for rows in results.values():
        rows.sort(key=lambda r: r["seed"])
    return results


def median_truth(rows: list[dict]) -> float:
    return statistics.median(r["truth"] for r in rows)
