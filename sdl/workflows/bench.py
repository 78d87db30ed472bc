"""Cascade benchmark: beamline experiments needed to reach a target figure of merit with
and without a cheap UV-vis screen in front of the beamline, over several seeds, each
campaign run through the real workflow engine (SQLite store, station workers in
threads, instant simulation).

    python -m sdl.workflows.bench --seeds 10 --budget 40 --target 0.8

``--target`` is a fraction of the hidden model's best figure of merit. "Reached" means
a *measured* (beamline) value at or above the target; a campaign that does not reach
it within its budget counts as its beamline experiments + 1 (censored; reported).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from sdl.store import Store, sqlite_url
from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign
from sdl.workflows.stations import cascade_workflow


def beamline_runs_to_target(store: Store, cid: str, target: float) -> tuple[int, bool, int]:
    """(beamline experiments until a measured fom >= target, reached?, all beamline experiments)."""
    n = 0
    for o in store.observations(cid):
        if "fom" in o.values:
            n += 1
            if o.values["fom"] >= target:
                return n, True, sum("fom" in x.values for x in store.observations(cid))
    return n + 1, False, n


def one(seed: int, cascade: bool, *, budget: int, target: float, agent: str, folder: Path) -> dict:
    store = Store(sqlite_url(folder / f"{'c' if cascade else 'b'}{seed}.sqlite"))
    wf = cascade_workflow(transit={"seconds": 0})
    spec: dict = {"name": f"{'cascade' if cascade else 'baseline'} seed {seed}", "workflow": wf, "budget": budget,
                  "parallel": 1, "agent": agent, "seed": seed,
                  "stopping": {"target": target}}
    if cascade:
        spec["cascade"] = {"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 4, "kappa": 1.0}
    else:  # every sample goes to the beamline: the gate always opens
        spec["cascade"] = {"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 10**3 - 1}
    cid = create_workflow_campaign(store, spec)
    t0 = time.time()
    WorkflowCampaignRunner(store, cid, lease_s=30).run("threads", timeout=1800)
    n, reached, total = beamline_runs_to_target(store, cid, target)
    obs = store.observations(cid)
    store.close()
    return {"seed": seed, "cascade": cascade, "beamline_to_target": n, "reached": reached,
            "beamline_total": total, "samples": len(obs), "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=40, help="samples per campaign")
    ap.add_argument("--target", type=float, default=0.8, help="fraction of the best achievable figure of merit")
    ap.add_argument("--agent", default="bo")
    args = ap.parse_args(argv)
    from sdl.instruments import make_instrument

    best = float(make_instrument("sim-beamline").optimum["fom"])
    target = args.target * best
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for cascade in (False, True):
                r = one(seed, cascade, budget=args.budget, target=target, agent=args.agent, folder=Path(tmp))
                rows.append(r)
                print(json.dumps(r), flush=True)
    base = [r["beamline_to_target"] for r in rows if not r["cascade"]]
    casc = [r["beamline_to_target"] for r in rows if r["cascade"]]
    summary = {
        "target_fom": target, "best_fom": best, "seeds": args.seeds, "budget": args.budget, "agent": args.agent,
        "without_cascade": {"median": statistics.median(base), "mean": statistics.fmean(base),
                            "reached": sum(r["reached"] for r in rows if not r["cascade"])},
        "with_cascade": {"median": statistics.median(casc), "mean": statistics.fmean(casc),
                         "reached": sum(r["reached"] for r in rows if r["cascade"])},
        "beamline_saved_ratio": round(statistics.fmean(casc) / statistics.fmean(base), 3),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
