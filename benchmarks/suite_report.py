"""Join ``bench.json`` files of several ``sdl bench`` runs (e.g. one per seed) into one report:
per-problem means at each n and the aggregate of :mod:`sdl.bench_stats` (mean rank, paired
Wilcoxon wins/ties/losses).

    python benchmarks/suite_report.py /tmp/suite/s0/bench.json /tmp/suite/s1/bench.json --at 30,50
    python benchmarks/suite_report.py ... --split   # the held-out halves (every other problem)
    python benchmarks/suite_report.py out/runs.jsonl other/bench.json   # a run still going, joined

A campaign (agent, problem, seed) found in several files is taken from the first. The
aggregate ends with ``bo`` against the baselines (random, gp-ei, ax-default): wins/ties/
losses, best mean rank, and whether it loses to any baseline on any problem.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from rich.console import Console

from sdl.bench import CurveResult
from sdl.bench_stats import aggregate, print_aggregate


def _runs(path: str) -> list[dict]:
    """The campaigns of a ``bench.json`` or of a ``runs.jsonl`` (one per line, written as they end)."""
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in open(path) if line.strip()]
    return json.load(open(path))["runs"]


def load(paths: list[str]) -> list[CurveResult]:
    out, seen = [], set()
    for p in paths:
        for r in _runs(p):
            key = (r["agent"], r["problem"], r["seed"])
            if key not in seen:
                seen.add(key)
                out.append(CurveResult(**r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--at", default="30,50")
    ap.add_argument("--split", action="store_true", help="also report the two halves of the problems (sorted "
                                                           "by name, alternating): choose on one, check the other")
    a = ap.parse_args()
    at = [int(v) for v in a.at.split(",")]
    results = load(a.paths)
    console = Console(width=160)
    problems = sorted({r.problem for r in results})
    agents = sorted({r.agent for r in results})
    console.print(f"{len(results)} campaigns; seeds per (problem, agent): "
                  f"{sorted({sum(1 for r in results if r.problem == p and r.agent == g) for p in problems for g in agents})}")
    head = "problem".ljust(16) + "".join(f"{g}@{n}".rjust(14) for n in at for g in agents)
    console.print(head)
    for p in problems:
        cells = []
        for n in at:
            for g in agents:
                v = [r.curve[n - 1] for r in results if r.problem == p and r.agent == g and len(r.curve) >= n]
                cells.append(f"{np.mean(v):.3f}".rjust(14) if v else "-".rjust(14))
        console.print(p.ljust(16) + "".join(cells))
    print_aggregate(aggregate(results, at), console)
    if a.split:
        halves = (problems[0::2], problems[1::2])
        for k, half in enumerate(halves):
            console.print(f"half {k + 1}: {', '.join(half)}")
            print_aggregate(aggregate([r for r in results if r.problem in half], at), console)


if __name__ == "__main__":
    main()
