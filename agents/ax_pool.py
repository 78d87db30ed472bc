"""``ax-default``: Ax's own default generation strategy, as a baseline that also runs on pools.

Ax cannot express "only these listed samples can be made", so pool benchmarks in the
literature run a continuous optimiser over the pool's input box and measure, for each
candidate it proposes, the nearest sample of the pool that has not been measured yet
(e.g. Liang et al. 2021, the Olympus and Summit dataset emulators' discrete mode). This
agent does exactly that, with nothing of sdl's own tuning:

- the space Ax sees is the pool's box: each numeric column a range from its smallest to
  its largest value (integer columns as integer ranges), each categorical column an Ax
  choice parameter over its labels;
- the generation strategy is the one ``ax.Client`` picks when none is set
  (``configure_generation_strategy()``: a centre point and Sobol until five trials exist,
  then its modular BoTorch step with its own model and acquisition; several objectives
  become an Ax multi-objective optimisation), seeded. The strategy is rebuilt at every ask
  and moved to the node its own transition criteria pick for the trials attached (what a
  long-lived client would be in); before five trials each ask's Sobol point comes from a
  sequence seeded afresh, so it is a uniform random point;
- each candidate goes to the open (not measured, not pending, not chosen earlier in the
  batch) pool row nearest to it: fewest categorical mismatches first, then the squared
  distance in unit-cube coordinates of the numeric columns (each divided by its range);
- every measured row is attached to Ax as a completed trial at the row's own inputs with
  the row's measured value (what Ax proposed is not what was measured, so Ax always
  models what was measured).

Restart-safe like :class:`sdl.agents.ax_agent.AxAgent`: each ask builds a fresh client from
the observations and pending points, seeded by ``(seed, number of points seen)``.

On a continuous space (no pool) the candidates are returned as Ax proposes them.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from sdl.agents.ax_agent import AxAgent
from sdl.agents.encoding import SpaceEncoder
from sdl.models import Provenance


def nearest_open_rows(encoder: SpaceEncoder, pool_x: np.ndarray, candidates: Sequence[dict],
                      open_rows: Sequence[int]) -> list[tuple[int, int, float]]:
    """For each candidate in turn, the open pool row nearest to it, never one row twice.

    Returns ``(row, categorical mismatches, numeric distance)`` per candidate. Categorical
    labels must match when an open row matches them (a mismatch outweighs any numeric
    distance); the numeric distance is Euclidean in unit-cube coordinates (each range
    column divided by its range, log-scale ones in decades). Raises ``ValueError`` when
    there are fewer open rows than candidates."""
    open_ = list(open_rows)
    if len(candidates) > len(open_):
        raise ValueError(f"{len(candidates)} candidates for {len(open_)} open pool rows")
    ranges = [s for s in encoder.slots if s.kind == "range"]
    choices = [s for s in encoder.slots if s.kind == "choice"]
    r_idx = np.array([s.start for s in ranges], dtype=int)
    P = pool_x[open_]
    P_num = P[:, r_idx] if len(r_idx) else np.zeros((len(open_), 0))
    P_cat = (np.stack([P[:, s.start: s.start + s.width].argmax(axis=1) for s in choices], axis=1)
             if choices else np.zeros((len(open_), 0), int))
    taken = np.zeros(len(open_), bool)
    out = []
    for cand in candidates:
        x = encoder.encode(cand)
        d2 = ((P_num - x[r_idx]) ** 2).sum(axis=1) if len(r_idx) else np.zeros(len(open_))
        if choices:
            c = np.array([int(x[s.start: s.start + s.width].argmax()) for s in choices])
            mismatch = (P_cat != c).sum(axis=1)
        else:
            mismatch = np.zeros(len(open_), int)
        # lexicographic: mismatches first (d2 <= number of range columns < the weight)
        score = mismatch * (len(r_idx) + 1.0) + d2
        score[taken] = np.inf
        j = int(np.argmin(score))
        taken[j] = True
        out.append((open_[j], int(mismatch[j]), float(np.sqrt(d2[j]))))
    return out


class AxDefaultAgent(AxAgent):
    """Ax's default generation strategy, untuned; on a pool each candidate is measured at the
    nearest open row (module docstring)."""

    name = "ax-default"
    option_names = ("outcome_constraints", "reference_point")
    handles_pool = True

    def __init__(self, space, objectives, seed: int = 0, **options):
        super().__init__(space, objectives, seed, **options)
        # AxAgent._client then leaves the generation strategy to Ax (see _suggest)
        self.options = {**self.options, "ax_default": True}

    def _suggest(self, n: int):
        seed = int(np.random.default_rng([self.seed, self.n_seen]).integers(2**31))
        open_ = self.open_candidates() if self.is_pool else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = self._client(seed)
            # what Client picks when no strategy is set, with its Sobol step seeded
            client.configure_generation_strategy(initialization_random_seed=seed)
            self._attach(client)
            # the node Ax's own transition criteria pick for the experiment as it stands (a
            # fresh strategy would otherwise spend one Sobol step before looking at the trials)
            gs = client._generation_strategy
            gs.experiment = client._experiment
            gs._maybe_transition_to_next_node(raise_data_required_error=False)
            trials = client.get_next_trials(max_trials=min(n, len(open_)) if self.is_pool else n)
        order = sorted(trials)
        candidates = [self._from_ax(dict(trials[i])) for i in order]
        nodes = [client._experiment.trials[i].generator_runs[0]._generation_node_name or "Ax" for i in order]
        good = len(self.good_observations())
        out: list[tuple[dict, Provenance]] = []
        if self.is_pool:
            picks = nearest_open_rows(self.encoder, self.pool_matrix(), candidates, open_)
            for cand, node, (row, mism, dist) in zip(candidates, nodes, picks):
                out.append((dict(self.space.pool[row]), Provenance(
                    agent=self.name, model=f"Ax default generation strategy ({node})",
                    n_observations=good, ax_candidate=cand, pool_row=row, categorical_mismatches=mism,
                    distance=dist,
                    reason=f"the open pool row nearest to Ax's candidate ({node} step, {good} observations): "
                           f"{mism} categorical mismatch(es), unit-cube distance {dist:.3g}")))
        else:
            for cand, node in zip(candidates, nodes):
                out.append((cand, Provenance(agent=self.name, model=f"Ax default generation strategy ({node})",
                                             n_observations=good, reason=f"Ax's {node} step")))
        if len(out) < n:  # Ax can hold back (its initialisation waits for data): seeded random fill
            rng = self.rng()
            why = Provenance(agent=self.name, reason="random fill: Ax proposed fewer points than asked")
            if self.is_pool:
                used = {p["pool_row"] for _, p in ((q, pr.model_extra or {}) for q, pr in out)}
                rest = [i for i in open_ if i not in used]
                out += [(dict(self.space.pool[int(i)]), why)
                        for i in rng.choice(rest, size=min(n - len(out), len(rest)), replace=False)]
            else:
                out += [(p, why) for p in self.random_points(n - len(out), rng)]
        return out
