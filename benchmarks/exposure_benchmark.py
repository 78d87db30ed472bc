"""Cost-aware measurement: beamtime to a target with the exposure chosen per point, against
fixed exposures.

The materials model (seed 0) measured the way the simulated detector does it: Poisson
counts of the expected pattern x exposure plus dark counts, reduced to the figure of merit
(``sdl.xrd.target_phase_fom_batch``); its noise falls as 1/sqrt(exposure) (sd 0.011 at 1 s
at the optimum, 0.11 at 0.01 s). Every variant runs the same agent (``bo`` with the
``exposure`` option: a GP with each value's noise from its exposure, log-EI); the fixed
variants offer it one exposure, the adaptive one the five choices. Beamtime = the sum of
exposures + ``--overhead`` s per point (0.1 s by default: a fast sample change). A campaign reaches the target when the point it
would report (its best measured value) has a true figure of merit >= ``--target`` x the
optimum; the 5 random starts (at 0.1 s for the adaptive variant) count. A second column
judges the model's recommendation instead (the measured point of highest posterior mean,
``sdl.agents.exposure.recommended_index``), which a lucky noisy value does not fool.

    python benchmarks/exposure_benchmark.py --seeds 10 --budget 40
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

CHOICES = [0.01, 0.03, 0.1, 0.3, 1.0]
NOISE_SD_AT_1S = 0.011  # the figure of merit's counting noise at 1 s at the optimum


def measure(model, params, x, temperature, exposure, rng):
    from sdl.sim_devices.lab import DARK_RATE
    from sdl.xrd import target_phase_fom_batch

    rate = model.expected_spectrum(np.asarray(x), float(temperature))
    counts = rng.poisson(rate * exposure) + rng.poisson(DARK_RATE * exposure, size=rate.shape)
    return float(target_phase_fom_batch(model.two_theta, counts[None].astype(float), params)[0])


def campaign(choices: list[float], seed: int, budget: int, target: float, overhead: float, n_start: int = 5) -> dict:
    import torch

    torch.set_num_threads(1)
    from sdl.agents import make_agent
    from sdl.models import Observation
    from sdl.sim_devices.materials import MaterialsModel
    from sdl.space import Objective

    model = MaterialsModel(seed=0)
    params = {**model.reduction_params(), "two_theta": [float(v) for v in model.two_theta]}
    optimum = model.optimum()["fom"]
    space = model.search_space()
    agent = make_agent("bo", space, [Objective(name="fom")], seed=seed,
                       exposure={"choices": choices, "overhead_s": overhead, "noise_sd_at_1s": NOISE_SD_AT_1S})
    rng = np.random.default_rng([seed, 11])
    names = list(model.precursors)
    beamtime, best_measured, reached_at, exposures = 0.0, -np.inf, None, []
    X, Y, truths, times = [], [], [], []
    t0 = time.perf_counter()
    for i in range(budget):
        s = agent.ask(1)[0]
        t = float(getattr(s.provenance, "exposure"))
        x = [s.params[n] for n in names]
        y = measure(model, params, x, s.params["temperature"], t, rng)
        truth = float(model.figure_of_merit(x, s.params["temperature"]))
        agent.tell([Observation(params=s.params, values={"fom": y}, extra={"exposure": t})])
        beamtime += t + overhead
        exposures.append(t)
        if y > best_measured:
            best_measured, reported_truth = y, truth
        if reached_at is None and reported_truth >= target * optimum:
            reached_at = (i + 1, beamtime)
        X.append(agent.encoder.encode_many([s.params])[0])
        Y.append(y), truths.append(truth), times.append(beamtime)
    return {"choices": choices, "seed": seed, "reached": reached_at, "beamtime": beamtime, "exposures": exposures,
            "final_truth": reported_truth / optimum, "seconds": time.perf_counter() - t0,
            "reached_recommended": first_recommended_at_target(X, Y, exposures, truths, times, target * optimum, seed)}


def first_recommended_at_target(X, Y, exposures, truths, times, level: float, seed: int):
    """(experiments, beamtime) when the model's recommendation first had a true value >= level."""
    from sdl.agents.exposure import recommended_index

    for i in range(len(Y)):
        yvar = NOISE_SD_AT_1S**2 / np.array(exposures[: i + 1])
        j = recommended_index(np.array(X[: i + 1]), np.array(Y[: i + 1]), yvar, seed)
        if truths[j] >= level:
            return (i + 1, times[i])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--overhead", type=float, default=0.1, help="beamtime per point besides the exposure (s)")
    ap.add_argument("--fixed", default=",".join(map(str, CHOICES)), help="fixed exposures to compare")
    ap.add_argument("--choices", default=",".join(map(str, CHOICES)),
                    help="the exposures the adaptive variant chooses from (s)")
    ap.add_argument("--workers", type=int, default=1, help="campaigns run in parallel (processes)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    choices = [float(t) for t in a.choices.split(",") if t]
    variants = [("adaptive", choices)] + [(f"fixed {float(t):g} s", [float(t)]) for t in a.fixed.split(",") if t]
    jobs = [(label, choices, s) for s in range(a.first_seed, a.first_seed + a.seeds) for label, choices in variants]
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        futures = [pool.submit(campaign, choices, s, a.budget, a.target, a.overhead) for _, choices, s in jobs]
        for (label, _, s), fut in zip(jobs, futures):
            r = fut.result()
            r["variant"] = label
            rows.append(r)
            print(f"  {label:14s} seed {s}: reached {r['reached']}, beamtime {r['beamtime']:.2f} s, "
                  f"{r['seconds']:.0f} s", flush=True)
    print(f"exposure: {a.seeds} seeds from {a.first_seed}, up to {a.budget} experiments, target {a.target:g} x "
          f"optimum (reported point's truth), overhead {a.overhead:g} s per point")
    print(f"{'variant':14s} {'reached':>8s} {'beamtime to target (median, s)':>31s} {'experiments (median)':>21s} "
          f"{'mean exposure':>14s} {'s/campaign':>10s} {'by recommendation: reached, median s':>37s}")
    for label, _ in variants:
        rs = [r for r in rows if r["variant"] == label]
        bt = [r["reached"][1] if r["reached"] else np.inf for r in rs]
        ex = [r["reached"][0] if r["reached"] else np.inf for r in rs]
        rec = beamtimes(rows, label, "reached_recommended")
        print(f"{label:14s} {sum(r['reached'] is not None for r in rs):5d}/{len(rs):<2d} {np.median(bt):31.3g} "
              f"{np.median(ex):21.3g} {np.mean([np.mean(r['exposures']) for r in rs]):14.3g} "
              f"{np.mean([r['seconds'] for r in rs]):10.1f} {np.isfinite(rec).sum():29d}/{len(rec):<2d} "
              f"{np.median(rec):5.3g}")
    print_against_fixed(rows, [label for label, _ in variants])
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh)


def beamtimes(rows: list[dict], label: str, key: str = "reached") -> np.ndarray:
    """Beamtime to the target per seed (in seed order); inf where the campaign never reached it
    (``key`` "reached": judged by the best measured value; "reached_recommended": by the model's pick)."""
    rs = sorted((r for r in rows if r["variant"] == label), key=lambda r: r["seed"])
    return np.array([r[key][1] if r[key] else np.inf for r in rs])


def print_against_fixed(rows: list[dict], labels: list[str]) -> None:
    """Each adaptive variant against each fixed exposure, paired by seed: the ratio of median
    beamtimes, and the seeds where it needed less / more beamtime (a miss counts as infinite),
    with a Wilcoxon signed-rank p (misses ranked last) on the seeds where they differ."""
    from scipy.stats import wilcoxon

    fixed = [lab for lab in labels if lab.startswith("fixed")]
    # the best fixed exposure: most campaigns reaching the target, then the least median beamtime
    best = min(fixed, key=lambda lab: (-int(np.isfinite(beamtimes(rows, lab)).sum()),
                                       float(np.median(beamtimes(rows, lab))))) if fixed else None
    for lab in labels:
        if lab in fixed:
            continue
        mine = beamtimes(rows, lab)
        for other in fixed:
            theirs = beamtimes(rows, other)
            fin = np.isfinite(np.concatenate([mine, theirs]))
            cap = 10 * float(np.max(np.concatenate([mine, theirs])[fin])) if fin.any() else 1.0
            d = np.minimum(mine, cap) - np.minimum(theirs, cap)
            p = float(wilcoxon(d[d != 0]).pvalue) if np.count_nonzero(d) >= 1 else 1.0
            ratio = float(np.median(mine) / np.median(theirs)) if np.isfinite(np.median(theirs)) else 0.0
            print(f"{lab} against {other}{' (the best fixed)' if other == best else ''}: median beamtime x{ratio:.2f}; "
                  f"less beamtime on {int((d < 0).sum())} seeds, more on {int((d > 0).sum())} (Wilcoxon p {p:.2g})")


if __name__ == "__main__":
    main()
