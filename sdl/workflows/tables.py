"""The workflow tables: samples and their history, resources and their locks,
workflows and their tasks. Same database as the record (one migration history,
``sdl/migrations/versions/0010_workflows.py``); a metadata of their own so the
record's and the service's modules stay as they are."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sdl.database import INSTRUMENT_NAME_MAX, WORKER_ID_MAX, BigID, UTCDateTime
from sdl.store import utcnow

#: A resource's name: ``device:<instrument>`` or a rack's name (migration 0012).
RESOURCE_NAME_MAX = INSTRUMENT_NAME_MAX + 45
#: A sample's position: ``<station>/<slot>``, or ``<station> -> <station>`` in transit.
POSITION_MAX = 2 * INSTRUMENT_NAME_MAX + 10

#: sample states (issue 14): what a sample is doing now
SAMPLE_STATES = ("made", "in_transit", "measured", "consumed", "discarded", "lost")
#: task states: waiting (dependencies) -> ready (on its instrument's queue) -> running -> done | failed |
#: skipped | cancelled
TASK_STATES = ("waiting", "ready", "running", "done", "failed", "skipped", "cancelled")
WORKFLOW_STATES = ("running", "done", "failed", "cancelled")


class WorkflowBase(DeclarativeBase):
    pass


class WorkflowRow(WorkflowBase):
    __tablename__ = "wf_workflows"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    suggestion_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    proposal_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TaskRow(WorkflowBase):
    __tablename__ = "wf_tasks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("wf_workflows.id"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(20))  # make | measure | reduce
    instrument: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX), default="", index=True)
    plan: Mapped[str] = mapped_column(String(60), default="")
    after: Mapped[list] = mapped_column(JSON, default=list)
    proposal_id: Mapped[str] = mapped_column(String(64), default="")
    sample_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="waiting", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(WORKER_ID_MAX), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    run_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    ready_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SampleRow(WorkflowBase):
    __tablename__ = "wf_samples"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    campaign_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    proposal_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    made_by_task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    made_by_run: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20), default="made", index=True)
    station: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX), default="")
    position: Mapped[str] = mapped_column(String(POSITION_MAX), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SampleEventRow(WorkflowBase):
    __tablename__ = "wf_sample_events"
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("wf_samples.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(30))  # made | moved | in_transit | arrived | measured | ...
    state: Mapped[str] = mapped_column(String(20))
    station: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX), default="")
    position: Mapped[str] = mapped_column(String(POSITION_MAX), default="")
    actor: Mapped[str] = mapped_column(String(WORKER_ID_MAX), default="")
    task_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    run_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class ResourceRow(WorkflowBase):
    """A device (capacity 1) or a set of sample positions (capacity n). ``fair``: unused
    since the instrument's one fair state is in ``svc_instruments`` (sdl.workflows.fairqueue)."""

    __tablename__ = "wf_resources"
    name: Mapped[str] = mapped_column(String(RESOURCE_NAME_MAX), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # device | positions
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    fair: Mapped[dict] = mapped_column(JSON, default=dict)
    claims: Mapped[int] = mapped_column(Integer, default=0)


class LockRow(WorkflowBase):
    """One unit of a resource held: by a running task (``token``, ``expires_at``: a lease)
    or by a sample sitting in a position (no expiry; freed when the sample leaves).
    The unique (resource, slot) is what makes a unit held by at most one holder, in any
    process on any host."""

    __tablename__ = "wf_locks"
    __table_args__ = (UniqueConstraint("resource", "slot", name="uq_wf_locks_resource_slot"),)
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(RESOURCE_NAME_MAX), ForeignKey("wf_resources.name"), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(120))  # task:ID | sample:ID | runner:PID@HOST
    task_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    sample_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acquired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
