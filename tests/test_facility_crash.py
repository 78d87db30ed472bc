"""Crash recovery, proven with real processes (issue 6): ``sdl worker`` and ``sdl serve``
subprocesses on one store -- a SQLite file, or a PostgreSQL database of the test's own
when ``SDL_TEST_DATABASE_URL`` is set -- killed with SIGKILL mid-run. The scenarios
live in :mod:`sdl.service.crashtest`; ``benchmarks/crash_loop.py`` loops them.
"""

from __future__ import annotations

import pytest

from sdl.database import drop_scratch_store, scratch_store_url
from sdl.database import test_database_url as _pg_test_url
from sdl.service import crashtest
from sdl.service.pgcluster import pg_bin


@pytest.fixture
def url(tmp_path):
    u = scratch_store_url(tmp_path / "facility.sqlite")
    yield u
    drop_scratch_store(tmp_path / "facility.sqlite")


def test_worker_killed_mid_run_is_recovered_by_another_worker(tmp_path, url):
    out = crashtest.scenario_worker_kill(tmp_path / "a", url)
    assert out["documents_kept"] >= 1


def test_lease_fencing_and_clean_stop_close_the_shutter(tmp_path, url):
    crashtest.scenario_fencing_and_cleanup(tmp_path / "a2", url)


def test_service_killed_during_a_campaign_carries_on(tmp_path, url):
    out = crashtest.scenario_service_kill(tmp_path / "b", url, budget=4)
    assert out["observations_at_kill"] >= 2


@pytest.mark.skipif(_pg_test_url() is None,
                    reason="SQLite run: a database file has no server to restart (set SDL_TEST_DATABASE_URL)")
@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL binaries (initdb, pg_ctl) are not installed")
def test_database_restart_during_a_campaign(tmp_path):
    # a cluster of the test's own: restarting the suite's shared server would cut every other test's
    # connections too
    from sdl.service.pgcluster import PrivateCluster

    with PrivateCluster() as cluster:  # in /tmp: the server runs as the postgres user when we are root
        out = crashtest.scenario_db_restart(tmp_path / "c", cluster, budget=4)
    assert out["restart_s"] > 0
