"""Benchmark: how many experiments bo and random need to reach 95 % of the best
achievable intensity, over seeds; and the Pareto front (intensity vs size) of a
two-objective bo campaign. Every experiment is a real run: RunEngine, the in-process
doubles, documents in a store, the ``beam_spot`` reduction.

    sdl-alignment-bench --seeds 10            # prints a table, writes alignment-bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from sdl_alignment import model

NAME = "mirror-alignment"


def experiments_to_reach(agent: str, seed: int, budget: int, target: float, store_url: str) -> tuple[int | None, int]:
    """(experiments until the noise-free intensity at a measured point reaches ``target``, or
    None within ``budget``; experiments run). The campaign stops once the measured value
    is there (stopping rule), so nothing is spent past it."""
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.store import Store

    store = Store(store_url)
    spec = {"instrument": NAME, "agent": agent, "budget": budget, "seed": seed,
            "objectives": [{"name": "intensity", "direction": "maximize"}],
            "stopping": {"target": target}}
    cid = create_campaign(store, spec)
    CampaignRunner(store, cid).run()
    obs = store.observations(cid)
    store.close()
    for i, o in enumerate(obs, 1):
        if o.ok and o.extra.get("truth", 0.0) >= target:
            return i, len(obs)
    return None, len(obs)


def pareto(seed: int, budget: int, store_url: str) -> list[dict]:
    """The Pareto front (intensity up, size down) a two-objective bo campaign measured."""
    from sdl.agents.multiobjective import pareto_front
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.store import Store

    store = Store(store_url)
    cid = create_campaign(store, {"instrument": NAME, "agent": "bo", "budget": budget, "seed": seed})
    runner = CampaignRunner(store, cid)
    runner.run()
    front = pareto_front(store.observations(cid), runner.objectives)
    store.close()
    return sorted(({"pitch": o.params["pitch"], "bend": o.params["bend"], **o.values} for o in front),
                  key=lambda r: -r["intensity"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--bo-budget", type=int, default=40)
    ap.add_argument("--random-budget", type=int, default=200)
    ap.add_argument("--pareto-budget", type=int, default=25, help="0: skip the two-objective campaign")
    ap.add_argument("--fraction", type=float, default=0.95)
    ap.add_argument("--out", type=Path, default=Path("alignment-bench.json"))
    args = ap.parse_args(argv)
    import logging
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    best = model.best_intensity()
    target = args.fraction * best
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite"
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t0 = time.monotonic()
            bo, _ = experiments_to_reach("bo", seed, args.bo_budget, target, url)
            rnd, _ = experiments_to_reach("random", seed, args.random_budget, target, url)
            rows.append({"seed": seed, "bo": bo, "random": rnd, "seconds": round(time.monotonic() - t0, 1)})
            print(f"seed {seed}: bo {bo if bo else f'>{args.bo_budget}'}, random "
                  f"{rnd if rnd else f'>{args.random_budget}'} experiments to {args.fraction:.0%} of the best "
                  f"intensity ({time.monotonic() - t0:.0f} s)", flush=True)
        front = pareto(args.first_seed, args.pareto_budget, url) if args.pareto_budget else []

    def med(key: str, cap: int) -> float:
        return statistics.median(r[key] if r[key] is not None else cap + 1 for r in rows)

    m_bo, m_rnd = med("bo", args.bo_budget), med("random", args.random_budget)
    ok = m_bo <= 0.5 * m_rnd
    summary = {"best_intensity": best, "target": target, "seeds": rows, "median_bo": m_bo, "median_random": m_rnd,
               "ratio": m_bo / m_rnd, "bo_within_half_of_random": ok, "pareto_front": front,
               "note": "a seed that did not reach the target counts as budget + 1"}
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"\nmedian experiments to {args.fraction:.0%} of the best achievable intensity ({best:.4g} counts): "
          f"bo {m_bo:g}, random {m_rnd:g} (ratio {m_bo / m_rnd:.2f}; at most half: {'yes' if ok else 'NO'})")
    if front:
        print(f"Pareto front of a two-objective bo campaign ({args.pareto_budget} experiments):")
        for r in front:
            print(f"  pitch {r['pitch']:.3f} mrad  bend {r['bend']:+.3f}  intensity {r['intensity']:9.4g}  "
                  f"size {r['size']:.3g} um")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
