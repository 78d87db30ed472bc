"""Gaussian-process agents on BoTorch: the pool agent behind "bo", and the plain GP-EI baseline.

Ax cannot express "only these listed samples can be made" (a discrete pool of
multi-dimensional points), so pools are handled here: the GP is fitted on the unit-cube
encoding of the measured points and the acquisition function is evaluated on every open
candidate. The same code runs continuous spaces by optimising the acquisition with the
composition constraints as linear inequalities.

``BoTorchAgent`` (used by "bo" for pools, and available as "botorch") differs from the
plain loop in what a demanding user needs on real data:

- heavy-tailed objectives (values over decades, e.g. conductivity) are modelled in
  log space, chosen automatically when every value is positive and they span > 20x;
- repeats and noise are handled by the GP's learned noise (repeats are just rows);
- batches: each next point of a batch is chosen with the earlier ones (and every
  pending point) as ``X_pending`` of a noisy log-EI, so a batch is jointly good.

``PlainGPAgent`` ("gp-ei") is the hand-written loop users write today: a GP on the raw
values and expected improvement, the baseline of the benchmarks.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

from sdl.agents.common import AgentBase
from sdl.models import Provenance

torch.set_default_dtype(torch.float64)

#: Points drawn at random before the model takes over (when nothing was measured yet).
DEFAULT_N_INIT = 5


def heavy_tailed(values: np.ndarray, ratio: float = 20.0) -> bool:
    """True when every value is positive and they span more than ``ratio`` x."""
    v = np.asarray(values, dtype=float)
    return len(v) >= 2 and bool(np.all(v > 0)) and float(v.max() / v.min()) > ratio


def fit_gp(X: np.ndarray, y: np.ndarray, seed: int, kernel: str = "rbf") -> SingleTaskGP:
    """A GP with standardised outcome and fitted hyperparameters.

    ``kernel``: "rbf" is BoTorch's default (ARD RBF with dimension-scaled length-scale
    prior); "matern" an ARD Matern-5/2 with the same prior.
    """
    torch.manual_seed(seed)
    tx = torch.as_tensor(X, dtype=torch.float64)
    ty = torch.as_tensor(y, dtype=torch.float64).reshape(-1, 1)
    covar = None
    if kernel == "matern":
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior

        covar = get_covar_module_with_dim_scaled_prior(ard_num_dims=tx.shape[-1], use_rbf_kernel=False)
    model = SingleTaskGP(tx, ty, covar_module=covar, outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    return model


def loo_r2(model: SingleTaskGP) -> float | None:
    """Leave-one-out R^2 of the fitted GP (closed form, hyperparameters fixed): its fit quality."""
    try:
        X = model.train_inputs[0]
        y = model.train_targets
        with torch.no_grad():
            K = model.covar_module(X).to_dense() + model.likelihood.noise * torch.eye(len(X))
            Kinv = torch.linalg.inv(K)
            alpha = Kinv @ (y - model.mean_module(X))
            resid = alpha / torch.diagonal(Kinv)
        ss = float(((y - y.mean()) ** 2).sum())
        return None if ss == 0 else float(1.0 - float((resid**2).sum()) / ss)
    except Exception:  # noqa: BLE001 - fit quality is informative, never fatal
        return None


class BoTorchAgent(AgentBase):
    """GP + noisy log-EI over pools or continuous spaces (single objective)."""

    name = "botorch"
    option_names = ("n_init", "log_transform", "acquisition", "beta", "kernel", "num_restarts", "raw_samples")
    log_default = "auto"
    plain = False

    def _suggest(self, n: int):
        n_init = int(self.options.get("n_init", DEFAULT_N_INIT))
        obs = self.good_observations()
        if len(obs) < max(n_init, 2):
            return self._initial(n, n_init)
        if len(self.objectives) != 1:
            from sdl.errors import InvalidInput

            raise InvalidInput("objectives", f"agent {self.name!r} handles one objective; use 'bo' for several")
        X = self.encoder.encode_many([o.params for o in obs])
        raw = np.array([float(o.values[self.objectives[0].name]) for o in obs])
        log = self.options.get("log_transform", self.log_default)
        use_log = heavy_tailed(raw) if log == "auto" else bool(log)
        y = (np.log(raw) if use_log else raw) * self.objectives[0].sign
        seed = int(np.random.default_rng([self.seed, self.n_seen]).integers(2**31))
        model = fit_gp(X, y, seed, kernel=str(self.options.get("kernel", self._default("kernel"))))
        self._best_f = float(y.max())
        pending = self.encoder.encode_many(self.pending) if self.pending else None
        picks = self._pool_picks(model, X, pending, n) if self.is_pool else self._continuous_picks(model, X, pending, n, seed)
        fit = loo_r2(model)
        out = []
        for key, acq in picks:
            x = self.pool_matrix()[int(key)] if self.is_pool else np.asarray(key)
            with torch.no_grad():
                post = model.posterior(torch.as_tensor(x).reshape(1, -1))
                mu = float(post.mean.squeeze()) * self.objectives[0].sign
                sd = float(post.variance.clamp_min(0).sqrt().squeeze())
            name = self.objectives[0].name
            mean, spread = (math.exp(mu), math.exp(mu) * sd) if use_log else (mu, sd)
            prov = Provenance(
                agent=self.name,
                model="SingleTaskGP" + (" on log(y)" if use_log else ""),
                acquisition={"ei": "LogEI", "nei": "qLogNoisyEI", "ucb": "UCB"}[
                    str(self.options.get("acquisition", self._default("acquisition")))],
                acquisition_value=acq,
                predicted_mean={name: mean},
                predicted_sd={name: spread},
                fit_loo_r2=fit,
                n_observations=len(obs),
                reason=f"highest acquisition value of the GP fitted to {len(obs)} observations",
            )
            out.append((self._as_params(key), prov))
        return out

    # ------------------------------------------------------------------ initial design
    def _initial(self, n: int, n_init: int):
        rng = self.rng()
        why = Provenance(agent=self.name, reason=f"initial random design ({n_init} points before the model)")
        if self.is_pool:
            picks = rng.choice(self.open_candidates(), size=n, replace=False)
            return [(dict(self.space.pool[int(i)]), why) for i in picks]
        return [(self.encoder.decode(x), why) for x in self.encoder.random(n, rng)]

    def _as_params(self, x) -> dict:
        if self.is_pool:
            return dict(self.space.pool[int(x)])
        return self.encoder.decode(np.asarray(x))

    # ------------------------------------------------------------------ acquisition
    def _default(self, option: str):
        """Defaults chosen by measurement (README, "Agents"): on pools an ARD Matern-5/2 GP
        with UCB (beta 1) found the most of P3HT's top 5 %; continuous spaces use noisy log-EI."""
        if self.plain:
            return {"acquisition": "ei", "kernel": "rbf"}[option]
        if self.is_pool:
            return {"acquisition": "ucb", "kernel": "matern"}[option]
        return {"acquisition": "nei", "kernel": "rbf"}[option]

    def _acquisition(self, model, X, pending):
        kind = self.options.get("acquisition", self._default("acquisition"))
        if kind == "ucb":
            from botorch.acquisition import UpperConfidenceBound, qUpperConfidenceBound

            beta = float(self.options.get("beta", 1.0))
            if pending is None:
                return UpperConfidenceBound(model, beta=beta)
            return qUpperConfidenceBound(model, beta=beta, X_pending=torch.as_tensor(pending))
        if kind == "ei":
            best = self._best_f  # in the model's output units (the outcome transform is undone)
            return LogExpectedImprovement(model, best_f=best) if pending is None else qLogNoisyExpectedImprovement(
                model, torch.as_tensor(X), X_pending=torch.as_tensor(pending), prune_baseline=True, cache_root=False
            )
        if pending is None:
            # One point, nothing pending: analytic log-EI over the best posterior mean at the
            # measured points (robust to noise, ~5x faster than the Monte-Carlo noisy EI).
            with torch.no_grad():
                best = float(model.posterior(torch.as_tensor(X)).mean.max())
            return LogExpectedImprovement(model, best_f=best)
        return qLogNoisyExpectedImprovement(
            model, torch.as_tensor(X), X_pending=torch.as_tensor(pending), prune_baseline=True, cache_root=False,
        )

    def _pool_picks(self, model, X, pending, n):
        cands = list(self.open_candidates())
        C = torch.as_tensor(self.pool_matrix()[cands])
        picks = []
        for _ in range(n):
            acq = self._acquisition(model, X, pending)
            with torch.no_grad():
                vals = torch.cat([acq(C[i : i + 512].unsqueeze(1)) for i in range(0, len(C), 512)])
            j = int(torch.argmax(vals))
            row = cands[j]
            picks.append((row, float(vals[j])))
            x = self.pool_matrix()[row : row + 1]
            pending = x if pending is None else np.vstack([pending, x])
            cands.pop(j)
            C = torch.cat([C[:j], C[j + 1 :]])
        return picks

    def _continuous_picks(self, model, X, pending, n, seed):
        d = self.encoder.dim
        bounds = torch.stack([torch.zeros(d), torch.ones(d)])
        cons = [
            (torch.as_tensor(idx), torch.as_tensor(coef, dtype=torch.float64), rhs)
            for idx, coef, rhs in self.encoder.composition_constraints()
        ]
        picks = []
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        restarts = int(self.options.get("num_restarts", 4))
        raw = int(self.options.get("raw_samples", 256))
        for _ in range(n):
            acq = self._acquisition(model, X, pending)
            # Starting points: a uniform design of the feasible set (compositions on their
            # simplex) scored by the acquisition. BoTorch's own polytope sampler would do
            # the same in ~1.6 s per call; this takes milliseconds.
            starts = torch.as_tensor(self.encoder.random(raw, rng)).unsqueeze(1)
            with torch.no_grad():
                scores = acq(starts)
            best = torch.topk(scores, k=min(restarts, raw)).indices
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cand, val = optimize_acqf(
                    acq, bounds=bounds, q=1, num_restarts=len(best), batch_initial_conditions=starts[best],
                    inequality_constraints=cons or None,
                )
            x = cand.detach().numpy().reshape(-1)
            picks.append((x, float(val)))
            pending = x[None] if pending is None else np.vstack([pending, x[None]])
        return picks


class PlainGPAgent(BoTorchAgent):
    """The hand-written loop users write today: GP on raw values + expected improvement."""

    name = "gp-ei"
    log_default = False
    plain = True
