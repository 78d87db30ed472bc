"""The hang of issue 20, made deterministic: stock ``ophyd.EpicsMotor`` clears its move
subscriptions in the CA monitor thread *after* the MoveStatus has finished, so a move
started at once by the waiting thread loses its completion when that clearing is late.
Here the clearing is delayed on purpose: the stock class hangs, sdl's does not."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import ophyd  # noqa: E402
import pytest  # noqa: E402
from ophyd.utils import WaitTimeoutError  # noqa: E402

from sdl.devices.motor import EpicsMotor  # noqa: E402
from sdl.testing import back_to_back_moves, late_request_clearing  # noqa: E402
from sdl.sim_devices.ioc import serve_sim_lab  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ioc():
    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("Q"), port=PORT, time_scale=1.0,
                       names="stage_x") as served:
        yield served


@pytest.fixture
def late_clearing():
    with late_request_clearing():
        yield


def _back_to_back(motor) -> None:
    motor.wait_for_connection(timeout=5)
    motor.velocity.set(50.0).wait(5)
    back_to_back_moves(motor)


def test_sdl_epics_motor_survives_a_late_clearing(ioc, late_clearing):
    _back_to_back(EpicsMotor(ioc.prefix + "STAGE:X", name="x_sdl"))


def test_stock_epics_motor_hangs_on_a_late_clearing(ioc, late_clearing):
    """If this starts passing, ophyd fixed the race and sdl.devices.motor can go."""
    with pytest.raises(WaitTimeoutError):
        _back_to_back(ophyd.EpicsMotor(ioc.prefix + "STAGE:X", name="x_stock"))


def test_close_stock_race_fixes_the_stock_class(ioc, late_clearing, monkeypatch):
    from sdl.devices.motor import close_stock_race

    for attr in ("move", "_done_moving"):  # undone after the test
        monkeypatch.setattr(ophyd.EpicsMotor, attr, getattr(ophyd.EpicsMotor, attr))
    monkeypatch.setattr(ophyd.EpicsMotor, "_sdl_race_closed", False, raising=False)
    close_stock_race()
    close_stock_race()  # idempotent
    _back_to_back(ophyd.EpicsMotor(ioc.prefix + "STAGE:X", name="x_patched"))


UPSTREAM_PATCH = Path(__file__).resolve().parents[1] / "docs" / "upstream" / "ophyd-positioner-request-race.patch"

_PATCHED_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
import ophyd
assert ophyd.__file__.startswith(sys.argv[1]), ophyd.__file__
from sdl.testing import back_to_back_moves, late_request_clearing
m = ophyd.EpicsMotor(sys.argv[2], name="x_upstream")
m.wait_for_connection(timeout=5)
m.velocity.set(50.0).wait(5)
with late_request_clearing():
    back_to_back_moves(m)
print("ok")
"""


def test_upstream_patch_fixes_stock_ophyd(ioc, tmp_path):
    """The fix offered to ophyd (docs/upstream/): stock ophyd with only this patch
    applied survives the late clearing that hangs it as shipped."""
    shutil.copytree(Path(ophyd.__file__).parent, tmp_path / "ophyd")
    subprocess.run(["patch", "-p1", "-d", str(tmp_path), "-i", str(UPSTREAM_PATCH)], check=True,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-c", _PATCHED_RUN, str(tmp_path), ioc.prefix + "STAGE:X"],
                          capture_output=True, text=True, timeout=40, env=os.environ.copy())
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
