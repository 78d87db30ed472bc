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
  pending point) as ``X_pending`` of a noisy log-EI, so a batch is jointly good;
- several objectives (qLogNEHVI): an objective that is a parameter is known exactly, the
  GP prior mean is the worst measured, and a figure of merit that piles up at its floor
  is modelled on log(distance above the floor) (:class:`FloorLog`).

``PlainGPAgent`` ("gp-ei") is the hand-written loop users write today: a GP on the raw
values and expected improvement, the baseline of the benchmarks.
"""

from __future__ import annotations

import math
import warnings

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
from sdl.errors import InvalidInput
from sdl.models import Provenance
from sdl.space import RangeParameter

torch.set_default_dtype(torch.float64)

#: Points drawn at random before the model takes over (when nothing was measured yet).
DEFAULT_N_INIT = 5


def heavy_tailed(values: np.ndarray, ratio: float = 20.0) -> bool:
    """True when every value is positive and they span more than ``ratio`` x."""
    v = np.asarray(values, dtype=float)
    return len(v) >= 2 and bool(np.all(v > 0)) and float(v.max() / v.min()) > ratio


#: An objective "piles up at its floor" when at least this share of its values lies within
#: ``FLOOR_BAND`` of its range from the worst value (see :func:`floored`).
FLOOR_SHARE = 1 / 3
FLOOR_BAND = 0.1
#: In the floor transform, the offset added above the worst value, as a share of the range.
FLOOR_OFFSET = 0.02


def floored(values: np.ndarray, share: float = FLOOR_SHARE, band: float = FLOOR_BAND) -> bool:
    """True when at least ``share`` of ``values`` (signed: larger is better) sit within
    ``band`` of their range from the worst one: a figure of merit that reads "nothing
    formed" over much of the space (a phase fraction below the onset temperature)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 4:
        return False
    lo, hi = float(v.min()), float(v.max())
    return hi > lo and float(np.mean(v <= lo + band * (hi - lo))) >= share


class FloorLog:
    """``z = log(u - floor + offset)`` for signed values ``u`` (floor: the worst measured,
    offset: ``FLOOR_OFFSET`` of the range), and back. A GP on ``z`` sees the flat floor as a
    deep, narrow valley, so where every sample measured the floor it stops predicting
    gains as large as anywhere else; a hypervolume acquisition then stops spending
    experiments on a dead corner. The acquisition still works in the objective's own units
    (samples are mapped back), so the hypervolume is the real one."""

    def __init__(self, u: np.ndarray):
        u = np.asarray(u, dtype=float)
        self.floor = float(u.min())
        self.offset = FLOOR_OFFSET * max(float(u.max()) - self.floor, 1e-12)

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(u, dtype=float) - self.floor + self.offset)

    def back(self, z):
        exp = torch.exp if isinstance(z, torch.Tensor) else np.exp
        return exp(z) + self.floor - self.offset


#: Above this many observations a GP's hyperparameters are fitted on a subset of this size
#: (the best quarter and a seeded random rest); the model then conditions on every point.
MAX_FIT_POINTS = 256


def fit_subset(y: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Indices of ``m`` of the rows: the best ``m // 4`` by ``y`` and a seeded random rest."""
    y = np.asarray(y, dtype=float).reshape(-1)
    order = np.argsort(-y, kind="stable")
    top = order[: m // 4]
    rest = np.random.default_rng([seed, len(y)]).choice(order[m // 4 :], size=m - len(top), replace=False)
    return np.sort(np.concatenate([top, rest]))


class SubsetFitGP(SingleTaskGP):
    """A ``SingleTaskGP`` whose hyperparameter fit uses at most :data:`MAX_FIT_POINTS` points.

    The marginal-likelihood fit costs O(n^3) per optimiser step and dominated the time of
    a suggestion beyond a few hundred observations (25 s at 1000 on one core); fitted on a
    subset it costs the same at any n, and the posterior still uses every observation.
    Ax uses it through its ``ModelConfig`` and BoTorch calls :meth:`custom_fit` from
    ``fit_gpytorch_mll``.
    """

    max_fit_points = MAX_FIT_POINTS

    def custom_fit(self, mll, closure=None, closure_kwargs=None, optimizer_kwargs=None, **kwargs):
        from botorch.fit import _fit_fallback

        X, y = self.train_inputs[0], self.train_targets
        if y.dim() > 1 or X.shape[-2] <= self.max_fit_points:
            return _fit_fallback(mll, closure=closure, closure_kwargs=closure_kwargs,
                                 optimizer_kwargs=optimizer_kwargs, **kwargs)
        mll.train()
        X, y = self.train_inputs[0], self.train_targets  # in training mode: the untransformed inputs
        idx = torch.as_tensor(fit_subset(y.detach().numpy(), self.max_fit_points))
        self.set_train_data(X[idx], y[idx], strict=False)
        try:
            _fit_fallback(mll, optimizer_kwargs=optimizer_kwargs, **kwargs)
        finally:
            mll.train()
            self.set_train_data(X, y, strict=False)
        return mll.eval()


def fit_gp(X: np.ndarray, y: np.ndarray, seed: int, kernel: str = "rbf", warp: bool = False,
           pessimistic: bool = False) -> SingleTaskGP:
    """A GP with standardised outcome and fitted hyperparameters.

    ``kernel``: "rbf" is BoTorch's default (ARD RBF with dimension-scaled length-scale
    prior); "matern" an ARD Matern-5/2 with the same prior. ``warp``: a learned
    Kumaraswamy input warping per coordinate (BoTorch ``Warp``), for inputs crowded at one
    end of their range (e.g. minor components of a composition). ``pessimistic``: the prior
    mean is fixed at the worst value measured instead of fitted (about the average), so far
    from the data the model expects the worst rather than the typical: a hypervolume
    acquisition then stops promising large gains in unexplored corners of the space (the
    low-temperature bound of a synthesis, where every composition gives nothing).
    """
    torch.manual_seed(seed)
    tx = torch.as_tensor(X, dtype=torch.float64)
    ty = torch.as_tensor(y, dtype=torch.float64).reshape(-1, 1)
    covar = None
    if kernel == "matern":
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior

        covar = get_covar_module_with_dim_scaled_prior(ard_num_dims=tx.shape[-1], use_rbf_kernel=False)
    extra = {}
    if warp:
        from botorch.models.transforms.input import Warp

        d = tx.shape[-1]
        extra["input_transform"] = Warp(d=d, indices=list(range(d)),
                                        bounds=torch.stack([torch.zeros(d), torch.ones(d)]).double())
    model = SubsetFitGP(tx, ty, covar_module=covar, outcome_transform=Standardize(m=1), **extra)
    if pessimistic:
        yy = np.asarray(y, dtype=float)
        sd = float(yy.std(ddof=1)) if len(yy) > 1 and yy.std() > 0 else 1.0
        with torch.no_grad():
            model.mean_module.constant.fill_(float((yy.min() - yy.mean()) / sd))
        model.mean_module.raw_constant.requires_grad_(False)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    return model


def pool_quantile_map(pool_x: np.ndarray):
    """Each unit-cube coordinate through its empirical CDF over the pool (mid-ranks, in [0, 1]).

    Real pools are dense where their makers searched hardest (P3HT: the 40-50 % P3HT
    films; additives mostly under 5 % of their 0-85 % range). On the quantile scale equal
    distances hold equally many samples, so the GP resolves differences inside the dense
    region that are a few hundredths of the raw range.
    """
    cols = [np.sort(pool_x[:, j]) for j in range(pool_x.shape[1])]

    def to_quantiles(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(-1, len(cols))
        out = np.empty_like(X)
        for j, c in enumerate(cols):
            out[:, j] = (np.searchsorted(c, X[:, j], "left") + np.searchsorted(c, X[:, j], "right")) / (2 * len(c))
        return out

    return to_quantiles


def _columns_map(inner, cols: list[int]):
    """Apply ``inner`` to the columns ``cols`` of X and leave the others (one-hot blocks) as they are."""
    def apply(X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=float, copy=True)
        X[:, cols] = inner(X[:, cols])
        return X

    return apply


def _mapped(xmap, X: np.ndarray) -> np.ndarray:
    return X if xmap is None else xmap(X)


#: Pools of at least this many rows get UCB beta 1 by default, smaller ones beta 3: between
#: P3HT (178 rows, beta 3 better) and Suzuki (247, beta 1 better); docs/agents.md.
LARGE_POOL_ROWS = 200


def crowded(pool_x: np.ndarray, share: float = 0.05) -> bool:
    """Whether some input of the pool has half its rows within ``share`` of one end of its range
    (P3HT's additives: medians at 2-3 % of their ranges; AgNP's flow rates: none below 18 %)."""
    lo, hi = pool_x.min(axis=0), pool_x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    med = (np.median(pool_x, axis=0) - lo) / span
    return bool(np.any((med < share) | (med > 1 - share)))


def loo_r2(model) -> float | None:
    """Leave-one-out R^2 of a fitted GP (closed form, hyperparameters fixed): its fit quality.

    For a multi-output (batched) GP, the worst output's; for a model list, the worst model's.
    """
    try:
        if hasattr(model, "models"):
            scores = [loo_r2(m) for m in model.models]
            scores = [v for v in scores if v is not None]
            return min(scores) if scores else None
        X = model.train_inputs[0]
        y = model.train_targets
        with torch.no_grad():
            if getattr(model, "input_transform", None) is not None and model.training is False:
                pass  # train_inputs already hold the transformed inputs
            n = X.shape[-2]
            noise = model.likelihood.noise
            if noise.dim() == 0 or noise.shape[-1] != n:
                noise = noise.reshape(*noise.shape[:-1], 1) if noise.dim() else noise
            K = model.covar_module(X).to_dense() + torch.diag_embed(noise.expand(*y.shape))
            Kinv = torch.linalg.inv(K)
            mean = model.mean_module(X)
            alpha = (Kinv @ (y - mean).unsqueeze(-1)).squeeze(-1)
            resid = alpha / torch.diagonal(Kinv, dim1=-2, dim2=-1)
        ss = ((y - y.mean(dim=-1, keepdim=True)) ** 2).sum(dim=-1)
        r2 = 1.0 - (resid**2).sum(dim=-1) / ss
        r2 = r2[ss > 0]
        return float(r2.min()) if r2.numel() else None
    except Exception:  # noqa: BLE001 - fit quality is informative, never fatal
        return None


def check_outcome_constraints(constraints, objectives) -> list[dict]:
    """``[{"metric": name, "op": ">=" or "<=", "bound": number}]``, checked."""
    out = []
    for c in list(constraints or []):
        if not isinstance(c, dict) or not isinstance(c.get("metric"), str) or c.get("op") not in (">=", "<="):
            raise InvalidInput("outcome_constraints", "each must be {'metric': name, 'op': '>=' or '<=', 'bound': number}", c)
        try:
            bound = float(c["bound"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("outcome_constraints", "'bound' must be a number", c) from None
        if not math.isfinite(bound):
            raise InvalidInput("outcome_constraints", "'bound' must be finite", c)
        if c["metric"] in {o.name for o in objectives}:
            raise InvalidInput("outcome_constraints", "constrain a measured quantity that is not an objective "
                               "(use reference_point for the objectives' worst acceptable values)", c)
        out.append({"metric": c["metric"], "op": c["op"], "bound": bound})
    return out


class BoTorchAgent(AgentBase):
    """GP + log-EI / UCB over pools or continuous spaces; several objectives (qLogNEHVI) and
    outcome constraints (feasibility-weighted noisy log-EI) on either."""

    name = "botorch"
    option_names = ("n_init", "log_transform", "acquisition", "beta", "kernel", "num_restarts", "raw_samples",
                    "outcome_constraints", "reference_point", "input_warping", "pessimistic_prior",
                    "pool_input_map", "floor_transform", "failure_model", "exposure")
    log_default = "auto"
    plain = False

    def __init__(self, space, objectives, seed: int = 0, **options):
        super().__init__(space, objectives, seed, **options)
        self._outcome_constraints = check_outcome_constraints(options.get("outcome_constraints"), self.objectives)
        self._reference = options.get("reference_point")
        if self._reference is not None:
            from sdl.agents.multiobjective import _reference_vector

            if len(self.objectives) < 2:
                raise InvalidInput("reference_point", "only for several objectives", self._reference)
            self._reference = _reference_vector(self._reference, self.objectives)
        if options.get("floor_transform", "auto") not in ("auto", True, False):
            raise InvalidInput("floor_transform", "allowed: 'auto', true, false", options.get("floor_transform"))
        if options.get("floor_transform") is True and len(self.objectives) == 1 and not self._outcome_constraints:
            raise InvalidInput("floor_transform", "applies with several objectives or with outcome constraints "
                               "(a hypervolume or a constrained noisy EI); one plain objective has neither", True)
        if options.get("failure_model", "auto") not in ("auto", "ignore"):
            raise InvalidInput("failure_model", "allowed: 'auto' (model where experiments fail and avoid it), "
                               "'ignore'", options.get("failure_model"))
        self._exposure = None
        if options.get("exposure") not in (None, False):
            from sdl.agents.exposure import check_exposure_option

            if len(self.objectives) > 1 or space.pool is not None or options.get("outcome_constraints"):
                raise InvalidInput("exposure", "chooses exposures for one objective on a continuous space",
                                   options.get("exposure"))
            self._exposure = check_exposure_option(options["exposure"])
        mode = options.get("pool_input_map", "identity")
        if mode not in ("auto", "identity", "quantile"):
            raise InvalidInput("pool_input_map", "allowed: 'auto', 'identity', 'quantile'", mode)
        if mode == "quantile" and space.pool is None:
            raise InvalidInput("pool_input_map", "'quantile' maps inputs through a pool's quantiles; "
                               "this space has no pool", mode)

    def _suggest(self, n: int):
        n_init = int(self.options.get("n_init", DEFAULT_N_INIT))
        obs = self.good_observations()
        if self._outcome_constraints:
            names = [c["metric"] for c in self._outcome_constraints]
            obs = [o for o in obs if all(k in o.values and o.values[k] is not None and math.isfinite(o.values[k])
                                         for k in names)]
        if len(obs) < max(n_init, 2):
            return self._initial(n, n_init)
        if len(self.objectives) > 1 or self._outcome_constraints:
            return self._suggest_composite(obs, n)
        if self._exposure is not None:
            return self._suggest_with_exposure(obs, n)
        X = self.encoder.encode_many([o.params for o in obs])
        raw = np.array([float(o.values[self.objectives[0].name]) for o in obs])
        log = self.options.get("log_transform", self.log_default)
        use_log = heavy_tailed(raw) if log == "auto" else bool(log)
        y = (np.log(raw) if use_log else raw) * self.objectives[0].sign
        seed = int(np.random.default_rng([self.seed, self.n_seen]).integers(2**31))

        xmap = self._pool_input_map() if self.is_pool else None
        X = _mapped(xmap, X)
        model = fit_gp(X, y, seed, kernel=str(self.options.get("kernel", self._default("kernel"))),
                       warp=bool(self.options.get("input_warping", False)),
                       pessimistic=bool(self.options.get("pessimistic_prior", False)))
        self._best_f = float(y.max())
        pending = _mapped(xmap, self.encoder.encode_many(self.pending)) if self.pending else None
        feas = self._feasibility(seed, xmap)
        kind = str(self.options.get("acquisition", self._default("acquisition")))

        def make_acq(pend):
            return self._with_feasibility(self._acquisition(model, X, pend), feas, log=kind != "ucb")

        picks = (self._pool_picks(make_acq, pending, n, xmap) if self.is_pool
                 else self._continuous_picks(make_acq, pending, n, seed))
        fit = loo_r2(model)
        name = self.objectives[0].name
        out = []
        for key, acq in picks:
            mean, spread = self._predict(model, key, [(name, self.objectives[0].sign, use_log)], xmap)
            if feas is not None:
                mean["p_success"] = self._p_success(feas, key, xmap)
            prov = Provenance(
                agent=self.name,
                model="SingleTaskGP" + (" on log(y)" if use_log else "")
                + (" on the pool's quantiles of each input" if xmap is not None else "")
                + (f" + a feasibility GP classifier ({feas.n_failed} failed)" if feas is not None else ""),
                acquisition={"ei": "LogEI", "nei": "qLogNoisyEI", "ucb": "UCB"}[
                    str(self.options.get("acquisition", self._default("acquisition")))],
                acquisition_value=acq,
                predicted_mean=mean,
                predicted_sd=spread,
                fit_loo_r2=fit,
                n_observations=len(obs),
                reason=f"highest acquisition value of the GP fitted to {len(obs)} observations"
                + (f" with {len(self.pending)} pending" if self.pending else ""),
            )
            out.append((self._as_params(key), prov))
        return out

    # ------------------------------------------------------------------ exposure
    def _suggest_with_exposure(self, obs, n: int):
        """One objective, continuous: a fixed-noise GP (each value's noise from its exposure),
        log-EI over the best posterior mean, then the exposure (:mod:`sdl.agents.exposure`)."""
        from sdl.agents.exposure import best_exposure, fixed_noise_gp

        opt = self._exposure
        o = self.objectives[0]
        X, y, yvar = self._exposure_data(obs)
        seed = int(np.random.default_rng([self.seed, self.n_seen]).integers(2**31))
        model = fixed_noise_gp(X, y, yvar, seed)
        with torch.no_grad():
            best = float(model.posterior(torch.as_tensor(X)).mean.max())
        pending = self.encoder.encode_many(self.pending) if self.pending else None
        feas = self._feasibility(seed, None)

        def make_acq(pend):
            if pend is None:
                acq = LogExpectedImprovement(model, best_f=best)
            else:
                acq = qLogNoisyExpectedImprovement(model, torch.as_tensor(X), X_pending=torch.as_tensor(pend),
                                                   prune_baseline=True, cache_root=False)
            return self._with_feasibility(acq, feas, log=True)

        out = []
        for key, acq in self._continuous_picks(make_acq, pending, n, seed):
            with torch.no_grad():
                post = model.posterior(torch.as_tensor(np.asarray(key)).reshape(1, -1))
                mu, var = float(post.mean), float(post.variance.clamp_min(0))
            exposure = best_exposure(var, opt)
            prov = Provenance(
                agent=self.name, model="SingleTaskGP with each value's noise from its exposure",
                acquisition="LogEI" if pending is None else "qLogNoisyEI", acquisition_value=acq,
                predicted_mean={o.name: o.sign * mu}, predicted_sd={o.name: math.sqrt(var)},
                n_observations=len(obs), exposure=exposure,
                reason=f"highest log-EI; exposure {exposure:g} s removes the most model variance per second "
                f"(posterior sd {math.sqrt(var):.3g}, noise sd at 1 s {opt.noise_sd_at_1s:g})",
            )
            out.append((self._as_params(key), prov))
        return out

    def _exposure_data(self, obs):
        """Inputs, signed values and each value's noise variance (from its exposure)."""
        opt, o = self._exposure, self.objectives[0]
        X = self.encoder.encode_many([ob.params for ob in obs])
        y = np.array([o.sign * float(ob.values[o.name]) for ob in obs])
        t = np.array([float(ob.extra.get("exposure", opt.default_s)) for ob in obs])
        return X, y, opt.noise_sd_at_1s**2 / t

    def recommend(self) -> tuple[dict, float] | None:
        """With the option ``exposure``: the measured point to report (its params) and the
        model's estimate of its value in objective units (:func:`sdl.agents.exposure.recommendation`), so that
        one lucky short exposure is neither reported nor stops a campaign. None without the
        option or before two values (the best measured value is then the answer)."""
        from sdl.agents.exposure import recommendation

        obs = self.good_observations()
        if self._exposure is None or len(obs) < 2:
            return None
        j, estimate = recommendation(*self._exposure_data(obs), seed=self.seed)
        return dict(obs[j].params), self.objectives[0].sign * estimate

    # ------------------------------------------------------------------ failures
    def _feasibility(self, seed: int, xmap):
        """The feasibility model of every observation (None when nothing failed or the option
        ``failure_model`` is 'ignore'); in the GP's coordinates (``xmap`` on a pool)."""
        from sdl.agents.feasibility import FeasibilityModel, is_failure

        if self.options.get("failure_model", "ignore" if self.plain else "auto") == "ignore":
            return None  # gp-ei, the hand-written baseline, ignores failures unless told
        names = [o.name for o in self.objectives]
        failed = [is_failure(o, names) for o in self.observations]
        if not any(failed):
            return None
        obs = [o for o in self.observations if not o.extra.get("transient")]
        ok = [not is_failure(o, names) for o in obs]
        X = _mapped(xmap, self.encoder.encode_many([o.params for o in obs]))
        return FeasibilityModel(X, np.array(ok), seed + 101)

    @staticmethod
    def _with_feasibility(acq, feas, log: bool):
        if feas is None:
            return acq
        from sdl.agents.feasibility import FeasibilityWeighted

        return FeasibilityWeighted(acq, feas, log=log)

    def _p_success(self, feas, key, xmap) -> float:
        x = _mapped(xmap, self.pool_matrix()[int(key) : int(key) + 1]) if self.is_pool else np.asarray(key)[None]
        return float(feas.prob_np(x).reshape(-1)[0])

    def _pool_input_map(self):
        """Where the one-objective pool GP lives (option ``pool_input_map``): None for the unit
        cube, or the pool's quantiles of each coordinate ("quantile"; "auto", the default,
        when the pool is :func:`crowded` at one end of some input). Fixed by the pool and the
        option, so made once."""
        if not hasattr(self, "_pool_map"):
            mode = self.options.get("pool_input_map", self._default("pool_input_map"))
            # only range coordinates have an order to map; one-hot blocks of categories stay 0/1
            cols = [s.start for s in self.encoder.slots if s.kind == "range"]
            P = self.pool_matrix()
            use = bool(cols) and (mode == "quantile" or (mode == "auto" and crowded(P[:, cols])))
            self._pool_map = _columns_map(pool_quantile_map(P[:, cols]), cols) if use else None
        return self._pool_map

    # ------------------------------------------------------------------ several outcomes
    def _suggest_composite(self, obs, n: int):
        """Several objectives and/or outcome constraints: one GP per measured quantity."""
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.models import ModelListGP

        from sdl.agents.multiobjective import default_reference

        X = self.encoder.encode_many([o.params for o in obs])
        log = self.options.get("log_transform", self.log_default)
        kernel = str(self.options.get("kernel", self._default("kernel")))
        seed = int(np.random.default_rng([self.seed, self.n_seen]).integers(2**31))
        columns: list[tuple[str, float, bool]] = []  # (metric, sign, log) of each model output
        for j, o in enumerate(self.objectives):
            raw = np.array([float(ob.values[o.name]) for ob in obs])
            use_log = heavy_tailed(raw) if log == "auto" else bool(log)
            if use_log and (self._reference is not None and self._reference[j] <= 0 or np.any(raw <= 0)):
                use_log = False
            known_param = self._parameter_objective(o.name)
            if use_log and known_param is not None and (log == "auto" or known_param[1].lower <= 0):
                # an objective that is a parameter is known exactly: there is no model to help,
                # and log(0) at the parameter's bound would make the acquisition's gradient NaN
                use_log = False
            columns.append((o.name, o.sign, use_log))
        for c in self._outcome_constraints:
            columns.append((c["metric"], 1.0, False))
        Y = np.column_stack([
            s * (np.log([float(ob.values[m]) for ob in obs]) if lg else np.array([float(ob.values[m]) for ob in obs]))
            for m, s, lg in columns
        ])
        known = [self._known_outcome_model(m_, sg, lg) if j < len(self.objectives) else None
                 for j, (m_, sg, lg) in enumerate(columns)]
        floor_opt = self.options.get("floor_transform", "auto")
        floors: dict[int, FloorLog] = {}
        for j in range(len(self.objectives)):
            auto = floor_opt == "auto" and len(self.objectives) > 1 and floored(Y[:, j])
            if known[j] is None and not columns[j][2] and (floor_opt is True or auto):
                floors[j] = FloorLog(Y[:, j])
                Y[:, j] = floors[j].forward(Y[:, j])
        pess = bool(self.options.get("pessimistic_prior", len(self.objectives) > 1))
        models = [k or fit_gp(X, Y[:, j], seed + j, kernel=kernel, pessimistic=pess and j < len(self.objectives))
                  for j, k in enumerate(known)]
        if any(k is not None for k in known):
            from botorch.models.model import ModelList

            model = ModelList(*models)
        else:
            model = ModelListGP(*models)
        m = len(self.objectives)
        cons = []
        for k, c in enumerate(self._outcome_constraints):
            j, b = m + k, c["bound"]
            # BoTorch: feasible where the callable is <= 0
            cons.append((lambda Y, j=j, b=b: b - Y[..., j]) if c["op"] == ">=" else (lambda Y, j=j, b=b: Y[..., j] - b))
        tX = torch.as_tensor(X)
        if m > 1:
            if self._reference is not None:
                ref = np.array([s * (math.log(r) if lg else r)
                                for (_, s, lg), r in zip(columns[:m], self._reference)])
            else:
                Yu = Y[:, :m].copy()
                for j, f in floors.items():
                    Yu[:, j] = f.back(Yu[:, j])
                ref = default_reference(Yu, [1.0] * m)
            objective = IdentityMCMultiOutputObjective(outcomes=list(range(m)))
            if floors:
                from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective

                def in_units(Z, X=None, floors=floors, m=m):
                    return torch.stack([floors[j].back(Z[..., j]) if j in floors else Z[..., j] for j in range(m)], -1)

                objective = GenericMCMultiOutputObjective(in_units)

            def make_acq(pend):
                return qLogNoisyExpectedHypervolumeImprovement(
                    model, ref_point=ref.tolist(), X_baseline=tX, objective=objective, constraints=cons or None,
                    X_pending=None if pend is None else torch.as_tensor(pend), prune_baseline=True, cache_root=False,
                )
            acq_name = "qLogNEHVI"
        else:
            f0 = floors.get(0)
            objective = GenericMCObjective(lambda Z, X=None: Z[..., 0] if f0 is None else f0.back(Z[..., 0]))

            def make_acq(pend):
                return qLogNoisyExpectedImprovement(
                    model, tX, objective=objective, constraints=cons, prune_baseline=True, cache_root=False,
                    X_pending=None if pend is None else torch.as_tensor(pend),
                )
            acq_name = "qLogNoisyEI with outcome constraints"
        feas = self._feasibility(seed, None)
        if feas is not None:
            plain_acq = make_acq

            def make_acq(pend):
                return self._with_feasibility(plain_acq(pend), feas, log=True)
        torch.manual_seed(seed)
        pending = self.encoder.encode_many(self.pending) if self.pending else None
        picks = self._pool_picks(make_acq, pending, n) if self.is_pool else self._continuous_picks(make_acq, pending, n, seed)
        fit = loo_r2(model)
        out = []
        for key, acq in picks:
            mean, spread = self._predict(model, key, columns, floors=floors)
            if feas is not None:
                mean["p_success"] = self._p_success(feas, key, None)
            prov = Provenance(
                agent=self.name,
                model=(f"feasibility GP classifier ({feas.n_failed} failed) + " if feas is not None else "")
                + f"{len(columns) - sum(k is not None for k in known)} SingleTaskGPs"
                + (" (prior mean: the worst measured)" if pess else "")
                + "".join(f", {c[0]} known exactly" for c, k in zip(columns, known) if k is not None)
                + "".join(f", {columns[j][0]} on log(distance above its floor)" for j in floors),
                acquisition=acq_name,
                acquisition_value=acq,
                predicted_mean=mean,
                predicted_sd=spread,
                fit_loo_r2=fit,
                n_observations=len(obs),
                reason=f"highest {acq_name} of the GPs fitted to {len(obs)} observations"
                + (f" with {len(self.pending)} pending" if self.pending else ""),
            )
            out.append((self._as_params(key), prov))
        return out

    def _parameter_objective(self, metric: str):
        """``(slot, parameter)`` when the objective ``metric`` is one of the (linear) range
        parameters themselves (anneal temperature, time, cost per unit), else None."""
        slot = self.encoder._index.get(metric)
        param = next((p for p in self.space.parameters if p.name == metric), None)
        if slot is None or slot.kind != "range" or not isinstance(param, RangeParameter) or param.log_scale:
            return None
        return slot, param

    def _known_outcome_model(self, metric: str, sign: float, use_log: bool):
        """An objective that is one of the parameters themselves is known exactly wherever
        the agent looks: modelled by a deterministic model of the input instead of a GP, so
        the hypervolume improvement is computed with no model error along that axis. None
        when ``metric`` is not such a parameter."""
        found = self._parameter_objective(metric)
        if found is None:
            return None
        from botorch.models.deterministic import GenericDeterministicModel

        slot, param = found
        k, lo, span = slot.start, float(param.lower), float(param.upper - param.lower)

        def value(X):
            v = lo + X[..., k : k + 1] * span
            return sign * (torch.log(v) if use_log else v)

        return GenericDeterministicModel(value, num_outputs=1)

    def _predict(self, model, key, columns, xmap=None, floors=None) -> tuple[dict, dict]:
        """Posterior mean and sd of each output at the pick, in the quantity's own units
        (``xmap``: the model's coordinates on a pool, as for :meth:`_pool_picks`; ``floors``:
        the :class:`FloorLog` of each output modelled above its floor, by position)."""
        x = _mapped(xmap, self.pool_matrix()[int(key) : int(key) + 1]) if self.is_pool else np.asarray(key)
        with torch.no_grad():
            post = model.posterior(torch.as_tensor(x).reshape(1, -1))
            mus = post.mean.reshape(-1).tolist()
            sds = post.variance.clamp_min(0).sqrt().reshape(-1).tolist()
        mean, spread = {}, {}
        for j, ((name, sign, lg), mu, sd) in enumerate(zip(columns, mus, sds)):
            if floors and j in floors:  # the median of the log-normal, and its spread to first order
                mu, sd = float(floors[j].back(mu)), math.exp(mu) * sd
            mu = mu * sign
            mean[name], spread[name] = (math.exp(mu), math.exp(mu) * sd) if lg else (mu, sd)
        return mean, spread

    # ------------------------------------------------------------------ initial design
    def _initial(self, n: int, n_init: int):
        rng = self.rng()
        why = Provenance(agent=self.name, reason=f"initial random design ({n_init} points before the model)")
        if getattr(self, "_exposure", None) is not None:  # the middle exposure until a model says otherwise
            choices = sorted(self._exposure.choices)
            why = Provenance(**why.model_dump(), exposure=choices[len(choices) // 2])
        if self.is_pool:
            picks = rng.choice(self.open_candidates(), size=n, replace=False)
            return [(dict(self.space.pool[int(i)]), why) for i in picks]
        return [(p, why) for p in self.random_points(n, rng)]

    def _as_params(self, x) -> dict:
        if self.is_pool:
            return dict(self.space.pool[int(x)])
        return self.encoder.decode(np.asarray(x))

    # ------------------------------------------------------------------ acquisition
    def _default(self, option: str):
        """Defaults chosen by measurement (docs/agents.md): on pools an ARD Matern-5/2 GP with
        UCB, on the pool's quantiles when it is crowded (P3HT, not AgNP), found the most of both
        pools' top 5 %; continuous spaces use noisy log-EI. UCB's beta on a pool follows its
        size against a campaign's few dozen experiments: 3 (explore) below
        :data:`LARGE_POOL_ROWS` rows, where 30-50 experiments measure a good share of the pool,
        1 (exploit what was found) from there on, where they never will (on the 14-pool suite:
        beta 3 better or equal on every smaller pool, beta 1 better on 5 of the 7 larger)."""
        if self.plain:
            return {"acquisition": "ei", "kernel": "rbf", "pool_input_map": "identity", "beta": 1.0}[option]
        if self.is_pool:
            if option == "beta":
                return 1.0 if len(self.space.pool) >= LARGE_POOL_ROWS else 3.0
            return {"acquisition": "ucb", "kernel": "matern", "pool_input_map": "auto"}[option]
        return {"acquisition": "nei", "kernel": "rbf", "pool_input_map": "identity", "beta": 1.0}[option]

    def _acquisition(self, model, X, pending):
        kind = self.options.get("acquisition", self._default("acquisition"))
        if kind not in ("ucb", "ei", "nei"):
            raise InvalidInput("acquisition", "allowed: 'ucb', 'ei', 'nei'", kind)
        if kind == "ucb":
            from botorch.acquisition import UpperConfidenceBound, qUpperConfidenceBound

            beta = float(self.options.get("beta", self._default("beta")))
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

    def _pool_picks(self, make_acq, pending, n, xmap=None):
        """Greedy batch over the open pool rows: each pick becomes pending for the next.
        ``xmap`` maps the pool into the model's coordinates (None: the unit cube)."""
        cands = list(self.open_candidates())
        P = _mapped(xmap, self.pool_matrix())
        C = torch.as_tensor(P[cands])
        picks = []
        for _ in range(min(n, len(cands))):
            acq = make_acq(pending)
            with torch.no_grad():
                vals = torch.cat([acq(C[i : i + 512].unsqueeze(1)) for i in range(0, len(C), 512)])
            j = int(torch.argmax(vals))
            row = cands[j]
            picks.append((row, float(vals[j])))
            x = P[row : row + 1]
            pending = x if pending is None else np.vstack([pending, x])
            cands.pop(j)
            C = torch.cat([C[:j], C[j + 1 :]])
        return picks

    def _feasible_starts(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` encoded points uniform over the feasible set (rejection on the constraints)."""
        X = self.encoder.random(k, rng)
        if not self.constraints:
            return X
        keep = X[self.feasible_mask(X)]
        tries = 0
        while len(keep) < k and tries < 200:
            more = self.encoder.random(4 * k, rng)
            keep = np.vstack([keep, more[self.feasible_mask(more)]])
            tries += 1
        if len(keep) == 0:
            raise InvalidInput("parameter_constraints", "no feasible point found: the constraints leave "
                               "(almost) nothing of the search space", self.constraints.texts)
        return keep[:k]

    def _continuous_picks(self, make_acq, pending, n, seed):
        d = self.encoder.dim
        bounds = torch.stack([torch.zeros(d), torch.ones(d)])
        cons = [
            (torch.as_tensor(idx), torch.as_tensor(coef, dtype=torch.float64), float(rhs))
            for idx, coef, rhs in self.encoder.composition_constraints() + self.constraints.unit_constraints(self.encoder)
        ]
        picks = []
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        restarts = int(self.options.get("num_restarts", 4))
        raw = int(self.options.get("raw_samples", 256))
        for _ in range(n):
            acq = make_acq(pending)
            # Starting points: a uniform design of the feasible set (compositions on their
            # simplex, parameter constraints by rejection) scored by the acquisition.
            # BoTorch's own polytope sampler would do the same in ~1.6 s per call.
            starts = torch.as_tensor(self._feasible_starts(raw, rng)).unsqueeze(1)
            with torch.no_grad():
                scores = acq(starts)
            best = torch.topk(scores, k=min(restarts, len(starts))).indices
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
