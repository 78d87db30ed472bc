"""Samples as records: identity, what made it, where it is, its state and its ordered
history. Every change is one call on an open session, so it lands in the same
transaction as the task change that caused it (a crash leaves both or neither)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sdl.errors import InvalidInput
from sdl.store import jsonable, utcnow
from sdl.workflows.tables import SAMPLE_STATES, SampleEventRow, SampleRow


def _check_state(state: str) -> str:
    if state not in SAMPLE_STATES:
        raise InvalidInput("state", f"allowed: {list(SAMPLE_STATES)}", state)
    return state


def create(s: Session, sample_id: str, *, params: dict, station: str, position: str, actor: str,
           task_id: str | None = None, run_uid: str | None = None, workflow_id: str | None = None,
           campaign_id: str | None = None, proposal_id: str = "") -> SampleRow:
    """A new sample, made by ``task_id``'s run ``run_uid`` at ``station``/``position``."""
    if s.get(SampleRow, sample_id) is not None:
        raise InvalidInput("sample_id", "already exists: a sample is made once", sample_id)
    row = SampleRow(id=sample_id, workflow_id=workflow_id, campaign_id=campaign_id, proposal_id=proposal_id,
                    made_by_task=task_id, made_by_run=run_uid, params=jsonable(params), state="made",
                    station=station, position=position)
    s.add(row)
    s.flush()
    event(s, row, "made", actor=actor, task_id=task_id, run_uid=run_uid, detail={"params": jsonable(params)})
    return row


def event(s: Session, row: SampleRow, kind: str, *, actor: str, state: str | None = None,
          station: str | None = None, position: str | None = None, task_id: str | None = None,
          run_uid: str | None = None, detail: dict[str, Any] | None = None) -> SampleEventRow:
    """Record what happened to a sample, updating its state and location."""
    if state is not None:
        row.state = _check_state(state)
    if station is not None:
        row.station = station
    if position is not None:
        row.position = position
    row.updated_at = utcnow()
    ev = SampleEventRow(sample_id=row.id, kind=kind, state=row.state, station=row.station, position=row.position,
                        actor=actor, task_id=task_id, run_uid=run_uid, detail=jsonable(detail or {}))
    s.add(ev)
    return ev


def get(s: Session, sample_id: str) -> SampleRow:
    row = s.get(SampleRow, sample_id)
    if row is None:
        raise InvalidInput("sample_id", "no such sample", sample_id)
    return row


def history(s: Session, sample_id: str) -> list[dict]:
    """Every event of the sample, in order."""
    rows = s.scalars(select(SampleEventRow).where(SampleEventRow.sample_id == sample_id)
                     .order_by(SampleEventRow.id))
    return [event_dict(e) for e in rows]


def event_dict(e: SampleEventRow) -> dict:
    return {"at": e.at.isoformat(), "kind": e.kind, "state": e.state, "station": e.station,
            "position": e.position, "actor": e.actor, "task_id": e.task_id, "run_uid": e.run_uid,
            "detail": e.detail}


def sample_dict(r: SampleRow) -> dict:
    return {"id": r.id, "workflow_id": r.workflow_id, "campaign_id": r.campaign_id, "proposal_id": r.proposal_id,
            "made_by": {"task_id": r.made_by_task, "run_uid": r.made_by_run, "params": r.params},
            "state": r.state, "location": {"station": r.station, "position": r.position},
            "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat()}
