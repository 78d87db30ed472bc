"""kill -9 of a station worker (and of the campaign runner) mid-task, and of the service
running a workflow campaign started over HTTP, in a loop: the lab comes back in a stated
state with no operator touching the database. Workers, the runner and the service are
separate processes on one store. CI runs short loops; the 20-kill loops are marked slow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from sdl.store import Store, sqlite_url
from sdl.workflows.campaign import create_workflow_campaign, spawn_worker
from sdl.workflows.crashloop import check_lab, service_kill_loop
from sdl.workflows.engine import Engine
from sdl.workflows.stations import three_station_workflow
from sdl.workflows.tables import TaskRow

LEASE = 1.0
TIME_SCALE = 0.02
STATIONS = ("sim-synth", "sim-beamline", "sim-uvvis")


def _runner(url: str, cid: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sdl.workflows.cli", "run", "--resume", cid, "--workers", "none",
                             "--store", url, "--lease", str(LEASE), "--timeout", "900"],
                            stdout=log, stderr=subprocess.STDOUT)


def _running_task_of(store: Store, pid: int, instrument: str) -> str | None:
    from sdl.service.dispatch import retry

    return retry(lambda: _running(store, pid, instrument), what="poll")


def _running(store: Store, pid: int, instrument: str) -> str | None:
    with store.session() as s:
        for t in s.scalars(select(TaskRow).where(TaskRow.status == "running", TaskRow.instrument == instrument)):
            if t.worker and f":{pid}:" in t.worker:
                return t.id
    return None


def crash_loop(tmp_path, kills: int, budget: int, cluster=None) -> dict[str, int]:
    """``kills`` times: kill -9 a station worker mid-task, or the campaign runner, or (with a
    PostgreSQL ``cluster``) restart the database, in turn; then check the lab's state.
    Returns how many times each kind (station, ``runner``, ``database``) was killed."""
    url = cluster.create_database(f"wf{os.getpid()}{int(time.time())}") if cluster else sqlite_url(tmp_path / "lab.sqlite")
    store = Store(url)
    wf = three_station_workflow(transit={"seconds": 10}, max_attempts=8)
    cid = create_workflow_campaign(store, {"workflow": wf, "budget": budget, "parallel": 2, "agent": "random",
                                           "time_scale": TIME_SCALE, "seed": 3})
    log = open(tmp_path / "processes.log", "ab")  # the workers' and runners' output, shown on a failure
    quiet = {"stdout": log, "stderr": subprocess.STDOUT}
    procs = {n: spawn_worker(url, n, lease_s=LEASE, seed=i, time_scale=TIME_SCALE, **quiet)
             for i, n in enumerate(STATIONS)}
    runner = _runner(url, cid, log)
    killed: list[str] = []
    counts: dict[str, int] = {}
    try:
        for k in range(kills):
            victims = STATIONS + ("runner",) + (("database",) if cluster else ())
            victim = victims[k % len(victims)]
            if victim == "database":
                time.sleep(0.3)
                if runner.poll() is not None:
                    break
                cluster.restart()
                killed.append("database")
                counts["database"] = counts.get("database", 0) + 1
                continue
            if victim == "runner":
                time.sleep(0.3)
                if runner.poll() is not None:
                    break  # the campaign is done
                runner.send_signal(signal.SIGKILL)
                runner.wait()
                counts["runner"] = counts.get("runner", 0) + 1
                runner = _runner(url, cid, log)
                continue
            deadline = time.monotonic() + 60
            task = None
            while time.monotonic() < deadline and runner.poll() is None:
                task = _running_task_of(store, procs[victim].pid, victim)
                if task:
                    break
                time.sleep(0.02)
            if task is None:
                break
            time.sleep(0.05 * (k % 5))  # at different points of the task
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait()
            killed.append(task)
            counts[victim] = counts.get(victim, 0) + 1
            procs[victim] = spawn_worker(url, victim, lease_s=LEASE, seed=10 + k, time_scale=TIME_SCALE, **quiet)
        try:
            rc = runner.wait(timeout=900)
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0, (tmp_path / "processes.log").read_text()[-6000:]
    finally:
        for p in [*procs.values(), runner]:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        log.close()

    assert len(killed) >= min(kills // 2, 2), killed  # the workers really died mid-task
    killed = [k for k in killed if k != "database"]
    check_lab(store, cid, budget)  # completed to its budget; nothing lost, held or double-booked
    # the interrupted tasks were resumed (run again to the end)
    eng = Engine(store)
    tasks = {t["id"]: t for w in eng.workflows(cid) for t in eng.workflow(w.id)["tasks"]}
    for tid in killed:
        if tid in tasks:
            assert tasks[tid]["status"] == "done"
    assert sum(t["attempts"] > 1 for t in tasks.values()) >= min(1, len(killed))
    store.close()
    return counts


def test_kill_workers_and_runner_mid_task(tmp_path):
    crash_loop(tmp_path, kills=3, budget=4)


@pytest.mark.slow
def test_kill_workers_and_runner_20_times(tmp_path):
    """Each station's worker and the runner killed 20 times (in turn), on SQLite."""
    counts = crash_loop(tmp_path, kills=20 * 4, budget=60)
    print("kills:", counts)
    assert counts == {**{n: 20 for n in STATIONS}, "runner": 20}, counts


@pytest.fixture
def cluster():
    from sdl.service.pgcluster import PrivateCluster, pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    with PrivateCluster() as c:
        yield c


def test_kill_workers_runner_and_restart_postgres(tmp_path, cluster):
    crash_loop(tmp_path, kills=5, budget=4, cluster=cluster)


@pytest.mark.slow
def test_kill_workers_runner_and_restart_postgres_20_times(tmp_path, cluster):
    """Each station's worker, the runner and the database: 20 times each (in turn)."""
    counts = crash_loop(tmp_path, kills=20 * 5, budget=60, cluster=cluster)
    print("kills:", counts)
    assert counts == {**{n: 20 for n in STATIONS}, "runner": 20, "database": 20}, counts


def test_cli_runs_a_three_station_campaign_to_its_budget_with_worker_processes(tmp_path):
    import json

    url = sqlite_url(tmp_path / "cli.sqlite")
    out = subprocess.run([sys.executable, "-m", "sdl.workflows.cli", "run", "--store", url, "--budget", "3",
                          "--workers", "processes", "--lease", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["workflows"] == 3 and summary["ok"] == 3
    store = Store(url)
    eng = Engine(store)
    assert {s["state"] for s in eng.samples(summary["campaign_id"])} == {"discarded"} and eng.locks() == []
    workers = {t["worker"].split("@")[0] for w in eng.workflows(summary["campaign_id"])
               for t in eng.workflow(w.id)["tasks"] if t["worker"]}
    assert workers == set(STATIONS)
    store.close()


def test_kill_the_service_running_a_workflow_campaign(tmp_path, store_url):
    """The service (uvicorn, ``sdl serve``) runs the campaign started over HTTP; killed with
    SIGKILL and started again on the same store, it resumes it; the stations' workers
    (separate processes) carry on meanwhile."""
    out = service_kill_loop(tmp_path / "lab", store_url, kills=2, budget=6, seed=1)
    assert out["kills"] == 2, out  # both kills landed while the campaign ran


@pytest.mark.slow
def test_kill_the_service_20_times(tmp_path, store_url):
    out = service_kill_loop(tmp_path / "lab", store_url, kills=20, budget=60, seed=2)
    print(out)
    assert out["kills"] == 20, out
