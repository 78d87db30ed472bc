"""A station's task worker: claims tasks of one instrument from the store, moves the
sample there (simulated transit, with its fault), runs the task's plan on its own
RunEngine (documents into the store as they come), reduces the run and finishes the
task in one transaction. One per instrument per process; any number of them, on any
host, share the store. ``sdl workflow worker INSTRUMENT`` runs one as a process."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

from sdl.models import new_id
from sdl.reduction import reduce_run
from sdl.store import Store
from sdl.workflows.engine import HOTEL, Claim, Engine, LeaseLost
from sdl.workflows.graph import WorkflowSpec
from sdl.workflows.heartbeat import Heartbeat

log = logging.getLogger(__name__)


class TaskWorker:
    def __init__(self, store: Store, instrument: str, *, worker_id: str | None = None, lease_s: float = 10.0,
                 seed: int = 0, time_scale: float = 0.0, options: dict | None = None, poll_s: float = 0.1,
                 transit_seed: int | None = None):
        from bluesky import RunEngine

        from sdl.instruments import make_instrument

        self.store = store
        self.engine = Engine(store, lease_s=lease_s)
        self.name = instrument
        self.instrument = make_instrument(instrument, seed=seed, time_scale=time_scale, options=options)
        self.time_scale = float(time_scale)
        self.worker_id = worker_id or f"{instrument}@{socket.gethostname()}:{os.getpid()}:{new_id()[:6]}"
        self.poll_s = poll_s
        self.heartbeat_s = max(0.05, lease_s / 4)
        self.RE = RunEngine({}, context_managers=[])
        self.rng = random.Random(seed if transit_seed is None else transit_seed)
        self._stop = threading.Event()
        self._last_sweep = 0.0
        self.done = 0

    # -------------------------------------------------------------------- loop
    def stop(self) -> None:
        self._stop.set()

    def run(self, max_tasks: int | None = None) -> int:
        """Claim and run tasks until stopped (or ``max_tasks`` ran)."""
        from sdl.service.dispatch import is_disconnect

        while not self._stop.is_set() and (max_tasks is None or self.done < max_tasks):
            try:
                ran = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the worker outlives a database restart
                if is_disconnect(exc):
                    log.warning("%s: database unavailable (%s); retrying", self.worker_id, type(exc).__name__)
                else:
                    log.exception("%s: unexpected error; carrying on", self.worker_id)
                self._stop.wait(max(self.poll_s, 0.5))
                continue
            if not ran:
                self._stop.wait(self.poll_s)
        return self.done

    def run_once(self) -> bool:
        if time.monotonic() - self._last_sweep > self.engine.lease_s / 2:
            self._last_sweep = time.monotonic()
            try:
                self.engine.sweep()
            except Exception as exc:  # noqa: BLE001 - the next loop tries again
                log.warning("sweep: %s", exc)
        claim = self.engine.claim(self.name, self.worker_id)
        if claim is None:
            return False
        try:
            self.execute(claim)
        except LeaseLost:
            log.warning("%s: lease of task %s lost; its result is not written", self.worker_id, claim.id)
        self.done += 1
        return True

    # ---------------------------------------------------------------- one task
    def execute(self, claim: Claim) -> None:
        def renew() -> bool:
            try:
                self.engine.renew(claim)
                return True
            except LeaseLost:
                return False

        hb = Heartbeat(renew, self.heartbeat_s, f"wf-heartbeat-{self.name}", level=logging.INFO).start()
        try:
            self._execute(claim, hb.lost)
        finally:
            hb.stop(timeout=None)

    def _execute(self, claim: Claim, lost: threading.Event) -> None:
        wf = claim.workflow
        spec = WorkflowSpec.model_validate(wf.spec)
        tspec = spec.task(claim.task.name)
        sample_id = claim.task.sample_id
        if claim.task.kind == "measure":
            before = claim.sample["state"] if claim.sample else "made"
            frm = claim.sample["location"]["position"] if claim.sample else HOTEL
            self.engine.sample_event(claim, "in_transit", state="in_transit", station="transit",
                                     position=f"{frm} -> {self.name}")
            time.sleep(spec.transit.seconds * self.time_scale)
            if self.engine.transit_drops(spec, self.rng):
                self.engine.sample_lost(claim, f"dropped in transit from {frm} to {self.name}", "transit")
                return
            self.engine.sample_event(claim, "arrived", state=before, station=self.name, position=f"{self.name}/1")
        uid_box: dict[str, Any] = {}

        def on_doc(name: str, doc: dict) -> None:
            if lost.is_set():
                raise LeaseLost(claim.id)
            if name == "start":
                uid_box["uid"] = doc["uid"]
                self.engine.open_run(claim, doc["uid"])
            if "uid" in uid_box:
                self.store.add_document(uid_box["uid"], name, doc)

        md = {"workflow_id": wf.id, "task": claim.task.name, "task_id": claim.id, "campaign_id": wf.campaign_id,
              "proposal": wf.proposal_id, "attempt": claim.task.attempts, "worker": self.worker_id}
        suggestion = SimpleNamespace(id=wf.suggestion_id, params=wf.params)
        token = self.RE.subscribe(on_doc)
        try:
            plan = self.instrument.step_plan(suggestion, md=md, plan=claim.task.plan or None,
                                             options=dict(tspec.options), sample_id=sample_id or "")
            self.RE(plan)
            if lost.is_set():
                raise LeaseLost(claim.id)
            uid = uid_box.get("uid")
            if uid is None:
                raise RuntimeError("the plan opened no run")
            values = reduce_run(self.store.documents(uid))
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - a device fault: the workflow's policy decides
            if lost.is_set():
                raise LeaseLost(claim.id) from exc
            log.warning("%s: task %s failed: %s", self.worker_id, claim.task.name, exc)
            self._finish(claim, ok=False, error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.RE.unsubscribe(token)
        self._finish(claim, ok=True, result=values, params=dict(wf.params))

    def _finish(self, claim: Claim, **kw: Any) -> None:
        """Finish through a database outage (until the lease would be gone: then the sweeper decides)."""
        from sdl.service.dispatch import retry

        retry(lambda: self.engine.finish(claim, **kw), what=f"finish task {claim.id}", timeout=self.engine.lease_s)


def open_store(url: str, timeout: float = 300.0) -> Store:
    """Open the store, waiting while the database is unreachable (a restart): a worker or a
    runner started during a database restart must not die of it."""
    from sdl.database import DatabaseError
    from sdl.service.dispatch import is_disconnect

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Store(url)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if not (isinstance(exc, DatabaseError) or is_disconnect(exc)) or time.monotonic() > deadline:
                raise
            log.warning("store unreachable (%s); retrying", exc)
            time.sleep(0.5)


def serve_worker(store_url: str, instrument: str, *, lease_s: float = 10.0, seed: int = 0,
                 time_scale: float = 0.0, options: dict | None = None, max_tasks: int | None = None) -> int:
    """Run one worker process until stopped (SIGTERM/SIGINT)."""
    import signal

    store = open_store(store_url)
    w = TaskWorker(store, instrument, lease_s=lease_s, seed=seed, time_scale=time_scale, options=options,
                   transit_seed=seed * 1000 + os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    try:
        return w.run(max_tasks)
    finally:
        store.close()
