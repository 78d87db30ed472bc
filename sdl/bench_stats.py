"""Across problems: mean rank of each agent and paired wins/ties/losses over seeds.

For each problem and each n (experiments), every agent's score at n is taken per seed
(the seeds are paired: every agent starts from the same random points for a seed).

- **rank**: agents ranked by their mean score over seeds on each problem (1 = best, ties
  share the mean rank); the mean over problems is the agent's mean rank.
- **wins / ties / losses** of agent A against agent B on a problem: a Wilcoxon
  signed-rank test of the per-seed differences (two-sided, ``alpha``); a win when it is
  significant and A's mean is better, a loss when significant and worse, else a tie
  (also when every difference is zero).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Significance level of the paired test.
ALPHA = 0.05

#: The baselines the default agent must not lose to anywhere (issue 18): random search, a
#: hand-written GP-EI loop and Ax's own default generation strategy (``ax-default``).
BASELINES = ("random", "gp-ei", "ax-default")


def _better_sign(metric: str) -> float:
    return -1.0 if metric == "simple regret" else 1.0


def score_table(results, n: int) -> dict[str, dict[str, dict[int, float]]]:
    """problem -> agent -> seed -> score at ``n`` experiments (signed: larger is better)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in results:
        if len(r.curve) >= n:
            out.setdefault(r.problem, {}).setdefault(r.agent, {})[r.seed] = _better_sign(r.metric) * r.curve[n - 1]
    return out


def paired_outcome(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> tuple[str, float | None]:
    """('win' | 'tie' | 'loss', p-value) of ``a`` against ``b`` (paired, larger is better)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0 or np.allclose(d, 0.0):
        return "tie", None
    p = float(wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue)
    if p < alpha:
        return ("win" if d.mean() > 0 else "loss"), p
    return "tie", p


def aggregate(results, at: Sequence[int], alpha: float = ALPHA) -> dict:
    """``{str(n): {"mean_rank": {agent: r}, "ranks": {problem: {agent: r}}, "vs": {agent: {other:
    {"win": k, "tie": k, "loss": k, "losses_on": [problems]}}}, "problems": k}}``."""
    from scipy.stats import rankdata

    out: dict = {}
    for n in at:
        table = score_table(results, n)
        agents = sorted({a for per in table.values() for a in per})
        ranks: dict[str, dict[str, float]] = {}
        vs = {a: {b: {"win": 0, "tie": 0, "loss": 0, "losses_on": []} for b in agents if b != a} for a in agents}
        for problem, per in sorted(table.items()):
            names = [a for a in agents if a in per]
            if len(names) < 2:
                continue
            means = [np.mean(list(per[a].values())) for a in names]
            r = rankdata([-m for m in means], method="average")
            ranks[problem] = {a: float(v) for a, v in zip(names, r)}
            for a in names:
                for b in names:
                    if a == b:
                        continue
                    seeds = sorted(set(per[a]) & set(per[b]))
                    res, _ = paired_outcome([per[a][s] for s in seeds], [per[b][s] for s in seeds], alpha)
                    vs[a][b][res] += 1
                    if res == "loss":
                        vs[a][b]["losses_on"].append(problem)
        mean_rank = {a: float(np.mean([ranks[p][a] for p in ranks if a in ranks[p]])) for a in agents
                     if any(a in ranks[p] for p in ranks)}
        out[str(n)] = {"mean_rank": mean_rank, "ranks": ranks, "vs": vs, "problems": len(ranks)}
        if "bo" in vs:
            out[str(n)]["bo_vs_baselines"] = against_baselines(out[str(n)])
    return out


def against_baselines(part: dict, agent: str = "bo", baselines: Sequence[str] = BASELINES) -> dict:
    """The acceptance check of one ``aggregate(...)[n]``: ``agent``'s wins/ties/losses against
    each baseline that was run, whether it loses (significantly) to any baseline on any
    problem, and its mean rank against those baselines over the problems where all of them
    ran (``common``; a rank over different sets of problems would compare nothing)."""
    vs = {b: part["vs"][agent][b] for b in baselines if b in part["vs"].get(agent, {})}
    group = [agent, *vs]
    common = sorted(p for p, r in part["ranks"].items() if all(a in r for a in group))
    from scipy.stats import rankdata

    # re-rank within the group (other agents run on those problems do not move the ranks)
    mean = {a: 0.0 for a in group}
    for p in common:
        r = rankdata([part["ranks"][p][a] for a in group], method="average")
        for a, v in zip(group, r):
            mean[a] += float(v) / len(common)
    return {"vs": vs, "common": common, "mean_rank": mean if common else {},
            "best_mean_rank": bool(common) and mean[agent] == min(mean.values()),
            "loses_to_none": all(v["loss"] == 0 for v in vs.values()),
            "missing": [b for b in baselines if b not in vs]}


def print_aggregate(agg: dict, console) -> None:
    """Rich tables: mean rank per agent and wins/ties/losses against each other agent."""
    from rich.table import Table

    for n, part in agg.items():
        agents = sorted(part["mean_rank"], key=part["mean_rank"].get)
        t = Table(title=f"across {part['problems']} problems at {n} experiments: mean rank (1 = best) and "
                        f"wins/ties/losses against each agent (Wilcoxon signed-rank over seeds, p < {ALPHA})")
        t.add_column("agent", no_wrap=True)
        t.add_column("mean rank", no_wrap=True)
        for b in agents:
            t.add_column(f"vs {b}", no_wrap=True)
        for a in agents:
            cells = []
            for b in agents:
                if a == b:
                    cells.append("-")
                else:
                    v = part["vs"][a][b]
                    cells.append(f"{v['win']}/{v['tie']}/{v['loss']}")
            t.add_row(a, f"{part['mean_rank'][a]:.2f}", *cells)
        console.print(t, width=max(console.width, 120), crop=False)
        for a in agents:
            for b in agents:
                if a != b and part["vs"][a][b]["losses_on"]:
                    console.print(f"  {a} loses to {b} at {n} on: {', '.join(part['vs'][a][b]['losses_on'])}")
        check = part.get("bo_vs_baselines")
        if check and check["vs"]:
            cells = ", ".join(f"{b} {v['win']}/{v['tie']}/{v['loss']}" for b, v in check["vs"].items())
            ranks = ", ".join(f"{a} {v:.2f}" for a, v in check["mean_rank"].items())
            console.print(f"  bo against the baselines at {n} (W/T/L): {cells}; mean rank over the "
                          f"{len(check['common'])} problems all of them ran: {ranks} (best: "
                          f"{'yes' if check['best_mean_rank'] else 'no'}); loses to none: "
                          f"{'yes' if check['loses_to_none'] else 'no'}"
                          + (f"; not run: {', '.join(check['missing'])}" if check["missing"] else ""))
