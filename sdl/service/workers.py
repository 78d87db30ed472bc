"""Instrument workers: one thread per instrument, each with its own bluesky RunEngine.

A worker asks the scheduler for the next item, runs it through the RunEngine and
records it: a submitted experiment's documents go to the store as they are made and
the run is reduced to values; a campaign step goes through the campaign machinery
(:class:`sdl.campaign.CampaignRunner`), which stores the run's end, the suggestion's
status and the observation in one transaction. Every document is also published on
the live stream.

Pause and abort are the RunEngine's own: a pause request stops the plan at its next
checkpoint (``RE.request_pause(defer=True)``), resume continues it, abort runs the
plan's cleanup (shutter closed, sample returned) and closes the run as aborted.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from typing import Any

from bluesky.utils import RunEngineInterrupted

from sdl.reduction import reduce_run
from sdl.service.db import ItemRow
from sdl.store import Store

log = logging.getLogger(__name__)


class Aborted(RunEngineInterrupted):
    """The current item was aborted by a person (or the service is stopping)."""


class ServiceInstrument:
    """An instrument as a long-lived worker holds it: rack slots are reused.

    The simulated rack has a fixed number of slots and a made sample stays in its slot;
    a worker runs forever, so before a step uses a slot, whatever sample is still in it
    is taken out of the rack (archived), as an operator would.
    """

    def __init__(self, instrument: Any, n_slots: int):
        self._inst = instrument
        self.n_slots = n_slots
        self._next = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inst, name)

    def free_slot(self, slot: int) -> int:
        slot = (int(slot) - 1) % self.n_slots + 1
        lab = getattr(self._inst, "lab", None)
        registry = getattr(lab, "registry", None)
        if registry is not None:
            with registry.lock:
                sid = registry.slots.pop(slot, None)
                if sid is not None and sid in registry.records:
                    rec = registry.records[sid]
                    rec.slot = None
                    rec.location = "archived"  # type: ignore[assignment]
                    rec.history.append(f"{time.time():.3f} archived (slot {slot} reused)")
        return slot

    def next_slot(self) -> int:
        with self._lock:
            self._next = self._next % self.n_slots + 1
            return self.free_slot(self._next)

    def step_plan(self, suggestion, *, slot: int, sample_id: str, exposure: float, md: dict):
        return self._inst.step_plan(suggestion, slot=self.free_slot(slot), sample_id=sample_id,
                                    exposure=exposure, md=md)


class _REProxy:
    """The RunEngine as a campaign runner sees it: calls go through the worker (pause-aware)."""

    def __init__(self, worker: "InstrumentWorker"):
        self._worker = worker

    def __call__(self, plan):
        return self._worker.call(plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._worker.RE, name)


class _ExperimentRecorder:
    """Documents of a submitted experiment -> the store; the run reduced at its end."""

    def __init__(self, store: Store, on_start):
        self.store = store
        self.on_start = on_start
        self.uid: str | None = None
        self.exit_status: str | None = None
        self.reason = ""
        self.values: dict | None = None
        self.reduce_error = ""

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.uid = doc["uid"]
            self.store.start_run(self.uid, None, None)
            self.on_start(self.uid)
        if self.uid is None:
            return
        self.store.add_document(self.uid, name, doc)
        if name == "stop":
            self.exit_status = doc.get("exit_status")
            self.reason = doc.get("reason", "") or ""
            if self.exit_status == "success":
                try:
                    self.values = reduce_run(self.store.documents(self.uid))
                except Exception as exc:  # noqa: BLE001 - recorded, the run stays
                    self.reduce_error = f"reduction failed: {exc}"


class InstrumentWorker:
    def __init__(self, svc: Any, cfg: Any):
        from sdl.instruments import make_instrument

        self.svc = svc
        self.name = cfg.name
        self.cfg = cfg
        ts = svc.settings.time_scale if cfg.time_scale is None else cfg.time_scale
        seed = svc.settings.seed if cfg.seed is None else cfg.seed
        self.time_scale = ts
        self.instrument = ServiceInstrument(
            make_instrument(cfg.name, seed=seed, time_scale=ts, n_slots=cfg.n_slots), cfg.n_slots
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{cfg.name}"
        self.RE: Any = None
        self.re_proxy = _REProxy(self)
        self.paused = False
        self.state = "starting"
        self.current: ItemRow | None = None
        self.error = ""
        self._cmds: queue.Queue[str] = queue.Queue()
        self._abort_reason: str | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"sdl-worker-{cfg.name}", daemon=True)
        self._beat = threading.Thread(target=self._heartbeat, name=f"sdl-heartbeat-{cfg.name}", daemon=True)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread.start()
        self._beat.start()
        self._ready.wait(30)

    def _heartbeat(self) -> None:
        """The lease: while an item runs, its heartbeat is renewed (documents or not)."""
        while not self._stop.wait(self.svc.settings.heartbeat_s):
            item = self.current
            if item is not None:
                try:
                    self.svc.heartbeat(item)
                except Exception as exc:  # noqa: BLE001 - next beat tries again
                    log.info("heartbeat %s: %s", self.name, exc)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.abort(None, "service stopping")
        self.svc.scheduler.wake()
        self._thread.join(timeout)
        if self._beat.is_alive():
            self._beat.join(timeout)

    def _main(self) -> None:
        from bluesky import RunEngine

        try:
            self.RE = RunEngine({}, context_managers=[])
            self.RE.subscribe(self._publish)
        except Exception as exc:  # pragma: no cover - environment problem
            self.state, self.error = "error", str(exc)
            self._ready.set()
            return
        self._set_state("idle")
        self._ready.set()
        while not self._stop.is_set():
            if self.paused:
                self._set_state("paused")
                self.svc.scheduler.wait(0.5)
                continue
            try:
                item = self.svc.scheduler.next_item(self.name, self.worker_id, lambda: not self.paused)
            except Exception as exc:  # noqa: BLE001 - database hiccup: try again
                log.warning("worker %s: cannot take the next item: %s", self.name, exc)
                item = None
                time.sleep(0.5)
            if item is None:
                self._set_state("idle")
                self.svc.scheduler.wait(0.5)
                continue
            self._execute(item)
        self._set_state("stopped")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.svc.bus.publish({"type": "instrument", "instrument": self.name, "state": state})

    # ---------------------------------------------------------------- control
    def pause(self, immediate: bool = True) -> None:
        """No new items; with ``immediate`` the running plan pauses at its next checkpoint."""
        with self.svc.scheduler._lock:  # no claim is in flight once this returns
            self.paused = True
        with self._lock:
            if immediate and self.RE is not None and self.RE.state == "running":
                try:
                    self.RE.request_pause(defer=True)
                except Exception as exc:  # noqa: BLE001 - it finished meanwhile
                    log.info("pause: %s", exc)
        self._set_state("paused")

    def resume(self) -> None:
        with self._lock:
            self.paused = False
            if self.RE is not None and self.RE.state == "paused":
                self._cmds.put("resume")
        self._set_state("running" if self.current is not None else "idle")
        self.svc.scheduler.wake()

    def abort(self, item_id: str | None, reason: str) -> bool:
        """Abort the running item (``item_id`` None: whatever runs). False if it is not running here."""
        with self._lock:
            cur = self.current
            if cur is None or (item_id is not None and cur.id != item_id):
                return False
            self._abort_reason = reason or "aborted"
            state = self.RE.state if self.RE is not None else "idle"
            if state == "paused":
                self._cmds.put("abort")
            elif state == "running":
                try:
                    self.RE.abort(reason=self._abort_reason)
                except Exception as exc:  # noqa: BLE001 - it ended meanwhile
                    log.info("abort: %s", exc)
            return True

    # -------------------------------------------------------------- execution
    def call(self, plan) -> Any:
        """Run a plan on this worker's RunEngine; wait out pauses; raise :class:`Aborted` on abort."""
        if self._abort_reason is not None:
            plan.close()
            raise Aborted(self._abort_reason)
        try:
            return self.RE(plan)
        except Aborted:
            raise
        except RunEngineInterrupted:
            pass
        while True:
            if self.RE.state == "paused":
                self._set_state("paused")
                if self._abort_reason is not None:
                    cmd = "abort"
                else:
                    cmd = self._cmds.get()
                self._set_state("running")
                try:
                    if cmd == "resume":
                        return self.RE.resume()
                    self.RE.abort(reason=self._abort_reason or "aborted")
                except RunEngineInterrupted:
                    continue
                raise Aborted(self._abort_reason or "aborted")
            raise Aborted(self._abort_reason or "aborted")

    def _execute(self, item: ItemRow) -> None:
        while not self._cmds.empty():
            self._cmds.get_nowait()
        with self._lock:
            self.current = item
            self._abort_reason = None
        self._set_state("running")
        t0 = time.time()
        self.svc.item_started(item)
        status, run_uid, result, error = "failed", None, None, ""
        try:
            if item.kind == "campaign":
                status, run_uid, result, error = self.svc.campaigns.run_step(self, item)
            else:
                status, run_uid, result, error = self._run_experiment(item)
        except Exception as exc:  # noqa: BLE001 - an item's failure must not stop the worker
            log.exception("worker %s: item %s failed", self.name, item.id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if status != "done":
                self._settle()
            with self._lock:
                self.current = None
                self._abort_reason = None
            self.svc.item_finished(item, status, run_uid=run_uid, result=result, error=error,
                                   started=t0, seconds=time.time() - t0)

    def _settle(self, timeout: float = 300.0) -> None:
        """After an abort or a failure: wait until no device is still busy with a command
        of the plan that ended (a robot finishes its move), so the next item starts clean."""
        devices = [getattr(self.instrument.devices, n, None) for n in ("robot", "changer", "detector")]
        deadline = time.monotonic() + timeout
        for dev in devices:
            state = getattr(dev, "state", None)
            if state is None:
                continue
            try:
                while state.get() == "busy" and time.monotonic() < deadline and not self._stop.is_set():
                    time.sleep(0.01)
            except Exception as exc:  # noqa: BLE001 - a device we cannot read: go on
                log.info("settle %s: %s", getattr(dev, "name", dev), exc)

    def _run_experiment(self, item: ItemRow) -> tuple[str, str | None, dict | None, str]:
        from sdl.service.plans import build_plan

        slot = self.instrument.next_slot()
        sample_id = f"q{item.id[:10]}-{item.attempts}"
        md = {"queue_item_id": item.id, "proposal": item.proposal_id, "priority": item.priority,
              "note": item.note, "submitted_by": item.user_id, "plan": item.plan}
        recorder = _ExperimentRecorder(self.svc.store, lambda uid: self.svc.item_run_opened(item, uid))
        token = self.RE.subscribe(recorder)
        try:
            try:
                plan = build_plan(item.plan, self.instrument, item.params, slot=slot, sample_id=sample_id, md=md)
                self.call(plan)
            except Aborted as exc:
                if self.stopping:  # not a person's abort: the run is interrupted, the item runs again later
                    if recorder.uid is not None:
                        self._close_run(recorder.uid, "interrupted", "the service stopped")
                    return "queued", None, None, "interrupted: the service stopped; queued again"
                reason = str(exc) or "aborted"
                if recorder.uid is not None:
                    self._close_run(recorder.uid, "aborted", reason)
                return "aborted", recorder.uid, None, reason
            except Exception as exc:  # noqa: BLE001 - device fault, bad point: recorded
                msg = f"{exc}"
                if recorder.uid is not None:
                    self._close_run(recorder.uid, "failed", msg)
                return "failed", recorder.uid, None, msg
        finally:
            self.RE.unsubscribe(token)
        if recorder.uid is None:
            return "failed", None, None, "the plan opened no run"
        if recorder.exit_status != "success" or recorder.values is None:
            msg = recorder.reduce_error or recorder.reason or f"run ended with {recorder.exit_status}"
            self._close_run(recorder.uid, "failed", msg)
            return "failed", recorder.uid, None, msg
        self.svc.store.finish_run(recorder.uid, "success")
        return "done", recorder.uid, {"values": recorder.values}, ""

    def _close_run(self, uid: str, status: str, reason: str) -> None:
        try:
            self.svc.store.finish_run(uid, status, reason=reason)
        except KeyError:  # pragma: no cover
            pass

    # ------------------------------------------------------------ live stream
    def _publish(self, name: str, doc: dict) -> None:
        item = self.current
        if item is None:
            return
        self.svc.bus.publish(
            {"type": "document", "instrument": self.name, "item_id": item.id, "kind": item.kind,
             "campaign_id": item.campaign_id, "proposal_id": item.proposal_id, "name": name, "doc": doc},
            proposal_id=item.proposal_id,
        )
        self.svc.heartbeat(item)  # throttled

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "paused": self.paused, "time_scale": self.time_scale,
                "current_item": None if self.current is None else self.current.id,
                "current_proposal": None if self.current is None else self.current.proposal_id,
                "worker": self.worker_id, "error": self.error}
