"""Cascade benchmark: beamline experiments needed to reach a target figure of merit with
and without a cheap UV-vis screen in front of the beamline, over several seeds, each
campaign run through the real workflow engine (SQLite store, station workers in
threads, instant simulation).

    python -m sdl.workflows.bench --seeds 10 --budget 40 --target 0.8

``--target`` is a fraction of the hidden model's best figure of merit. "Reached" means
a *measured* (beamline) value at or above the target, and each campaign stops there
(not on a UV-vis prediction that says so: a prediction is not a result). A campaign
that does not reach it within its budget has no count, only a lower bound (its beamline
experiments + 1): it is reported as not reached, and the comparison that counts is on
the seeds where both arms reached the target. Both arms use the same agent, seed and
workflow; without the cascade the gate always opens, so every sample goes to the
beamline. Each row carries the gate's counts (``sent``, ``held``, ``explored``: sent only
because ``max_held`` samples were held in a row). ``--json FILE`` keeps the rows;
``--rows FILE`` summarises kept rows again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from sdl.models import Observation
from sdl.store import Store, sqlite_url
from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign
from sdl.workflows.stations import cascade_workflow

OBJECTIVE = "fom"  # what the beamline measures (the cascade's expensive objective)


def beamline_runs_to_target(observations: list[Observation], target: float) -> tuple[int, bool, int]:
    """(beamline experiments until a measured fom >= target, reached?, all beamline experiments),
    in the order the observations were recorded; not reached counts all + 1 (censored)."""
    total = sum(OBJECTIVE in o.values for o in observations)
    n = 0
    for o in observations:
        if OBJECTIVE in o.values:
            n += 1
            if o.values[OBJECTIVE] >= target:
                return n, True, total
    return total + 1, False, total


class _UntilMeasured(WorkflowCampaignRunner):
    """Stops at the budget or once a *measured* fom reaches the target (the campaign's own
    stopping rule looks at its first objective, ``fom_est``, which may be a prediction)."""

    target: float = float("inf")

    def _stop_reason(self, obs: list[Observation]) -> str:
        reason = super()._stop_reason(obs)
        if reason:
            return reason
        n, reached, _ = beamline_runs_to_target(obs, self.target)
        return f"measured {OBJECTIVE} reached {self.target:.4g} at beamline experiment {n}" if reached else ""


def campaign_spec(seed: int, cascade: bool, *, budget: int, agent: str) -> dict:
    spec: dict = {"name": f"{'cascade' if cascade else 'baseline'} seed {seed}",
                  "workflow": cascade_workflow(transit={"seconds": 0}), "budget": budget,
                  "parallel": 1, "agent": agent, "seed": seed}
    if cascade:
        spec["cascade"] = {"task": "xrd", "cheap": "uvvis_score", "objective": OBJECTIVE, "warmup": 4, "kappa": 1.0,
                           "max_held": 4}
    else:  # every sample goes to the beamline: the gate always opens (the model never has enough pairs)
        spec["cascade"] = {"task": "xrd", "cheap": "uvvis_score", "objective": OBJECTIVE, "warmup": 1000}
    return spec


def one(seed: int, cascade: bool, *, budget: int, target: float, agent: str, folder: Path) -> dict:
    store = Store(sqlite_url(folder / f"{'c' if cascade else 'b'}{seed}.sqlite"))
    cid = create_workflow_campaign(store, campaign_spec(seed, cascade, budget=budget, agent=agent))
    t0 = time.time()
    runner = _UntilMeasured(store, cid, lease_s=30)
    runner.target = target
    runner.run("threads", timeout=1800)
    obs = store.observations(cid)
    n, reached, total = beamline_runs_to_target(obs, target)
    row = store.campaign(cid)
    store.close()
    c = runner.cascade
    return {"seed": seed, "cascade": cascade, "beamline_to_target": n, "reached": reached,
            "beamline_total": total, "samples": len(obs), "failed": sum(not o.ok for o in obs),
            "gate": {"sent": c.sent, "held": c.held, "explored": c.explored} if c is not None else None,
            "status": row.status, "stopped": row.message, "seconds": round(time.time() - t0, 1)}


def summarise(rows: list[dict], *, target: float, best: float, budget: int, agent: str) -> dict:
    """Per seed and overall. A campaign that did not reach the target has no count, only a lower
    bound (its beamline experiments + 1), so the fair comparison is on the seeds where both arms
    reached it (``both_reached``); the medians over all seeds treat a bound as a count and are
    reported beside it, never alone."""
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["seed"], r["cascade"]): r for r in rows}
    per_seed = []
    for s in seeds:
        b, c = by[(s, False)], by[(s, True)]
        both = b["reached"] and c["reached"]
        per_seed.append({"seed": s, "without": b["beamline_to_target"], "without_reached": b["reached"],
                         "with": c["beamline_to_target"], "with_reached": c["reached"], "samples_with": c["samples"],
                         "ratio": round(c["beamline_to_target"] / b["beamline_to_target"], 3) if both else None})
    base = [p["without"] for p in per_seed]
    casc = [p["with"] for p in per_seed]
    fair = [p for p in per_seed if p["ratio"] is not None]
    return {
        "target_fom": target, "best_fom": best, "seeds": len(seeds), "budget": budget, "agent": agent,
        "per_seed": per_seed,
        "without_cascade": {"median": statistics.median(base), "mean": statistics.fmean(base),
                            "reached": sum(p["without_reached"] for p in per_seed)},
        "with_cascade": {"median": statistics.median(casc), "mean": statistics.fmean(casc),
                         "reached": sum(p["with_reached"] for p in per_seed)},
        "both_reached": {
            "seeds": len(fair),
            "without_median": statistics.median(p["without"] for p in fair) if fair else None,
            "with_median": statistics.median(p["with"] for p in fair) if fair else None,
            "median_ratio": statistics.median(p["ratio"] for p in fair) if fair else None,
            "ratio_of_totals": round(sum(p["with"] for p in fair) / sum(p["without"] for p in fair), 3) if fair else None,
        },
    }


def markdown(summary: dict) -> str:
    """The summary as a Markdown table (docs/workflows.md carries one)."""
    def count(n: int, reached: bool) -> str:
        return str(n) if reached else f"≥ {n} (**not reached**)"

    lines = ["| seed | beamline experiments without cascade | with cascade | samples made (cascade) | with / without |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for p in summary["per_seed"]:
        ratio = f"{p['ratio']:.2f}" if p["ratio"] is not None else "–"
        lines.append(f"| {p['seed']} | {count(p['without'], p['without_reached'])} | {count(p['with'], p['with_reached'])} "
                     f"| {p['samples_with']} | {ratio} |")
    w, c, f, n = summary["without_cascade"], summary["with_cascade"], summary["both_reached"], summary["seeds"]
    lines.append(f"| reached | {w['reached']}/{n} | {c['reached']}/{n} | | |")
    if f["seeds"]:
        lines.append(f"| **median, the {f['seeds']} seeds both reached** | **{f['without_median']:g}** "
                     f"| **{f['with_median']:g}** | | **{f['median_ratio']:.2f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=40, help="samples per campaign")
    ap.add_argument("--target", type=float, default=0.8, help="fraction of the best achievable figure of merit")
    ap.add_argument("--agent", default="bo")
    ap.add_argument("--json", type=Path, help="also write the summary and every row here")
    ap.add_argument("--rows", type=Path, help="summarise the rows of an earlier --json instead of running")
    args = ap.parse_args(argv)
    if args.rows:
        old = json.loads(args.rows.read_text())
        summary = summarise(old["rows"], target=old["target_fom"], best=old["best_fom"], budget=old["budget"],
                            agent=old["agent"])
        summary["rows"] = old["rows"]
        print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "per_seed")}, indent=2))
        print(markdown(summary))
        return summary
    from sdl.instruments import make_instrument

    best = float(make_instrument("sim-beamline").optimum[OBJECTIVE])
    target = args.target * best
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for cascade in (False, True):
                r = one(seed, cascade, budget=args.budget, target=target, agent=args.agent, folder=Path(tmp))
                rows.append(r)
                print(json.dumps(r), flush=True)
    summary = summarise(rows, target=target, best=best, budget=args.budget, agent=args.agent)
    summary["rows"] = rows
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "per_seed")}, indent=2))
    print(markdown(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
