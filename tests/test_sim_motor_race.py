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


def test_a_move_started_by_the_superseded_moves_callback_does_not_finish_the_new_one():
    """A superseded move's status fails in the thread that starts the next move (ophyd runs
    the callbacks of a Status without a timeout there); a callback that itself moves the
    motor must not leave its timer behind to finish the outer move at the wrong target."""
    m = SimMotor(name="m", time_scale=1.0, velocity=2.0)
    first = m.move(4.0, wait=False)
    nested = []

    def on_first_done(status):
        if not status.success and not nested:
            nested.append(m.move(0.2, wait=False))  # short: it would arrive first

    first.add_callback(on_first_done)
    time.sleep(0.05)
    outer = m.move(1.0, wait=False)
    assert nested, "the superseded move's callback ran in this thread"
    outer.wait(5)
    assert outer.success
    assert m.position == pytest.approx(1.0)
