"""The physics of the simulated double, and the reduction (image -> intensity, size).

A focusing mirror reflects a beam onto an area detector behind a square aperture.
Pitch (mrad) sets how much of the beam the mirror catches (its footprint) and how
much it reflects (falling steeply past the critical angle), and steers the spot
across the aperture; bend focuses the spot, best at a bend that depends on the
pitch. What passes the aperture is counted (Poisson) on a flat background.
"""

from __future__ import annotations

import math

import numpy as np

N = 48  #: detector pixels per side
PIXEL_UM = 5.0
BACKGROUND = 2.0  #: counts per pixel
FLUX = 2.0e5  #: counts of a fully caught, fully reflected, fully passed beam
PITCH = (1.0, 6.0)  #: mrad
BEND = (-1.0, 1.0)
APERTURE = 8.0  #: half-width of the aperture, pixels


def best_bend(pitch: float) -> float:
    return 0.35 * (pitch - 3.2)


def spot(pitch: float, bend: float) -> tuple[float, float, float]:
    """(flux reaching the aperture, spot centre x in px, spot sigma in px)."""
    caught = 1.0 - math.exp(-pitch / 1.6)
    reflect = 1.0 / (1.0 + math.exp((pitch - 4.3) / 0.22))
    centre = N / 2 + 9.0 * (pitch - 3.4)
    sigma = math.hypot(2.2 * (1 + 0.12 * (pitch - 3.0) ** 2), 14.0 * (bend - best_bend(pitch)))
    return FLUX * caught * reflect, centre, sigma


def _passed(centre: float, sigma: float, lo: float, hi: float) -> float:
    s = sigma * math.sqrt(2)
    return 0.5 * (math.erf((hi - centre) / s) - math.erf((lo - centre) / s))


def truth(params: dict) -> dict[str, float]:
    """Noise-free intensity (counts) and size (rms, µm) at a point."""
    flux, cx, sigma = spot(float(params["pitch"]), float(params["bend"]))
    lo, hi = N / 2 - APERTURE, N / 2 + APERTURE
    frac = _passed(cx, sigma, lo, hi) * _passed(N / 2, sigma, lo, hi)
    return {"intensity": flux * frac, "size": _clipped_rms(cx, sigma, lo, hi) * PIXEL_UM}


def _clipped_rms(cx: float, sigma: float, lo: float, hi: float) -> float:
    x = np.linspace(lo, hi, 400)
    wx = np.exp(-((x - cx) ** 2) / (2 * sigma ** 2))
    wy = np.exp(-((x - N / 2) ** 2) / (2 * sigma ** 2))
    if wx.sum() <= 0:
        return APERTURE
    vx = float(((x - (wx * x).sum() / wx.sum()) ** 2 * wx).sum() / wx.sum())
    vy = float(((x - N / 2) ** 2 * wy).sum() / wy.sum())
    return math.sqrt((vx + vy) / 2)


def image(pitch: float, bend: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """One detector frame (N x N counts); noise-free without ``rng``."""
    flux, cx, sigma = spot(pitch, bend)
    edges = np.arange(N + 1, dtype=float)
    s = sigma * math.sqrt(2)
    from scipy.special import erf

    px = 0.5 * np.diff(erf((edges - cx) / s))
    py = 0.5 * np.diff(erf((edges - N / 2) / s))
    lo, hi = N / 2 - APERTURE, N / 2 + APERTURE
    mask = (edges[:-1] >= lo) & (edges[1:] <= hi)
    frame = flux * np.outer(py * mask, px * mask) + BACKGROUND
    return frame if rng is None else rng.poisson(frame).astype(float)


def best_intensity() -> float:
    """The best achievable intensity (noise-free), by a dense grid and a local refinement."""
    from scipy.optimize import minimize

    ps, bs = np.linspace(*PITCH, 201), np.linspace(*BEND, 201)
    vals = [(truth({"pitch": p, "bend": b})["intensity"], p, b) for p in ps for b in bs]
    _, p0, b0 = max(vals)
    res = minimize(lambda v: -truth({"pitch": v[0], "bend": v[1]})["intensity"], [p0, b0], method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-6})
    return float(-res.fun)


def beam_spot(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    """Reduction: detector frames -> intensity (background-subtracted counts) and size (rms,
    µm, from the second moments of the background-subtracted frame), averaged over frames."""
    key = params.get("field", "camera_image")
    n = int(params.get("n", N))
    bg = float(params.get("background", BACKGROUND))
    pix = float(params.get("pixel_um", PIXEL_UM))
    out = {"intensity": [], "size": []}
    for ev in events:
        img = np.asarray(ev["data"][key], dtype=float).reshape(n, n) - bg
        w = np.clip(img, 0, None)
        total = float(img.sum())
        y, x = np.indices(w.shape) + 0.5
        wsum = w.sum()
        if wsum <= 0:
            rms = float(n) / 2
        else:
            mx, my = (w * x).sum() / wsum, (w * y).sum() / wsum
            rms = math.sqrt(float(((x - mx) ** 2 * w).sum() + ((y - my) ** 2 * w).sum()) / (2 * wsum))
        out["intensity"].append(total)
        out["size"].append(rms * pix)
    return {k: float(np.mean(v)) for k, v in out.items()}
