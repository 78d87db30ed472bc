"""The in-process simulated lab (sdl.sim_devices.lab, .motor, .signals)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ophyd.utils import LimitError
from ophyd.utils.errors import ReadOnlyError

from sdl.errors import DeviceFault, InvalidInput
from sdl.sim_devices.lab import DARK_RATE, LOAD_S, NOMINAL_RING_CURRENT, UNLOAD_S, SimLab
from sdl.sim_devices.materials import MaterialsModel
from sdl.sim_devices.motor import SimMotor
from sdl.sim_devices.pool import PoolModel
from sdl.sim_devices.signals import Clock
from sdl.xrd import target_phase_fom

GOOD = [0.3, 0.4, 0.3]


@pytest.fixture(scope="module")
def model() -> MaterialsModel:
    return MaterialsModel(seed=0)


@pytest.fixture(scope="module")
def pool() -> PoolModel:
    return PoolModel.bundled("p3ht")


@pytest.fixture
def lab(model) -> SimLab:
    return SimLab(model, time_scale=0, seed=0)


def make(lab: SimLab, sample_id: str, slot: int, composition=GOOD, temperature: float = 420.0):
    """Start a make; returns its Status (done at once with time_scale=0)."""
    lab.robot.composition.put(np.asarray(composition, dtype=float))
    if not lab.is_pool:
        lab.robot.temperature.put(float(temperature))
    lab.robot.sample_id.put(sample_id)
    return lab.robot.make.set(slot)


def fault_of(status) -> DeviceFault:
    assert status.done and not status.success
    exc = status.exception()
    assert isinstance(exc, DeviceFault)
    return exc


def ok(status):
    status.wait(5)
    assert status.success
    return status


# ---------------------------------------------------------------- construction
def test_lab_checks_its_arguments(model):
    with pytest.raises(InvalidInput) as e:
        SimLab("not a model")
    assert e.value.field == "model"
    with pytest.raises(InvalidInput) as e:
        SimLab(model, time_scale=-1)
    assert e.value.field == "time_scale"
    with pytest.raises(InvalidInput) as e:
        SimLab(model, n_slots=0)
    assert e.value.field == "n_slots"


def test_lab_has_the_named_devices(lab):
    assert set(lab.devices()) == {"robot", "changer", "stage_x", "stage_y", "shutter", "ring_current", "detector"}
    assert lab.precursors == ["A", "B", "C"]
    assert lab.ring_current.get() == NOMINAL_RING_CURRENT
    assert lab.shutter.state.get() == "closed"
    assert lab.changer.mounted_sample.get() == ""
    np.testing.assert_array_equal(lab.detector.two_theta.get(), lab.materials.two_theta)


# ---------------------------------------------------------------- sample handling
def test_make_load_unload_move_the_sample(lab):
    ok(make(lab, "s1", 3))
    rec = lab.sample("s1")
    assert (rec.location, rec.slot, rec.lost) == ("rack", 3, False)
    assert rec.composition == pytest.approx(GOOD) and rec.temperature == 420.0
    assert rec.params == pytest.approx({"A": 0.3, "B": 0.4, "C": 0.3, "temperature": 420.0})
    assert lab.registry.slots == {3: "s1"}

    ok(lab.changer.load.set(3))
    rec = lab.sample("s1")
    assert (rec.location, rec.slot) == ("beam", None)
    assert lab.changer.mounted_sample.get() == "s1"
    assert [r.sample_id for r in lab.samples_at_beam()] == ["s1"]
    assert lab.registry.slots == {}

    ok(lab.changer.unload.set(7))
    rec = lab.sample("s1")
    assert (rec.location, rec.slot) == ("rack", 7)
    assert lab.changer.mounted_sample.get() == ""
    assert lab.samples_at_beam() == []
    assert lab.registry.slots == {7: "s1"}
    # every move is in the history: rack 3, gripper, beam, gripper, rack 7
    assert [h.split(" ", 1)[1] for h in rec.history] == ["rack 3", "gripper", "beam", "gripper", "rack 7"]
    assert lab.changer.state.get() == "idle" and lab.robot.state.get() == "idle"


def test_make_into_an_occupied_slot_fails_and_names_the_occupant(lab):
    ok(make(lab, "s1", 3))
    fault = fault_of(make(lab, "s2", 3))
    assert fault.device == "robot"
    assert "slot 3 is occupied by sample 's1'" in fault.message
    assert lab.robot.state.get() == "error"
    assert "occupied" in lab.robot.error_message.get()
    with pytest.raises(InvalidInput):
        lab.sample("s2")
    # an operator reset clears the error state, and the robot works again
    lab.robot.reset()
    assert lab.robot.state.get() == "idle" and lab.robot.error_message.get() == ""
    ok(make(lab, "s2", 4))


def test_load_from_an_empty_slot_fails(lab):
    fault = fault_of(lab.changer.load.set(5))
    assert fault.device == "changer" and fault.message == "slot 5 is empty"
    assert lab.changer.mounted_sample.get() == ""


def test_unload_into_an_occupied_slot_fails_and_keeps_the_sample_mounted(lab):
    ok(make(lab, "s1", 1))
    ok(make(lab, "s2", 2))
    ok(lab.changer.load.set(1))
    fault = fault_of(lab.changer.unload.set(2))
    assert "slot 2 is occupied by sample 's2'" in fault.message
    assert lab.sample("s1").location == "beam" and lab.changer.mounted_sample.get() == "s1"


def test_unload_with_nothing_mounted_fails(lab):
    fault = fault_of(lab.changer.unload.set(1))
    assert "no sample at the beam position" in fault.message


def test_load_while_a_sample_is_mounted_fails(lab):
    ok(make(lab, "s1", 1))
    ok(make(lab, "s2", 2))
    ok(lab.changer.load.set(1))
    fault = fault_of(lab.changer.load.set(2))
    assert "beam position holds sample 's1'" in fault.message
    assert lab.sample("s2").location == "rack" and lab.sample("s2").slot == 2


@pytest.mark.parametrize("slot", [0, 25, -1, 2.0, "3", True, None])
def test_slot_numbers_are_checked(lab, slot):
    fault = fault_of(make(lab, "s1", slot))
    assert "slot must be an integer in 1..24" in fault.message
    fault = fault_of(lab.changer.load.set(slot))
    assert "1..24" in fault.message


def test_sample_ids_must_be_set_and_unique(lab):
    fault = fault_of(make(lab, "  ", 1))
    assert "sample_id is empty" in fault.message
    ok(make(lab, "s1", 1))
    fault = fault_of(make(lab, "s1", 2))
    assert "'s1' is already used" in fault.message
    assert lab.registry.slots == {1: "s1"}


@pytest.mark.parametrize(
    "composition, temperature, needle",
    [([0.5, 0.2, 0.1], 400.0, "sum to 1"), ([0.5, 0.5], 400.0, "composition"), (GOOD, 900.0, "temperature")],
)
def test_robot_refuses_invalid_points_before_making_anything(lab, composition, temperature, needle):
    fault = fault_of(make(lab, "s1", 1, composition, temperature))
    assert fault.device == "robot" and needle in fault.message
    assert lab.samples() == [] and lab.registry.slots == {} and lab.registry.reserved == set()


def test_sample_records_are_copies(lab):
    ok(make(lab, "s1", 1))
    rec = lab.sample("s1")
    rec.location, rec.slot = "lost", None
    lab.samples()[0].composition[0] = 9.0
    assert lab.sample("s1").location == "rack" and lab.sample("s1").composition == pytest.approx(GOOD)
    with pytest.raises(InvalidInput) as e:
        lab.sample("nope")
    assert e.value.field == "sample_id"


def test_read_only_signals_refuse_writes(lab):
    with pytest.raises(ReadOnlyError):
        lab.changer.mounted_sample.put("x")
    with pytest.raises(ReadOnlyError):
        lab.shutter.state.put("open")


# ---------------------------------------------------------------- timing
def test_load_and_unload_take_time_when_time_scale_is_positive(model):
    lab = SimLab(model, time_scale=0.01)
    ok(make(lab, "s1", 1))  # 60 s x 0.01 = 0.6 s
    t0 = time.monotonic()
    status = lab.changer.load.set(1)
    assert not status.done
    assert lab.sample("s1").location == "gripper" and lab.changer.state.get() == "busy"
    # a second command while the first runs is refused, and does not disturb it
    busy = lab.changer.unload.set(2)
    assert "busy" in fault_of(busy).message
    ok(status)
    load_s = time.monotonic() - t0
    assert LOAD_S * 0.01 * 0.9 <= load_s < LOAD_S * 0.01 + 0.4
    assert lab.sample("s1").location == "beam" and lab.changer.state.get() == "idle"

    t0 = time.monotonic()
    status = lab.changer.unload.set(2)
    assert not status.done and lab.changer.mounted_sample.get() == ""
    # the target slot is reserved while the sample travels
    fault = fault_of(make(lab, "s2", 2))
    assert "reserved" in fault.message
    ok(status)
    unload_s = time.monotonic() - t0
    assert UNLOAD_S * 0.01 * 0.9 <= unload_s < UNLOAD_S * 0.01 + 0.4
    assert lab.sample("s1").slot == 2


def test_commands_are_instant_at_time_scale_zero(lab):
    t0 = time.monotonic()
    statuses = [make(lab, "s1", 1), lab.changer.load.set(1), lab.changer.unload.set(1), lab.shutter.set("open")]
    assert all(s.done and s.success for s in statuses)
    assert time.monotonic() - t0 < 0.5
    assert lab.shutter.state.get() == "open"


def test_clock_scales_durations_and_checks_its_scale():
    assert Clock(0).delay(20) == 0.0
    assert Clock(0.5).delay(20) == 10.0
    assert Clock(1).delay(-3) == 0.0
    ran = []
    assert Clock(0).call_later(10, lambda: ran.append(1)) is None and ran == [1]
    for bad in (-0.1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InvalidInput) as e:
            Clock(bad)
        assert e.value.field == "time_scale"


# ---------------------------------------------------------------- faults
def test_changer_drop_loses_the_sample(lab):
    ok(make(lab, "s1", 1))
    ok(make(lab, "s2", 2))
    lab.inject_fault("changer", "drop")
    assert lab.armed_faults() == {"changer": ["drop"]}
    fault = fault_of(lab.changer.load.set(1))
    assert fault.device == "changer"
    assert "dropped sample 's1'" in fault.message and "lost" in fault.message
    rec = lab.sample("s1")
    assert rec.lost and rec.location == "lost" and rec.slot is None
    assert lab.registry.beam is None and 1 not in lab.registry.slots
    assert lab.changer.mounted_sample.get() == ""
    assert lab.changer.state.get() == "error"
    # fires once: the next load works
    assert lab.armed_faults() == {}
    ok(lab.changer.load.set(2))
    assert lab.changer.mounted_sample.get() == "s2"


def test_failed_status_text_names_the_fault(lab):
    """Bluesky puts str(status) of a failed Status into the stop document's reason."""
    ok(make(lab, "s1", 1))
    lab.inject_fault("changer", "drop")
    status = lab.changer.load.set(1)
    text = str(status)
    assert "changer" in text and "success=False" in text and "dropped sample 's1'" in text
    ok(make(lab, "s2", 2))
    good = ok(lab.changer.load.set(2))
    assert str(good) == "CommandStatus(obj=changer, done=True, success=True)"


def test_robot_jam_makes_no_sample_and_frees_the_slot(lab):
    lab.inject_fault("robot", "jam")
    fault = fault_of(make(lab, "s1", 4))
    assert fault.device == "robot" and "jammed" in fault.message and "no sample was made" in fault.message
    assert lab.samples() == [] and lab.registry.slots == {} and lab.registry.reserved == set()
    lab.clear_fault("robot")
    assert lab.robot.state.get() == "idle"
    ok(make(lab, "s1", 4))  # the id and the slot are still usable
    assert lab.sample("s1").slot == 4


def test_detector_timeout_fails_once(lab):
    lab.inject_fault("detector", "timeout")
    fault = fault_of(lab.detector.trigger())
    assert fault.device == "detector" and fault.message.startswith("timeout")
    assert lab.detector.state.get() == "error"
    ok(lab.detector.trigger())
    assert lab.detector.state.get() == "idle"


def test_beam_dump_until_cleared(lab):
    ok(make(lab, "s1", 1))
    ok(lab.changer.load.set(1))
    ok(lab.shutter.set("open"))
    lab.inject_fault("ring", "beam_dump")
    assert lab.ring_current.get() == 0.0
    assert lab.flux_factor() == 0.0
    ok(lab.detector.trigger())
    spectrum = lab.detector.spectrum.get()
    assert spectrum.mean() == pytest.approx(DARK_RATE, rel=0.1)  # dark counts only
    assert lab.armed_faults() == {"ring": ["beam_dump"]}  # stays down until cleared
    ok(lab.detector.trigger())
    assert lab.ring_current.get() == 0.0
    lab.clear_fault("ring")
    assert lab.ring_current.get() == NOMINAL_RING_CURRENT and lab.armed_faults() == {}
    ok(lab.detector.trigger())
    assert lab.detector.spectrum.get().mean() > 20 * DARK_RATE


def test_flux_follows_the_ring_current(lab):
    ok(lab.shutter.set("open"))
    lab.ring_current.put(200.0)
    assert lab.flux_factor() == pytest.approx(0.5)
    lab.ring_current.put(-5.0)
    assert lab.flux_factor() == 0.0


@pytest.mark.parametrize(
    "device, fault, field", [("stage_x", "stall", "device"), ("changer", "jam", "fault"), ("ring", "drop", "fault")]
)
def test_unknown_faults_are_refused(lab, device, fault, field):
    with pytest.raises(InvalidInput) as e:
        lab.inject_fault(device, fault)
    assert e.value.field == field
    assert lab.armed_faults() == {}


# ---------------------------------------------------------------- detector
def test_closed_shutter_gives_only_dark_counts(lab, model):
    ok(make(lab, "s1", 1, *_optimum_point(model)))
    ok(lab.changer.load.set(1))
    assert lab.shutter.state.get() == "closed"
    lab.detector.exposure_time.put(5.0)
    ok(lab.detector.trigger())
    spectrum = lab.detector.spectrum.get()
    assert spectrum.shape == model.two_theta.shape
    assert spectrum.mean() == pytest.approx(DARK_RATE * 5.0, rel=0.05)
    assert lab.detector.total_counts.get() == spectrum.sum()
    # flat Poisson noise: no peak anywhere, nothing to reduce
    assert spectrum.max() < DARK_RATE * 5.0 + 8 * np.sqrt(DARK_RATE * 5.0)
    assert target_phase_fom(model.two_theta, spectrum, model.reduction_params()) == 0.0
    ok(lab.shutter.set("open"))
    ok(lab.detector.trigger())
    assert lab.detector.total_counts.get() > 20 * spectrum.sum()


def _optimum_point(model: MaterialsModel):
    lo, hi = model.temperature_range
    ls = model.landscape
    return ls.centres[0].tolist(), float(lo + ls.temps[0] * (hi - lo))


def test_counts_scale_with_exposure(lab, model):
    ok(make(lab, "s1", 1))
    ok(lab.changer.load.set(1))
    ok(lab.shutter.set("open"))
    totals = {}
    for exposure in (1.0, 4.0):
        lab.detector.exposure_time.put(exposure)
        ok(lab.detector.trigger())
        totals[exposure] = lab.detector.total_counts.get()
    assert totals[4.0] / totals[1.0] == pytest.approx(4.0, rel=0.02)
    expected = (model.expected_spectrum(GOOD, 420.0) + DARK_RATE).sum()
    assert totals[1.0] == pytest.approx(expected, rel=0.02)


def test_measured_spectrum_reduces_to_the_true_fom(lab, model):
    x, t = _optimum_point(model)
    ok(make(lab, "s1", 1, x, t))
    ok(lab.changer.load.set(1))
    ok(lab.shutter.set("open"))
    lab.detector.exposure_time.put(10.0)
    ok(lab.detector.trigger())
    fom = target_phase_fom(model.two_theta, lab.detector.spectrum.get(), model.reduction_params())
    assert fom == pytest.approx(model.figure_of_merit(x, t), abs=0.01)


def test_noise_of_the_measured_fom_falls_with_exposure(lab, model):
    x, t = _optimum_point(model)
    ok(make(lab, "s1", 1, x, t))
    ok(lab.changer.load.set(1))
    ok(lab.shutter.set("open"))
    params = model.reduction_params()
    rel = {}
    for exposure in (0.1, 10.0):
        lab.detector.exposure_time.put(exposure)
        foms = []
        for _ in range(25):
            ok(lab.detector.trigger())
            foms.append(target_phase_fom(model.two_theta, lab.detector.spectrum.get(), params))
        rel[exposure] = np.std(foms) / np.mean(foms)
    assert rel[10.0] < rel[0.1] / 3


def test_empty_beam_position_gives_air_scatter(lab, model):
    ok(lab.shutter.set("open"))
    lab.detector.exposure_time.put(2.0)
    ok(lab.detector.trigger())
    expected = (model.background_spectrum() + DARK_RATE).sum() * 2.0
    assert lab.detector.total_counts.get() == pytest.approx(expected, rel=0.02)


def test_same_lab_seed_gives_the_same_counts(model):
    spectra = []
    for _ in range(2):
        lab = SimLab(model, seed=5)
        ok(make(lab, "s1", 1))
        ok(lab.changer.load.set(1))
        ok(lab.shutter.set("open"))
        ok(lab.detector.trigger())
        spectra.append(lab.detector.spectrum.get())
    np.testing.assert_array_equal(*spectra)
    other = SimLab(model, seed=6)
    ok(make(other, "s1", 1))
    ok(other.changer.load.set(1))
    ok(other.shutter.set("open"))
    ok(other.detector.trigger())
    assert not np.array_equal(spectra[0], other.detector.spectrum.get())


def test_exposure_time_must_be_positive(lab):
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(InvalidInput):
            lab.detector.exposure_time.put(bad)
    assert lab.detector.exposure_time.get() == 1.0


def test_detector_read_and_describe(lab):
    ok(lab.detector.trigger())
    reading = lab.detector.read()
    assert set(reading) == {"detector_spectrum", "detector_total_counts"}
    desc = lab.detector.describe()
    assert desc["detector_spectrum"]["shape"] == [601]
    assert desc["detector_spectrum"]["units"] == "counts"


# ---------------------------------------------------------------- shutter
def test_shutter_opens_and_closes(lab):
    ok(lab.shutter.set("open"))
    assert lab.shutter.state.get() == "open" and lab.shutter.is_open
    ok(lab.shutter.set("close"))
    assert lab.shutter.state.get() == "closed" and not lab.shutter.is_open
    with pytest.raises(InvalidInput) as e:
        lab.shutter.set("opened")
    assert e.value.field == "shutter"


# ---------------------------------------------------------------- motors
def test_stage_refuses_moves_beyond_soft_limits_before_moving(lab):
    stage = lab.stage_x
    ok(stage.set(2.5))
    for target in (10.5, -10.01, 1e9):
        with pytest.raises(LimitError) as e:
            stage.set(target)
        assert "stage_x" in str(e.value) and "limits" in str(e.value) and "(-10.0, 10.0)" in str(e.value)
        assert stage.position == 2.5 and stage.user_setpoint.get() == 2.5 and not stage.moving
    for bad in (float("nan"), "3", None, True):
        with pytest.raises(ValueError):
            stage.set(bad)
        assert stage.position == 2.5
    ok(stage.set(10.0))  # the limit itself is allowed
    assert stage.position == 10.0
    ok(stage.set(np.int64(-3)))  # numpy numbers too
    assert stage.position == -3.0


def test_motor_reads_like_an_epics_motor(lab):
    reading = lab.stage_y.read()
    assert set(reading) == {"stage_y", "stage_y_user_setpoint"}
    desc = lab.stage_y.describe()
    assert desc["stage_y"]["units"] == "mm"
    assert lab.stage_y.limits == (-10.0, 10.0) and lab.stage_y.egu == "mm"
    assert lab.stage_y.read_configuration()["stage_y_velocity"]["value"] == 2.0


def test_move_time_is_distance_over_velocity_times_scale():
    motor = SimMotor(name="m", time_scale=0.05, velocity=2.0, limits=(-10, 10))
    t0 = time.monotonic()
    status = motor.set(4.0)  # 4 mm / 2 mm/s = 2 s x 0.05 = 0.1 s
    assert not status.done and motor.moving
    ok(status)
    slow = time.monotonic() - t0
    assert 0.09 <= slow < 0.5
    assert motor.position == 4.0 and not motor.moving
    motor.velocity.put(8.0)
    t0 = time.monotonic()
    ok(motor.set(0.0))  # 4 mm / 8 mm/s = 0.5 s x 0.05 = 0.025 s
    fast = time.monotonic() - t0
    assert 0.02 <= fast < slow
    with pytest.raises(InvalidInput):
        motor.velocity.put(0.0)


def test_motor_stop_and_superseding_move(lab):
    motor = SimMotor(name="m", time_scale=0.1, velocity=2.0, limits=(-10, 10))
    status = motor.set(8.0)  # 0.4 s in all
    time.sleep(0.15)
    motor.stop()
    assert 1.0 < motor.position < 7.0 and not motor.moving
    assert status.done and not status.success  # the stopped move's status completes
    motor.stop()  # stopping a motor at rest is harmless
    assert 1.0 < motor.position < 7.0
    here = motor.position
    first = motor.set(-8.0)
    time.sleep(0.05)
    t0 = time.monotonic()
    second = motor.set(here)  # supersedes: starts from where the motor is now, not from `here`
    assert first.done and not first.success
    ok(second)
    assert 0.02 < time.monotonic() - t0 < 0.4
    assert motor.position == here


def test_motor_instant_at_time_scale_zero(lab):
    status = lab.stage_x.set(-7.0)
    assert status.done and status.success and lab.stage_x.position == -7.0


def test_motor_limits_must_be_ordered():
    with pytest.raises(ValueError, match="limits"):
        SimMotor(name="m", limits=(5, -5))
    with pytest.raises(LimitError):
        SimMotor(name="m", limits=(0, 5), init_pos=6)


# ---------------------------------------------------------------- pool lab
def test_pool_lab_makes_only_listed_points(pool):
    lab = SimLab(pool)
    assert lab.is_pool and lab.precursors == pool.inputs
    np.testing.assert_array_equal(lab.robot.composition.get(), pool.points[0])
    ok(make(lab, "p1", 1, pool.points[7]))
    assert lab.sample("p1").params == pool.as_dict(7) and lab.sample("p1").temperature is None
    fault = fault_of(make(lab, "p2", 2, pool.points[7] + 0.5))
    assert fault.device == "robot" and f"only the {len(pool)} listed samples can be made" in fault.message
    assert fault.message.count("not in pool") == 1


@pytest.mark.parametrize("composition", ["extra", "short", "nan", "text"])
def test_pool_lab_refuses_malformed_points(pool, composition):
    lab = SimLab(pool)
    values = {
        "extra": np.append(pool.points[3], 1.0),
        "short": pool.points[3][:-1],
        "nan": np.full(len(pool.inputs), np.nan),
        "text": ["a"] * len(pool.inputs),
    }[composition]
    lab.robot.composition.put(values)
    lab.robot.sample_id.put("p1")
    fault = fault_of(lab.robot.make.set(1))
    assert fault.device == "robot" and "composition" in fault.message
    assert lab.samples() == []


def test_pool_probe_reads_the_table_value(pool):
    lab = SimLab(pool)
    ok(lab.detector.trigger())
    assert np.isnan(lab.detector.value.get())  # nothing mounted
    for i, row in enumerate((0, 11, 42)):
        ok(make(lab, f"p{i}", i + 1, pool.points[row]))
        ok(lab.changer.load.set(i + 1))
        ok(lab.detector.trigger())
        assert lab.detector.value.get() == pool.values[row]
        assert lab.detector.read()["detector_value"]["value"] == pool.values[row]
        ok(lab.changer.unload.set(i + 1))
    lab.inject_fault("detector", "timeout")
    assert "timeout" in fault_of(lab.detector.trigger()).message
    assert lab.detector.describe()["detector_value"]["units"] == "S/cm"
