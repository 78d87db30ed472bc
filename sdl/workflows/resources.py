"""Resources locked through the store, never in memory: a device (capacity 1) or a set
of sample positions (capacity n). A unit held is a row of ``wf_locks`` whose
(resource, slot) is unique, so two processes on two hosts cannot hold it together: the
second insert fails (PostgreSQL) or waits for the first writer and then sees the row
(SQLite serialises writers).

A running task's locks carry its lease (token, expiry) and are renewed with its
heartbeat; a dead worker's locks expire and the sweeper (:mod:`sdl.workflows.engine`)
deletes them in the same transaction that states what happened to the task and its
sample. A sample sitting in a position holds that unit with no expiry: it leaves when
the sample does.

Acquisition is all-or-nothing (one savepoint for every unit a task needs), so a task
never holds one resource while waiting for another: no hold-and-wait, no deadlock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import DateTime, delete, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from sdl.errors import InvalidInput
from sdl.store import utcnow
from sdl.workflows.tables import LockRow, ResourceRow


def now(s: Session) -> dt.datetime:
    """The database's clock on PostgreSQL (hosts' clocks may differ), ours on SQLite (one host)."""
    if s.get_bind().dialect.name == "postgresql":
        return s.scalar(select(func.clock_timestamp(type_=DateTime(timezone=True))))
    return utcnow()


def ensure(s: Session, name: str, kind: str, capacity: int) -> ResourceRow:
    """The resource ``name`` (made on first use; a changed capacity is taken)."""
    if kind not in ("device", "positions"):
        raise InvalidInput("kind", "allowed: device, positions", kind)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise InvalidInput(f"resources.{name}.capacity", "must be an integer >= 1", capacity)
    row = s.get(ResourceRow, name)
    if row is None:
        try:
            with s.begin_nested():
                row = ResourceRow(name=name, kind=kind, capacity=capacity, fair={})
                s.add(row)
        except sa_exc.IntegrityError:  # made by another process meanwhile
            row = s.get(ResourceRow, name)
    elif row.capacity != capacity:
        row.capacity = capacity
    return row


@dataclass
class Want:
    """One unit of ``resource`` wanted by a task (``for_sample``: the unit will be held by
    that sample once the task succeeds, e.g. the slot a made sample goes to)."""

    resource: str
    for_sample: str | None = None


def try_acquire(s: Session, wants: list[Want], *, task_id: str, token: str, expires_at: dt.datetime,
                sample_id: str | None = None) -> dict[str, int] | None:
    """Take one unit of each wanted resource for ``task_id``, all or none. Returns the slot
    taken per resource, or None when any is full (the task waits; nothing is held)."""
    taken: dict[str, int] = {}
    try:
        with s.begin_nested():
            for w in wants:
                res = s.get(ResourceRow, w.resource)
                if res is None:
                    raise InvalidInput("resource", "unknown resource", w.resource)
                used = set(s.scalars(select(LockRow.slot).where(LockRow.resource == w.resource)))
                free = next((i for i in range(1, res.capacity + 1) if i not in used), None)
                if free is None:
                    raise _Full(w.resource)
                s.add(LockRow(resource=w.resource, slot=free, holder=f"task:{task_id}", task_id=task_id,
                              sample_id=w.for_sample or sample_id, token=token, expires_at=expires_at))
                s.flush()
                taken[w.resource] = free
    except _Full:
        return None
    except sa_exc.IntegrityError:  # another process took the unit between our read and insert
        return None
    return taken


class _Full(Exception):
    pass


def renew(s: Session, token: str, expires_at: dt.datetime) -> int:
    return s.execute(update(LockRow).where(LockRow.token == token).values(expires_at=expires_at)
                     .execution_options(synchronize_session=False)).rowcount


def hand_to_sample(s: Session, task_id: str, resource: str, sample_id: str) -> None:
    """The unit ``task_id`` took in ``resource`` is now held by the sample it made (no expiry)."""
    s.execute(update(LockRow).where(LockRow.task_id == task_id, LockRow.resource == resource)
              .values(holder=f"sample:{sample_id}", sample_id=sample_id, task_id=None, token=None, expires_at=None)
              .execution_options(synchronize_session=False))


def release_task(s: Session, task_id: str) -> int:
    """Free every unit the task holds under its lease."""
    return s.execute(delete(LockRow).where(LockRow.task_id == task_id, LockRow.token.is_not(None))
                     .execution_options(synchronize_session=False)).rowcount


def release_sample(s: Session, sample_id: str) -> int:
    """Free the positions a sample holds (it left: discarded, consumed, lost)."""
    return s.execute(delete(LockRow).where(LockRow.holder == f"sample:{sample_id}")
                     .execution_options(synchronize_session=False)).rowcount


def expired(s: Session, at: dt.datetime) -> list[LockRow]:
    return list(s.scalars(select(LockRow).where(LockRow.expires_at.is_not(None), LockRow.expires_at < at)))


def held(s: Session, resource: str | None = None) -> list[LockRow]:
    q = select(LockRow).order_by(LockRow.resource, LockRow.slot)
    if resource is not None:
        q = q.where(LockRow.resource == resource)
    return list(s.scalars(q))


def lock_dict(r: LockRow) -> dict:
    return {"resource": r.resource, "slot": r.slot, "holder": r.holder, "task_id": r.task_id,
            "sample_id": r.sample_id, "expires_at": r.expires_at.isoformat() if r.expires_at else None}


# ------------------------------------------------------------------ a campaign's runner
def runner_resource(campaign_id: str) -> str:
    return f"runner:{campaign_id}"


def try_hold_runner(s: Session, campaign_id: str, holder: str, token: str, expires_at: dt.datetime,
                    holder_gone: Callable[[str], bool] = lambda h: False) -> LockRow | None:
    """Take the one unit of ``runner:CAMPAIGN`` (so two runners never drive one campaign),
    or return the lock of the runner holding it. A lock past its expiry, or whose holder
    ``holder_gone`` says is dead, is taken over."""
    name = runner_resource(campaign_id)
    ensure(s, name, "device", 1)
    cur = s.scalar(select(LockRow).where(LockRow.resource == name).with_for_update())
    if cur is not None:
        if cur.token == token:
            cur.expires_at = expires_at
            return None
        if cur.expires_at is not None and cur.expires_at >= now(s) and not holder_gone(cur.holder):
            return cur
        s.delete(cur)
        s.flush()
    try:
        with s.begin_nested():
            s.add(LockRow(resource=name, slot=1, holder=holder, token=token, expires_at=expires_at))
            s.flush()
    except sa_exc.IntegrityError:  # another runner took it between our read and insert
        return s.scalar(select(LockRow).where(LockRow.resource == name))
    return None


def release_runner(s: Session, campaign_id: str, token: str) -> int:
    return s.execute(delete(LockRow).where(LockRow.resource == runner_resource(campaign_id), LockRow.token == token)
                     .execution_options(synchronize_session=False)).rowcount
