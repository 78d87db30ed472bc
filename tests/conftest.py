"""Shared fixtures. Channel Access stays on loopback in every test.

The store: a SQLite file in the test's tmp_path, or, with
``SDL_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB`` set, a database of the test's
own on that PostgreSQL server (created empty, dropped after the test); see
:func:`sdl.database.scratch_store_url`. ``.ci/run`` runs the suite both ways.
"""

from __future__ import annotations

import os

from sdl.ca_env import PORT_RANGE_ENV, port_range
from sdl.testing import configure_loopback_ca


def _worker_port_slice() -> None:
    """Under `pytest -n N`, worker K (and the IOCs and clients it starts) draws its CA ports
    from the K-th of N disjoint slices: no two workers ever pick the same search port."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker.startswith("gw") or not count or os.environ.get(PORT_RANGE_ENV):
        return
    lo, hi = port_range()
    k, n = int(worker[2:]), int(count)
    size = (hi - lo + 1) // n
    os.environ[PORT_RANGE_ENV] = f"{lo + k * size}-{lo + (k + 1) * size - 1}"


# Before anything imports ophyd/pyepics (libca reads the environment once): loopback
# addresses and a CA port of this test process's own, so parallel runs never clash.
_worker_port_slice()
configure_loopback_ca(fresh=bool(os.environ.get("PYTEST_XDIST_WORKER")))  # not the controller's port

import pytest  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one math thread per worker (and its
    # subprocesses), set before torch starts, so two workers on two cores do not oversubscribe them
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from sdl.database import drop_scratch_store, redact, scratch_store_url, test_database_url  # noqa: E402
from sdl.store import Store  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: about the SQLite store itself; skipped on PostgreSQL")


def pytest_report_header(config):
    url = test_database_url()
    return f"sdl store: {'PostgreSQL, a database per test on ' + redact(url) if url else 'SQLite files'}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where the environment was installed from the lock (``.ci/run``: SDL_LOCKED_ENV=1),
    a test skipped because a package is missing fails instead: CI must not pass by skipping."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("SDL_LOCKED_ENV") == "1" and report.skipped and call.excinfo is not None:
        reason = str(call.excinfo.value)
        if "could not import" in reason or "No module named" in reason or "pip install" in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped for a missing package in a locked environment: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole test file skipped at import (``pytest.importorskip``)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("SDL_LOCKED_ENV") == "1" and report.skipped:
        reason = str(report.longrepr)
        if "could not import" in reason or "No module named" in reason or "pip install" in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped for a missing package in a locked environment: {reason}"


#: test files that never touch the configured store (agents, simulated physics, EPICS clients, the
#: lock, and ``sdl demo``, which keeps its own SQLite file): the SQLite pass runs them, the
#: PostgreSQL pass (``SDL_TEST_DATABASE_URL``) would only repeat them
STORE_INDEPENDENT = {
    "test_agents_bench.py", "test_agents_features.py", "test_bo_vs_random.py", "test_cli_demo.py",
    "test_conformance.py", "test_lock.py", "test_pool_benchmark.py", "test_sim_materials.py", "test_space.py",
    "test_motor_race.py", "test_motor_record.py", "test_epics_soak.py", "test_epics_motor.py", "test_sim_lab.py",
    "test_pool_model.py", "test_import_layers.py", "test_sim_motor_race.py", "test_ax_default.py",
    "test_heldout_defaults.py", "test_testing_kit.py", "test_ca_ports.py",
}
#: tests that start a PostgreSQL cluster of their own: the SQLite pass runs them once
OWN_CLUSTER = {"test_workflow_crash.py::test_kill_workers_runner_and_restart_postgres"}


def pytest_collection_modifyitems(config, items):
    if test_database_url() is None:
        return
    skip = pytest.mark.skip(reason="about the SQLite store; this run is on PostgreSQL ($SDL_TEST_DATABASE_URL)")
    once = pytest.mark.skip(reason="does not use the configured store: run once, in the SQLite pass")
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)
        elif item.path.name in STORE_INDEPENDENT or f"{item.path.name}::{item.name}" in OWN_CLUSTER:
            item.add_marker(once)


@pytest.fixture
def store_url(tmp_path):
    """The URL of an empty store of this test's own (SQLite file or PostgreSQL database)."""
    url = scratch_store_url(tmp_path / "test.sqlite")
    yield url
    drop_scratch_store(tmp_path / "test.sqlite")


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()
