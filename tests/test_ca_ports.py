"""CA ports for soft IOCs come from outside the kernel's ephemeral range (a client socket
there would silently share an IOC's UDP search port) and from this worker's slice under
`pytest -n N`."""

from __future__ import annotations

import os
import socket

import pytest

from sdl.ca_env import PORT_RANGE_ENV, ephemeral_range, free_port, port_range


def test_free_ports_avoid_the_ephemeral_range(monkeypatch):
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    lo, _ = ephemeral_range()
    ports = {free_port() for _ in range(200)}
    assert all(20000 <= p < lo for p in ports), sorted(ports)[-5:]
    assert len(ports) > 150  # drawn at random, not handed out in sequence


def test_the_range_variable_is_obeyed_and_checked(monkeypatch):
    monkeypatch.setenv(PORT_RANGE_ENV, "23000-23009")
    assert {free_port() for _ in range(50)} <= set(range(23000, 23010))
    monkeypatch.setenv(PORT_RANGE_ENV, "23000-23000")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:  # the only port, taken
        held.bind(("127.0.0.1", 23000))
        with pytest.raises(RuntimeError, match="23000-23000"):
            free_port()
    monkeypatch.setenv(PORT_RANGE_ENV, "9-x")
    with pytest.raises(ValueError, match="LO-HI"):
        port_range()


def test_parallel_workers_draw_from_disjoint_slices():
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        pytest.skip("runs under pytest -n N (the suite's command): each worker has a slice")
    lo, hi = (int(v) for v in os.environ[PORT_RANGE_ENV].split("-"))
    n, k = int(os.environ["PYTEST_XDIST_WORKER_COUNT"]), int(worker[2:])
    assert lo <= int(os.environ["EPICS_CA_SERVER_PORT"]) <= hi  # this worker's own CA port is in it
    assert hi - lo + 1 >= 1000 and (hi - lo + 1) * n <= ephemeral_range()[0] - 20000
    assert lo == 20000 + k * (hi - lo + 1)
