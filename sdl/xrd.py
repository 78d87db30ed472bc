"""X-ray diffraction reduction: a measured pattern -> the target-phase figure of merit.

The figure of merit is the *weight fraction of the target phase* estimated by the
reference-intensity-ratio (RIR) method, the standard quick quantification in powder
diffraction::

    amount_k = scale_k * A_k          (one term per crystalline phase, one for the amorphous hump)
    fom      = amount_target / sum_k amount_k

- ``A_k`` for a crystalline phase is the background-subtracted area of a peak window:
  the counts in the window minus a straight baseline drawn through the mean counts of
  two narrow edge regions just outside it.
- ``A_amorphous`` is the height of the broad amorphous hump: the mean counts in a
  peak-free window at the hump centre minus a straight baseline through two flank
  windows at the ends of the pattern.
- ``scale_k`` is the phase's RIR calibration (1 / area of a pure reference sample),
  so ``amount_k`` is a phase fraction.

Why this form: every ``A_k`` is a *linear* functional of the counts that is exactly
zero for any straight line (constant dark counts, a sloping air-scatter background).
Counts are proportional to exposure time x flux, so numerator and denominator scale
together and the ratio is invariant to exposure and ring current in expectation;
Poisson noise shrinks as 1/sqrt(counts), i.e. longer exposures give a less noisy FoM.

``params`` is a JSON-able dict (made by the materials model,
``MaterialsModel.reduction_params()``) and is stored in each run's start document,
so a figure of merit can be recomputed from the documents alone::

    {"technique": "xrd", "method": "rir", "target": "alpha", "min_significance": 3.0,
     "components": [
        {"name": "alpha", "kind": "peak", "window": [lo, hi], "edge": 0.4, "scale": s},
        {"name": "amorphous", "kind": "hump", "window": [lo, hi],
         "flanks": [[lo, hi], [lo, hi]], "scale": s}, ...]}

When the total diffracted signal is not significant (below ``min_significance``
standard deviations of its own Poisson noise; e.g. shutter closed, nothing mounted)
the figure of merit is 0.0: there is nothing there to be pure.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: Name of the figure of merit in observations and documents.
FOM_NAME = "fom"


def _mask(two_theta: np.ndarray, lo: float, hi: float, what: str) -> np.ndarray:
    m = (two_theta >= lo) & (two_theta <= hi)
    if not m.any():
        raise ValueError(f"xrd reduction: {what} [{lo}, {hi}] holds no point of the 2theta grid")
    return m


def _peak_weights(two_theta: np.ndarray, comp: Mapping[str, Any]) -> np.ndarray:
    """Weights w with ``w @ counts`` = window area above a straight edge-to-edge baseline."""
    lo, hi = (float(v) for v in comp["window"])
    edge = float(comp.get("edge", 0.4))
    step = np.gradient(two_theta)
    win = _mask(two_theta, lo, hi, f"window of {comp['name']!r}")
    left = _mask(two_theta, lo - edge, lo - 1e-9, f"left edge of {comp['name']!r}")
    right = _mask(two_theta, hi + 1e-9, hi + edge, f"right edge of {comp['name']!r}")
    t_left, t_right = two_theta[left].mean(), two_theta[right].mean()
    u = (two_theta[win] - t_left) / (t_right - t_left)  # baseline interpolation weights
    w = np.zeros_like(two_theta, dtype=float)
    w[win] = step[win]
    w[left] -= np.sum(step[win] * (1.0 - u)) / left.sum()
    w[right] -= np.sum(step[win] * u) / right.sum()
    return w


def _hump_weights(two_theta: np.ndarray, comp: Mapping[str, Any]) -> np.ndarray:
    """Weights w with ``w @ counts`` = hump height above a straight flank-to-flank baseline."""
    lo, hi = (float(v) for v in comp["window"])
    (a_lo, a_hi), (b_lo, b_hi) = comp["flanks"]
    win = _mask(two_theta, lo, hi, "amorphous window")
    fa = _mask(two_theta, float(a_lo), float(a_hi), "low flank")
    fb = _mask(two_theta, float(b_lo), float(b_hi), "high flank")
    t_a, t_b, t_w = two_theta[fa].mean(), two_theta[fb].mean(), two_theta[win].mean()
    u = (t_w - t_a) / (t_b - t_a)
    w = np.zeros_like(two_theta, dtype=float)
    w[win] = 1.0 / win.sum()
    w[fa] -= (1.0 - u) / fa.sum()
    w[fb] -= u / fb.sum()
    return w


def component_weights(two_theta: np.ndarray, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Scaled linear weights per component: ``weights[k] @ counts`` is the amount of k."""
    two_theta = np.asarray(two_theta, dtype=float)
    out: dict[str, np.ndarray] = {}
    for comp in params["components"]:
        kind = comp["kind"]
        if kind == "peak":
            w = _peak_weights(two_theta, comp)
        elif kind == "hump":
            w = _hump_weights(two_theta, comp)
        else:
            raise ValueError(f"xrd reduction: unknown component kind {kind!r}; allowed: 'peak', 'hump'")
        out[comp["name"]] = float(comp.get("scale", 1.0)) * w
    if params["target"] not in out:
        raise ValueError(f"xrd reduction: target {params['target']!r} is not one of the components {list(out)}")
    return out


def phase_amounts(two_theta: np.ndarray, counts: np.ndarray, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """RIR amount of each component (arbitrary units; counts may be (m,) or (n, m))."""
    counts = np.asarray(counts, dtype=float)
    return {k: counts @ w for k, w in component_weights(two_theta, params).items()}


def target_phase_fom_batch(two_theta: np.ndarray, counts: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """:func:`target_phase_fom` for a stack of patterns ``counts`` of shape (n, m)."""
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    weights = component_weights(two_theta, params)
    total_w = np.sum(list(weights.values()), axis=0)
    target = counts @ weights[params["target"]]
    total = counts @ total_w
    # Poisson: var(w @ counts) = sum w_i^2 * mean_i, with the counts standing in for the means.
    noise = np.sqrt(np.clip(counts, 0.0, None) @ (total_w**2))
    significant = total > float(params.get("min_significance", 3.0)) * noise
    safe_total = np.where(significant & (total > 0), total, 1.0)
    return np.where(significant & (total > 0), target / safe_total, 0.0)


def target_phase_fom(two_theta: np.ndarray, counts: np.ndarray, params: Mapping[str, Any]) -> float:
    """Weight fraction of the target phase in a pattern (about 0..1; 0 with no signal).

    ``counts`` is one pattern on the ``two_theta`` grid (counts, or counts/s for a
    noise-free expectation); ``params`` comes from the run's start document.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 1 or counts.shape != np.shape(two_theta):
        raise ValueError(
            f"xrd reduction: counts must be one pattern of shape {np.shape(two_theta)}, got {counts.shape}"
        )
    return float(target_phase_fom_batch(two_theta, counts[None, :], params)[0])
