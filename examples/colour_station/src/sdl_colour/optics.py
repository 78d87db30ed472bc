"""Dyes, Beer-Lambert mixing, the spectrometer's reading, and the reduction."""

from __future__ import annotations

import numpy as np

WAVELENGTHS = np.linspace(400.0, 700.0, 151)  #: nm
DYES = {"red": (520.0, 35.0, 1.6), "yellow": (430.0, 30.0, 1.3), "blue": (620.0, 40.0, 1.8)}  #: centre, width, eps
WELL_UL = 200.0  #: every well is filled to this volume with water
MAX_UL = 60.0
NOISE = 0.004  #: transmission noise (1 sd)
TARGET = {"red": 34.0, "yellow": 22.0, "blue": 11.0}  #: the hidden recipe of the target colour


def transmission(volumes: dict[str, float]) -> np.ndarray:
    absorbance = np.zeros_like(WAVELENGTHS)
    for dye, (centre, width, eps) in DYES.items():
        conc = float(volumes.get(dye, 0.0)) / WELL_UL
        absorbance += eps * conc * np.exp(-((WAVELENGTHS - centre) ** 2) / (2 * width ** 2))
    return 10.0 ** (-absorbance * 4.0)


def target_spectrum() -> list[float]:
    return [float(v) for v in transmission(TARGET)]


def reading(volumes: dict[str, float], rng: np.random.Generator | None) -> np.ndarray:
    t = transmission(volumes)
    return t if rng is None else t + rng.normal(0.0, NOISE, t.shape)


def distance(volumes: dict[str, float]) -> float:
    """Noise-free RMS distance of a mix's transmission to the target's."""
    return float(np.sqrt(np.mean((transmission(volumes) - transmission(TARGET)) ** 2)))


def spectrum_match(start: dict, events: list[dict], params: dict) -> dict[str, float]:
    """Reduction: measured transmission -> RMS distance to ``params['target']`` (same grid)."""
    target = np.asarray(params["target"], dtype=float)
    key = params.get("field", "spectrometer_spectrum")
    d = [float(np.sqrt(np.mean((np.asarray(ev["data"][key], dtype=float) - target) ** 2))) for ev in events]
    return {params.get("objective", "colour_distance"): float(np.mean(d))}
