"""The workflow engine: submit a workflow, claim its tasks on each instrument's fair
queue, hold their resources under leases, finish them in one transaction, sweep the
leases of dead workers. Everything is in the store: any process (a worker on another
host, a restarted service) can die at any point and the next one carries on from what
the database says.

Claim (one transaction, per instrument)
    the instrument's one fair queue, shared with the service's plain experiments
    (:mod:`sdl.workflows.fairqueue`): its ``svc_instruments`` row is locked (PostgreSQL
    ``FOR UPDATE``; SQLite: a no-op UPDATE takes the write lock), the proposals with
    queued experiments or startable tasks on it are ranked by
    :func:`sdl.service.scheduler.choose` over the fair-share state stored in that row, and
    if the chosen proposal's next unit is a task, its oldest task whose resources are all
    free takes them at once (:func:`sdl.workflows.resources.try_acquire`): the device, and
    the sample (a measure) or a hotel position (a make). A task whose resources are busy
    stays ready and waits; nothing is held while waiting. A plain experiment at the head
    is left to the service's worker.

Lease
    the task and every lock it took share one token and expiry, renewed together by the
    worker's heartbeat. A renewal that hits no row means the lease was swept: the worker
    stops and writes nothing.

Sweep
    a running task whose lease expired: its locks are deleted, its run (if opened) is
    closed ``interrupted``, its sample gets a history event saying what happened and
    where it is, and the task is queued again or failed/skipped by the workflow's policy,
    all in one transaction conditional on the task's token.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sdl.errors import InvalidInput
from sdl.models import new_id
from sdl.store import RunRow, Store, jsonable, utcnow
from sdl.workflows import fairqueue as fq
from sdl.workflows import resources as res
from sdl.workflows import samples as smp
from sdl.workflows.graph import WorkflowSpec, validate_workflow
from sdl.workflows.tables import SampleRow, TaskRow, WorkflowRow

log = logging.getLogger(__name__)

HOTEL = "hotel"
TERMINAL = ("done", "failed", "skipped", "cancelled")


def device(instrument: str) -> str:
    return f"device:{instrument}"


def sample_resource(sample_id: str) -> str:
    return f"sample:{sample_id}"


@dataclass
class Claim:
    """A task claimed by one worker, and the token that proves it."""

    task: TaskRow
    workflow: WorkflowRow
    token: str
    worker_id: str
    sample: dict | None
    slots: dict[str, int]

    @property
    def id(self) -> str:
        return self.task.id


class LeaseLost(Exception):
    """The task's lease is no longer ours (swept): write nothing more."""


class Engine:
    def __init__(self, store: Store, *, lease_s: float = 10.0):
        if not lease_s > 0:  # also NaN: every task's lease would be lost at once
            raise InvalidInput("lease_s", "must be above 0 (seconds a worker holds a task between renewals)", lease_s)
        self.store = store
        self.lease_s = float(lease_s)
        self.pg = store.engine.dialect.name == "postgresql"

    def session(self):
        return self.store.session()

    def _expiry(self, s: Session) -> dt.datetime:
        return res.now(s) + dt.timedelta(seconds=self.lease_s)

    # ------------------------------------------------------------------ submit
    def submit(self, spec: WorkflowSpec | dict, params: dict, *, proposal_id: str = "",
               campaign_id: str | None = None, suggestion_id: str | None = None, check: bool = True) -> str:
        """Store a validated workflow for the point ``params``; its make task is ready at once."""
        spec = validate_workflow(spec, check_instruments=check)
        if not isinstance(params, dict) or not params:
            raise InvalidInput("parameters", "the point: an object of parameter name to value", params)
        if check:
            from sdl.workflows.graph import schema_instrument

            make = next(t for t in spec.tasks if t.kind == "make")
            inst = schema_instrument(make.instrument)
            try:
                params = dict(inst.space.validate_point(params))
            except InvalidInput as exc:  # named as in a request: parameters.A
                raise exc.under("parameters") from None
        wid = new_id()
        with self.session() as s:
            # its instrument tasks count against the proposal's experiment allocation, like submissions
            fq.check_allocation(s, proposal_id, sum(1 for t in spec.tasks if t.instrument))
            s.add(WorkflowRow(id=wid, campaign_id=campaign_id, suggestion_id=suggestion_id,
                              proposal_id=proposal_id, spec=spec.model_dump(mode="json"), params=jsonable(params)))
            res.ensure(s, HOTEL, "positions", spec.hotel_capacity)
            for inst in spec.instruments:
                res.ensure(s, device(inst), "device", 1)
            s.flush()
            for t in spec.tasks:
                ready = not t.after
                s.add(TaskRow(id=new_id(), workflow_id=wid, name=t.name, kind=t.kind, instrument=t.instrument,
                              plan=t.plan, after=list(t.after), proposal_id=proposal_id,
                              status="ready" if ready else "waiting", ready_at=utcnow() if ready else None))
        return wid

    # ------------------------------------------------------------------ claim
    def claim(self, instrument: str, worker_id: str) -> Claim | None:
        """The next unit of ``instrument``'s one fair queue (plain experiments and workflow
        tasks, :mod:`sdl.workflows.fairqueue`) if it is a task of ours whose resources are
        free, with those resources held under a lease; or None."""
        from sdl.service.scheduler import FairState, choose, record_claim

        with self.session() as s:
            st = fq.lock_instrument(s, instrument)
            if st.paused:  # the operator paused the instrument: all its work waits
                return None
            if fq.experiment_running(s, instrument):  # a plain experiment has the instrument
                return None
            tasks = fq.startable_tasks(s, instrument)
            if not tasks.per:
                return None
            cands = fq.candidates(s, instrument, tasks)
            state = FairState.from_json(st.fair)
            expiry = self._expiry(s)
            while cands:
                pid = choose(state, cands, float(st.dedicated_fraction or 0.0))
                if not fq.next_is_task(s, instrument, pid, tasks):
                    return None  # the fair head is a plain experiment: the service's worker takes it
                for t in tasks.per.pop(pid, []):
                    wf = s.get(WorkflowRow, t.workflow_id)
                    token = new_id()
                    sample_id = None
                    wants = [res.Want(device(instrument))]
                    if t.kind == "make":
                        sample_id = f"{wf.id[:10]}-{t.name}-{t.attempts + 1}"
                        wants.append(res.Want(HOTEL, for_sample=sample_id))
                    else:
                        sample_id = t.sample_id
                        wants.append(res.Want(sample_resource(sample_id)))
                    slots = res.try_acquire(s, wants, task_id=t.id, token=token, expires_at=expiry,
                                            sample_id=sample_id)
                    if slots is None:
                        continue  # its resources are busy: it waits, the next one may go
                    t.status, t.worker, t.lease_token, t.lease_expires_at = "running", worker_id, token, expiry
                    t.attempts += 1
                    t.started_at, t.run_uid, t.error = utcnow(), None, t.error
                    if t.kind == "make":
                        t.sample_id = sample_id
                    record_claim(st, state, pid, cands[pid].dedicated)
                    s.flush()
                    sample = None
                    if t.kind != "make":
                        sample = smp.sample_dict(smp.get(s, sample_id))
                    s.expunge(t)
                    s.expunge(wf)
                    return Claim(t, wf, token, worker_id, sample, slots)
                cands.pop(pid)
            return None

    # ------------------------------------------------------------------ lease
    @staticmethod
    def _charge(s: Session, t: TaskRow, status: str) -> None:
        """The instrument time a task used, charged to its service proposal (svc_usage) and in
        the instrument's fair state (the caller locked its row first: :meth:`_lock_for`)."""
        from sdl.service.db import ProposalRow, UsageRow, as_utc

        if t.started_at is None or not t.instrument:
            return
        prop = s.get(ProposalRow, t.proposal_id) if t.proposal_id else None
        end = utcnow()
        seconds = max(0.0, (end - as_utc(t.started_at)).total_seconds())
        # the instrument's one fair state is charged the time, as for a plain experiment
        fq.charge_time(s, t.instrument, t.proposal_id, bool(prop and prop.dedicated), seconds)
        if prop is None:
            return
        s.add(UsageRow(proposal_id=prop.id, instrument=t.instrument, item_id=t.id, kind="workflow-task",
                       status=status, dedicated=bool(prop.dedicated), started_at=as_utc(t.started_at),
                       finished_at=end, seconds=seconds))

    @staticmethod
    def _lock_for(s: Session, *instruments: str) -> None:
        """Lock the instruments' rows first (sorted), before any task or lock row: a claim
        takes its instrument's row first too, so the two never wait on each other in a cycle."""
        for name in sorted({i for i in instruments if i}):
            fq.lock_instrument(s, name)

    def renew(self, claim: Claim) -> None:
        with self.session() as s:
            exp = self._expiry(s)
            n = s.execute(update(TaskRow).where(TaskRow.id == claim.id, TaskRow.lease_token == claim.token,
                                                TaskRow.status == "running")
                          .values(lease_expires_at=exp).execution_options(synchronize_session=False)).rowcount
            if n != 1:
                raise LeaseLost(claim.id)
            res.renew(s, claim.token, exp)

    def _mine(self, s: Session, claim: Claim) -> TaskRow:
        t = s.scalar(select(TaskRow).where(TaskRow.id == claim.id, TaskRow.lease_token == claim.token,
                                           TaskRow.status == "running"))
        if t is None:
            raise LeaseLost(claim.id)
        return t

    # ------------------------------------------------------------ sample moves
    def sample_event(self, claim: Claim, kind: str, **kw: Any) -> None:
        """Record a move of the claim's sample (only while the lease is ours)."""
        with self.session() as s:
            t = self._mine(s, claim)
            row = smp.get(s, t.sample_id)
            smp.event(s, row, kind, actor=claim.worker_id, task_id=t.id, **kw)

    def sample_lost(self, claim: Claim, reason: str, where: str) -> None:
        """The sample was dropped: lost, its positions freed, the task failed (no retry can
        bring a lost sample back), every other task of it skipped."""
        with self.session() as s:
            self._lock_for(s, claim.task.instrument)
            t = self._mine(s, claim)
            row = smp.get(s, t.sample_id)
            smp.event(s, row, "lost", actor=claim.worker_id, task_id=t.id, state="lost", station="",
                      position=where, detail={"reason": reason})
            res.release_sample(s, row.id)
            self._end_task(s, t, "failed", error=reason)
            wf = s.get(WorkflowRow, t.workflow_id)
            for other in self._tasks(s, wf.id):
                if other.status in ("waiting", "ready") and other.kind == "measure":
                    other.status, other.error, other.finished_at = "skipped", f"sample lost: {reason}", utcnow()
            self._advance(s, wf)

    # ----------------------------------------------------------------- finish
    def open_run(self, claim: Claim, uid: str) -> None:
        with self.session() as s:
            t = self._mine(s, claim)
            t.run_uid = uid
            s.add(RunRow(uid=uid, campaign_id=claim.workflow.campaign_id, suggestion_id=None))

    def finish(self, claim: Claim, *, ok: bool, result: dict | None = None, error: str = "",
               params: dict | None = None) -> TaskRow:
        """End the task and everything it changed, in one transaction, if the lease is ours."""
        with self.session() as s:
            self._lock_for(s, claim.task.instrument)
            t = self._mine(s, claim)
            wf = s.get(WorkflowRow, t.workflow_id)
            spec = WorkflowSpec.model_validate(wf.spec)
            if t.run_uid:
                run = s.get(RunRow, t.run_uid)
                if run is not None and run.status == "running":
                    run.status, run.finished_at = ("success" if ok else "failed"), utcnow()
                    run.reason = "" if ok else error
            if ok and t.kind == "make":
                slot = claim.slots[HOTEL]
                row = smp.create(s, t.sample_id, params=params or wf.params, station=HOTEL, position=f"{HOTEL}/{slot}",
                                 actor=claim.worker_id, task_id=t.id, run_uid=t.run_uid, workflow_id=wf.id,
                                 campaign_id=wf.campaign_id, proposal_id=wf.proposal_id)
                res.hand_to_sample(s, t.id, HOTEL, row.id)
                res.ensure(s, sample_resource(row.id), "device", 1)
                for other in self._tasks(s, wf.id):
                    other.sample_id = row.id
            elif t.kind == "measure" and t.sample_id:
                row = smp.get(s, t.sample_id)
                if row.state != "lost":
                    hotel = s.scalar(select(res.LockRow.slot).where(res.LockRow.holder == f"sample:{row.id}"))
                    smp.event(s, row, "measured" if ok else "measurement_failed", actor=claim.worker_id,
                              task_id=t.id, run_uid=t.run_uid, state="measured" if ok else None,
                              detail={"values": result or {}} if ok else {"error": error})
                    smp.event(s, row, "returned", actor=claim.worker_id, task_id=t.id, station=HOTEL,
                              position=f"{HOTEL}/{hotel}")
            if ok:
                self._end_task(s, t, "done", result=result)
            elif spec.on_failure == "retry" and t.attempts < spec.max_attempts:
                self._charge(s, t, "failed")
                res.release_task(s, t.id)
                t.status, t.error, t.worker, t.lease_token, t.lease_expires_at = (
                    "ready", f"attempt {t.attempts} failed: {error}; queued again", None, None, None)
                t.ready_at = utcnow()
            else:
                self._end_task(s, t, "skipped" if spec.on_failure == "skip" else "failed", error=error)
            self._advance(s, wf)
            s.flush()
            s.expunge(t)
            return t

    def _end_task(self, s: Session, t: TaskRow, status: str, *, result: dict | None = None, error: str = "") -> None:
        if t.status == "running":
            self._charge(s, t, status)
        res.release_task(s, t.id)
        t.status, t.finished_at = status, utcnow()
        t.lease_token, t.lease_expires_at = None, None
        if result is not None:
            t.result = jsonable(result)
        if error:
            t.error = error

    def _tasks(self, s: Session, workflow_id: str) -> list[TaskRow]:
        return list(s.scalars(select(TaskRow).where(TaskRow.workflow_id == workflow_id).order_by(TaskRow.id)))

    # ---------------------------------------------------------------- advance
    def _advance(self, s: Session, wf: WorkflowRow) -> None:
        """Make waiting tasks ready, run the reduce, end the workflow when nothing is left."""
        spec = WorkflowSpec.model_validate(wf.spec)
        tasks = {t.name: t for t in self._tasks(s, wf.id)}
        if any(t.status == "failed" for t in tasks.values()) and wf.status == "running":
            bad = next(t for t in tasks.values() if t.status == "failed")
            self._close(s, wf, tasks, "failed", f"task {bad.name!r} failed: {bad.error}")
            return
        changed = True
        while changed:
            changed = False
            for t in tasks.values():
                if t.status != "waiting":
                    continue
                deps = [tasks[a] for a in t.after]
                if not all(d.status in TERMINAL for d in deps):
                    continue
                if any(d.status == "cancelled" for d in deps):
                    t.status, t.finished_at = "cancelled", utcnow()
                    changed = True
                    continue
                if t.kind == "reduce":
                    values, missing, runs = {}, [], {}
                    for obj, ref in spec.task(t.name).objectives.items():
                        name, _, key = ref.partition(".")
                        src = tasks[name]
                        runs[name] = src.run_uid
                        v = (src.result or {}).get(key) if src.status == "done" else None
                        if v is None:
                            missing.append(obj)
                        else:
                            values[obj] = v
                    t.result = jsonable({"values": values, "missing": missing, "runs": runs})
                    t.status, t.finished_at = "done", utcnow()
                elif spec.task(t.name).gate and not (wf.result or {}).get("gates", {}).get(t.name, False):
                    decided = t.name in (wf.result or {}).get("gates", {})
                    if not decided:
                        continue  # the gate is decided by the campaign (see decide_gate)
                    t.status, t.error, t.finished_at = "skipped", "gate: not sent on", utcnow()
                else:
                    t.status, t.ready_at = "ready", utcnow()
                changed = True
        if all(t.status in TERMINAL for t in tasks.values()):
            red = next((t for t in tasks.values() if t.kind == "reduce"), None)
            values = (red.result or {}).get("values", {}) if red is not None and red.status == "done" else {}
            self._close(s, wf, tasks, "done", "", values)

    def _close(self, s: Session, wf: WorkflowRow, tasks: dict[str, TaskRow], status: str, message: str,
               values: dict | None = None) -> None:
        spec = WorkflowSpec.model_validate(wf.spec)
        for t in tasks.values():
            if t.status in ("waiting", "ready"):
                t.status, t.finished_at, t.error = "cancelled", utcnow(), t.error or f"workflow {status}"
            elif t.status == "running" and status == "cancelled":
                # the worker finds its lease gone and stops; its locks are freed now
                self._charge(s, t, "cancelled")
                res.release_task(s, t.id)
                t.status, t.finished_at, t.lease_token, t.lease_expires_at = "cancelled", utcnow(), None, None
        wf.status, wf.message, wf.finished_at = status, message, utcnow()
        wf.result = jsonable({**(wf.result or {}), "values": values or {},
                              "runs": {n: t.run_uid for n, t in tasks.items() if t.run_uid}})
        sample_id = next((t.sample_id for t in tasks.values() if t.sample_id), None)
        row = s.get(SampleRow, sample_id) if sample_id else None
        if row is not None and row.state != "lost" and spec.dispose != "keep":
            state = "consumed" if spec.dispose == "consume" else "discarded"
            smp.event(s, row, state, actor="engine", state=state, station="", position="",
                      detail={"workflow": status})
            res.release_sample(s, row.id)

    def decide_gate(self, workflow_id: str, task: str, go: bool) -> None:
        """The campaign's decision for a gated task (a cascade): measure it or skip it."""
        with self.session() as s:
            wf = s.get(WorkflowRow, workflow_id)
            gates = dict((wf.result or {}).get("gates", {}))
            gates[task] = bool(go)
            wf.result = {**(wf.result or {}), "gates": gates}
            s.flush()
            if wf.status == "running":
                self._advance(s, wf)

    # ----------------------------------------------------------------- cancel
    def cancel(self, workflow_id: str, reason: str = "cancelled") -> None:
        """Cancel a workflow: every task not finished is cancelled and everything it holds released."""
        with self.session() as s:
            wf = s.get(WorkflowRow, workflow_id)
            if wf is None:
                raise InvalidInput("workflow_id", "no such workflow", workflow_id)
            if wf.status != "running":
                return
            self._lock_for(s, *s.scalars(select(TaskRow.instrument).where(TaskRow.workflow_id == wf.id,
                                                                         TaskRow.status == "running")))
            tasks = {t.name: t for t in self._tasks(s, wf.id)}
            for t in tasks.values():
                if t.status == "running" and t.run_uid:
                    run = s.get(RunRow, t.run_uid)
                    if run is not None and run.status == "running":
                        run.status, run.finished_at, run.reason = "aborted", utcnow(), reason
            self._close(s, wf, tasks, "cancelled", reason)

    # ------------------------------------------------------------------ sweep
    def sweep(self) -> list[str]:
        """Recover tasks whose worker stopped renewing (lease expired). Returns their ids."""
        out = []
        with self.session() as s:
            at = res.now(s)
            stale = list(s.scalars(select(TaskRow.id).where(TaskRow.status == "running",
                                                            TaskRow.lease_expires_at < at)))
        for tid in stale:
            if self._recover(tid):
                out.append(tid)
        with self.session() as s:  # locks whose task is gone (never expected; belt and braces)
            for lk in res.expired(s, res.now(s)):
                t = s.get(TaskRow, lk.task_id) if lk.task_id else None
                if t is None or t.status != "running" or t.lease_token != lk.token:
                    s.delete(lk)
        if out:
            log.warning("workflows: recovered %d task(s) whose worker stopped", len(out))
        return out

    def _recover(self, task_id: str) -> bool:
        with self.session() as s:
            inst = s.scalar(select(TaskRow.instrument).where(TaskRow.id == task_id))
            self._lock_for(s, inst or "")
            t = s.get(TaskRow, task_id)
            if t is None or t.status != "running" or t.lease_expires_at is None or t.lease_expires_at >= res.now(s):
                return False
            wf = s.get(WorkflowRow, t.workflow_id)
            spec = WorkflowSpec.model_validate(wf.spec)
            reason = f"worker {t.worker} stopped (lease expired) during task {t.name!r}"
            if t.run_uid:
                run = s.get(RunRow, t.run_uid)
                if run is not None and run.status == "running":
                    run.status, run.finished_at, run.reason = "interrupted", utcnow(), reason
            if t.kind == "measure" and t.sample_id:
                row = s.get(SampleRow, t.sample_id)
                if row is not None and row.state != "lost":
                    prev = row.state
                    back = "measured" if prev in ("in_transit", "measured") and any(
                        x.status == "done" and x.kind == "measure" for x in self._tasks(s, wf.id)) else "made"
                    hotel = s.scalar(select(res.LockRow.slot).where(res.LockRow.holder == f"sample:{row.id}"))
                    smp.event(s, row, "recovered", actor="sweeper", task_id=t.id, state=back, station=HOTEL,
                              position=f"{HOTEL}/{hotel}",
                              detail={"reason": reason, "was": {"state": prev, "station": row.station,
                                                                "position": row.position}})
            self._charge(s, t, "interrupted")
            res.release_task(s, t.id)
            t.worker, t.lease_token, t.lease_expires_at = None, None, None
            if t.attempts < spec.max_attempts and spec.on_failure != "fail":
                t.status, t.error, t.ready_at = "ready", f"interrupted: {reason}; queued again", utcnow()
            else:
                t.status = "skipped" if spec.on_failure == "skip" else "failed"
                t.error, t.finished_at = f"interrupted: {reason}", utcnow()
            self._advance(s, wf)
            return True

    # ------------------------------------------------------------------ views
    def workflow(self, workflow_id: str) -> dict:
        with self.session() as s:
            wf = s.get(WorkflowRow, workflow_id)
            if wf is None:
                raise InvalidInput("workflow_id", "no such workflow", workflow_id)
            return workflow_dict(wf, self._tasks(s, wf.id))

    def workflows(self, campaign_id: str | None = None, status: str | None = None) -> list[WorkflowRow]:
        with self.session() as s:
            q = select(WorkflowRow).order_by(WorkflowRow.created_at, WorkflowRow.id)
            if campaign_id is not None:
                q = q.where(WorkflowRow.campaign_id == campaign_id)
            if status is not None:
                q = q.where(WorkflowRow.status == status)
            return list(s.scalars(q))

    def sample(self, sample_id: str) -> dict:
        with self.session() as s:
            return {**smp.sample_dict(smp.get(s, sample_id)), "history": smp.history(s, sample_id)}

    def samples(self, campaign_id: str | None = None) -> list[dict]:
        with self.session() as s:
            q = select(SampleRow).order_by(SampleRow.created_at, SampleRow.id)
            if campaign_id is not None:
                q = q.where(SampleRow.campaign_id == campaign_id)
            return [smp.sample_dict(r) for r in s.scalars(q)]

    def locks(self) -> list[dict]:
        with self.session() as s:
            return [res.lock_dict(r) for r in res.held(s)]

    def transit_drops(self, spec: WorkflowSpec, rng: random.Random) -> bool:
        return spec.transit.drop_probability > 0 and rng.random() < spec.transit.drop_probability


def task_dict(t: TaskRow) -> dict:
    return {"id": t.id, "name": t.name, "kind": t.kind, "instrument": t.instrument, "plan": t.plan,
            "after": t.after, "status": t.status, "attempts": t.attempts, "worker": t.worker,
            "sample_id": t.sample_id, "run_uid": t.run_uid, "result": t.result, "error": t.error,
            "lease_expires_at": t.lease_expires_at.isoformat() if t.lease_expires_at else None}


def workflow_dict(wf: WorkflowRow, tasks: list[TaskRow]) -> dict:
    order = {t["name"]: i for i, t in enumerate(wf.spec.get("tasks", []))}
    tasks = sorted(tasks, key=lambda t: order.get(t.name, len(order)))  # in the order the spec gives them
    return {"id": wf.id, "campaign_id": wf.campaign_id, "suggestion_id": wf.suggestion_id,
            "proposal_id": wf.proposal_id, "status": wf.status, "message": wf.message, "params": wf.params,
            "result": wf.result, "spec": wf.spec, "tasks": [task_dict(t) for t in tasks],
            "edges": [[a, t.name] for t in tasks for a in t.after]}
