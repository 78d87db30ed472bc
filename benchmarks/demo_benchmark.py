"""BO against random on the simulated materials model: median best FoM after N experiments.

    python benchmarks/demo_benchmark.py [--seeds 10] [--budget 30] [--agents bo,random]

Prints, per agent, the median over seeds of the noise-free figure of merit at the best
measured point, as a fraction of the hidden optimum, and the ratio BO / random
measured in this same run.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sdl.compare import compare, median_truth
from sdl.instruments import make_instrument


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--agents", default="bo,random")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("ax").setLevel(logging.ERROR)
    agents = args.agents.split(",")
    optimum = make_instrument("sim-xrd").optimum["fom"]
    t0 = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("campaigns", total=len(agents) * args.seeds)
        results = compare(agents, range(args.seeds), budget=args.budget,
                          on_result=lambda r: progress.advance(task))
    table = Table(title=f"sim-xrd, {args.budget} experiments, {args.seeds} seeds (hidden optimum {optimum:.4f})")
    for col in ("agent", "median truth at best", "% of optimum", "min", "max", "median measured best"):
        table.add_column(col)
    for a, rows in results.items():
        truths = [r["truth"] for r in rows]
        med = median_truth(rows)
        table.add_row(a, f"{med:.4f}", f"{100 * med / optimum:.1f}", f"{min(truths):.4f}", f"{max(truths):.4f}",
                      f"{sorted(r['measured'] for r in rows)[len(rows) // 2]:.4f}")
    console = Console()
    console.print(table)
    if "bo" in results and "random" in results:
        ratio = median_truth(results["bo"]) / median_truth(results["random"])
        console.print(f"BO / random (median truth at best): {ratio:.3f}")
    console.print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
