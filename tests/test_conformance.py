"""The conformance kit (sdl.testing) on every device of the project: the in-process
doubles of the simulated lab, and the EPICS device classes against the soft IOCs."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()  # before ophyd/epics start libca

import pytest  # noqa: E402

from sdl.instruments import make_instrument  # noqa: E402
from sdl.testing import (  # noqa: E402
    DeviceCase,
    assert_conforms,
    checks_for,
    conformance_params,
    epics_lab_cases,
    run_check,
    sim_lab_cases,
)

pytestmark = pytest.mark.timeout(60)

INSTRUMENT = make_instrument("sim-xrd", seed=0)
SIM_CASES = sim_lab_cases(INSTRUMENT)


class _Served:
    """The soft IOC, started by the first EPICS case that needs it (module fixture stops it)."""

    ioc = None
    sim = None


def _ioc():
    if _Served.ioc is None:
        from sdl.sim_devices.ioc import start_ioc

        _Served.ioc = start_ioc("sim-xrd", seed=0, prefix=PREFIX, port=PORT)
        _Served.sim = _Served.ioc.sim_control()
    return _Served.ioc


PREFIX = unique_prefix("C")


def _lazy(case: DeviceCase) -> DeviceCase:
    make = case.make

    def make_after_ioc():
        _ioc()
        return make()

    case.make = make_after_ioc
    return case


class _LazySim:
    def inject_fault(self, *a, **k):
        _ioc()
        return _Served.sim.inject_fault(*a, **k)

    def clear_fault(self, *a, **k):
        _ioc()
        return _Served.sim.clear_fault(*a, **k)


EPICS_CASES = [_lazy(c) for c in epics_lab_cases(PREFIX, _LazySim())]


@pytest.fixture(scope="module", autouse=True)
def _stop_ioc():
    yield
    if _Served.ioc is not None:
        _Served.ioc.stop()
        _Served.ioc = None


@pytest.mark.parametrize(("case", "check"), conformance_params(SIM_CASES + EPICS_CASES))
def test_device_conforms(case, check):
    run_check(case, check)


def test_every_lab_device_is_covered():
    lab_devices = set(INSTRUMENT.lab.devices())
    assert {c.name.split(".", 1)[1] for c in SIM_CASES} == lab_devices
    assert {c.name.split(".", 1)[1] for c in EPICS_CASES} >= lab_devices
    assert all("connects" in checks_for(c) for c in SIM_CASES + EPICS_CASES)


def test_kit_reports_a_nonconforming_device():
    from ophyd import Signal

    class Broken(Signal):
        def describe(self):
            return {}  # read() has a key describe() lacks

    case = DeviceCase("broken", lambda: Broken(name="broken", value=1.0))
    with pytest.raises(AssertionError, match="does not conform.*reads"):
        assert_conforms(case)
