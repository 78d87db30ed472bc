"""Choose the pool agent's settings on one half of the suite, report the choice on the other.

Issue 18 asks that the default ``bo`` be chosen by rules that name no dataset and that the
choice transfer to data it was not chosen on. The candidates below are the default and
variants that each change one setting (none names a dataset). Steps:

1. every candidate runs on every suite pool (``bo`` with its options, labelled by the
   candidate's name; campaigns already in ``--runs`` or in the ``--baselines`` files are
   kept, so the command resumes and reuses the suite's own ``bo`` campaigns);
2. the halves: the pools sorted by name, alternating (as ``suite_report.py --split``);
3. on each half, the candidate with the best mean rank among the candidates is chosen;
4. on the other half, the chosen candidate (as ``bo``) is reported against the baselines
   (random, gp-ei, ax-default, from ``--baselines``): mean rank and wins/ties/losses with
   the paired Wilcoxon test of :mod:`sdl.bench_stats`.

    python benchmarks/heldout_defaults.py --runs heldout/runs.jsonl \\
        --baselines suite/runs.jsonl ax/runs.jsonl --seeds 10 --budget 30 --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace

from rich.console import Console
from rich.markup import escape

from sdl.bench import CurveResult, run_one
from sdl.bench_stats import BASELINES, against_baselines, aggregate, print_aggregate
from sdl.pools import SUITE

#: name -> options of ``bo`` on pools. "bo" is the default: UCB on an ARD Matern-5/2 GP with
#: beta 1 on pools of 200 rows or more and 3 on smaller ones, quantile inputs when the pool is
#: crowded, one-hot categories. "bo[beta=3]" is the default before the pool-size rule.
CANDIDATES: dict[str, dict] = {
    "bo": {},
    "bo[beta=3]": {"beta": 3.0},
    "bo[beta=1]": {"beta": 1.0},
    "bo[ei]": {"acquisition": "ei"},
    "bo[rbf]": {"kernel": "rbf"},
}


def _load(paths: list[str]) -> list[CurveResult]:
    out = []
    for p in paths:
        if os.path.exists(p):
            out += [CurveResult(**json.loads(line)) for line in open(p) if line.strip()]
    return out


def _run_one(name: str, problem: str, seed: int, budget: int, n_start: int) -> CurveResult:
    r = run_one("bo", problem, seed, budget, n_start, CANDIDATES[name])
    return replace(r, agent=name)


def run_candidates(names, problems, seeds, budget, n_start, workers, runs_path, have) -> list[CurveResult]:
    done = {(r.agent, r.problem, r.seed) for r in have if len(r.curve) >= budget}
    jobs = [(n, p, s) for p in problems for s in seeds for n in names if (n, p, s) not in done]
    out = []
    if jobs:
        print(f"{len(jobs)} campaigns to run ({len(done)} kept)", flush=True)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex, \
                open(runs_path, "a") as fh:
            futs = {ex.submit(_run_one, n, p, s, budget, n_start): (n, p, s) for n, p, s in jobs}
            for k, f in enumerate(as_completed(futs), 1):
                r = f.result()
                fh.write(json.dumps(asdict(r)) + "\n")
                fh.flush()
                out.append(r)
                print(f"  [{k}/{len(jobs)}] {r.agent} {r.problem} seed {r.seed}: {r.curve[-1]:.3f} "
                      f"({r.seconds:.0f} s)", flush=True)
    return out


def choose(results: list[CurveResult], names: list[str], half: list[str], at: int) -> tuple[str, dict]:
    """The candidate with the best mean rank among ``names`` on ``half`` (the default on a tie).
    Only candidates run on every pool of the half take part (a rank over fewer pools would
    compare nothing)."""
    ran = {n for n in names if all(any(r.agent == n and r.problem == p for r in results) for p in half)}
    part = [r for r in results if r.agent in ran and r.problem in half]
    ranks = aggregate(part, [at])[str(at)]["mean_rank"]
    best = min(ran, key=lambda n: (ranks.get(n, float("inf")), n != "bo", n))
    return best, ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="runs.jsonl the candidates' campaigns are appended to")
    ap.add_argument("--baselines", nargs="*", default=[], help="runs.jsonl / bench.json of the baselines (and bo)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--n-start", type=int, default=5)
    ap.add_argument("--at", default="", help="experiments to choose and report at (default: the budget)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--problems", default=",".join(SUITE), help="comma-separated pools (default: the suite)")
    a = ap.parse_args()
    names = [n for n in a.candidates.split(",") if n]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--candidates: unknown {unknown}; allowed: {', '.join(CANDIDATES)}")
    at = [int(v) for v in a.at.split(",")] if a.at else [a.budget]
    problems = sorted(p for p in a.problems.split(",") if p)
    base = []
    for p in a.baselines:
        base += ([CurveResult(**r) for r in json.load(open(p))["runs"]] if p.endswith(".json") else _load([p]))
    have = _load([a.runs]) + base
    results = have + run_candidates(names, problems, range(a.seeds), a.budget, a.n_start, a.workers, a.runs, have)
    seen, uniq = set(), []
    for r in results:  # a campaign in several files: the first
        key = (r.agent, r.problem, r.seed)
        if key not in seen and r.seed < a.seeds and len(r.curve) >= max(at):
            seen.add(key)
            uniq.append(r)
    console = Console(width=160)
    halves = (problems[0::2], problems[1::2])
    for n in at:
        for k, (pick_on, report_on) in enumerate((halves, halves[::-1])):
            chosen, ranks = choose(uniq, names, list(pick_on), n)
            console.print(f"\n[bold]at {n}: chosen on half {k + 1}[/] ({', '.join(pick_on)}): mean rank among "
                          f"the candidates " + ", ".join(f"{escape(c)} {ranks.get(c, float('nan')):.2f}" for c in names)
                          + f" -> [bold]{escape(chosen)}[/]")
            held = [replace(r, agent="bo") for r in uniq if r.agent == chosen and r.problem in report_on]
            held += [r for r in uniq if r.agent in BASELINES and r.problem in report_on]
            agg = aggregate(held, [n])
            console.print(f"reported on the other half ({', '.join(report_on)}), {escape(chosen)} as bo:")
            print_aggregate(agg, console)
            verdict = against_baselines(agg[str(n)])
            console.print(json.dumps({"at": n, "chosen_on": k + 1, "chosen": chosen, **verdict}, default=str), markup=False)


if __name__ == "__main__":
    main()
