"""Crash scenarios of a facility deployment, with real processes: ``sdl worker`` and
``sdl serve`` subprocesses on one store (SQLite file or PostgreSQL), killed with SIGKILL
in the middle of their work. Each scenario raises AssertionError (with the processes'
log tails) when something was lost, duplicated or left unsafe.

Used by ``tests/test_facility_crash.py`` (once each) and ``benchmarks/crash_loop.py``
(N times each, pass counts).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

XRD = {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420.0}
#: fast leases so a dead worker's item comes back within seconds
LEASE_ENV = {"SDL_HEARTBEAT_S": "0.3", "SDL_LEASE_TIMEOUT_S": "2.5", "SDL_EVENT_POLL_S": "0.1"}
ADMIN_TOKEN = "sdl-crashtest-admin-token-0123456789"


# ---------------------------------------------------------------- processes
class Proc:
    """A subprocess with its output in a log file (tail shown when a check fails)."""

    def __init__(self, name: str, cmd: list[str], folder: Path, env: dict[str, str]):
        self.name = name
        self.log_path = folder / f"{name}-{time.time_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                  start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill9(self) -> None:
        os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def terminate(self, timeout: float = 40) -> int | None:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.p.returncode

    def tail(self, n: int = 3000) -> str:
        self.log.flush()
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.alive():
            try:
                self.kill9()
            except Exception:  # noqa: BLE001
                pass
        self.log.close()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**LEASE_ENV, "PYTHONUNBUFFERED": "1", **(extra or {})}


def start_worker(folder: Path, url: str, instrument: str = "sim-xrd", time_scale: float = 0.02,
                 worker_id: str | None = None, env: dict[str, str] | None = None) -> Proc:
    cmd = [sys.executable, "-m", "sdl.cli", "worker", "--instrument", instrument, "--store", url,
           "--time-scale", str(time_scale)]
    if worker_id:
        cmd += ["--worker-id", worker_id]
    return Proc(f"worker-{worker_id or instrument.replace(':', '_')}", cmd, folder, _env(env))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(folder: Path, url: str, port: int, instruments: str = "sim-xrd") -> Proc:
    cmd = [sys.executable, "-m", "sdl.cli", "serve", "--store", url, "--port", str(port), "--instruments",
           instruments, "--no-workers", "--log-level", "warning"]
    return Proc("serve", cmd, folder, _env({"SDL_ADMIN_TOKEN": ADMIN_TOKEN}))


def wait_for(cond: Callable[[], Any], timeout: float, what: str, procs: list[Proc] = (), poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as exc:  # noqa: BLE001 - a database or service coming back
            last_exc = exc
        time.sleep(poll)
    logs = "\n".join(f"--- {p.name} (alive={p.alive()}):\n{p.tail()}" for p in procs)
    raise AssertionError(f"timed out ({timeout} s) waiting for {what}; last error {last_exc!r}\n{logs}")


def wait_http(port: int, proc: Proc, timeout: float = 60) -> None:
    import httpx

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"the service exited:\n{proc.tail()}")
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200

    wait_for(up, timeout, "the service to answer", [proc], poll=0.2)


# -------------------------------------------------------------------- store
class Facility:
    """Direct access to the shared store (what the scenarios check)."""

    def __init__(self, url: str):
        from sdl.service.db import ServiceDB
        from sdl.store import Store

        self.url = url
        self.store = Store(url)
        self.db = ServiceDB(url)

    def close(self) -> None:
        self.db.close()
        self.store.close()

    def seed(self) -> tuple[str, str]:
        """An approved proposal on sim-xrd and its PI (rows, no service needed)."""
        from sdl.models import new_id
        from sdl.service.db import MemberRow, ProposalRow, UserRow

        uid, pid = new_id(), new_id()[:16]
        with self.db.session() as s:
            s.add(UserRow(id=uid, name=f"crash-{uid[:8]}", role="user"))
            s.flush()
            s.add(ProposalRow(id=pid, title="crash test", kind="proprietary", pi_id=uid, status="approved",
                              instruments=["sim-xrd"]))
            s.flush()
            s.add(MemberRow(proposal_id=pid, user_id=uid, role="pi"))
        return pid, uid

    def enqueue(self, pid: str, uid: str, exposure: float, instrument: str = "sim-xrd",
                params: dict | None = None) -> str:
        from sdl.models import new_id
        from sdl.service.db import ItemRow

        iid = new_id()
        with self.db.session() as s:
            s.add(ItemRow(id=iid, kind="experiment", instrument=instrument, plan="autonomous_step",
                          params={**(params or XRD), "exposure": exposure}, proposal_id=pid, user_id=uid,
                          status="queued"))
        return iid

    def item(self, iid: str):
        from sdl.service.db import ItemRow

        with self.db.read() as s:
            return s.get(ItemRow, iid)

    def worker_row(self, wid: str):
        from sdl.service.db import WorkerRow

        with self.db.read() as s:
            return s.get(WorkerRow, wid)

    def run(self, uid: str):
        from sdl.store import RunRow

        with self.store.session() as s:
            return s.get(RunRow, uid)

    def audit(self, target: str, action: str) -> list:
        from sdl.service.db import AuditRow

        with self.db.read() as s:
            return list(s.scalars(select(AuditRow).where(AuditRow.target_id == target, AuditRow.action == action)))

    def usage(self, iid: str) -> list:
        from sdl.service.db import UsageRow

        with self.db.read() as s:
            return list(s.scalars(select(UsageRow).where(UsageRow.item_id == iid).order_by(UsageRow.id)))

    def items(self, **where: Any) -> list:
        from sdl.service.db import ItemRow

        with self.db.read() as s:
            q = select(ItemRow)
            for k, v in where.items():
                q = q.where(getattr(ItemRow, k) == v)
            return list(s.scalars(q))


def _check(cond: bool, msg: str, procs: list[Proc] = ()) -> None:
    if not cond:
        logs = "\n".join(f"--- {p.name} (alive={p.alive()}):\n{p.tail()}" for p in procs)
        raise AssertionError(f"{msg}\n{logs}")


# ---------------------------------------------------------------- scenarios
def scenario_worker_kill(folder: Path, url: str) -> dict:
    """kill -9 a worker with the shutter open in the middle of a run; a new worker recovers
    the item (no service running): the run kept as interrupted with its partial documents,
    the item re-run once and done, the next item done too, shutter closed."""
    folder.mkdir(parents=True, exist_ok=True)
    fac = Facility(url)
    procs: list[Proc] = []
    try:
        pid, uid = fac.seed()
        long_item = fac.enqueue(pid, uid, exposure=100.0)  # 2 s with the shutter open at time scale 0.02
        short_item = fac.enqueue(pid, uid, exposure=1.0)
        w1 = start_worker(folder, url, worker_id="crash-w1")
        procs.append(w1)

        def mid_exposure():
            it, w = fac.item(long_item), fac.worker_row("crash-w1")
            return (it.status == "running" and it.run_uid and w is not None and w.item_id == long_item
                    and w.devices.get("shutter") == "open") and it
        first = wait_for(mid_exposure, 60, "the first worker mid-exposure (shutter open)", procs)
        killed_run = first.run_uid
        w1.kill9()
        t_kill = time.monotonic()
        _check(fac.worker_row("crash-w1").devices.get("shutter") == "open",
               "the killed worker had reported its shutter open")
        _check(fac.run(killed_run).status == "running", "the killed run is left running in the store")

        w2 = start_worker(folder, url, worker_id="crash-w2")
        procs.append(w2)
        started = wait_for(lambda: (fac.worker_row("crash-w2") or None) and fac.worker_row("crash-w2"), 60,
                           "the second worker to report", procs)
        _check(started.devices.get("shutter") == "closed", f"a new worker starts safe: {started.devices}", procs)
        done = wait_for(lambda: fac.item(long_item).status in ("done", "failed") and fac.item(long_item), 90,
                        "the interrupted item to be re-run", procs)
        recovered_after = time.monotonic() - t_kill
        _check(done.status == "done" and done.attempts == 2,
               f"re-run once and done: {done.status}, attempts {done.attempts}, {done.error}", procs)
        _check(done.run_uid != killed_run and fac.run(done.run_uid).status == "success", "a new run succeeded")
        run = fac.run(killed_run)
        docs = fac.store.documents(killed_run)
        names = [n for n, _ in docs]
        _check(run.status == "interrupted", f"the killed run is marked interrupted: {run.status}", procs)
        _check(names[:1] == ["start"] and "stop" not in names, f"partial documents kept: {names}")
        rec = fac.audit(long_item, "experiment.recover")
        _check(len(rec) == 1 and rec[0].detail.get("run_uid") == killed_run, "one recovery, audited with its run")
        use = [u.status for u in fac.usage(long_item)]
        _check(use == ["interrupted", "done"], f"metering: the dead attempt and the re-run: {use}")
        short = wait_for(lambda: fac.item(short_item).status in ("done", "failed") and fac.item(short_item), 60,
                         "the second item", procs)
        _check(short.status == "done" and short.attempts == 1, f"no item lost: {short.status}", procs)
        _check(all(i.status == "done" for i in fac.items(proposal_id=pid)), "every item done")
        after = wait_for(lambda: (r := fac.worker_row("crash-w2")) and r.state == "idle" and r, 30,
                         "the worker to go idle", procs)
        _check(after.devices.get("shutter") == "closed", f"shutter closed afterwards: {after.devices}", procs)
        return {"recovered_and_rerun_s": round(recovered_after, 2), "documents_kept": len(docs)}
    finally:
        for p in procs:
            p.close()
        fac.close()


def scenario_fencing_and_cleanup(folder: Path, url: str) -> dict:
    """A worker whose lease is taken (as after a false expiry) aborts its plan -- cleanup
    closes the shutter -- and writes no result; a worker stopped with SIGTERM mid-exposure
    closes the shutter, keeps the run as interrupted and puts the item back."""
    folder.mkdir(parents=True, exist_ok=True)
    from sqlalchemy import update

    from sdl.service.db import ItemRow

    fac = Facility(url)
    procs: list[Proc] = []
    try:
        pid, uid = fac.seed()
        stolen = fac.enqueue(pid, uid, exposure=150.0)
        w = start_worker(folder, url, worker_id="fence-w1")
        procs.append(w)
        wait_for(lambda: fac.item(stolen).status == "running" and fac.item(stolen).run_uid
                 and fac.worker_row("fence-w1").devices.get("shutter") == "open", 60, "mid-exposure", procs)
        run_uid = fac.item(stolen).run_uid
        with fac.db.session() as s:  # another worker "takes" the lease
            s.execute(update(ItemRow).where(ItemRow.id == stolen)
                      .values(lease_token="thief", worker="thief", lease_expires_at=dt.datetime.now(dt.timezone.utc)
                              + dt.timedelta(hours=1)))
        r = wait_for(lambda: (x := fac.worker_row("fence-w1")) and x.state == "idle" and x.item_id is None and x,
                     30, "the fenced worker to give the item up", procs)
        _check(r.devices.get("shutter") == "closed", f"its cleanup closed the shutter: {r.devices}", procs)
        it = fac.item(stolen)
        _check(it.status == "running" and it.lease_token == "thief" and it.worker == "thief",
               f"the fenced worker wrote nothing over the new holder: {it.status} {it.worker}", procs)
        _check(fac.usage(stolen) == [], "no usage written by the fenced worker", procs)
        _check(fac.run(run_uid).status == "running", "the run is the new holder's to close", procs)

        stopped = fac.enqueue(pid, uid, exposure=150.0)
        wait_for(lambda: fac.item(stopped).status == "running" and fac.item(stopped).run_uid
                 and fac.worker_row("fence-w1").devices.get("shutter") == "open", 60, "mid-exposure again", procs)
        run2 = fac.item(stopped).run_uid
        rc = w.terminate()
        _check(rc == 0, f"SIGTERM: clean exit ({rc})", procs)
        r = fac.worker_row("fence-w1")
        _check(r.state == "stopped" and r.devices.get("shutter") == "closed",
               f"stopped with the shutter closed: {r.state} {r.devices}", procs)
        it = fac.item(stopped)
        _check(it.status == "queued" and it.run_uid is None and it.lease_token is None,
               f"the item is back in the queue: {it.status}", procs)
        _check(fac.run(run2).status == "interrupted" and "stop" in [n for n, _ in fac.store.documents(run2)],
               "the run closed as interrupted, its stop document written by the cleanup", procs)
        return {}
    finally:
        for p in procs:
            p.close()
        fac.close()


def _campaign_checks(fac: Facility, cid: str, budget: int, procs: list[Proc]) -> dict:
    from sdl.store import SuggestionRow

    obs = fac.store.observations(cid)
    sids = [o.suggestion_id for o in obs]
    _check(len(obs) == budget, f"{len(obs)} observations, budget {budget}", procs)
    _check(len(set(sids)) == len(sids), f"no observation duplicated: {sids}", procs)
    with fac.store.session() as s:
        sugs = list(s.scalars(select(SuggestionRow).where(SuggestionRow.campaign_id == cid)))
    done = {x.id for x in sugs if x.status == "done"}
    _check(done == set(sids), "every measured suggestion has its observation, and only those", procs)
    _check(all(fac.run(o.run_uid).status == "success" for o in obs), "each observation's run succeeded", procs)
    items = fac.items(campaign_id=cid)
    _check(not [i for i in items if i.status in ("queued", "running")], "nothing left queued or running", procs)
    runs = fac.store.runs(cid)
    return {"runs": len(runs), "interrupted_runs": sum(r.status == "interrupted" for r in runs),
            "items": len(items)}


def _campaign_setup(folder: Path, url: str, budget: int, time_scale: float = 0.01):
    from sdl.client import Client

    port = free_port()
    svc = start_service(folder, url, port)
    wk = start_worker(folder, url, time_scale=time_scale, worker_id="camp-w1")
    procs = [svc, wk]
    wait_http(port, svc)
    admin = Client(f"http://127.0.0.1:{port}", ADMIN_TOKEN)
    u = admin.create_user(f"camp-{time.time_ns() % 10**8}", "user")
    alice = Client(f"http://127.0.0.1:{port}", u["token"])
    prop = alice.create_proposal("crash campaign", ["sim-xrd"])
    admin.approve(prop["id"])
    camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": budget,
                                              "exposure": 20.0}, start=True)
    return port, procs, alice, camp["id"]


def scenario_service_kill(folder: Path, url: str, budget: int = 6) -> dict:
    """kill -9 the service (an external worker keeps running) during a campaign and start
    it again: the campaign continues where it stopped, no observation lost or duplicated."""
    folder.mkdir(parents=True, exist_ok=True)
    fac = Facility(url)
    procs: list[Proc] = []
    try:
        port, procs, alice, cid = _campaign_setup(folder, url, budget)
        wait_for(lambda: len(fac.store.observations(cid)) >= 2, 90, "two observations", procs)
        procs[0].kill9()
        n_at_kill = len(fac.store.observations(cid))
        time.sleep(1.5)  # the worker finishes the step it runs; nothing new is planned
        svc2 = start_service(folder, url, port)
        procs.append(svc2)
        wait_http(port, svc2)
        final = wait_for(lambda: (c := alice.campaign(cid))["state"] in ("completed", "failed", "stopped") and c,
                         120, "the campaign to finish after the restart", procs, poll=0.2)
        _check(final["state"] == "completed", f"campaign {final['state']}: {final['message']}", procs)
        out = _campaign_checks(fac, cid, budget, procs)
        out["observations_at_kill"] = n_at_kill
        return out
    finally:
        for p in procs:
            p.close()
        fac.close()


def scenario_db_restart(folder: Path, cluster: Any, budget: int = 6) -> dict:
    """Restart PostgreSQL (pg_ctl restart) during a campaign: service and worker reconnect
    and the campaign finishes, nothing lost or duplicated."""
    folder.mkdir(parents=True, exist_ok=True)
    url = cluster.create_database(f"crash_{time.time_ns() % 10**12}")
    fac = Facility(url)
    procs: list[Proc] = []
    try:
        port, procs, alice, cid = _campaign_setup(folder, url, budget)
        wait_for(lambda: len(fac.store.observations(cid)) >= 2, 90, "two observations", procs)
        t0 = time.monotonic()
        cluster.restart()
        down_s = time.monotonic() - t0
        final = wait_for(lambda: (c := alice.campaign(cid))["state"] in ("completed", "failed", "stopped") and c,
                         120, "the campaign to finish after the restart", procs, poll=0.3)
        _check(final["state"] == "completed", f"campaign {final['state']}: {final['message']}", procs)
        _check(all(p.alive() for p in procs), "service and worker survived the restart", procs)
        out = _campaign_checks(fac, cid, budget, procs)
        out["restart_s"] = round(down_s, 2)
        return out
    finally:
        for p in procs:
            p.close()
        fac.close()
