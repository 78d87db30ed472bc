"""The in-process motor double has ophyd's move/done race closed too: a move started by
the thread its predecessor's status woke must not lose its completion, even when
ophyd's clearing of the request subscriptions comes late (delayed here on purpose)."""

from __future__ import annotations

import time

import pytest

from sdl.sim_devices.motor import SimMotor
from sdl.testing import back_to_back_moves, late_request_clearing

pytestmark = pytest.mark.timeout(60)


def test_back_to_back_moves_survive_a_late_clearing():
    m = SimMotor(name="m", time_scale=1.0, velocity=2.0)  # each move 0.5 s: longer than the delay
    with late_request_clearing():
        back_to_back_moves(m)


def test_a_stop_completes_the_move_as_failed():
    m = SimMotor(name="m", time_scale=1.0, velocity=1.0)
    st = m.move(5.0, wait=False)
    time.sleep(0.05)
    m.stop()
    with pytest.raises(Exception):
        st.wait(2)
    assert not st.success and 0 < m.position < 5.0
