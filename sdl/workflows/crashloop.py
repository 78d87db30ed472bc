"""kill -9 of the service in a loop while it runs a workflow campaign started over HTTP.

The stations' workers are ``sdl workflow worker`` processes, the service an ``sdl serve``
process (uvicorn) that runs the campaign's runner; both on one store (SQLite file or
PostgreSQL). ``kills`` times, a random moment after the service answers, it is killed
with SIGKILL and started again on the same store (a new port); the restarted service
resumes the campaign from what the database says. At the end :func:`check_lab` states
what must hold: the campaign completed to its budget, each suggestion observed once,
every workflow and task done, no lock held, no sample lost or at two stations at once,
no station running two samples at once. While the loop runs, no lock may outlive its
lease by more than the sweeper's period.

Used by ``tests/test_workflow_crash.py`` (a short loop in CI, 20 kills marked slow) and
``benchmarks/crash_loop.py --only w``.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sdl.service.crashtest import ADMIN_TOKEN, Proc, _env, free_port, start_service, wait_for, wait_http

LEASE = 1.0
TIME_SCALE = 0.02
STATIONS = ("sim-synth", "sim-beamline", "sim-uvvis")
#: how long past its lease a lock may be seen before a sweeper frees it (sweeps every lease/2;
#: generous: the machine may be loaded)
SWEEP_SLACK_S = 10.0


def start_station(folder: Path, url: str, name: str, seed: int) -> Proc:
    cmd = [sys.executable, "-m", "sdl.workflows.cli", "worker", name, "--store", url, "--lease", str(LEASE),
           "--seed", str(seed), "--time-scale", str(TIME_SCALE)]
    return Proc(f"station-{name}", cmd, folder, _env())


def overdue_locks(store: Any, slack_s: float = SWEEP_SLACK_S) -> list[dict]:
    """Locks whose lease ended more than ``slack_s`` ago and that no sweeper has freed."""
    from sdl.workflows import resources as res
    from sdl.workflows.tables import LockRow

    with store.session() as s:
        limit = res.now(s) - dt.timedelta(seconds=slack_s)
        rows = list(s.scalars(select(LockRow).where(LockRow.expires_at.is_not(None), LockRow.expires_at < limit)))
        return [res.lock_dict(r) for r in rows]


def service_kill_loop(folder: Path, url: str, *, kills: int = 20, budget: int = 12, parallel: int = 2,
                      seed: int = 0, uptime: tuple[float, float] = (0.1, 1.0), timeout: float = 900.0) -> dict:
    """Run the loop; returns counts (kills, restarts' seconds, tasks retried...). Raises
    AssertionError, with the processes' log tails, when something is lost or left held."""
    from sdl.client import Client
    from sdl.service.dispatch import retry
    from sdl.store import Store
    from sdl.workflows.stations import three_station_workflow

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    store = Store(url)  # the schema, before any process starts on the store
    port = free_port()
    svc = start_service(folder, url, port, instruments=",".join(STATIONS))
    stations = {n: start_station(folder, url, n, i) for i, n in enumerate(STATIONS)}  # they start meanwhile
    procs: list[Proc] = [svc, *stations.values()]
    t0 = time.monotonic()
    restarts: list[float] = []
    at_kill: list[int] = []
    try:
        wait_http(port, svc, timeout=120)
        admin = Client(f"http://127.0.0.1:{port}", ADMIN_TOKEN)
        user = admin.create_user(f"crash-{int(time.time() * 1000) % 10**8}", "user")
        alice = Client(f"http://127.0.0.1:{port}", user["token"])
        prop = alice.create_proposal("workflows under service kills", list(STATIONS), kind="proprietary")
        admin.approve(prop["id"])
        wf = three_station_workflow(transit={"seconds": 10}, max_attempts=8)
        c = alice.post("/api/workflow-campaigns", {"proposal_id": prop["id"], "spec": {
            "workflow": wf, "budget": budget, "parallel": parallel, "agent": "random", "seed": seed}})
        cid = c["id"]
        alice.close()
        admin.close()

        def status() -> str:
            return retry(lambda: store.campaign(cid).status, what="campaign status")

        for _ in range(kills):
            time.sleep(rng.uniform(*uptime))
            if status() != "running":
                break  # done before all the kills: counted below
            svc.kill9()
            at_kill.append(len(retry(lambda: store.observations(cid), what="observations")))
            late = overdue_locks(store)
            assert not late, f"locks held past their lease: {late}"
            for st in stations.values():
                assert st.alive(), f"a station worker died:\n{st.tail()}"
            t1 = time.monotonic()
            port = free_port()
            svc = start_service(folder, url, port, instruments=",".join(STATIONS))
            procs.append(svc)
            wait_http(port, svc, timeout=120)
            restarts.append(time.monotonic() - t1)
        wait_for(lambda: status() in ("completed", "failed", "stopped"), timeout, "the campaign to end", procs,
                 poll=0.3)
        assert status() == "completed", f"{store.campaign(cid).message}\n{svc.tail()}"
        assert not overdue_locks(store)
        out = check_lab(store, cid, budget)
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.name} (alive={p.alive()}):\n{p.tail(2000)}" for p in procs[-4:])
        raise AssertionError(f"{exc}\n{logs}") from None
    finally:
        for p in procs:
            if p.alive():
                p.terminate(10)
            p.close()
        store.close()
    return {"kills": len(at_kill), "observations_at_each_kill": at_kill, "seconds": round(time.monotonic() - t0, 1),
            "restart_s_mean": round(sum(restarts) / len(restarts), 2) if restarts else None, **out}


def check_lab(store: Any, cid: str, budget: int, stations: tuple[str, ...] = STATIONS) -> dict:
    """What must hold once a workflow campaign ended after crashes (AssertionError otherwise)."""
    from sdl.store import RunRow
    from sdl.workflows.engine import Engine

    eng = Engine(store)
    assert store.campaign(cid).status == "completed", store.campaign(cid).message
    obs = store.observations(cid)
    assert len(obs) == budget and all(o.ok for o in obs), [o.extra for o in obs if not o.ok]
    assert len({o.suggestion_id for o in obs}) == budget  # each observation written once
    # one workflow per suggestion, every task ended; nothing held: no lock, no sample left in a position
    wfs = [eng.workflow(w.id) for w in eng.workflows(cid)]
    assert len(wfs) == budget and all(w["status"] == "done" for w in wfs), [w["status"] for w in wfs]
    assert len({w["suggestion_id"] for w in wfs}) == budget
    assert all(t["status"] == "done" for w in wfs for t in w["tasks"])
    assert eng.locks() == [], eng.locks()
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
    tasks = [t for w in wfs for t in w["tasks"]]
    with store.session() as ses:
        for inst in stations:
            uids = [t["run_uid"] for t in tasks if t["instrument"] == inst and t["run_uid"]]
            runs = sorted((r.started_at, r.finished_at) for r in ses.scalars(select(RunRow).where(RunRow.uid.in_(uids))))
            for (a0, a1), (b0, b1) in zip(runs, runs[1:]):
                assert a1 <= b0, f"{inst}: runs overlap"
    return {"workflows": len(wfs), "tasks": len(tasks), "tasks_retried": sum(t["attempts"] > 1 for t in tasks),
            "samples": len(samples)}
