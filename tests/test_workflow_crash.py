"""kill -9 of a station worker (and of the campaign runner) mid-task, in a loop: the
lab comes back in a stated state with no operator touching the database. Workers and
the runner are separate processes on one SQLite store. CI runs a short loop; the
20-kill loop is marked slow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from sdl.store import RunRow, Store, sqlite_url
from sdl.workflows.campaign import create_workflow_campaign, spawn_worker
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


def crash_loop(tmp_path, kills: int, budget: int, cluster=None) -> None:
    """``kills`` times: kill -9 a station worker mid-task, or the campaign runner, or (with a
    PostgreSQL ``cluster``) restart the database, in turn; then check the lab's state."""
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
                continue
            if victim == "runner":
                time.sleep(0.3)
                if runner.poll() is not None:
                    break  # the campaign is done
                runner.send_signal(signal.SIGKILL)
                runner.wait()
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
    eng = Engine(store)
    assert store.campaign(cid).status == "completed", store.campaign(cid).message
    obs = store.observations(cid)
    assert len(obs) == budget and all(o.ok for o in obs), [o.extra for o in obs if not o.ok]
    assert len({o.suggestion_id for o in obs}) == budget  # each observation written once
    # every task ended; nothing held: no lock past its lease, no sample left in a position
    wfs = [eng.workflow(w.id) for w in eng.workflows(cid)]
    assert len(wfs) == budget and all(w["status"] == "done" for w in wfs)
    assert all(t["status"] == "done" for w in wfs for t in w["tasks"])
    assert eng.locks() == []
    # the interrupted tasks were resumed (run again to the end)
    tasks = {t["id"]: t for w in wfs for t in w["tasks"]}
    for tid in killed:
        if tid in tasks:
            assert tasks[tid]["status"] == "done"
    assert sum(t["attempts"] > 1 for t in tasks.values()) >= min(1, len(killed))
    # every sample accounted for, none lost, its history consistent (one place at a time)
    samples = eng.samples(cid)
    assert len(samples) == budget and {s["state"] for s in samples} == {"discarded"}
    for s in samples:
        h = eng.sample(s["id"])["history"]
        assert h[0]["kind"] == "made" and h[-1]["kind"] == "discarded"
        at_station = None
        for e in h:
            if e["kind"] == "arrived":
                assert at_station is None, f"{s['id']} at two stations: {h}"
                at_station = e["station"]
            elif e["kind"] in ("returned", "recovered"):
                at_station = None
    # no double booking of a station: its successful runs never overlap in time
    with store.session() as ses:
        for inst in STATIONS:
            uids = [t["run_uid"] for t in tasks.values() if t["instrument"] == inst and t["run_uid"]]
            runs = sorted((r.started_at, r.finished_at) for r in ses.scalars(select(RunRow).where(RunRow.uid.in_(uids))))
            for (a0, a1), (b0, b1) in zip(runs, runs[1:]):
                assert a1 <= b0, f"{inst}: runs overlap"
    store.close()


def test_kill_workers_and_runner_mid_task(tmp_path):
    crash_loop(tmp_path, kills=3, budget=4)


@pytest.mark.slow
def test_kill_workers_and_runner_20_times(tmp_path):
    crash_loop(tmp_path, kills=20, budget=12)


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
    crash_loop(tmp_path, kills=25, budget=12, cluster=cluster)


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
