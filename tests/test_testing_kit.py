"""sdl.testing.wait_until: the one polling helper the tests (and plug-in authors) use."""

import subprocess
import sys
import time

import pytest

from sdl.testing import wait_until


def test_returns_the_first_truthy_value():
    seen = iter([None, 0, [], {"done": 3}])
    assert wait_until(lambda: next(seen), timeout=2, interval=0.001) == {"done": 3}


def test_timeout_names_what_and_the_last_value():
    start = time.monotonic()
    with pytest.raises(AssertionError) as err:
        wait_until(lambda: [], timeout=0.2, what="the queue to fill")
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 2
    msg = str(err.value)
    assert "the queue to fill" in msg and "0.2 s" in msg and "last value: []" in msg


def test_timeout_without_what_names_the_predicate():
    def queue_has_items():
        return 0

    with pytest.raises(AssertionError, match=r"queue_has_items.*last value: 0"):
        wait_until(queue_has_items, timeout=0.05)


def test_a_callable_what_is_asked_at_timeout_for_live_detail():
    state = {"n": 0}

    def tick():
        state["n"] += 1
        return False

    with pytest.raises(AssertionError, match=r"the counter past 10\^6 \(at [1-9]\d*\)"):
        wait_until(tick, timeout=0.05, what=lambda: f"the counter past 10^6 (at {state['n']})")


def test_a_dead_process_fails_the_wait_at_once_with_its_output():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; print('boom from child'); sys.exit(3)"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.monotonic()
    with pytest.raises(AssertionError) as err:
        wait_until(lambda: False, timeout=60, what="the child to report", proc=proc)
    assert time.monotonic() - start < 20  # well before the 60 s timeout
    msg = str(err.value)
    assert "(3)" in msg and "boom from child" in msg and "the child to report" in msg


def test_a_live_process_does_not_stop_a_wait_that_succeeds():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        t0 = time.monotonic()
        assert wait_until(lambda: time.monotonic() - t0 > 0.1 and "ok", timeout=5, proc=proc) == "ok"
    finally:
        proc.kill()
        proc.wait()
