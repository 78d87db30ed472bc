"""One fair queue per instrument, over plain experiments and workflow tasks.

A station may take plain experiments (``svc_queue``: ``POST /api/experiments``, campaign
steps; claimed by the service's dispatcher, :mod:`sdl.service.dispatch`) and workflow
tasks (``wf_tasks``; claimed by ``sdl workflow worker``, :mod:`sdl.workflows.engine`).
Both claimers go through this module, so the instrument has one queue:

- both lock the instrument's row of ``svc_instruments`` (PostgreSQL ``FOR UPDATE``;
  SQLite: a no-op UPDATE takes the write lock) and read and write the one fair-share
  state stored in it (:class:`sdl.service.scheduler.FairState`): a claim of either kind
  serialises with every other claim of the instrument, so two claimers never take the
  same unit and charges are never lost;
- the candidates are the proposals with queued experiments *or* workflow tasks that can
  start now (ready, their workflow running, their sample or hotel position free), each
  only while its proposal may run (approved, within its hours);
  :func:`sdl.service.scheduler.choose` picks the proposal (least used first, the existing
  rules); inside it the unit that came first (priority, then time) goes next;
- if that unit is of the other kind the claimer takes nothing: the fair head of the
  queue waits for the worker that can run it (a workflow worker cannot run a plain
  experiment, nor the reverse), so the instrument serves its proposals in the fair
  order whoever asks;
- the instrument is used by one kind at a time: no workflow task starts while a plain
  experiment runs on it (live lease) and no plain experiment while a workflow task holds
  the device (``device:NAME`` in ``wf_locks``);
- a workflow task counts against its proposal's experiment allocation like a submission
  (:func:`sdl.workflows.counting.counted_tasks`, added to :func:`sdl.service.scheduler.usage`): from its
  submission until it ends, or until it is withdrawn without having run (cancelled, a
  gate not passed, a sample lost); a workflow that would go over the allocation is
  refused (:func:`check_allocation`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from sdl.service.errors import Conflict
from sdl.workflows.tables import LockRow, SampleRow, TaskRow, WorkflowRow

class AllocationSpent(Conflict):
    """The proposal's experiment allocation has no room for the workflow's tasks (HTTP 409)."""


def _now(s: Session) -> dt.datetime:
    from sdl.workflows.resources import now

    return now(s)


def lock_instrument(s: Session, instrument: str) -> Any:
    """The instrument's ``svc_instruments`` row, locked for this transaction (made if missing)."""
    from sdl.service.db import InstrumentStateRow

    if s.get_bind().dialect.name == "postgresql":
        row = s.scalar(select(InstrumentStateRow).where(InstrumentStateRow.instrument == instrument)
                       .with_for_update())
    else:
        s.execute(update(InstrumentStateRow).where(InstrumentStateRow.instrument == instrument)
                  .values(claims=InstrumentStateRow.claims))
        row = s.get(InstrumentStateRow, instrument)
    if row is None:
        from sqlalchemy import exc as sa_exc

        try:
            with s.begin_nested():
                row = InstrumentStateRow(instrument=instrument, dedicated_fraction=0.0, fair={})
                s.add(row)
        except sa_exc.IntegrityError:  # made by another process meanwhile: lock that one
            return lock_instrument(s, instrument)
    return row


# ------------------------------------------------------------------ exclusion
def device_held(s: Session, instrument: str) -> bool:
    """A workflow task holds the instrument (its device lock, lease not expired)."""
    return bool(s.scalar(select(func.count()).select_from(LockRow).where(
        LockRow.resource == f"device:{instrument}",
        or_(LockRow.expires_at.is_(None), LockRow.expires_at > _now(s)))))


def experiment_running(s: Session, instrument: str) -> bool:
    """A plain experiment runs on the instrument (lease not expired)."""
    from sdl.service.db import ItemRow

    return bool(s.scalar(select(func.count()).select_from(ItemRow).where(
        ItemRow.instrument == instrument, ItemRow.status == "running",
        or_(ItemRow.lease_expires_at.is_(None), ItemRow.lease_expires_at > _now(s)))))


# ------------------------------------------------------------------ the tasks
@dataclass
class TaskSide:
    """The workflow tasks of one instrument that could start now, per proposal, in order."""

    per: dict[str, list[TaskRow]] = field(default_factory=dict)

    def first(self, pid: str) -> TaskRow | None:
        ts = self.per.get(pid)
        return ts[0] if ts else None


def _free(s: Session, resource: str, capacity: int) -> bool:
    used = s.scalar(select(func.count()).select_from(LockRow).where(LockRow.resource == resource)) or 0
    return used < capacity


def startable_tasks(s: Session, instrument: str) -> TaskSide:
    """Ready tasks of running workflows on ``instrument`` whose sample (a measure) or a hotel
    position (a make) is free now; a task that waits for one is no candidate (it must not
    hold the queue's head while it cannot start)."""
    from sdl.workflows.tables import ResourceRow

    rows = s.scalars(select(TaskRow).join(WorkflowRow, WorkflowRow.id == TaskRow.workflow_id)
                     .where(TaskRow.instrument == instrument, TaskRow.status == "ready",
                            WorkflowRow.status == "running")
                     .order_by(TaskRow.ready_at, TaskRow.id)).all()
    side = TaskSide()
    hotel: bool | None = None
    for t in rows:
        if t.kind == "make":
            if hotel is None:
                res = s.get(ResourceRow, "hotel")
                hotel = res is not None and _free(s, "hotel", res.capacity)
            if not hotel:
                continue
        elif t.sample_id:
            sample = s.get(SampleRow, t.sample_id)
            if sample is None or sample.state == "lost" or not _free(s, f"sample:{t.sample_id}", 1):
                continue
        side.per.setdefault(t.proposal_id, []).append(t)
    return side


def candidates(s: Session, instrument: str, tasks: TaskSide) -> dict[str, Any]:
    """The proposals that compete for ``instrument`` now: queued experiments (the service's
    rules, :func:`sdl.service.scheduler.candidates`) and startable tasks, each only while its
    proposal may run; a workflow of no service proposal (the CLI's) always may."""
    from sdl.service.db import ProposalRow
    from sdl.service.scheduler import Candidate, usage
    from sdl.service.scheduler import candidates as item_candidates

    cands = {p: Candidate(p, c.dedicated, _aware(c.waiting_since)) for p, c in item_candidates(s, instrument).items()}
    if not tasks.per:
        return cands
    props = {p.id: p for p in s.scalars(select(ProposalRow).where(ProposalRow.id.in_(list(tasks.per))))}
    hours = usage(s, [p for p, prop in props.items() if prop.allocation_hours is not None])
    for pid, ts in list(tasks.per.items()):
        prop = props.get(pid)
        if prop is not None and (prop.status != "approved" or (
                prop.allocation_hours is not None and hours[pid][1] >= prop.allocation_hours)):
            del tasks.per[pid]
            continue
        since = ts[0].ready_at
        if pid in cands:
            c = cands[pid]
            cands[pid] = Candidate(pid, c.dedicated, min(_aware(c.waiting_since), _aware(since)))
        else:
            cands[pid] = Candidate(pid, bool(prop is not None and prop.dedicated), _aware(since))
    return cands


def next_is_task(s: Session, instrument: str, pid: str, tasks: TaskSide) -> bool:
    """Inside proposal ``pid``: is its next unit a workflow task (else a queued experiment)?
    Highest priority first (a task has priority 0), then first come first served."""
    from sdl.service.db import ItemRow

    t = tasks.first(pid)
    if t is None:
        return False
    head = s.execute(select(ItemRow.priority, ItemRow.created_at).where(
        ItemRow.instrument == instrument, ItemRow.status == "queued", ItemRow.proposal_id == pid)
        .order_by(ItemRow.priority.desc(), ItemRow.created_at, ItemRow.id).limit(1)).first()
    if head is None:
        return True
    prio, created = head
    if prio != 0:
        return prio < 0
    return t.ready_at is not None and created is not None and _aware(t.ready_at) < _aware(created)


def _aware(t: dt.datetime | None) -> dt.datetime:
    if t is None:  # never expected (ready tasks have ready_at): sorts first, does not crash a claim
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


# ----------------------------------------------------------------- allocation
def check_allocation(s: Session, proposal_id: str, n_tasks: int) -> None:
    """Refuse a workflow of ``n_tasks`` instrument tasks its service proposal has no room for
    (the proposal's experiment allocation counts experiments and workflow tasks alike)."""
    from sdl.service.db import ProposalRow
    from sdl.service.scheduler import usage

    prop = s.get(ProposalRow, proposal_id) if proposal_id else None
    if prop is None or prop.allocation_experiments is None:
        return
    used = usage(s, [proposal_id])[proposal_id][0]
    if used + n_tasks > prop.allocation_experiments:
        raise AllocationSpent(
            f"proposal {proposal_id} has used {used} of its allocation of {prop.allocation_experiments} "
            f"experiments; this workflow needs {n_tasks} (one per instrument task)")


def charge_time(s: Session, instrument: str, proposal_id: str, dedicated: bool, seconds: float) -> None:
    """Charge instrument time to the proposal in the instrument's fair state (whole seconds,
    as the dispatcher does). The caller holds the instrument's row (:func:`lock_instrument`)."""
    from sdl.service.scheduler import CHARGE_PER_MINUTE, FairState, charge

    minutes = CHARGE_PER_MINUTE * int(seconds) / 60.0
    if minutes <= 0 or not instrument:
        return
    st = lock_instrument(s, instrument)
    state = FairState.from_json(st.fair)
    charge(state, proposal_id, dedicated, minutes)
    st.fair = state.to_json()
