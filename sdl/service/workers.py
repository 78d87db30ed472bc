"""Instrument workers: each with its own bluesky RunEngine, leasing items from the store.

One class serves both deployments. Embedded (``sdl serve``): a thread of the service
per instrument, its events go straight onto the service's live bus. External (``sdl
worker --instrument NAME --store URL``): its own process, possibly on the instrument's
control host, with no HTTP at all; everything it does goes through the shared store
(:mod:`sdl.service.dispatch`), and its live events reach the services through the
database (:mod:`sdl.service.relay`).

A worker claims the next item (fair share, leased with a token), keeps the lease alive
from a heartbeat thread, writes each document to the store as it is made (a writer
thread, in order, retried through a database outage), reduces the run from its
documents (:func:`sdl.reduction.reduce_run`, a pure function) and ends the item -- its
status, the run's end, the suggestion's status and the observation of a campaign
step, the usage row and the fair-share charge -- in one transaction that only goes
through while the lease is still its own. A worker whose lease was taken (it was
presumed dead) aborts its plan and writes nothing more.

Pause and abort are the RunEngine's own: a pause request stops the plan at its next
checkpoint (``RE.request_pause(defer=True)``), resume continues it, abort runs the
plan's cleanup (shutter closed, sample returned) and closes the run as aborted. An
external worker takes pause, resume and abort from the store at its next heartbeat.

An instrument configured with ``backend: queueserver`` has no RunEngine here: its
plans run on the beamline's own bluesky-queueserver RE Manager
(:class:`sdl.backends.queueserver.QueueServerBackend`), and the worker does all the
rest as above -- leases, heartbeats, documents to the store, reduction, the campaign
step's observation. Abort reaches the manager (pause and abort of the running plan
there); a pause here stops taking items, while the plan already running on the
manager runs to its end (the manager's own pause stays the beamline's).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from bluesky.utils import RunEngineInterrupted

from sdl.models import Observation, new_id
from sdl.reduction import reduce_run
from sdl.service.db import ItemRow
from sdl.service.dispatch import Dispatcher, Lease, LeaseLost, retry
from sdl.store import jsonable

log = logging.getLogger(__name__)


class Aborted(RunEngineInterrupted):
    """The current item was aborted by a person (or the worker is stopping)."""


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

    def step_plan(self, suggestion, *, md: dict, slot: int | None = None, **kwargs: Any):
        if slot is not None:
            kwargs["slot"] = self.free_slot(slot)
        return self._inst.step_plan(suggestion, md=md, **kwargs)


def make_backend(cfg: Any) -> Any:
    """The instrument backend an :class:`InstrumentConfig` asks for (None: sdl's own RunEngine)."""
    if getattr(cfg, "backend", "runengine") != "queueserver":
        return None
    from sdl.backends.queueserver import QueueServerBackend

    qs = cfg.queueserver
    return QueueServerBackend(
        cfg.name, qs.control_addr, qs.info_addr, qs.data_addr, timeout=qs.timeout_s, open_timeout=qs.open_timeout_s,
        queue_timeout=qs.queue_timeout_s, stream_timeout=qs.stream_timeout_s, plan_names=qs.plan_names,
        user=qs.user, user_group=qs.user_group,
    )


def device_states(instrument: Any) -> dict[str, Any]:
    """Safety-relevant device states as read now (the shutter, for a beamline)."""
    out: dict[str, Any] = {}
    devices = getattr(instrument, "devices", None)
    shutter = getattr(devices, "shutter", None)
    state = getattr(shutter, "state", None)
    if state is not None:
        try:
            out["shutter"] = state.get()
        except Exception as exc:  # noqa: BLE001 - unreadable is worth saying
            out["shutter"] = f"unreadable: {exc}"
    return out


def safe_state_plan(instrument: Any):
    """Put the instrument in its safe state: the beam shutter closed."""
    from sdl.plans.measure import close_shutter

    shutter = getattr(getattr(instrument, "devices", None), "shutter", None)
    if shutter is not None:
        yield from close_shutter(shutter)


@dataclass
class Outcome:
    status: str  # done | failed | aborted | cancelled | queued (back to the queue) | lost
    run_uid: str | None = None
    run_status: str | None = None
    run_reason: str = ""
    suggestion_status: str | None = None
    observation: Observation | None = None
    result: dict | None = None
    error: str = ""


class DocumentWriter:
    """A run's documents -> the store, in order, off the RunEngine's thread.

    The first batch opens the run (run row, the item's run uid, the suggestion running)
    in one transaction with the start document. A database outage is waited out (the
    plan goes on; documents queue); a lost lease stops the writing.
    """

    def __init__(self, worker: "InstrumentWorker", lease: Lease, campaign_id: str | None,
                 suggestion_id: str | None):
        self.worker = worker
        self.lease = lease
        self.campaign_id = campaign_id
        self.suggestion_id = suggestion_id
        self.uid: str | None = None
        self.docs: list[tuple[str, dict]] = []
        self.exit_status: str | None = None
        self.reason = ""
        self.opened = False
        self.error: BaseException | None = None
        it = lease.item
        self.meta = {"instrument": it.instrument, "item_id": it.id, "kind": it.kind,
                     "campaign_id": it.campaign_id, "proposal_id": it.proposal_id}
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=f"sdl-docs-{it.id[:8]}", daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            if self.uid is not None:
                return  # one run per item
            self.uid = doc["uid"]
        if self.uid is None:
            return
        clean = jsonable(doc)
        self.docs.append((name, clean))
        if name == "stop":
            self.exit_status = doc.get("exit_status")
            self.reason = doc.get("reason", "") or ""
        self._q.put((name, clean))
        self.worker.host.publish({**self.meta, "type": "document", "name": name, "doc": clean},
                                 self.lease.item.proposal_id, relayed=True)

    def open_empty(self) -> str:
        """A run for a step that failed before its plan opened one (the failure is recorded)."""
        self.uid = new_id()
        self._q.put(None)
        return self.uid

    def _main(self) -> None:
        d = self.worker.dispatcher
        while True:
            first = self._q.get()
            if first == "__end__":
                self._q.task_done()
                return
            batch = [first]
            while True:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt == "__end__":
                    self._q.put(nxt)
                    self._q.task_done()
                    break
                batch.append(nxt)
            docs = [b for b in batch if b is not None]
            try:
                if self.lease.lost:
                    pass
                elif not self.opened:
                    retry(lambda: d.open_run(self.lease, self.uid, self.campaign_id, self.suggestion_id, docs,
                                             self.meta), what="open run", stop=lambda: self.lease.lost)
                    self.opened = True
                elif docs:
                    retry(lambda: d.add_documents(self.uid, docs, self.meta), what="documents",
                          stop=lambda: self.lease.lost)
            except LeaseLost:
                log.warning("item %s: lease lost; documents of run %s no longer written", self.lease.id, self.uid)
                self.worker._lease_lost(self.lease)
            except Exception as exc:  # noqa: BLE001 - recorded; the item fails
                log.exception("writing documents of %s", self.uid)
                self.error = exc
            for _ in batch:
                self._q.task_done()

    def flush(self) -> None:
        self._q.join()

    def close(self) -> None:
        self._q.put("__end__")
        self._thread.join(5)


class InstrumentWorker:
    def __init__(self, host: Any, cfg: Any, *, external: bool = False, worker_id: str | None = None):

        settings = host.settings
        self.host = host
        self.svc = host  # the embedded worker's host is the service
        self.dispatcher: Dispatcher = host.dispatcher
        self.name = cfg.name
        self.cfg = cfg
        self.external = external
        ts = settings.time_scale if cfg.time_scale is None else cfg.time_scale
        seed = settings.seed if cfg.seed is None else cfg.seed
        self.time_scale = ts
        self.instrument = ServiceInstrument(
            cfg.build(seed=seed, time_scale=ts, n_slots=cfg.n_slots), cfg.n_slots
        )
        #: None: plans run on this worker's RunEngine; else the backend that runs them elsewhere
        self.backend: Any = None
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{cfg.name}"
        self.heartbeat_s = float(settings.heartbeat_s)
        self.lease_s = float(settings.lease_timeout_s)
        self.RE: Any = None
        self.paused = False
        self.state = "starting"
        self.current: ItemRow | None = None
        self.lease: Lease | None = None
        self.error = ""
        self.devices: dict[str, Any] = {}
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

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.abort(None, "the worker is stopping")
        self.host.wake()
        self._thread.join(timeout)
        if self._beat.is_alive():
            self._beat.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _report(self) -> None:
        self.dispatcher.report_worker(
            self.worker_id, self.name, state=self.state, item_id=None if self.current is None else self.current.id,
            devices=self.devices, external=self.external, host=socket.gethostname(), pid=os.getpid())

    def _heartbeat(self) -> None:
        """The lease: while an item runs its lease is renewed; a lost lease aborts the plan."""
        last_ok = time.monotonic()
        last_report = 0.0
        while not self._stop.wait(self.heartbeat_s):
            lease = self.lease
            try:
                if lease is not None and not lease.lost:
                    reason = self.dispatcher.renew(lease)
                    last_ok = time.monotonic()
                    if reason and self._abort_reason is None:
                        self.abort(lease.id, reason)
                else:
                    last_ok = time.monotonic()
                if self.external:
                    self._follow_controls()
                if time.monotonic() - last_report >= self.heartbeat_s * 0.99:
                    self.devices = self._device_states()
                    self._report()
                    last_report = time.monotonic()
            except LeaseLost:
                self._lease_lost(lease)
            except Exception as exc:  # noqa: BLE001 - next beat tries again
                log.info("heartbeat %s: %s", self.name, exc)
                if lease is not None and time.monotonic() - last_ok > 0.9 * self.lease_s:
                    # the lease runs out before we can renew it: someone else may take the item
                    self._lease_lost(lease, "the lease could not be renewed (store unreachable)")

    def _lease_lost(self, lease: Lease | None, why: str = "lease lost: the item was given to another worker") -> None:
        if lease is None or lease is not self.lease:
            return
        lease.lost = True
        log.warning("worker %s: %s (item %s); aborting its plan", self.name, why, lease.id)
        self.abort(lease.id, why)

    def _follow_controls(self) -> None:
        row = self.dispatcher.instrument_state(self.name)
        if row is None:
            return
        if row.paused and not self.paused:
            self.pause(bool(row.pause_immediate))
        elif not row.paused and self.paused:
            self.resume()

    def _main(self) -> None:
        from bluesky import RunEngine

        try:
            self.backend = make_backend(self.cfg)
            if self.backend is None:
                self.RE = RunEngine({}, context_managers=[])
                self.RE(safe_state_plan(self.instrument))  # a fresh worker starts safe: shutter closed
            self.devices = self._device_states()
        except Exception as exc:  # noqa: BLE001 - environment problem: the worker reports it and stops
            self.state, self.error = "error", str(exc)
            self._ready.set()
            return
        self._set_state("idle")
        try:
            retry(self._report, what="worker report", stop=lambda: self._stop.is_set(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the heartbeat reports later
            log.info("report %s: %s", self.name, exc)
        self._ready.set()
        idle_wait = 0.5 if not self.external else min(0.5, self.host.poll_s)
        while not self._stop.is_set():
            if self.paused:
                self._set_state("paused")
                self.host.wait(0.5)
                continue
            try:
                lease = self.dispatcher.claim(self.name, self.worker_id, lambda: not self.paused)
            except Exception as exc:  # noqa: BLE001 - database hiccup: try again
                log.warning("worker %s: cannot take the next item: %s", self.name, exc)
                lease = None
                time.sleep(0.5)
            if lease is None:
                self._set_state("idle")
                self.host.wait(idle_wait)
                continue
            self._execute(lease)
        self._set_state("stopped")
        if self.backend is not None:
            self.backend.close()
        try:
            self._report()
        except Exception:  # noqa: BLE001
            pass

    def _device_states(self) -> dict[str, Any]:
        # the devices of a queue-server instrument are the beamline's: not read from here
        return {} if self.backend is not None else device_states(self.instrument)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.host.publish({"type": "instrument", "instrument": self.name, "state": state,
                               "worker": self.worker_id}, None, relayed=False)
            if self.external:  # the service reads a worker process's state from the store
                try:
                    self._report()
                except Exception as exc:  # noqa: BLE001 - the heartbeat reports again
                    log.info("report %s: %s", self.name, exc)

    # ---------------------------------------------------------------- control
    def pause(self, immediate: bool = True) -> None:
        """No new items; with ``immediate`` the running plan pauses at its next checkpoint."""
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
        self.host.wake()

    def abort(self, item_id: str | None, reason: str) -> bool:
        """Abort the running item (``item_id`` None: whatever runs). False if it is not running here."""
        with self._lock:
            cur = self.current
            if cur is None or (item_id is not None and cur.id != item_id):
                return False
            self._abort_reason = reason or "aborted"
            if self.backend is not None:
                self.backend.abort(self._abort_reason)
                return True
            state = self.RE.state if self.RE is not None else "idle"
            if state == "paused":
                self._cmds.put("abort")
            elif state == "running":
                try:
                    self.RE.abort(reason=self._abort_reason)
                except Exception as exc:  # noqa: BLE001 - it ended meanwhile
                    log.info("abort: %s", exc)
            return True

    def abort_current(self, reason: str) -> str | None:
        cur = self.current
        return cur.id if cur is not None and self.abort(None, reason) else None

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

    def _execute(self, lease: Lease) -> None:
        while not self._cmds.empty():
            self._cmds.get_nowait()
        item = lease.item
        with self._lock:
            self.current, self.lease = item, lease
            self._abort_reason = None
        self._set_state("running")
        self.host.publish(_item_event(item), item.proposal_id, relayed=True)
        try:
            if item.kind == "campaign":
                out = self._run_step(lease)
            else:
                out = self._run_experiment(lease)
        except Exception as exc:  # noqa: BLE001 - an item's failure must not stop the worker
            log.exception("worker %s: item %s failed", self.name, item.id)
            out = Outcome("failed", error=f"{type(exc).__name__}: {exc}")
        if out.status != "done":
            self._settle()
        final = None
        if not lease.lost:
            try:
                final = retry(lambda: self.dispatcher.finish(
                    lease, out.status, run_uid=out.run_uid, run_status=out.run_status, run_reason=out.run_reason,
                    suggestion_status=out.suggestion_status, observation=out.observation, result=out.result,
                    error=out.error), what=f"finish {item.id}", timeout=max(60.0, 2 * self.lease_s))
            except LeaseLost:
                log.warning("worker %s: item %s: the lease was taken; its result is not written", self.name,
                            item.id)
            except Exception:  # noqa: BLE001 - the sweeper recovers the item once the lease expires
                log.exception("worker %s: cannot finish item %s", self.name, item.id)
        with self._lock:
            self.current = self.lease = None
            self._abort_reason = None
        self.devices = self._device_states()
        if final is not None:
            self.host.publish(_item_event(final), final.proposal_id, relayed=True)
            self.host.item_finished(final)

    def _settle(self, timeout: float = 300.0) -> None:
        """After an abort or a failure: wait until no device is still busy with a command
        of the plan that ended (a robot finishes its move), so the next item starts clean."""
        if self.backend is not None:
            return  # the manager's devices; its own plan cleanup has run
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

    def _interrupted(self, exc: BaseException) -> str | None:
        """Why the plan was cut short by us (not by a person): stopping or a lost lease."""
        if self.lease is not None and self.lease.lost:
            return "lost"
        if self.stopping:
            return "stopping"
        return None

    def _run_plan(self, plan_fn, writer: DocumentWriter) -> tuple[str, str]:
        """Run; returns (how, message): how in ok | aborted | stopping | lost | failed."""
        token = self.RE.subscribe(writer)
        try:
            try:
                self.call(plan_fn())
            except Aborted as exc:
                return (self._interrupted(exc) or "aborted"), (str(exc) or "aborted")
            except Exception as exc:  # noqa: BLE001 - device fault, bad point: recorded
                why = self._interrupted(exc)
                return (why, str(exc)) if why else ("failed", f"{exc}")
        finally:
            self.RE.unsubscribe(token)
            writer.flush()
        return self._check_run(writer)

    def _run_on_backend(self, plan: str, kwargs: dict, md: dict, writer: DocumentWriter) -> tuple[str, str]:
        """As :meth:`_run_plan`, with the plan run by the instrument's backend (an RE Manager)."""
        if self._abort_reason is not None:  # aborted before it was sent
            return (self._interrupted(None) or "aborted"), self._abort_reason
        try:
            out = self.backend.run(plan, jsonable(kwargs), jsonable(md), writer)
        except Exception as exc:  # noqa: BLE001 - refused plan, unreachable manager: recorded
            why = self._interrupted(exc)
            return (why, str(exc)) if why else ("failed", f"{exc}")
        finally:
            writer.flush()
        if out.exit_status == "abort":
            return (self._interrupted(None) or "aborted"), (out.reason or "aborted")
        if out.exit_status != "success":
            return ("lost", "lease lost") if self.lease is not None and self.lease.lost else ("failed", out.reason)
        return self._check_run(writer)

    def _run_request(self, plan: str, kwargs: dict, point: dict, md: dict, writer: DocumentWriter,
                     bluesky_plan) -> tuple[str, str]:
        """Run a request on the backend if the instrument has one, else ``bluesky_plan()`` here."""
        if self.backend is None:
            return self._run_plan(bluesky_plan, writer)
        qs = self.cfg.queueserver
        md = {**md, "sdl_plan": plan, "instrument": self.name, "params": point,
              "reduction": (qs.reduction if qs is not None and qs.reduction else self.instrument.reduction)}
        return self._run_on_backend(plan, kwargs, md, writer)

    def _check_run(self, writer: DocumentWriter) -> tuple[str, str]:
        if self.lease is not None and self.lease.lost:
            return "lost", "lease lost"
        if writer.error is not None:
            return "failed", f"documents could not be stored: {writer.error}"
        if writer.uid is None:
            return "failed", "the plan opened no run"
        if writer.exit_status != "success":
            return "failed", writer.reason or f"run ended with {writer.exit_status}"
        return "ok", ""

    def _run_experiment(self, lease: Lease) -> Outcome:
        from sdl.service.plans import build_plan

        item = lease.item
        slot = self.instrument.next_slot()
        sample_id = f"q{item.id[:10]}-{item.attempts}"
        md = {"queue_item_id": item.id, "proposal": item.proposal_id, "priority": item.priority,
              "note": item.note, "submitted_by": item.user_id, "plan": item.plan, "attempt": item.attempts,
              "worker": self.worker_id}
        writer = DocumentWriter(self, lease, None, None)
        try:
            point = self.instrument.split(item.plan, item.params)[0]
        except Exception:  # noqa: BLE001 - an internal plan (ring_check): no point
            point = {}
        try:
            how, msg = self._run_request(
                item.plan, dict(item.params), point, {**md, "sample_id": sample_id}, writer,
                lambda: build_plan(item.plan, self.instrument, item.params, slot=slot, sample_id=sample_id, md=md))
        finally:
            writer.close()
        how, msg, uid, values = self._reduced(how, msg, writer)
        cut = self._cut_short(how, msg, uid, step=False)
        if cut is not None:
            return cut
        if how == "failed":
            return Outcome("failed", run_uid=uid, run_status="failed", run_reason=msg, error=msg)
        return Outcome("done", run_uid=uid, run_status="success", result={"values": values})

    @staticmethod
    def _reduced(how: str, msg: str, writer: DocumentWriter) -> tuple[str, str, str | None, dict | None]:
        """(how, message, run uid, values): a run that went well reduced from its documents."""
        uid = writer.uid if writer.opened else None
        values: dict | None = None
        if how == "ok":
            try:
                values = reduce_run(writer.docs)
            except Exception as exc:  # noqa: BLE001 - the item fails; the run stays, recorded
                how, msg = "failed", f"reduction failed: {exc}"
        return how, msg, uid, values

    @staticmethod
    def _cut_short(how: str, msg: str, uid: str | None, *, step: bool) -> Outcome | None:
        """The outcome of an item whose plan did not run to its end (None: it did, or it failed).

        A worker that stops puts an experiment back in the queue, and a campaign step's
        suggestion back to pending (the planner queues it again)."""
        if how == "lost":
            return Outcome("lost")
        if how == "stopping":
            if step:
                return Outcome("cancelled", run_uid=uid, run_status="interrupted", run_reason="the worker stopped",
                               suggestion_status="pending", error="interrupted: the worker stopped")
            return Outcome("queued", run_uid=uid, run_status="interrupted", run_reason="the worker stopped",
                           error="interrupted: the worker stopped; queued again")
        if how == "aborted":
            return Outcome("aborted", run_uid=uid, run_status="aborted", run_reason=msg,
                           suggestion_status="aborted" if step else None, error=msg)
        return None

    def _run_step(self, lease: Lease) -> Outcome:
        """One campaign step: the suggestion (stored by the service's campaign planner) is run,
        reduced here from its documents, and its observation stored with the item's end."""
        from sdl.campaign import CampaignSpec
        from sdl.service.db import ServiceCampaignRow
        from sdl.store import CampaignRow, Store, SuggestionRow

        item = lease.item
        with self.dispatcher.db.read() as s:
            crow = s.get(ServiceCampaignRow, item.campaign_id)
            row = s.get(SuggestionRow, item.suggestion_id) if item.suggestion_id else None
            camp = s.get(CampaignRow, item.campaign_id)
        if crow is None or crow.state not in ("running", "paused") or camp is None:
            return Outcome("cancelled", error="campaign is not running")
        if row is None or row.status != "pending":
            return Outcome("cancelled", error=f"suggestion is {row.status if row else 'gone'}")
        spec = CampaignSpec.model_validate(camp.spec)
        suggestion = Store.to_suggestion(row)
        attempt = row.attempts + 1
        sample_id = f"{item.campaign_id[:8]}-{row.seq:04d}" + (f"r{attempt - 1}" if attempt > 1 else "")
        md = {"campaign_id": item.campaign_id, "proposal": spec.proposal, "suggestion_seq": row.seq,
              "attempt": attempt, "provenance": suggestion.provenance.model_dump(), "queue_item_id": item.id,
              "worker": self.worker_id}
        slot = row.seq % max(24, spec.budget + spec.batch_size) + 1
        writer = DocumentWriter(self, lease, item.campaign_id, row.id)
        try:
            point = dict(self.instrument.space.validate_point(suggestion.params)) if self.backend else {}
            plan = spec.plan or self.instrument.default_plan
            how, msg = self._run_request(
                plan, {**point, **spec.context()}, point,
                {**md, "sample_id": sample_id, "suggestion_id": suggestion.id}, writer,
                lambda: self.instrument.step_plan(suggestion, slot=slot, sample_id=sample_id, md=md, plan=plan,
                                                  **spec.context()))
            if how == "failed" and not writer.opened and not lease.lost:
                writer.open_empty()  # failed before the run opened: a run records the failure
                writer.flush()
        finally:
            writer.close()
        how, msg, uid, values = self._reduced(how, msg, writer)
        cut = self._cut_short(how, msg, uid, step=True)
        if cut is not None:
            return cut
        if how == "failed":
            obs = Observation(suggestion_id=row.id, params=row.params, ok=False, run_uid=uid,
                              extra={"error": msg})
            return Outcome("failed", run_uid=uid, run_status="failed", run_reason=msg, suggestion_status="failed",
                           observation=obs, result={"values": {}, "ok": False}, error=msg)
        start = writer.docs[0][1]
        obs = Observation(suggestion_id=row.id, params=start.get("params", row.params), values=values,
                          run_uid=uid, extra={"sample_id": start.get("sample_id")})
        if self.instrument.truth is not None and self.backend is None:
            try:
                obs.extra["truth"] = float(self.instrument.truth(obs.params))
            except Exception:  # noqa: BLE001 - truth is a diagnostic; never fail a run on it
                pass
        return Outcome("done", run_uid=uid, run_status="success", suggestion_status="done", observation=obs,
                       result={"values": values, "ok": True})

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "paused": self.paused, "time_scale": self.time_scale,
                "current_item": None if self.current is None else self.current.id,
                "current_proposal": None if self.current is None else self.current.proposal_id,
                "worker": self.worker_id, "external": self.external, "devices": self.devices, "error": self.error}


def _item_event(it: ItemRow) -> dict:
    from sdl.service.relay import item_event

    return item_event(it)
