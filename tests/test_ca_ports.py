"""CA ports for soft IOCs come from outside the kernel's ephemeral range (a client socket
there would silently share an IOC's UDP search port) and from this worker's slice under
`pytest -n N`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_two_workers_get_ports_of_their_own(tmp_path):
    """`pytest -n 2`: the workers are children of one controller, whose CA port they inherit
    unless conftest gives each a fresh one from its own slice (they once shared it, and one
    worker's IOCs answered searches meant for the other's)."""
    probe = Path(__file__).with_name("ca_ports_probe.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", PORT_RANGE_ENV))}
    env["SDL_PROBE_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", str(probe)],
                         cwd=probe.parents[1], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    seen = {}
    for f in tmp_path.iterdir():
        worker, port, span = f.read_text().split()
        seen.setdefault(worker, set()).add((int(port), span))
    assert sorted(seen) == ["gw0", "gw1"], seen
    (p0, r0), (p1, r1) = (next(iter(seen[w])) for w in ("gw0", "gw1"))
    assert all(len(v) == 1 for v in seen.values())  # one port per worker process
    assert p0 != p1 and r0 != r1
    for port, span in ((p0, r0), (p1, r1)):
        lo, hi = (int(v) for v in span.split("-"))
        assert lo <= port <= hi
    assert int(r0.split("-")[1]) < int(r1.split("-")[0])  # disjoint slices


def test_parallel_workers_draw_from_disjoint_slices():
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        pytest.skip("runs under pytest -n N (the suite's command): each worker has a slice")
    lo, hi = (int(v) for v in os.environ[PORT_RANGE_ENV].split("-"))
    n, k = int(os.environ["PYTEST_XDIST_WORKER_COUNT"]), int(worker[2:])
    assert lo <= int(os.environ["EPICS_CA_SERVER_PORT"]) <= hi  # this worker's own CA port is in it
    assert hi - lo + 1 >= 1000 and (hi - lo + 1) * n <= ephemeral_range()[0] - 20000
    assert lo == 20000 + k * (hi - lo + 1)
