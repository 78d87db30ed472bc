"""The in-process motor double has ophyd's move/done race closed too: a move started by
the thread its predecessor's status woke must not lose its completion, even when
ophyd's clearing of the request subscriptions comes late (delayed here on purpose)."""

from __future__ import annotations

import threading
import time

import pytest
from ophyd.positioner import PositionerBase

from sdl.sim_devices.motor import SimMotor

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def late_clearing(monkeypatch):
    original = PositionerBase._reset_sub

    def slow_reset(self, event_type):
        if event_type == self._SUB_REQ_DONE and threading.current_thread() is not threading.main_thread():
            time.sleep(0.3)
        return original(self, event_type)

    monkeypatch.setattr(PositionerBase, "_reset_sub", slow_reset)


def test_back_to_back_moves_survive_a_late_clearing(late_clearing):
    m = SimMotor(name="m", time_scale=1.0, velocity=2.0)  # each move 0.5 s: longer than the delay
    m.move(1.0, wait=True)
    first = m.move(2.0, wait=False)
    first.wait(5)  # returns while the timer thread is still in _done_moving
    second = m.move(3.0, wait=False)
    second.wait(3)
    assert second.success and m.position == pytest.approx(3.0)


def test_a_stop_completes_the_move_as_failed():
    m = SimMotor(name="m", time_scale=1.0, velocity=1.0)
    st = m.move(5.0, wait=False)
    time.sleep(0.05)
    m.stop()
    with pytest.raises(Exception):
        st.wait(2)
    assert not st.success and 0 < m.position < 5.0
