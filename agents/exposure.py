"""Cost-aware measurement: the agent chooses the exposure of each point.

A longer exposure buys a less noisy value (counting noise: sd ~ 1/sqrt(exposure)) with
beamtime. With the option ``exposure`` the BoTorch agent (and ``bo``, which routes here
when it is given) models every observation with its own known noise variance,
``noise_sd_at_1s**2 / exposure`` (a fixed-noise GP: the measured exposure says how precise
each value is), chooses the point by log-EI over the posterior mean's best, and then the
exposure that buys the most reduction of the model's uncertainty at that point per second
of beamtime:

    t* = argmax_t  sigma(x)^4 / (sigma(x)^2 + tau(t)^2) / (t + overhead_s),
    tau(t)^2 = noise_sd_at_1s^2 / t

(the variance removed by one measurement of noise ``tau`` at a point of posterior variance
``sigma^2``, per cost). Where the model knows little, a short exposure removes almost as much
as a long one; near a good point it already knows well, only a long exposure adds
anything. The per-point ``overhead_s`` (sample change, alignment: beamtime spent whatever
the exposure) is what makes a long exposure worth it: with no overhead, counting
information adds up (ten 0.1 s frames hold what one 1 s frame does), so the rule always
takes the shortest choice; with an overhead the best exposure is about
``noise_sd_at_1s * sqrt(overhead_s) / sigma(x)``. The chosen exposure is in ``Suggestion.provenance.exposure``; tell it back in
``Observation.extra["exposure"]`` (observations without it count as ``default_s``).

Option ``exposure``: ``{"choices": [0.01, 0.03, 0.1, 0.3, 1.0], "noise_sd_at_1s": 0.011,
"overhead_s": 0.0, "default_s": 1.0}`` (seconds; ``noise_sd_at_1s`` the figure of merit's
counting noise at 1 s, from a calibration: 0.011 at the simulated lab's optimum).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdl.errors import InvalidInput


class ExposureOption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    choices: list[float] = Field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0], min_length=1)
    noise_sd_at_1s: float = Field(0.011, gt=0)
    overhead_s: float = Field(0.0, ge=0)
    default_s: float = Field(1.0, gt=0)


def check_exposure_option(value) -> ExposureOption:
    try:
        opt = ExposureOption.model_validate(value if isinstance(value, dict) else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput("exposure", f"{'.'.join(map(str, err['loc']))}: {err['msg']}", value) from None
    if not isinstance(value, dict) and value is not True:
        raise InvalidInput("exposure", "a dict {choices, noise_sd_at_1s, overhead_s, default_s} or true", value)
    if any(not (c > 0 and math.isfinite(c)) for c in opt.choices):
        raise InvalidInput("exposure", "choices must be positive numbers of seconds", opt.choices)
    return opt


def best_exposure(sigma2: float, opt: ExposureOption) -> float:
    """The choice with the most posterior variance removed per second (module docstring)."""
    def gain(t: float) -> float:
        tau2 = opt.noise_sd_at_1s**2 / t
        return sigma2**2 / (sigma2 + tau2) / (t + opt.overhead_s)

    return max(sorted(opt.choices), key=gain)


def fixed_noise_gp(X: np.ndarray, y: np.ndarray, yvar: np.ndarray, seed: int):
    """A GP with each observation's known noise variance (``train_Yvar``), standardised outcome."""
    import warnings

    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(seed)
    model = SingleTaskGP(torch.as_tensor(X), torch.as_tensor(y).reshape(-1, 1),
                         train_Yvar=torch.as_tensor(yvar).reshape(-1, 1), outcome_transform=Standardize(m=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def recommended_index(X: np.ndarray, y: np.ndarray, yvar: np.ndarray, seed: int = 0) -> int:
    """The measured point a campaign should report: the highest posterior mean of the
    fixed-noise GP (maximising ``y``), not the highest raw value, which after short
    exposures is often a lucky noisy one."""
    return recommendation(X, y, yvar, seed)[0]


def recommendation(X: np.ndarray, y: np.ndarray, yvar: np.ndarray, seed: int = 0) -> tuple[int, float]:
    """``(index, estimate)``: the measured point of highest posterior mean and that mean, the
    model's estimate of its true value (with one point: the point and its measured value)."""
    y = np.asarray(y, dtype=float)
    if len(y) < 2:
        return int(np.argmax(y)), float(np.max(y))
    X = np.asarray(X, dtype=float)
    model = fixed_noise_gp(X, y, np.asarray(yvar, dtype=float), seed)
    with torch.no_grad():
        mean = model.posterior(torch.as_tensor(X)).mean.reshape(-1)
    j = int(torch.argmax(mean))
    return j, float(mean[j])
