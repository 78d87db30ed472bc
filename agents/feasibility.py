"""Failures are data: where experiments fail, modelled and avoided (Atlas-style unknown constraints).

A failed experiment (``Observation.ok`` False, or an objective missing or not finite: the
robot could not make it, the phase did not form, the reduction found no signal) has no
objective value, but it says *where* things fail. The agent fits a feasibility model on
every observation, labelled +1 (measured) or -1 (failed): a GP regression on the labels
with a probit link, ``p(x) = Phi(mu(x) / sqrt(sigma(x)^2 + s^2))`` (``s = 0.5``, the label
noise), differentiable so a continuous acquisition optimiser can use it, and cheap (one
more exact GP). Far from every observation ``mu`` tends to the mean label, so an
unexplored region is neither trusted nor shunned.

How the acquisition uses it (Atlas: Hickman et al., "Atlas: a brain for self-driving
laboratories", 2023, feasibility-weighted and feasibility-constrained acquisitions):

- log acquisitions (log-EI, noisy log-EI, log-NEHVI): ``log a(x) + log p(x)``, the
  expected improvement times the probability that the experiment works;
- UCB (pools): feasibility-constrained, candidates with ``p(x) < 0.5`` rank below every
  other (among themselves by ``p``).

An observation whose ``extra`` says ``"transient": true`` (a robot jam, a beam dump: not the
point's fault) is not counted as a failure of its point.
"""

from __future__ import annotations

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction

#: Label noise of the probit link.
LABEL_NOISE = 0.5
#: Below this probability of success a candidate is ruled out by a non-log acquisition.
THRESHOLD = 0.5


def is_failure(obs, objective_names) -> bool:
    if obs.extra.get("transient"):
        return False
    if not obs.ok:
        return True
    return not all(k in obs.values and obs.values[k] is not None and np.isfinite(obs.values[k])
                   for k in objective_names)


class FeasibilityModel:
    """``p(success | x)`` from +1/-1 labels (see the module docstring)."""

    def __init__(self, X: np.ndarray, ok: np.ndarray, seed: int):
        from sdl.agents.gp import fit_gp

        y = np.where(np.asarray(ok, bool), 1.0, -1.0)
        self.n_failed = int((y < 0).sum())
        self.model = fit_gp(np.asarray(X, dtype=float), y, seed, kernel="matern")

    def prob(self, X: torch.Tensor) -> torch.Tensor:
        """Probability of success at each point of ``X`` (..., d) -> (...)."""
        post = self.model.posterior(X)
        mu = post.mean.squeeze(-1)
        var = post.variance.squeeze(-1).clamp_min(0)
        return torch.distributions.Normal(0.0, 1.0).cdf(mu / torch.sqrt(var + LABEL_NOISE**2))

    def prob_np(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.prob(torch.as_tensor(np.asarray(X, dtype=float))).numpy()


class FeasibilityWeighted(AcquisitionFunction):
    """An acquisition times the probability of success (in log space for log acquisitions),
    or ranked below every likely success when the acquisition is not a log one."""

    def __init__(self, acq: AcquisitionFunction, feasibility: FeasibilityModel, log: bool):
        super().__init__(model=acq.model)
        self.acq, self.feasibility, self.log = acq, feasibility, log
        self.X_pending = getattr(acq, "X_pending", None)

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # X: batch x q x d
        value = self.acq(X)
        p = self.feasibility.prob(X).clamp_min(1e-12)  # batch x q
        if self.log:
            return value + torch.log(p).sum(-1)
        p_all = p.prod(-1)
        # below the threshold: under every feasible candidate, ordered by p among themselves
        return torch.where(p_all >= THRESHOLD, value, -1e12 + 1e9 * p_all)
