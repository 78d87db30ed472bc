"""The hidden materials model (sdl.sim_devices.materials) and the XRD reduction (sdl.xrd)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from sdl.errors import InvalidInput
from sdl.sim_devices.materials import (
    BASIN_TOP_FRACTION,
    PHASES,
    TOP_LEVEL,
    WAVELENGTH,
    MaterialsModel,
    layout_problems,
)
from sdl.xrd import FOM_NAME, phase_amounts, target_phase_fom, target_phase_fom_batch


@pytest.fixture(scope="module")
def model() -> MaterialsModel:
    return MaterialsModel(seed=0)


@pytest.fixture(scope="module")
def optimum(model) -> dict:
    return model.optimum()


def basin_point(model: MaterialsModel, j: int) -> tuple[np.ndarray, float]:
    """Centre of alpha basin ``j`` (0 = main, 1 = metastable) in lab units."""
    lo, hi = model.temperature_range
    ls = model.landscape
    return ls.centres[j].copy(), float(lo + ls.temps[j] * (hi - lo))


def bragg(two_theta0: float, strain: float) -> float:
    """2theta of a reflection whose d-spacing is stretched by ``strain`` (Cu K-alpha)."""
    d0 = WAVELENGTH / (2 * math.sin(math.radians(two_theta0 / 2)))
    return 2 * math.degrees(math.asin(WAVELENGTH / (2 * d0 * (1 + strain))))


# ---------------------------------------------------------------- seeding
def test_same_seed_gives_same_landscape():
    a, b = MaterialsModel(seed=7), MaterialsModel(seed=7)
    np.testing.assert_array_equal(a.landscape.centres, b.landscape.centres)
    np.testing.assert_array_equal(a.landscape.strain, b.landscape.strain)
    point = ([0.2, 0.5, 0.3], 420.0)
    np.testing.assert_array_equal(a.expected_spectrum(*point), b.expected_spectrum(*point))
    assert a.figure_of_merit(*point) == b.figure_of_merit(*point)
    assert a.reduction_params() == b.reduction_params()


def test_different_seed_gives_different_landscape():
    a, b = MaterialsModel(seed=7), MaterialsModel(seed=8)
    assert not np.allclose(a.landscape.centres, b.landscape.centres)
    assert not np.allclose(a.landscape.strain, b.landscape.strain)
    # The FoM surfaces differ: compare on a common set of points.
    rng = np.random.default_rng(1)
    x, t = a.random_points(50, rng)
    assert np.max(np.abs(a.figure_of_merit_batch(x, t) - b.figure_of_merit_batch(x, t))) > 0.1


def test_bad_seed_is_refused():
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidInput) as e:
            MaterialsModel(seed=bad)
        assert e.value.field == "seed"


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "composition, needle",
    [
        ([0.5, 0.3, 0.1], "sum to 1"),
        ([0.5, 0.5, 0.5], "sum to 1"),
        ([0.5, 0.5], "needs 3 fractions"),
        ([0.25, 0.25, 0.25, 0.25], "needs 3 fractions"),
        ([1.2, -0.2, 0.0], "non-negative"),
        ([float("nan"), 0.5, 0.5], "finite"),
        (["a", "b", "c"], "3 numbers"),
    ],
)
def test_composition_is_checked_and_the_error_names_the_field(model, composition, needle):
    for query in (model.expected_spectrum, model.figure_of_merit, model.phase_fractions, model.check_point):
        with pytest.raises(InvalidInput) as e:
            query(composition, 400.0)
        assert e.value.field == "composition"
        assert needle in e.value.message
        assert str(e.value).startswith("composition:")


def test_composition_within_tolerance_is_accepted(model):
    x, t = model.check_point([0.2, 0.3, 0.5 + 1e-9], 400)
    assert x.shape == (3,) and t == 400.0


@pytest.mark.parametrize("temperature", [149.9, 650.1, -10.0, 1e6, float("nan"), float("inf")])
def test_temperature_out_of_range_is_refused_with_the_range(model, temperature):
    with pytest.raises(InvalidInput) as e:
        model.figure_of_merit([0.2, 0.3, 0.5], temperature)
    assert e.value.field == "temperature"
    assert "150" in e.value.message and "650" in e.value.message


@pytest.mark.parametrize("temperature", [None, "400", True, [400.0]])
def test_temperature_must_be_a_number(model, temperature):
    with pytest.raises(InvalidInput) as e:
        model.check_point([0.2, 0.3, 0.5], temperature)
    assert e.value.field == "temperature"


def test_temperature_range_edges_are_allowed(model):
    lo, hi = model.temperature_range
    assert (lo, hi) == (150.0, 650.0)
    for t in (lo, hi):
        assert model.expected_spectrum([0.2, 0.3, 0.5], t).shape == model.two_theta.shape


def test_point_from_search_space_params(model):
    x, t = model.point({"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 300})
    np.testing.assert_allclose(x, [0.2, 0.3, 0.5])
    assert t == 300.0
    with pytest.raises(InvalidInput) as e:
        model.point({"A": 0.2, "B": 0.8, "temperature": 300})
    assert e.value.field == "C"


@pytest.mark.parametrize(
    "precursors", [("A",), ("A", "B", "C", "D", "E", "F"), ("A", "A"), ("A", "temperature"), ("A", "")]
)
def test_bad_precursor_lists_are_refused(precursors):
    with pytest.raises(InvalidInput) as e:
        MaterialsModel(seed=0, precursors=precursors)
    assert e.value.field == "precursors"


def test_bad_temperature_range_is_refused():
    with pytest.raises(InvalidInput) as e:
        MaterialsModel(seed=0, temperature_range=(600.0, 200.0))
    assert e.value.field == "temperature_range"


# ---------------------------------------------------------------- physics
def test_phase_fractions_sum_to_one_and_follow_temperature(model):
    x = [0.3, 0.3, 0.4]
    for t in (150.0, 300.0, 450.0, 650.0):
        frac = model.phase_fractions(x, t)
        assert set(frac) == {*PHASES, "amorphous"}
        assert sum(frac.values()) == pytest.approx(1.0, abs=1e-12)
        assert all(v >= 0 for v in frac.values())
    # Too cold to crystallise: amorphous. Too hot: decomposed to gamma.
    assert model.phase_fractions(x, 150.0)["amorphous"] > 0.9
    assert model.phase_fractions(x, 650.0)["gamma"] > 0.9
    assert model.figure_of_merit(x, 150.0) < 0.05
    assert model.figure_of_merit(x, 650.0) < 0.05


def test_peaks_shift_with_composition_by_vegards_law(model):
    """Each phase's strongest peak sits where Bragg's law puts the strained lattice."""
    tt = model.two_theta
    params = model.reduction_params()
    windows = {c["name"]: c["window"] for c in params["components"] if c["kind"] == "peak"}
    rng = np.random.default_rng(3)
    xs = rng.dirichlet(np.ones(model.n), size=40)
    checked: dict[str, list[float]] = {name: [] for name in PHASES}
    for x in xs:
        temperature = 440.0  # crystalline (sharp peaks) and below decomposition
        frac = model.phase_fractions(x, temperature)
        rate = model.expected_spectrum(x, temperature)
        for k, (name, peaks) in enumerate(PHASES.items()):
            if frac[name] < 0.2:
                continue
            lo, hi = windows[name]
            win = (tt >= lo) & (tt <= hi)
            # Straight baseline through the window edges, then the centroid around the maximum.
            base = np.interp(tt, [lo, hi], [rate[win][0], rate[win][-1]])
            net = np.where(win, rate - base, 0.0)
            i = int(np.argmax(net))
            near = np.abs(tt - tt[i]) <= 0.5
            centroid = float(np.sum(tt[near] * net[near]) / np.sum(net[near]))
            strain = float(x @ model.landscape.strain[k])
            predicted = bragg(peaks[0][0], strain)
            assert centroid == pytest.approx(predicted, abs=0.01), (name, x)
            checked[name].append(centroid)
    # The peaks really move: across compositions one phase spans more than 0.05 deg.
    spans = [max(v) - min(v) for v in checked.values() if len(v) >= 3]
    assert spans and max(spans) > 0.05


def test_strain_is_bounded_and_linear_in_composition(model):
    strain = model.landscape.strain
    assert strain.shape == (len(PHASES), model.n)
    assert np.all(np.abs(strain) <= 0.012)


def test_reduction_windows_are_clear_of_other_peaks():
    assert layout_problems() == []


def test_noise_free_reduction_of_expected_spectrum_equals_fom(model, optimum):
    params = model.reduction_params()
    rng = np.random.default_rng(5)
    xs, ts = model.random_points(20, rng)
    points = [(optimum["composition"], optimum["temperature"]), *zip(xs, ts)]
    for x, t in points:
        spectrum = model.expected_spectrum(x, t)
        assert target_phase_fom(model.two_theta, spectrum, params) == model.figure_of_merit(x, t)
    # and the batch form agrees with the single-point one
    batch = model.figure_of_merit_batch(xs, ts)
    np.testing.assert_allclose(batch, [model.figure_of_merit(x, t) for x, t in zip(xs, ts)], rtol=1e-12, atol=1e-12)


def test_fom_is_the_target_phase_fraction(model, optimum):
    """The RIR reduction recovers the true alpha fraction from the noise-free pattern."""
    rng = np.random.default_rng(6)
    xs, ts = model.random_points(15, rng)
    points = [(optimum["composition"], optimum["temperature"]), basin_point(model, 1), *zip(xs, ts)]
    for x, t in points:
        assert model.figure_of_merit(x, t) == pytest.approx(model.phase_fractions(x, t)["alpha"], abs=0.02)


def test_fom_is_invariant_to_exposure_flux_and_straight_backgrounds(model, optimum):
    x, t = optimum["composition"], optimum["temperature"]
    params = model.reduction_params()
    rate = model.expected_spectrum(x, t)
    fom = model.figure_of_merit(x, t)
    tt = model.two_theta
    for scale in (0.3, 2.0, 50.0):
        assert target_phase_fom(tt, rate * scale, params) == pytest.approx(fom, rel=1e-9)
    # dark counts (a constant) and any sloping line are removed exactly
    assert target_phase_fom(tt, rate + 7.0, params) == pytest.approx(fom, rel=1e-9)
    assert target_phase_fom(tt, rate + 3.0 + 0.5 * tt, params) == pytest.approx(fom, rel=1e-9)
    amounts = phase_amounts(tt, model.background_spectrum() + 2.0, params)
    assert all(abs(v) < 1e-9 for v in amounts.values())


def test_no_signal_gives_zero_fom(model):
    params = model.reduction_params()
    tt = model.two_theta
    rng = np.random.default_rng(0)
    assert target_phase_fom(tt, np.zeros_like(tt), params) == 0.0
    dark = rng.poisson(2.0, size=tt.shape).astype(float)
    assert target_phase_fom(tt, dark, params) == 0.0
    air = rng.poisson(model.background_spectrum() * 5.0).astype(float)
    assert target_phase_fom(tt, air, params) == 0.0


def test_counting_noise_falls_with_exposure(model, optimum):
    x, t = optimum["composition"], optimum["temperature"]
    params = model.reduction_params()
    rate = model.expected_spectrum(x, t)
    rng = np.random.default_rng(11)

    def foms(exposure: float) -> np.ndarray:
        counts = rng.poisson(np.tile(rate * exposure, (60, 1)) + 2.0 * exposure).astype(float)
        return target_phase_fom_batch(model.two_theta, counts, params)

    short, long = foms(0.1), foms(10.0)
    rel_short, rel_long = short.std() / short.mean(), long.std() / long.mean()
    assert rel_long < rel_short / 4  # ~ 1/sqrt(100) = 1/10 in theory
    assert rel_short > 0.005  # the short exposure really is noisy
    truth = model.figure_of_merit(x, t)
    assert long.mean() == pytest.approx(truth, abs=0.01)


def test_reduction_params_are_jsonable_and_a_copy(model):
    params = model.reduction_params()
    assert params["target"] == "alpha" and params["fom"] == FOM_NAME
    assert {c["name"] for c in params["components"]} == {*PHASES, "amorphous"}
    assert json.loads(json.dumps(params)) == params
    params["components"][0]["scale"] = -1.0
    params["target"] = "beta"
    fresh = model.reduction_params()
    assert fresh["target"] == "alpha" and fresh["components"][0]["scale"] > 0


def test_reduction_rejects_bad_shapes_and_kinds(model):
    params = model.reduction_params()
    with pytest.raises(ValueError, match="shape"):
        target_phase_fom(model.two_theta, np.zeros(10), params)
    bad = {**params, "components": [{**params["components"][0], "kind": "blob"}]}
    with pytest.raises(ValueError, match="unknown component kind"):
        target_phase_fom(model.two_theta, np.zeros_like(model.two_theta), bad)
    with pytest.raises(ValueError, match="target"):
        target_phase_fom(model.two_theta, np.zeros_like(model.two_theta), {**params, "target": "zeta"})


# ---------------------------------------------------------------- the optimisation landscape
def test_optimum_is_a_valid_high_point(model, optimum):
    x = np.asarray(optimum["composition"])
    lo, hi = model.temperature_range
    assert x.shape == (3,) and np.all(x >= 0) and x.sum() == pytest.approx(1.0, abs=1e-9)
    assert lo <= optimum["temperature"] <= hi
    assert 0.9 < optimum["fom"] <= 1.0
    assert model.figure_of_merit(x, optimum["temperature"]) == pytest.approx(optimum["fom"], abs=1e-9)
    # It sits in the main basin, and no random point beats it.
    c1, t1 = basin_point(model, 0)
    assert np.linalg.norm(x - c1) < 0.05 and abs(optimum["temperature"] - t1) < 25
    xs, ts = model.random_points(600, np.random.default_rng(2))
    assert model.figure_of_merit_batch(xs, ts).max() <= optimum["fom"] + 1e-9


def test_optimum_returns_a_copy(model, optimum):
    got = model.optimum()
    got["composition"][0] = 99.0
    got["fom"] = -1.0
    assert model.optimum() == optimum


def test_global_optimum_beats_a_distinct_local_optimum(model, optimum):
    """The metastable basin is a trap: a local search started there stays well below."""
    c2, t2 = basin_point(model, 1)
    f2 = model.figure_of_merit(c2, t2)
    assert 0.3 < f2 < optimum["fom"] - 0.2
    lo, hi = model.temperature_range
    n = model.n

    def neg(z: np.ndarray) -> float:
        x = np.clip(z[:n], 0, None)
        x = x / x.sum()
        return -float(model.figure_of_merit_batch(x[None, :], np.array([lo + z[n] * (hi - lo)]))[0])

    z0 = np.append(c2, (t2 - lo) / (hi - lo))
    res = minimize(
        neg, z0, method="SLSQP", bounds=[(0, 1)] * (n + 1),
        constraints=[{"type": "eq", "fun": lambda z: z[:n].sum() - 1}], options={"maxiter": 200},
    )
    local_fom = -res.fun
    assert local_fom >= f2 - 1e-6  # it did climb ...
    assert local_fom < optimum["fom"] - 0.2  # ... but only to the local top
    x_local = np.clip(res.x[:n], 0, None) / np.clip(res.x[:n], 0, None).sum()
    assert np.linalg.norm(x_local - np.asarray(optimum["composition"])) > 0.2


def test_top_region_is_a_small_fraction_of_the_space(model, optimum):
    xs, ts = model.random_points(1200, np.random.default_rng(9))
    top = np.mean(model.figure_of_merit_batch(xs, ts) > TOP_LEVEL * optimum["fom"])
    assert BASIN_TOP_FRACTION / 4 < top < BASIN_TOP_FRACTION * 3


# ---------------------------------------------------------------- 2..5 precursors
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_two_to_five_precursors(n):
    names = [f"P{i}" for i in range(n)]
    m = MaterialsModel(seed=4, precursors=names)
    assert m.n == n and m.precursors == names
    space = m.search_space()
    assert [p.name for p in space.parameters] == [*names, "temperature"]
    assert space.compositions[0].components == names and space.compositions[0].total == 1.0
    c1, t1 = basin_point(m, 0)
    c2, t2 = basin_point(m, 1)
    assert c1.shape == (n,) and c1.sum() == pytest.approx(1.0)
    spectrum = m.expected_spectrum(c1, t1)
    assert spectrum.shape == m.two_theta.shape and np.all(np.isfinite(spectrum)) and np.all(spectrum > 0)
    f1, f2 = m.figure_of_merit(c1, t1), m.figure_of_merit(c2, t2)
    assert f1 > 0.9 and f1 - f2 > 0.2
    uniform = np.full(n, 1.0 / n)
    assert m.figure_of_merit(uniform, 150.0) < 0.05
    with pytest.raises(InvalidInput) as e:
        m.check_point(np.full(n + 1, 1.0 / (n + 1)), 400.0)
    assert e.value.field == "composition" and f"needs {n}" in e.value.message
    xs, ts = m.random_points(5, np.random.default_rng(0))
    assert xs.shape == (5, n) and np.allclose(xs.sum(axis=1), 1.0)
    np.testing.assert_allclose(m.figure_of_merit_batch(xs, ts), [m.figure_of_merit(x, t) for x, t in zip(xs, ts)])
