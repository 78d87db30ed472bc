r"""The hidden materials model behind the simulated lab: composition x anneal -> XRD pattern.

A thin film is made from ``n`` precursors (2..5) mixed in fractions ``x`` (on the
simplex, ``sum x = 1``) and annealed at temperature ``T``. What forms is a mixture of
four crystalline phases and an amorphous remainder; the simulated diffractometer sees
their diffraction pattern. The campaign's goal is to maximise the fraction of the
*target* phase alpha. Everything below is seeded: one ``seed`` gives one landscape.

Notation: ``t = (T - T_min) / (T_max - T_min)`` in [0, 1]; ``sig(z) = 1 / (1 + e^-z)``.

Phase fractions (they sum to 1)
-------------------------------
- Crystallinity rises with anneal temperature (nucleation and growth)::

      chi(t) = sig((t - t_c) / 0.05)                                   t_c ~ 0.20

- Decomposition above ``t_d``; a volatile precursor ``v`` lowers it (it evaporates)::

      D(x, t) = 1 - sig((t - t_d(x)) / 0.04),   t_d(x) = t_d0 - 0.12 x_v   t_d0 ~ 0.86

- The target phase alpha has two stability basins in (composition, temperature): the
  main one (height A1 = 0.95) and a metastable one at lower temperature (height
  A2 = 0.55..0.70 of A1), combined like independent formation channels::

      g_j(x, t) = exp(-|x - c_j|^2 / (2 s_j^2) - (t - t_j)^2 / (2 u_j^2))
      p(x, t)   = 1 - (1 - A1 g_1)(1 - A2 g_2)

- The rest of the crystalline fraction is the competing phases beta (favoured near
  composition ``c_beta``) and delta, and above ``t_d`` the decomposition product gamma::

      f_alpha = chi D p               f_beta  = chi D (1 - p) q(x)     q(x) = exp(-|x - c_beta|^2 / 0.125)
      f_gamma = chi (1 - D)           f_delta = chi D (1 - p)(1 - q(x))
      f_amorphous = 1 - chi

The figure of merit is therefore close to ``f_alpha``: one global optimum (main basin),
one clearly lower local optimum (metastable basin), about 0 elsewhere. The basin
widths are sized from the simplex volume so that the region where the FoM exceeds
75 % of its maximum fills about ``BASIN_TOP_FRACTION`` of the search space for every
number of precursors: random search with 30 points then typically reaches 60-85 % of
the optimum, while a model-based optimiser finds the (smooth, broad) basin.

The seed draws: basin centres ``c_1, c_2, c_beta`` and temperatures ``t_1, t_2``, the
volatile and the fluorescing precursor, ``t_c, t_d0``, the Vegard coefficients and the
scattering powers.

Diffraction pattern (count rate per 0.1 deg bin, at 400 mA ring current)
------------------------------------------------------------------------
- Each crystalline phase has a fixed list of reflections (2theta_0, relative
  intensity). Vegard's law: the lattice strain is linear in composition,
  ``eps_k(x) = sum_i e_ki x_i`` (``|e_ki| <= 0.012``), so ``d = d_0 (1 + eps)`` and by
  Bragg's law (Cu K-alpha, lambda = 1.5406 A) ``2theta = 2 asin(lambda / 2d)``.
- Peaks are Gaussians whose FWHM narrows with crystallinity (Scherrer: grains grow):
  ``FWHM = 0.20 + 0.80 (1 - chi)`` deg. Integrated intensity of phase k is
  ``S(x) f_k`` with ``S(x) = S_0 sum_i s_i x_i`` (``S_0`` = 20000 counts/s x deg,
  ``s_i`` in 0.8..1.2: heavier
  precursors scatter more).
- The amorphous fraction gives a broad hump (centre 25 deg, sigma 4 deg) of the same
  integrated intensity per unit fraction.
- Background: air scatter falling linearly from 40 to 20 counts/s/bin over the pattern,
  plus flat fluorescence from one precursor (15 x_f counts/s/bin). The detector adds
  dark counts; all of these are straight lines that the reduction removes exactly.

The reduction (:mod:`sdl.xrd`) is an RIR phase quantification whose peak windows and
calibration scales come from :meth:`MaterialsModel.reduction_params`; the noise-free
figure of merit is that same reduction applied to :meth:`expected_spectrum`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize

from sdl.errors import InvalidInput
from sdl.space import COMPOSITION_TOLERANCE, Composition, RangeParameter, SearchSpace
from sdl.xrd import FOM_NAME, component_weights, target_phase_fom, target_phase_fom_batch

#: Cu K-alpha wavelength (Angstrom): Bragg's law for the Vegard shifts.
WAVELENGTH = 1.5406
#: Search-space fraction where the FoM exceeds ``TOP_LEVEL`` x its maximum (sizes the basin).
BASIN_TOP_FRACTION = 0.02
TOP_LEVEL = 0.75
#: Width of the main basin along temperature (normalised units; 0.18 = 90 C on 150..650 C).
BASIN_WIDTH_T = 0.18
#: Distance between the two basin centres, in units of the main basin's widths.
MIN_SEPARATION = 3.0
#: Largest Vegard strain per precursor.
MAX_STRAIN = 0.012
#: Integrated diffracted intensity of a fully crystalline film, counts/s x deg at 400 mA.
SCATTERING_POWER = 20000.0
FWHM_MIN, FWHM_GROWTH = 0.20, 0.80
HUMP_CENTRE, HUMP_SIGMA = 25.0, 4.0
#: Reduction geometry (deg): baseline edge width, peak-free hump window, flank windows.
EDGE = 0.8
HUMP_WINDOW = (22.5, 28.5)
FLANKS = ((10.0, 12.5), (67.0, 70.0))
#: Peak windows must hold a peak out to this many sigma at the broadest width.
WINDOW_SIGMAS = 2.5

TARGET = "alpha"
#: Reflections (2theta at zero strain in deg, relative intensity); the first is the
#: strongest and the one the reduction integrates.
PHASES: dict[str, tuple[tuple[float, float], ...]] = {
    "alpha": ((16.0, 1.00), (41.0, 0.45), (52.5, 0.30), (60.0, 0.15)),  # target
    "beta": ((20.5, 1.00), (44.8, 0.50), (56.0, 0.25), (64.0, 0.15)),  # competing, composition-driven
    "delta": ((31.0, 1.00), (48.5, 0.40), (58.0, 0.25)),  # competing, elsewhere
    "gamma": ((36.0, 1.00), (46.6, 0.55), (54.3, 0.35), (62.0, 0.25)),  # decomposition product
}
COMPONENTS = (*PHASES, "amorphous")


def _sig(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow


def _bragg_shift(two_theta0: float | np.ndarray, strain: np.ndarray) -> np.ndarray:
    """2theta of a reflection whose d-spacing is stretched by ``strain`` (Bragg's law)."""
    d0 = WAVELENGTH / (2.0 * np.sin(np.radians(np.asarray(two_theta0) / 2.0)))
    return 2.0 * np.degrees(np.arcsin(np.clip(WAVELENGTH / (2.0 * d0 * (1.0 + strain)), -1.0, 1.0)))


def _max_shift(two_theta0: float) -> float:
    lo, hi = _bragg_shift(two_theta0, np.array([MAX_STRAIN, -MAX_STRAIN]))
    return float(max(two_theta0 - lo, hi - two_theta0))


def _window_half_width(two_theta0: float) -> float:
    sigma_max = (FWHM_MIN + FWHM_GROWTH) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return _max_shift(two_theta0) + WINDOW_SIGMAS * sigma_max


def _peak_extent(two_theta0: float) -> tuple[float, float]:
    """Where a reflection can put counts: any Vegard shift, broadest width, +-2.5 sigma."""
    hw = _window_half_width(two_theta0)
    return two_theta0 - hw, two_theta0 + hw


def layout_problems() -> list[str]:
    """Reduction regions that a peak of another phase could reach (the layout needs none).

    Each phase's integration window (with its baseline edges), the amorphous window and
    the flanks must stay clear of every other reflection, whatever the composition.
    """
    regions: list[tuple[str, float, float, tuple[str, int] | None]] = []
    for name, peaks in PHASES.items():
        lo, hi = _peak_extent(peaks[0][0])
        regions.append((f"{name} window", lo - EDGE, hi + EDGE, (name, 0)))
    regions.append(("amorphous window", *HUMP_WINDOW, None))
    regions.extend((f"flank {i}", lo, hi, None) for i, (lo, hi) in enumerate(FLANKS))
    problems = []
    for label, lo, hi, own in regions:
        for name, peaks in PHASES.items():
            for j, (pos0, _) in enumerate(peaks):
                p_lo, p_hi = _peak_extent(pos0)
                if (name, j) != own and p_lo < hi and p_hi > lo:
                    problems.append(f"{label} [{lo:.2f}, {hi:.2f}] meets {name} peak at {pos0} [{p_lo:.2f}, {p_hi:.2f}]")
    return problems


def _simplex_volume(n: int) -> float:
    """(n-1)-volume of the probability simplex in R^n."""
    return math.sqrt(n) / math.factorial(n - 1)


def _ball_volume(dim: int) -> float:
    return math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)


def basin_width(n: int, top_fraction: float = BASIN_TOP_FRACTION, width_t: float = BASIN_WIDTH_T) -> float:
    """Composition width of the main basin giving the same top-region volume for any ``n``.

    The set where ``g_1 >= TOP_LEVEL`` is an ellipsoid with semi-axes ``r s`` (n-1
    composition directions) and ``r u`` (temperature), ``r^2 = 2 ln(1/TOP_LEVEL)``;
    its volume over the simplex volume is set to ``top_fraction``.
    """
    r = math.sqrt(2.0 * math.log(1.0 / TOP_LEVEL))
    d = n - 1
    ellipsoid_unit = _ball_volume(d + 1) * r ** (d + 1) * width_t
    return (top_fraction * _simplex_volume(n) / ellipsoid_unit) ** (1.0 / d)


@dataclass(frozen=True)
class Landscape:
    """The seeded parameters of the phase model (see the module docstring)."""

    centres: np.ndarray  # (2, n): main and metastable alpha basins
    temps: np.ndarray  # (2,): their normalised temperatures
    widths_x: np.ndarray  # (2,)
    widths_t: np.ndarray  # (2,)
    heights: np.ndarray  # (2,)
    centre_beta: np.ndarray  # (n,)
    volatile: int
    fluorescent: int
    t_c: float
    t_d0: float
    strain: np.ndarray  # (phases, n) Vegard coefficients
    scattering: np.ndarray  # (n,)


def _draw_landscape(rng: np.random.Generator, n: int) -> Landscape:
    """Draw a landscape whose two basins are interior and well separated."""
    s1 = basin_width(n)
    s2 = 0.8 * s1
    u1, u2 = BASIN_WIDTH_T, 0.7 * BASIN_WIDTH_T
    while True:
        c1 = rng.dirichlet(np.full(n, 4.0))
        if c1.min() >= 0.5 / n:
            break
    t1 = rng.uniform(0.50, 0.62)
    # The metastable basin: the most separated of a few hundred candidates (first that
    # is separated enough), so the draw always terminates and stays reproducible.
    cands = rng.dirichlet(np.full(n, 1.5), size=400)
    t2s = rng.uniform(0.26, 0.38, size=400)
    separation = np.hypot(np.linalg.norm(cands - c1, axis=1) / s1, (t2s - t1) / u1)
    good = np.flatnonzero(separation >= MIN_SEPARATION)
    i = int(good[0]) if good.size else int(np.argmax(separation))
    c2, t2 = cands[i], float(t2s[i])
    return Landscape(
        centres=np.stack([c1, c2]),
        temps=np.array([t1, t2]),
        widths_x=np.array([s1, s2]),
        widths_t=np.array([u1, u2]),
        heights=np.array([0.95, 0.95 * rng.uniform(0.55, 0.70)]),
        centre_beta=rng.dirichlet(np.full(n, 0.7)),
        volatile=int(rng.integers(n)),
        fluorescent=int(rng.integers(n)),
        t_c=float(rng.uniform(0.17, 0.23)),
        t_d0=float(rng.uniform(0.84, 0.88)),
        strain=rng.uniform(-MAX_STRAIN, MAX_STRAIN, size=(len(PHASES), n)),
        scattering=rng.uniform(0.8, 1.2, size=n),
    )


class MaterialsModel:
    """Seeded composition x temperature -> phases -> XRD pattern model (see module docstring)."""

    def __init__(
        self,
        seed: int = 0,
        precursors: Sequence[str] = ("A", "B", "C"),
        temperature_range: tuple[float, float] = (150.0, 650.0),
    ):
        self.precursors = _check_precursors(precursors)
        lo, hi = (float(v) for v in temperature_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidInput("temperature_range", "must be two finite numbers, lower < upper", temperature_range)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidInput("seed", "must be a non-negative integer", seed)
        self.seed = int(seed)
        self.temperature_range = (lo, hi)
        self.two_theta = np.round(np.linspace(10.0, 70.0, 601), 6)
        self.landscape = _draw_landscape(np.random.default_rng([self.seed, len(self.precursors)]), self.n)
        self._params = self._calibrate()
        self._optimum: dict[str, Any] | None = None

    @property
    def n(self) -> int:
        return len(self.precursors)

    # ------------------------------------------------------------ validation
    def check_point(self, composition: Sequence[float], temperature: float) -> tuple[np.ndarray, float]:
        """Checked (composition array, temperature); :class:`InvalidInput` names the bad field."""
        try:
            x = np.asarray(composition, dtype=float)
        except (TypeError, ValueError):
            raise InvalidInput("composition", f"must be {self.n} numbers, fractions of {self.precursors}", composition)
        if x.shape != (self.n,):
            raise InvalidInput(
                "composition", f"needs {self.n} fractions, one per precursor {self.precursors}", composition
            )
        if not np.all(np.isfinite(x)) or np.any(x < -COMPOSITION_TOLERANCE):
            raise InvalidInput("composition", "fractions must be finite and non-negative (0..1)", x.tolist())
        if abs(x.sum() - 1.0) > COMPOSITION_TOLERANCE:
            raise InvalidInput("composition", f"fractions must sum to 1 (got {x.sum():.6g})", x.tolist())
        lo, hi = self.temperature_range
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)):
            raise InvalidInput("temperature", f"must be a number in [{lo:g}, {hi:g}] °C", temperature)
        if not (math.isfinite(temperature) and lo <= temperature <= hi):
            raise InvalidInput("temperature", f"out of range: allowed [{lo:g}, {hi:g}] °C", temperature)
        return np.clip(x, 0.0, None), float(temperature)

    def point(self, params: dict[str, Any]) -> tuple[np.ndarray, float]:
        """(composition, temperature) from a search-space point ``{precursor: x, 'temperature': T}``."""
        missing = [k for k in (*self.precursors, "temperature") if k not in params]
        if missing:
            raise InvalidInput(missing[0], f"missing; needs {[*self.precursors, 'temperature']}")
        return self.check_point([params[p] for p in self.precursors], params["temperature"])

    # ------------------------------------------------------------ physics (vectorised)
    def _t(self, temperature: np.ndarray) -> np.ndarray:
        lo, hi = self.temperature_range
        return (np.asarray(temperature, dtype=float) - lo) / (hi - lo)

    def _fractions(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Phase fractions for compositions x (N, n) at normalised temperatures t (N,)."""
        ls = self.landscape
        chi = _sig((t - ls.t_c) / 0.05)
        decomp = 1.0 - _sig((t - (ls.t_d0 - 0.12 * x[:, ls.volatile])) / 0.04)
        p = np.ones_like(t)
        for c, tc, s, u, a in zip(ls.centres, ls.temps, ls.widths_x, ls.widths_t, ls.heights):
            g = np.exp(-np.sum((x - c) ** 2, axis=1) / (2 * s * s) - (t - tc) ** 2 / (2 * u * u))
            p *= 1.0 - a * g
        p = 1.0 - p
        q = np.exp(-np.sum((x - ls.centre_beta) ** 2, axis=1) / 0.125)
        return {
            "alpha": chi * decomp * p,
            "beta": chi * decomp * (1 - p) * q,
            "delta": chi * decomp * (1 - p) * (1 - q),
            "gamma": chi * (1 - decomp),
            "amorphous": 1 - chi,
            "_crystallinity": chi,
        }

    def _rates(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Noise-free count rates (N, m) for compositions x (N, n) and normalised t (N,)."""
        frac = self._fractions(x, t)
        tt = self.two_theta
        step = np.gradient(tt)
        fwhm = FWHM_MIN + FWHM_GROWTH * (1.0 - frac["_crystallinity"])
        sigma = (fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))))[:, None]
        power = SCATTERING_POWER * (x @ self.landscape.scattering)[:, None]
        signal = np.zeros((len(t), tt.size))
        for k, (name, peaks) in enumerate(PHASES.items()):
            strain = x @ self.landscape.strain[k]
            total = sum(rel for _, rel in peaks)
            for pos0, rel in peaks:
                mu = _bragg_shift(pos0, strain)[:, None]
                area = (frac[name] * rel / total)[:, None]
                signal += area * np.exp(-0.5 * ((tt - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        hump = np.exp(-0.5 * ((tt - HUMP_CENTRE) / HUMP_SIGMA) ** 2) / (HUMP_SIGMA * math.sqrt(2 * math.pi))
        signal += frac["amorphous"][:, None] * hump
        fluorescence = 15.0 * x[:, self.landscape.fluorescent][:, None]
        return self.background_spectrum() + fluorescence + power * signal * step

    def background_spectrum(self) -> np.ndarray:
        """Count rate with the shutter open and nothing mounted: air scatter only."""
        return 40.0 - 20.0 * (self.two_theta - self.two_theta[0]) / (self.two_theta[-1] - self.two_theta[0])

    # ------------------------------------------------------------ public queries
    def phase_fractions(self, composition: Sequence[float], temperature: float) -> dict[str, float]:
        """True phase fractions (alpha, beta, delta, gamma, amorphous; they sum to 1)."""
        x, temp = self.check_point(composition, temperature)
        frac = self._fractions(x[None, :], self._t(np.array([temp])))
        return {k: float(v[0]) for k, v in frac.items() if not k.startswith("_")}

    def expected_spectrum(self, composition: Sequence[float], temperature: float) -> np.ndarray:
        """Noise-free count rate (counts/s per bin at 400 mA) on :attr:`two_theta`."""
        x, temp = self.check_point(composition, temperature)
        return self._rates(x[None, :], self._t(np.array([temp])))[0]

    def figure_of_merit(self, composition: Sequence[float], temperature: float) -> float:
        """The noise-free FoM: :func:`sdl.xrd.target_phase_fom` of the expected spectrum."""
        return target_phase_fom(self.two_theta, self.expected_spectrum(composition, temperature), self._params)

    def figure_of_merit_batch(self, compositions: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
        """Noise-free FoM for many points at once (no validation: for benchmarks and search)."""
        x = np.atleast_2d(np.asarray(compositions, dtype=float))
        rates = self._rates(x, self._t(np.asarray(temperatures, dtype=float)))
        return target_phase_fom_batch(self.two_theta, rates, self._params)

    def reduction_params(self) -> dict[str, Any]:
        """JSON-able parameters of :func:`sdl.xrd.target_phase_fom` (for the start document)."""
        return {
            **self._params,
            "components": [dict(c) for c in self._params["components"]],
        }

    def search_space(self) -> SearchSpace:
        lo, hi = self.temperature_range
        params = [RangeParameter(name=p, lower=0.0, upper=1.0, units="fraction") for p in self.precursors]
        params.append(RangeParameter(name="temperature", lower=lo, upper=hi, units="°C"))
        return SearchSpace(parameters=params, compositions=[Composition(components=list(self.precursors), total=1.0)])

    def random_points(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points uniform over the search space: compositions (n, k), temperatures (n,)."""
        lo, hi = self.temperature_range
        return rng.dirichlet(np.ones(self.n), size=n), rng.uniform(lo, hi, size=n)

    def optimum(self) -> dict[str, Any]:
        """The global maximum of the noise-free FoM: composition, temperature, fom (cached)."""
        if self._optimum is None:
            self._optimum = self._find_optimum()
        return {**self._optimum, "composition": list(self._optimum["composition"])}

    # ------------------------------------------------------------ internals
    def _calibrate(self) -> dict[str, Any]:
        """Peak windows from the Vegard/width bounds, RIR scales from pure reference patterns."""
        tt = self.two_theta
        step = np.gradient(tt)
        sigma = FWHM_MIN / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        components: list[dict[str, Any]] = []
        for name, peaks in PHASES.items():
            pos0 = peaks[0][0]
            hw = _window_half_width(pos0)
            total = sum(rel for _, rel in peaks)
            ref = sum(
                rel / total * np.exp(-0.5 * ((tt - p) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)) for p, rel in peaks
            ) * step
            components.append(
                {"name": name, "kind": "peak", "window": [round(pos0 - hw, 4), round(pos0 + hw, 4)], "edge": EDGE}
            )
            components[-1]["scale"] = 1.0 / _raw_amount(tt, ref, components[-1])
        hump = np.exp(-0.5 * ((tt - HUMP_CENTRE) / HUMP_SIGMA) ** 2) / (HUMP_SIGMA * math.sqrt(2 * math.pi)) * step
        amorphous = {"name": "amorphous", "kind": "hump", "window": list(HUMP_WINDOW), "flanks": [list(f) for f in FLANKS]}
        amorphous["scale"] = 1.0 / _raw_amount(tt, hump, amorphous)
        components.append(amorphous)
        return {
            "technique": "xrd",
            "method": "rir",
            "fom": FOM_NAME,
            "target": TARGET,
            "wavelength": WAVELENGTH,
            "min_significance": 3.0,
            "components": components,
        }

    def _find_optimum(self) -> dict[str, Any]:
        """Dense random sampling, then SLSQP from the best few distinct starts."""
        rng = np.random.default_rng([self.seed, self.n, 7919])
        x, temp = self.random_points(3000, rng)
        lo, hi = self.temperature_range
        x = np.vstack([x, self.landscape.centres])
        temp = np.concatenate([temp, lo + self.landscape.temps * (hi - lo)])
        fom = self.figure_of_merit_batch(x, temp)
        best: tuple[float, np.ndarray, float] | None = None
        for i in np.argsort(-fom)[:6]:
            xi, ti, fi = self._polish(x[i], temp[i])
            if best is None or fi > best[2]:
                best = (fi, xi, ti)
        assert best is not None
        fi, xi, ti = best
        return {"composition": [float(v) for v in xi], "temperature": float(ti), "fom": float(fi)}

    def _polish(self, x0: np.ndarray, t0: float) -> tuple[np.ndarray, float, float]:
        """Local maximisation on the simplex x temperature box (SLSQP)."""
        lo, hi = self.temperature_range
        n = self.n

        def split(z: np.ndarray) -> tuple[np.ndarray, float]:
            x = np.clip(z[:n], 0.0, None)
            return x / x.sum(), lo + float(np.clip(z[n], 0.0, 1.0)) * (hi - lo)

        def neg_fom(z: np.ndarray) -> float:
            x, t = split(z)
            return -float(self.figure_of_merit_batch(x[None, :], np.array([t]))[0])

        z0 = np.append(x0, (t0 - lo) / (hi - lo))
        res = minimize(
            neg_fom,
            z0,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * (n + 1),
            constraints=[{"type": "eq", "fun": lambda z: np.sum(z[:n]) - 1.0}],
            options={"ftol": 1e-12, "maxiter": 200},
        )
        z = res.x if -res.fun >= -neg_fom(z0) else z0
        x, t = split(z)
        return x, t, -neg_fom(z)


def _raw_amount(two_theta: np.ndarray, pattern: np.ndarray, comp: dict[str, Any]) -> float:
    """Unscaled reduction of ``pattern`` for one component (for calibration)."""
    params = {"target": comp["name"], "components": [{**comp, "scale": 1.0}]}
    return float(component_weights(two_theta, params)[comp["name"]] @ pattern)


def _check_precursors(precursors: Sequence[str]) -> list[str]:
    names = list(precursors) if not isinstance(precursors, str) else [precursors]
    if not 2 <= len(names) <= 5:
        raise InvalidInput("precursors", "need 2 to 5 precursor names", names)
    if any(not isinstance(p, str) or not p.strip() for p in names):
        raise InvalidInput("precursors", "names must be non-empty strings", names)
    if len(set(names)) != len(names) or "temperature" in names:
        raise InvalidInput("precursors", "names must be unique and not 'temperature'", names)
    return names
